/**
 * Rules that relate one part of a policy to another: names unique, references resolvable and
 * of the right kind, templates well formed and fitting their secret, thresholds satisfiable,
 * explicit values consistent with sizes and key types. The input has passed the schemas.
 */
import type { KeyObject } from "node:crypto";
import { signsCertificates } from "../crypto/certificate.ts";
import { a } from "./expect.ts";
import { readCertificateValue, readPrivateKeyValue } from "./pem.ts";
import {
  type AccessRuleT,
  type GeneratedSecret,
  isImport,
  type KeyType,
  type Policy,
  type PolicySecret,
  type PolicyService,
  REDACTED,
  type SecretKind,
} from "./schema.ts";
import { didYouMean } from "./suggest.ts";
import { FORMATS, GENERIC_FORMATS, KIND_FORMATS, parseTemplate } from "./templates.ts";
import type { PolicyProblem } from "./validate.ts";
import type { FieldPath } from "./yaml-source.ts";

/** Names declared in the document, including items that failed their own checks. */
export interface Declared {
  readonly secrets: ReadonlySet<string>;
  readonly services: ReadonlySet<string>;
  readonly volumes: ReadonlySet<string>;
  /**
   * Parts that failed their own checks and were replaced by defaults: top-level fields
   * ("security", "access_policy", "name") and "services.NAME.measurements". Checks that
   * depend on them are skipped, so one mistake is reported once.
   */
  readonly incomplete: ReadonlySet<string>;
  /** Services that failed their schema: their templates are still checked, from the raw document. */
  readonly failedServices: readonly { readonly path: FieldPath; readonly raw: unknown }[];
}

interface TemplatedField {
  readonly path: FieldPath;
  readonly text: string;
  /** argv and environment cannot hold NUL; file contents can. */
  readonly textOnly: boolean;
}

/** The strings of a service (valid or not) where templates are expanded. */
export function templatedFields(service: unknown, path: FieldPath): TemplatedField[] {
  const s = (typeof service === "object" && service !== null ? service : {}) as Record<string, unknown>;
  const out: TemplatedField[] = [];
  if (Array.isArray(s.command)) {
    s.command.forEach((text, j) => {
      if (typeof text === "string") out.push({ path: [...path, "command", j], text, textOnly: true });
    });
  }
  if (typeof s.environment === "object" && s.environment !== null && !Array.isArray(s.environment)) {
    for (const [k, text] of Object.entries(s.environment)) {
      if (typeof text === "string") out.push({ path: [...path, "environment", k], text, textOnly: true });
    }
  }
  if (Array.isArray(s.files)) {
    s.files.forEach((f, j) => {
      const text = (f as Record<string, unknown> | null)?.content;
      if (typeof text === "string") out.push({ path: [...path, "files", j, "content"], text, textOnly: false });
    });
  }
  return out;
}

