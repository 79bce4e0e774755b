/**
 * The attestation and configuration protocol (DESIGN.md §5), the CAS's side. A runtime asks
 * for a single-use nonce, produces evidence whose report_data is
 * SHA-512("cloister-attest-v1" ‖ nonce ‖ SPKI(K)) for an ephemeral key K it holds inside the
 * TEE, and sends it. The CAS verifies the evidence, the binding, the measurements and the TCB
 * against the service's policy, resolves templates and imports, issues a service certificate
 * for K from the policy's CA, and returns the configuration as a JWE that only K can open.
 * Every grant and refusal is audited with its reason. The wire types, shared with the runtime,
 * are src/protocol/attestation.ts's.
 */
import { timingSafeEqual, X509Certificate } from "node:crypto";
import { expectedReportData } from "../attestation/binding.ts";
import { measurementProblems, settingsProblems } from "../attestation/validate.ts";
import { type Verdict, VerificationError } from "../attestation/verdict.ts";
import { certificatePem, issueDer } from "../crypto/certificate.ts";
import { CryptoWorker } from "../crypto/crypto-worker.ts";
import { JweError, type KeyManagement, sealCompact } from "../crypto/jwe.ts";
import { p256SpkiPoint, spkiHash } from "../crypto/keys.ts";
import type { PolicyService } from "../policy/schema.ts";
import { parseTemplate, renderTemplate, renderTemplateText } from "../policy/templates.ts";
import type { AttestationRequest, Configuration } from "../protocol/attestation.ts";
import { ChallengeNonces, NonceError } from "./challenge-nonce.ts";
import { verifyEvidence } from "./evidence.ts";
import type { PolicyValues } from "./imports.ts";
import { BUILT_IN_SERVICE_CA, caSigner, materialOf, type StoredSecret, volumeKeyName } from "./secrets.ts";
import { CasError, type CasService, type PolicyRecord } from "./service.ts";

export const NONCE_TTL_MS = 60_000;
/**
 * Nonces used within their lifetime, remembered at once, at most (about 150 bytes each): 3,333
 * attestations with bound evidence a second for a minute, twice the CAS's capacity on a two-core
 * machine.
 */
export const MAX_SPENT_NONCES = 200_000;
const SERVICE_CERT_VALIDITY_MS = 24 * 3600_000;

export { expectedReportData };

export class AttestationService {
  readonly #cas: CasService;
  readonly #nonces: ChallengeNonces;
  readonly #now: () => number;
  /** The JWE's key management and the evidence's signature, off the event loop. */
  readonly #crypto: CryptoWorker;