export function crossCheck(policy: Policy, declared: Declared): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  const report = (path: FieldPath, message: string, at: PolicyProblem["at"] = "value") =>
    problems.push({ path, message, at });
  const secrets = new Map<string, PolicySecret>();
  for (const s of policy.secrets) secrets.set(s.name, s);

  /** The kind of a secret, if known offline (an import knows it only when it declares it). */
  const kindOf = (name: string): SecretKind | null | undefined => {
    const s = secrets.get(name);
    if (!s) return undefined;
    return isImport(s) ? s.import.kind : s.kind;
  };

  /** Check that `name` names a secret whose kind is one of `kinds`. */
  const reference = (path: FieldPath, name: string, kinds: readonly SecretKind[], role: string) => {
    const want = kinds.join(" or ");
    if (!declared.secrets.has(name)) {
      report(
        path,
        `no secret named "${name}"${didYouMean(name, declared.secrets)}: expected the name of ${a(want)} secret for ${role}`,
      );
      return;
    }
    const kind = kindOf(name);
    if (kind === undefined) return; // declared but invalid: already reported
    if (kind === null) {
      report(path, `"${name}" is imported without a kind: declare import.kind: ${kinds[0]} to use it as ${role}`);
    } else if (!kinds.includes(kind)) {
      report(path, `"${name}" is ${a(kind)} secret: expected ${a(want)} secret for ${role}`);
    }
  };

  duplicates(policy.secrets, (s) => s.name, ["secrets"], "name", "secret", report);
  duplicates(policy.services, (s) => s.name, ["services"], "name", "service", report);
  duplicates(policy.volumes, (v) => v.name, ["volumes"], "name", "volume", report);

  // access_policy
  if (!declared.incomplete.has("access_policy")) {
    for (const op of ["read", "update", "create_policies"] as const) {
      checkRules(policy.access_policy[op], ["access_policy", op], report);
    }
  }

  // security
  const attestation = declared.incomplete.has("security") ? undefined : policy.security.attestation;
  /** Where the CAS issues certificates under a CA of this policy: issuers, and the service CA. */
  const signers: { path: FieldPath; ca: string }[] = [];
  /** The keys of x509-ca secrets given as values (generated ones are always of a key_type the CAS signs with). */
  const givenCaKeys = new Map<string, KeyObject>();
  if (policy.security.service_ca !== null) {
    reference(["security", "service_ca"], policy.security.service_ca, ["x509-ca"], "the service CA");
    signers.push({ path: ["security", "service_ca"], ca: policy.security.service_ca });
  }

  // secrets
  policy.secrets.forEach((secret, i) => {
    const path: FieldPath = ["secrets", i];
    duplicates(secret.export, (e) => e.policy, [...path, "export"], "policy", "export to policy", report);
    secret.export.forEach((e, j) => {
      if (e.policy === policy.name && !declared.incomplete.has("name"))
        report([...path, "export", j, "policy"], "a policy cannot export to itself");
    });
    if (isImport(secret)) {
      if (secret.import.policy === policy.name && !declared.incomplete.has("name")) {
        report([...path, "import", "policy"], "a policy cannot import from itself: use the secret directly");
      }
      return;
    }
    const givenKey = checkGeneratedSecret(secret, path, report);
    if (givenKey && secret.kind === "x509-ca") givenCaKeys.set(secret.name, givenKey);
    if ((secret.kind === "x509" || secret.kind === "x509-ca") && typeof secret.issuer === "string") {
      if (secret.issuer === secret.name)
        report([...path, "issuer"], "a certificate cannot name itself as issuer (omit issuer for self-signed)");
      else {
        reference([...path, "issuer"], secret.issuer, ["x509-ca"], "the issuer");
        signers.push({ path: [...path, "issuer"], ca: secret.issuer });
      }
    }
  });
  checkIssuerCycles(policy.secrets, report);
  // A given CA may hold a key the CAS cannot sign with (P-521, Ed448…): fine as a trust anchor
  // (client_ca, an outbound ca), refused where the CAS must issue under it.
  for (const { path, ca } of signers) {
    const key = givenCaKeys.get(ca);
    if (key && !signsCertificates(key)) {
      report(
        path,
        `"${ca}" is given with ${describeKey(key)} key, which the CAS cannot sign certificates with: expected a P-256, P-384, Ed25519 or RSA key`,
      );
    }
  }

  // volumes
  const volumeNames = new Set(policy.volumes.map((v) => v.name));
  policy.volumes.forEach((volume, i) => {
    const path: FieldPath = ["volumes", i];
    if (volume.key !== null) reference([...path, "key"], volume.key, ["binary"], "a volume key");
    const key = volume.key === null ? undefined : secrets.get(volume.key);
    if (key && !isImport(key) && key.kind === "binary" && (key.size ?? 32) !== 32) {
      report([...path, "key"], `"${volume.key}" has ${key.size} bytes: a volume key has 32`);
    }
    if (volume.tag !== null && volume.key === null) {
      report([...path, "tag"], "a tag names an existing protected tree, which needs its key: expected key with tag");
    }
    if (volume.update_policy === "ephemeral" && volume.checkpoint_interval !== null) {
      report([...path, "checkpoint_interval"], "an ephemeral volume is never committed: remove checkpoint_interval");
    }
  });

  // services
  policy.services.forEach((service, i) => {
    checkService(service, ["services", i]);
  });
  for (const failed of declared.failedServices) {
    for (const t of templatedFields(failed.raw, failed.path)) checkTemplate(t.path, t.text, t.textOnly);
  }

  function checkService(service: PolicyService, path: FieldPath): void {
    const measurementsKnown = !declared.incomplete.has(`services.${service.name}.measurements`);
    if (attestation && attestation.mode !== "none" && service.measurements.length === 0 && measurementsKnown) {
      report(
        [...path, "measurements"],
        `missing; expected at least one measurement (attestation mode is ${attestation.mode})`,
        "parent",
      );
    }
    service.measurements.forEach((m, j) => {
      if (attestation && m.tee === "sim" && attestation.mode !== "simulation") {
        report(
          [...path, "measurements", j, "tee"],
          `a sim measurement needs security.attestation.mode: simulation (it is ${attestation.mode})`,
        );
      }
    });
    for (const t of templatedFields(service, path)) checkTemplate(t.path, t.text, t.textOnly);

    duplicates(service.files, (f) => f.path, [...path, "files"], "path", "file", report);
    duplicates(service.volumes, (v) => v.name, [...path, "volumes"], "name", "volume", report);
    duplicates(service.volumes, (v) => v.path, [...path, "volumes"], "path", "mount path", report);
    service.volumes.forEach((v, j) => {
      if (!declared.volumes.has(v.name)) {
        report(
          [...path, "volumes", j, "name"],
          `no volume named "${v.name}"${didYouMean(v.name, declared.volumes)} in the policy's volumes`,
        );
      } else if (!volumeNames.has(v.name)) {
        // declared but invalid: already reported
      }
      service.volumes.forEach((other, k) => {
        if (k !== j && isInside(v.path, other.path)) {
          report(
            [...path, "volumes", j, "path"],
            `${v.path} lies inside the mount of volume "${other.name}" at ${other.path}`,
          );
        }
      });
    });
    service.files.forEach((f, j) => {
      for (const v of service.volumes) {
        if (f.path === v.path || isInside(f.path, v.path)) {
          report([...path, "files", j, "path"], `${f.path} lies inside the mount of volume "${v.name}" at ${v.path}`);
        }
      }
    });
    const listens = [
      ...service.tls.inbound.map((t, j) => ({ listen: t.listen, path: [...path, "tls", "inbound", j, "listen"] })),
      ...service.tls.outbound.map((t, j) => ({ listen: t.listen, path: [...path, "tls", "outbound", j, "listen"] })),
    ];
    const seen = new Set<string>();
    for (const l of listens) {
      if (seen.has(l.listen)) report(l.path, `${l.listen} is already a TLS listener of this service`);
      seen.add(l.listen);
    }
    service.tls.inbound.forEach((t, j) => {
      const p: FieldPath = [...path, "tls", "inbound", j];
      if (t.certificate !== null) reference([...p, "certificate"], t.certificate, ["x509"], "a TLS certificate");
      if (t.client_ca !== null) reference([...p, "client_ca"], t.client_ca, ["x509-ca"], "the client CA");
      if (t.listen === t.forward) report([...p, "forward"], "forward must differ from listen");
    });
    service.tls.outbound.forEach((t, j) => {
      const p: FieldPath = [...path, "tls", "outbound", j];
      reference([...p, "ca"], t.ca, ["x509-ca"], "the remote's CA");
      if (t.certificate !== null) reference([...p, "certificate"], t.certificate, ["x509"], "the client certificate");
    });
  }

  function checkTemplate(path: FieldPath, text: string, textOnly: boolean): void {
    const { parts, errors } = parseTemplate(text);
    for (const e of errors) report(path, e.message);
    for (const part of parts) {
      if (part.type !== "secret" || part.name === "") continue;
      if (!declared.secrets.has(part.name)) {
        report(path, `template names no declared secret "${part.name}"${didYouMean(part.name, declared.secrets)}`);
        continue;
      }
      const kind = kindOf(part.name);
      // An unknown format is reported by parseTemplate; whether it fits the kind is moot.
      if (kind === undefined || part.format === undefined || !FORMATS.includes(part.format)) continue;
      const allowed = kind === null ? GENERIC_FORMATS : KIND_FORMATS[kind].formats;
      if (!allowed.includes(part.format)) {
        const what =
          kind === null ? `"${part.name}" is imported without a kind` : `"${part.name}" is ${a(kind)} secret`;
        report(path, `format ${part.format} does not apply: ${what}; expected one of ${allowed.join(", ")}`);
      } else if (textOnly && part.format === "raw" && kind !== "ascii") {
        report(
          path,
          `format raw puts ${kind === null ? "possibly binary" : `${kind}`} bytes into text that cannot hold NUL: expected hex, base64 or base64url here`,
        );
      }
    }
  }

  return problems;
}

function checkRules(rules: readonly AccessRuleT[], path: FieldPath, report: (p: FieldPath, m: string) => void): void {
  const words = rules.filter((r) => r === "ANY" || r === "NONE");
  if (words.length > 0 && rules.length > 1) {
    const i = rules.findIndex((r) => r === "ANY" || r === "NONE");
    report(
      [...path, i],
      `${rules[i]} cannot be combined with other rules (${rules[i] === "ANY" ? "it already admits everyone" : "it admits nobody"})`,
    );
  }
  const seen = new Set<string>();
  rules.forEach((rule, i) => {
    const key = JSON.stringify(rule);
    if (seen.has(key)) report([...path, i], "duplicate rule");
    seen.add(key);
    if (typeof rule === "string") return;
    const signers = "require_all" in rule ? rule.require_all : rule.require_at_least.of;
    const listPath: FieldPath =
      "require_all" in rule ? [...path, i, "require_all"] : [...path, i, "require_at_least", "of"];
    const unique = new Set<string>();
    signers.forEach((s, j) => {
      // One identity listed twice would let one signature count twice.
      if (unique.has(s))
        report([...listPath, j], `${s === "CREATOR" ? "CREATOR" : "identity"} listed twice: each signer counts once`);
      unique.add(s);
    });
    if ("require_at_least" in rule && rule.require_at_least.count > unique.size) {
      report(
        [...path, i, "require_at_least", "count"],
        `count ${rule.require_at_least.count} can never be met: only ${unique.size} distinct signer${unique.size === 1 ? "" : "s"} listed`,
      );
    }
  });
}