  constructor(
    cas: CasService,
    options: {
      now?: () => number;
      maxSpentNonces?: number;
      /** Its own, by default; tests pass one that fails. Closed by close(). */
      crypto?: CryptoWorker;
    } = {},
  ) {
    this.#cas = cas;
    this.#crypto = options.crypto ?? new CryptoWorker();
    this.#now = options.now ?? Date.now;
    this.#nonces = new ChallengeNonces({
      ttlMs: NONCE_TTL_MS,
      maxSpent: options.maxSpentNonces ?? MAX_SPENT_NONCES,
      now: options.now,
      key: cas.challengeKey,
    });
    this.#crypto.start();
  }

  /** Stop the crypto thread. */
  close(): Promise<void> {
    return this.#crypto.close();
  }

  /** A nonce for `configId`: nothing is stored until it comes back (see challenge-nonce.ts). */
  challenge(configId: string): { nonce: string; expires_at: string } {
    splitConfigId(configId);
    const { nonce, expires } = this.#nonces.issue(configId);
    return { nonce: nonce.toString("base64"), expires_at: new Date(expires).toISOString() };
  }

  /**
   * Verify and configure; throws CasError (audited) when refused. `source`: where the request
   * came from (rate-limit.ts's sourceOf), by which refusals before the evidence is shown bound
   * to its nonce are tallied (refusal-tally.ts).
   */
  async attest(request: AttestationRequest, source = "unknown"): Promise<{ configuration: string }> {
    const { config_id: configId } = request;
    // The nonce is spent before anything else is looked at, so that a concurrent replay finds it
    // spent; but a refusal before the evidence is shown bound to it takes the spend back (see
    // ChallengeNonces.unspend): only bound evidence may fill the spent set.
    let spent = false;
    let bound = false;
    // The JWE's key management, once asked (below): a refusal clears its content key.
    let management: Promise<KeyManagement> | undefined;
    const refuse = async (status: number, code: string, reason: string): Promise<never> => {
      if (spent && !bound) this.#nonces.unspend(request.nonce);
      management?.then(
        (keys) => keys.cek.fill(0),
        () => {},
      );
      // A caller who has not shown evidence bound to a nonce of ours proved nothing: tallied.
      await this.#cas.refuse("runtime", "attestation", configId, reason, bound ? undefined : { source, code });
      throw new CasError(status, code, reason);
    };
    let nonceExpiry: number;
    try {
      nonceExpiry = this.#nonces.spend(request.nonce, configId);
      spent = true;
    } catch (error) {
      if (!(error instanceof NonceError)) throw error;
      if (error.problem === "busy") return refuse(503, "busy", error.message);
      return refuse(403, "bad_nonce", error.message);
    }

    const { policy: policyName, service: serviceName } = splitConfigId(configId);
    // What other replicas appended (a policy changed, a LAS enrolled) is applied first.
    await this.#cas.sync();
    // Read with the policy: compared again as the grant is written.
    const generation = this.#cas.policyGeneration(policyName);
    const policies = await this.#cas.importClosure(policyName);
    const loaded = policies.get(policyName);
    if (!loaded) return refuse(404, "unknown_service", `no policy ${policyName}`);
    const { record } = loaded;
    const service = record.policy.services.find((s) => s.name === serviceName);
    if (!service) return refuse(404, "unknown_service", `policy ${policyName} has no service ${serviceName}`);

    const spki = Buffer.from(request.spki, "base64");
    // The encoding is checked here; that the point is on the curve, by the key agreement below
    // (OpenSSL decodes the point there anyway: checking it here too cost the event loop 2 %).
    const point = p256SpkiPoint(spki);
    const notAKey = (detail = "") =>
      refuse(
        400,
        "bad_request",
        `spki: expected the runtime's P-256 public key (SubjectPublicKeyInfo, base64 DER)${detail}`,
      );
    if (!point) return notAKey();
    // The JWE's key management (its key agreement first), asked once the evidence has passed
    // every check but its signature (not before: made-up evidence must not cost the crypto thread
    // an agreement), in the same turn as that signature check, so that the two go to the thread
    // in one message. Awaited once the evidence is accepted (where a point off the curve is
    // found); a refusal before that drops it.
    const agree = () => {
      if (management) return;
      management = this.#crypto.manageKey(point);
      management.catch(() => {});
    };

    const settings = record.policy.security.attestation;
    let verdict: Verdict;
    if (settings.mode === "none") {
      verdict = {
        tee: request.evidence.tee,
        status: "Unevaluated",
        advisories: [],
        debug: true,
        measurements: {},
        report_data: "",
        simulated: true,
        collateral_expires: null,
        details: { warning: "attestation mode none: nothing verified" },
      };
      // Nothing is bound, nothing protected: whoever asks gets this configuration anyway.
      this.#nonces.unspend(request.nonce);
    } else {
      try {
        verdict = await verifyEvidence(this.#cas.trust, request.evidence, this.#crypto.verify, {
          onPrepared: agree,
        });
      } catch (error) {
        if (error instanceof VerificationError)
          return refuse(403, "evidence_refused", `evidence refused: ${error.message}`);
        // Not the evidence's fault (the crypto thread failed, say): refused all the same, and
        // audited, as every decision is — with no internal detail for the unauthenticated caller.
        return refuse(500, "internal", "the evidence could not be verified (internal error)");
      }
      const expected = expectedReportData(Buffer.from(request.nonce, "base64"), spki);
      const actual = Buffer.from(verdict.report_data, "hex");
      if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
        return refuse(
          403,
          "binding",
          "the evidence's report_data does not bind this nonce and key (replayed evidence?)",
        );
      }
      bound = true;
      const problems = [...settingsProblems(verdict, settings), ...measurementProblems(verdict, service.measurements)];
      if (problems.length > 0) {
        const measurement = String(
          verdict.measurements.digest ??
            verdict.measurements.mrenclave ??
            verdict.measurements.mrtd ??
            verdict.measurements.measurement ??
            "",
        );
        return refuse(
          403,
          "not_allowed",
          `${measurement ? `measurement ${measurement.slice(0, 12)}… ` : ""}is not allowed for ${configId}: ${problems.join("; ")}`,
        );
      }
    }

    // Before the certificate is issued: the agreement is where a point off the curve is found.
    // (Asked with the signature check, it is answered in the same message: nothing to wait for.)
    let keys: KeyManagement;
    try {
      management ??= this.#crypto.manageKey(point);
      keys = await management;
    } catch (error) {
      if (error instanceof JweError) return notAKey(": the point is not on the curve");
      return refuse(500, "internal", "the configuration could not be sealed (internal error)");
    }
    let jwe: string;
    try {
      let configuration: Configuration;
      try {
        configuration = this.#configure(record, policies, service, configId, spki, verdict);
      } catch (error) {
        if (error instanceof CasError) return await refuse(error.status, error.code, error.message);
        throw error;
      }
      try {
        jwe = sealCompact(Buffer.from(JSON.stringify(configuration)), keys, { cty: "cloister-configuration+json" });
      } catch {
        // Not the caller's doing; no internal detail for an unauthenticated caller (as above).
        return refuse(500, "internal", "the configuration could not be sealed (internal error)");
      }
    } finally {
      keys.cek.fill(0); // sealed, refused or failed: the content key is not needed again
    }
    // The decision was made against `record`, read before the awaits above (the evidence's
    // signature and the key management, on the crypto thread). If the policy changed meanwhile —
    // a measurement withdrawn, or the policy deleted (and perhaps made again with the same
    // text) — the grant would outlive the change that forbade it: refuse, and let the runtime
    // attest again against the new version. Asked as the grant is written (group-committed, a
    // turn later): after every change committed before it.
    const outcome = `${verdict.tee}${verdict.simulated ? " (simulated)" : ""} ${verdict.status}`;
    if (settings.mode === "none") {
      // Nothing was shown: a stranger's decision, tallied (refusal-tally.ts), not a row each.
      if (this.#cas.policyGeneration(policyName) !== generation)
        return refuse(409, "policy_changed", `policy ${policyName} changed meanwhile; attest again`);
      this.#cas.grantUnattested(source, configId, record.hash, outcome);
      return { configuration: jwe };
    }
    const changed = `policy ${policyName} changed while this attestation was being verified; attest again`;
    // The nonce is recorded as spent in the grant's transaction: once across every replica.
    const { refused } = await this.#cas.grant(
      "runtime",
      "attestation",
      configId,
      record.hash,
      outcome,
      () => (this.#cas.policyGeneration(policyName) !== generation ? changed : undefined),
      { nonce: Buffer.from(request.nonce, "base64"), expiresAt: nonceExpiry },
    );
    if (refused !== undefined) throw new CasError(409, "policy_changed", refused);
    return { configuration: jwe };
  }

  #configure(
    record: PolicyRecord,
    policies: ReadonlyMap<string, PolicyValues | undefined>,
    service: PolicyService,
    configId: string,
    runtimeSpki: Buffer,
    verdict: Verdict,
  ): Configuration {
    const policyName = record.name;
    const own = policies.get(policyName)?.values ?? {};
    const cache = new Map<string, StoredSecret>();
    const value = (name: string): StoredSecret => {
      let v = cache.get(name);
      if (!v) {
        v = this.#cas.resolveSecret(policyName, name, policies);
        cache.set(name, v);
      }
      return v;
    };
    const lookup = (name: string) => materialOf(value(name));
    const text = (s: string) => renderTemplateText(parseTemplate(s).parts, lookup);
    const command = service.command.map(text);
    const environment = Object.fromEntries(Object.entries(service.environment).map(([k, v]) => [k, text(v)]));
    const files = service.files.map((f) => ({
      path: f.path,
      mode: f.mode,
      content: renderTemplate(parseTemplate(f.content).parts, lookup).toString("base64"),
    }));

    const caName = record.policy.security.service_ca ?? BUILT_IN_SERVICE_CA;
    // The built-in CA is the CAS's own, not a declared secret: it is not resolved like one.
    const ca = caName === BUILT_IN_SERVICE_CA ? own[caName] : value(caName);
    if (ca?.kind !== "x509-ca")
      throw new CasError(500, "no_service_ca", `the service CA ${caName} of ${policyName} is missing`);
    const now = this.#now();
    const der = issueDer(
      {
        commonName: configId.slice(-64),
        subjectSpki: runtimeSpki,
        ca: false,
        notBefore: new Date(now - 5 * 60_000),
        notAfter: new Date(now + SERVICE_CERT_VALIDITY_MS),
        san: [`uri:urn:cloister:${configId}`],
        usage: ["server", "client"],
      },
      caSigner(ca),
    );
    const chain = [certificatePem(der), ca.certificate, ...ca.issuers].join("");

    const tlsMaterial: Record<string, { certificate: string; key?: string; chain: string }> = {};
    const names = new Set<string>();
    for (const t of service.tls.inbound) {
      if (t.certificate) names.add(t.certificate);
      if (t.client_ca) names.add(t.client_ca);
    }
    for (const t of service.tls.outbound) {
      names.add(t.ca);
      if (t.certificate) names.add(t.certificate);
    }
    for (const name of names) {
      const v = value(name);
      if (v.kind === "x509")
        tlsMaterial[name] = { certificate: v.certificate, key: v.key, chain: [v.certificate, ...v.issuers].join("") };
      else if (v.kind === "x509-ca")
        tlsMaterial[name] = { certificate: v.certificate, chain: [v.certificate, ...v.issuers].join("") };
      else throw new CasError(409, "bad_tls_secret", `TLS secret ${name} is ${v.kind}, not a certificate`);
    }
    return {
      config_id: configId,
      policy_hash: record.hash,
      command,
      environment,
      pwd: service.pwd,
      files,
      volumes: service.volumes.map((mount) => {
        const volume = record.policy.volumes.find((v) => v.name === mount.name);
        if (!volume) throw new CasError(500, "no_volume", `policy ${policyName} has no volume ${mount.name}`);
        const key = volume.key === null ? own[volumeKeyName(volume.name)] : value(volume.key);
        if (key?.kind !== "binary" || Buffer.from(key.value, "base64").length !== 32)
          throw new CasError(500, "no_volume_key", `the key of volume ${volume.name} of ${policyName} is missing`);
        return {
          name: volume.name,
          path: mount.path,
          key: Buffer.from(key.value, "base64").toString("hex"),
          tag: volume.update_policy === "rollback-protected" ? this.#cas.volumeTag(record, volume.name) : volume.tag,
          update_policy: volume.update_policy,
          checkpoint_interval: volume.checkpoint_interval,
        };
      }),
      tls: service.tls,
      certificate_chain: chain,
      ca_bundle: ca.certificate,
      tls_material: tlsMaterial,
      verdict: {
        tee: verdict.tee,
        status: verdict.status,
        simulated: verdict.simulated,
        debug: verdict.debug,
        measurements: verdict.measurements,
      },
    };
  }

  /**
   * Only a runtime of a service that mounts the volume may commit it: the caller's TLS client
   * certificate must be a current service certificate from the policy's service CA, naming a
   * service of the policy (urn:cloister:POLICY/SERVICE) that mounts `volume`. The TLS handshake
   * proved the caller holds its key.
   */
  async authorizeVolumeCommit(peer: X509Certificate | undefined, policyName: string, volume: string): Promise<void> {
    const target = `${policyName}/${volume}`;
    const refused = (status: number, code: string, reason: string): CasError => {
      // Before the certificate is found to be the policy's: a stranger's refusal, tallied by its
      // key (a tally is written by a timer: nothing to wait for here).
      const actor = peer ? spkiHash(peer.publicKey) : "";
      void this.#cas.refuse(actor, "volume.commit", target, reason, { source: actor || "no certificate", code });
      return new CasError(status, code, reason);
    };
    if (!peer)
      throw refused(401, "no_identity", "a volume is committed with the service certificate issued at attestation");
    const notOurs = `the client certificate is not a current service certificate of ${policyName}`;
    await this.#cas.sync();
    const policies = await this.#cas.importClosure(policyName);
    const loaded = policies.get(policyName);
    // The same answer as a certificate the policy's CA did not issue: a stranger learns nothing
    // of which policies exist.
    if (!loaded) throw refused(403, "forbidden", notOurs);
    const { record, values } = loaded;
    const caName = record.policy.security.service_ca ?? BUILT_IN_SERVICE_CA;
    const ca = caName === BUILT_IN_SERVICE_CA ? values[caName] : this.#cas.resolveSecret(policyName, caName, policies);
    if (ca?.kind !== "x509-ca") throw refused(500, "no_service_ca", `the service CA of ${policyName} is missing`);
    const issuer = new X509Certificate(ca.certificate);
    const now = this.#now();
    if (
      !peer.checkIssued(issuer) ||
      !peer.verify(issuer.publicKey) ||
      now < Date.parse(peer.validFrom) ||
      now > Date.parse(peer.validTo)
    )
      throw refused(403, "forbidden", notOurs);
    const uri = /URI:urn:cloister:(\S+?)(?:,|$)/.exec(peer.subjectAltName ?? "")?.[1] ?? "";
    const service = uri.startsWith(`${policyName}/`) ? uri.slice(policyName.length + 1) : undefined;
    const mounts = record.policy.services.find((s) => s.name === service)?.volumes.some((v) => v.name === volume);
    if (!mounts)
      throw refused(403, "forbidden", `no service of ${policyName} named by the certificate mounts volume ${volume}`);
  }
}

/** "acme/shop/web" → policy "acme/shop", service "web". */
export function splitConfigId(configId: string): { policy: string; service: string } {
  const i = configId.lastIndexOf("/");
  if (i <= 0 || i === configId.length - 1)
    throw new CasError(400, "bad_config_id", `config id ${configId}: expected POLICY/SERVICE, e.g. acme/shop/web`);
  return { policy: configId.slice(0, i), service: configId.slice(i + 1) };
}