const KEY_ALGORITHMS: Record<KeyType, (k: KeyObject) => boolean> = {
  "P-256": (k) => k.asymmetricKeyType === "ec" && k.asymmetricKeyDetails?.namedCurve === "prime256v1",
  "P-384": (k) => k.asymmetricKeyType === "ec" && k.asymmetricKeyDetails?.namedCurve === "secp384r1",
  Ed25519: (k) => k.asymmetricKeyType === "ed25519",
  "RSA-2048": (k) => k.asymmetricKeyType === "rsa" && k.asymmetricKeyDetails?.modulusLength === 2048,
  "RSA-3072": (k) => k.asymmetricKeyType === "rsa" && k.asymmetricKeyDetails?.modulusLength === 3072,
};

/** "an ec secp521r1", "an ed448": what a key is, for a message (never what it holds). */
function describeKey(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const bits = key.asymmetricKeyDetails?.modulusLength;
  return a(`${key.asymmetricKeyType ?? "unknown"}${curve ? ` ${curve}` : ""}${bits ? ` ${bits}-bit` : ""}`);
}

const GENERATION_FIELDS = ["common_name", "san", "issuer", "valid_for", "usage", "key_type"] as const;

/** Checks a secret the CAS makes or is given; returns the key of a given certificate that reads. */
function checkGeneratedSecret(
  secret: GeneratedSecret,
  path: FieldPath,
  report: (p: FieldPath, m: string, at?: PolicyProblem["at"]) => void,
): KeyObject | undefined {
  // A redacted value stands for the value the CAS holds: only the CAS can check it.
  if ("value" in secret && secret.value === REDACTED) return;
  const valuePath: FieldPath = [...path, "value"];
  switch (secret.kind) {
    case "ascii":
      if (secret.value !== undefined && secret.size !== undefined && secret.size !== secret.value.length) {
        report(
          [...path, "size"],
          `size ${secret.size} does not match the value's length (${secret.value.length} characters): give one or the other`,
        );
      }
      return;
    case "binary":
      if (secret.value !== undefined && secret.size !== undefined && secret.size !== secret.value.length / 2) {
        report(
          [...path, "size"],
          `size ${secret.size} does not match the value's length (${secret.value.length / 2} bytes): give one or the other`,
        );
      }
      return;
    case "private-key": {
      if (secret.value === undefined) return;
      const read = readPrivateKeyValue(secret.value);
      if ("problem" in read) report(valuePath, read.problem);
      else if (!KEY_ALGORITHMS[secret.key_type](read.key))
        report(valuePath, `the key is not of key_type ${secret.key_type} (P-256 when key_type is absent)`);
      return;
    }
    case "x509-ca":
    case "x509": {
      if (secret.value === undefined) return;
      // An explicit certificate is taken as it is: fields that describe generation would be ignored.
      const fields = secret as unknown as Record<string, unknown>;
      for (const f of GENERATION_FIELDS) {
        if (fields[f] !== undefined && fields[f] !== null) {
          report([...path, f], `${f} cannot be combined with value: an explicit certificate is used as it is`);
        }
      }
      const read = readCertificateValue(secret.value);
      if ("problem" in read) report(valuePath, read.problem);
      else if (secret.kind === "x509-ca" && !read.value.certificates[0]!.ca)
        report(valuePath, "the certificate is not a CA certificate (basicConstraints cA is not set)");
      else return read.value.key;
      return;
    }
  }
}

function checkIssuerCycles(secrets: readonly PolicySecret[], report: (p: FieldPath, m: string) => void): void {
  const issuerOf = new Map<string, string>();
  const index = new Map<string, number>();
  secrets.forEach((s, i) => {
    index.set(s.name, i);
    if (!isImport(s) && s.kind === "x509-ca" && typeof s.issuer === "string" && s.issuer !== s.name)
      issuerOf.set(s.name, s.issuer);
  });
  const reported = new Set<string>();
  for (const start of issuerOf.keys()) {
    const chain: string[] = [start];
    let next = issuerOf.get(start);
    while (next !== undefined && !chain.includes(next)) {
      chain.push(next);
      next = issuerOf.get(next);
    }
    if (next !== undefined && next === start && !reported.has(start)) {
      for (const n of chain) reported.add(n);
      report(["secrets", index.get(start)!, "issuer"], `issuer cycle: ${[...chain, start].join(" → ")}`);
    }
  }
}

function duplicates<T>(
  items: readonly T[],
  key: (item: T) => string,
  path: FieldPath,
  field: string,
  what: string,
  report: (p: FieldPath, m: string) => void,
): void {
  const first = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    const j = first.get(k);
    if (j !== undefined) report([...path, i, field], `duplicate ${what} "${k}" (first at ${formatIndex(path, j)})`);
    else first.set(k, i);
  });
}

const formatIndex = (path: FieldPath, i: number) => `${String(path[path.length - 1])}[${i}]`;

/** Whether `inner` is strictly below directory `outer`. */
const isInside = (inner: string, outer: string) => (outer === "/" ? inner !== "/" : inner.startsWith(`${outer}/`));
