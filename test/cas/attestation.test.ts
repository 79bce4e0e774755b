/**
 * The attestation and configuration protocol (DESIGN.md §5) against a real CAS and a real LAS:
 * a runtime's flow in simulation mode, and every refusal, each leaving nothing released.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { compactDecrypt } from "jose";
import { LasProvider } from "../../src/attestation/providers/las.ts";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { AttestationService, expectedReportData, NONCE_TTL_MS } from "../../src/cas/attestation.ts";
import { RateLimiter, sourceOf } from "../../src/cas/rate-limit.ts";
import type { CasError } from "../../src/cas/service.ts";
import { CasClient } from "../../src/client/cas-client.ts";
import { CryptoWorker } from "../../src/crypto/crypto-worker.ts";
import { loadOrCreateNodeKey, type RunningLas, startLas } from "../../src/las/server.ts";
import { Configuration } from "../../src/protocol/attestation.ts";
import { makeIdentity, refusedWith, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-attest-flow-"));
let cas: TestCas;
let las: RunningLas;
let owner: TestIdentity;
let runtime: CasClient;
const program = join(dir, "app.sh");
const other = join(dir, "other.sh");

before(async () => {
  writeFileSync(program, "#!/bin/sh\necho app\n", { mode: 0o755 });
  writeFileSync(other, "#!/bin/sh\necho other\n", { mode: 0o755 });
  owner = await makeIdentity("owner");
  cas = await startTestCas({ admins: [owner.hash] });
  const { key } = await loadOrCreateNodeKey(join(dir, "las-key.pem"));
  las = await startLas({ listen: "127.0.0.1:0", key });
  await cas.client(owner).request("POST", "/v1/las", { key: las.key });
  runtime = new CasClient({ url: cas.running.url, casKey: cas.running.identity.hash });
  const digest = measureFile(await import("node:fs").then((fs) => fs.readFileSync(program)));
  // "strict" names the same program as an SGX enclave and accepts only hardware evidence.
  const policy = (name: string, mode: string, measurement: string) => `version: "1"
name: ${name}
security:
  attestation: {mode: ${mode}}
services:
  - name: web
    measurements: [${measurement}]
    command: [${program}, "--key=$$cloister::api_key$$"]
    environment: {API_KEY: "$$cloister::api_key$$", LITERAL: "cost $$$$5"}
    pwd: /tmp
    files:
      - {path: /etc/app/key.bin, content: "$$cloister::blob:raw$$", mode: "0400"}
      - {path: /etc/app/tls.crt, content: "$$cloister::web_cert:chain$$"}
    tls:
      inbound: [{listen: "127.0.0.1:8443", forward: "127.0.0.1:8080", certificate: web_cert}]
secrets:
  - {name: api_key, kind: ascii, size: 24}
  - {name: blob, kind: binary, size: 16}
  - {name: shop_ca, kind: x509-ca}
  - {name: web_cert, kind: x509, issuer: shop_ca, san: ["dns:localhost"]}
`;
  await cas
    .client(owner)
    .request("POST", "/v1/policies", { policy: policy("shop", "simulation", `{tee: sim, digest: ${digest}}`) });
  await cas
    .client(owner)
    .request("POST", "/v1/policies", { policy: policy("strict", "hardware", `{tee: sgx, mrenclave: ${digest}}`) });
});
after(async () => {
  await las.close();
  await cas.dispose();
  rmSync(dir, { recursive: true, force: true });
});

interface Attempt {
  readonly key: KeyObject;
  readonly spki: Buffer;
  readonly nonce: string;
  readonly quote: string;
}

/** What a runtime does before it sends its evidence. */
async function prepare(configId: string, measured = program, boundSpki?: Buffer): Promise<Attempt> {
  const { nonce } = await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
    config_id: configId,
  });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  // `boundSpki`: evidence bound to a key of the test's choosing (one that is not a key, say).
  const spki = boundSpki ?? publicKey.export({ type: "spki", format: "der" });
  const evidence = await new LasProvider(las.url, measured).evidence(
    expectedReportData(Buffer.from(nonce, "base64"), spki),
  );
  return { key: privateKey, spki, nonce, quote: evidence.quote.toString("base64") };
}

/** An attestation request with evidence bound to `nonce` (from any AttestationService). */
async function boundRequest(configId: string, nonce: string) {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const evidence = await new LasProvider(las.url, program).evidence(
    expectedReportData(Buffer.from(nonce, "base64"), spki),
  );
  return {
    config_id: configId,
    nonce,
    evidence: { tee: "sim" as const, quote: evidence.quote.toString("base64") },
    spki: spki.toString("base64"),
  };
}

const send = (configId: string, a: Attempt, override: Partial<{ nonce: string; quote: string; spki: string }> = {}) =>
  runtime.request<{ configuration: string }>("POST", "/v1/attestation", {
    config_id: configId,
    nonce: override.nonce ?? a.nonce,
    evidence: { tee: "sim", quote: override.quote ?? a.quote },
    spki: override.spki ?? a.spki.toString("base64"),
  });

const refused = refusedWith;

interface AttestationEntry {
  readonly action: string;
  readonly target: string;
  readonly outcome: string;
  readonly reason: string;
}

/** The audit log's attestation entries about `configId`, oldest first. */
async function attestationsOf(configId: string): Promise<AttestationEntry[]> {
  const audit = await cas.client(owner).request<{ entries: { entry?: AttestationEntry }[] }>("GET", "/v1/audit");
  return audit.entries
    .map((e) => e.entry)
    .filter((e): e is AttestationEntry => e?.action === "attestation" && e.target === configId);
}

describe("the flow", () => {
  test("evidence in, a configuration only K can open out, with a service certificate for K", async () => {
    const a = await prepare("shop/web");
    const { configuration } = await send("shop/web", a);
    assert.equal(configuration.split(".").length, 5, "a compact JWE");
    const { plaintext, protectedHeader } = await compactDecrypt(configuration, a.key);
    assert.deepEqual([protectedHeader.alg, protectedHeader.enc], ["ECDH-ES+A256KW", "A256GCM"]);
    const c = Configuration.parse(JSON.parse(Buffer.from(plaintext).toString()));
    assert.equal(c.config_id, "shop/web");
    assert.match(c.environment.API_KEY!, /^[A-Za-z0-9]{24}$/);
    assert.equal(c.command[1], `--key=${c.environment.API_KEY}`);
    assert.equal(c.environment.LITERAL, "cost $$5");
    assert.equal(c.pwd, "/tmp");
    assert.equal(Buffer.from(c.files[0]!.content, "base64").length, 16);
    assert.match(
      Buffer.from(c.files[1]!.content, "base64").toString(),
      /^-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----/,
    );
    assert.equal(c.verdict.simulated, true);
    const [leaf, issuer] = c.certificate_chain
      .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!
      .map((p) => new X509Certificate(p));
    assert.ok(
      leaf!.publicKey.export({ type: "spki", format: "der" }).equals(a.spki),
      "the service certificate is for K",
    );
    assert.ok(leaf!.verify(issuer!.publicKey));
    assert.match(leaf!.subjectAltName!, /URI:urn:cloister:shop\/web/);
    assert.ok(c.tls_material.web_cert?.key, "the TLS shield gets its certificate and key");
    // No other key can open it.
    await assert.rejects(compactDecrypt(configuration, generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey));
  });
});

describe("refusals", () => {
  test("a replayed nonce", async () => {
    const a = await prepare("shop/web");
    await send("shop/web", a);
    await refused(send("shop/web", a), 403, /nonce was already used/);
  });

  test("replayed evidence with a fresh nonce", async () => {
    const a = await prepare("shop/web");
    const b = await prepare("shop/web");
    await refused(send("shop/web", b, { quote: a.quote }), 403, /does not bind this nonce and key/);
  });

  test("evidence bound to another key", async () => {
    const a = await prepare("shop/web");
    const otherKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    await refused(send("shop/web", a, { spki: otherKey.toString("base64") }), 403, /does not bind/);
  });

  test("a runtime key that is not a P-256 point: another curve, off the curve, cut short", async () => {
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey.export({ type: "spki", format: "der" });
    const offCurve = flipLastByte((await prepare("shop/web")).spki);
    for (const [spki, why] of [
      [p384, /expected the runtime's P-256 public key \(SubjectPublicKeyInfo, base64 DER\)$/],
      [offCurve, /expected the runtime's P-256 public key .*: the point is not on the curve$/],
      [(await prepare("shop/web")).spki.subarray(0, 60), /expected the runtime's P-256 public key/],
    ] as const) {
      // Evidence bound to that very key: only the key is wrong.
      const a = await prepare("shop/web", program, spki);
      const grantsBefore = (await attestationsOf("shop/web")).filter((e) => e.outcome === "granted").length;
      await refused(send("shop/web", a), 400, why);
      const entries = await attestationsOf("shop/web");
      assert.equal(entries.filter((e) => e.outcome === "granted").length, grantsBefore, "nothing granted");
      assert.match(entries.at(-1)!.reason, why);
    }
  });

  test("the crypto thread failing: a 500 with no internal detail, audited, nothing granted", async () => {
    // A CryptoWorker whose thread fails (its own failures are tested in crypto-worker.test.ts).
    const failing = (what: "verify" | "manageKey") => {
      const crypto = new CryptoWorker();
      crypto[what] = async () => {
        throw new Error("the crypto thread failed: it exited with code 1");
      };
      return new AttestationService(cas.running.service, { crypto });
    };
    for (const [what, why] of [
      ["verify", /^the evidence could not be verified \(internal error\)$/],
      ["manageKey", /^the configuration could not be sealed \(internal error\)$/],
    ] as const) {
      const attestation = failing(what);
      try {
        const grantsBefore = (await attestationsOf("shop/web")).filter((e) => e.outcome === "granted").length;
        await assert.rejects(
          attestation.attest(await boundRequest("shop/web", attestation.challenge("shop/web").nonce)),
          (e: CasError) => e.status === 500 && e.code === "internal" && why.test(e.message),
        );
        const entries = await attestationsOf("shop/web");
        assert.equal(entries.filter((e) => e.outcome === "granted").length, grantsBefore, "nothing granted");
        assert.match(entries.at(-1)!.reason, why);
      } finally {
        await attestation.close();
      }
    }
  });

  test("the wrong program (measurement)", async () => {
    const a = await prepare("shop/web", other);
    await refused(send("shop/web", a), 403, /^measurement [0-9a-f]{12}… is not allowed for shop\/web/);
  });

  test("simulated evidence for a policy without mode: simulation", async () => {
    const a = await prepare("strict/web");
    await refused(send("strict/web", a), 403, /simulated evidence, but the policy's attestation mode is hardware/);
  });

  test("SEV-SNP evidence: its signature checked on the crypto thread, then refused as not bound; a malformed report as malformed", async () => {
    const vectors = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "amd-snp");
    const report = Buffer.from(readFileSync(join(vectors, "report_milan.hex"), "utf8").trim(), "hex");
    const vcek = readFileSync(join(vectors, "vcek_milan.der")).toString("base64");
    const snp = (quote: Buffer) => ({
      config_id: "strict/web",
      nonce: "",
      evidence: { tee: "snp" as const, quote: quote.toString("base64"), aux: vcek },
      spki: "",
    });
    const attestation = new AttestationService(cas.running.service);
    try {
      const { nonce } = attestation.challenge("strict/web");
      const { spki } = await prepare("shop/web");
      const request = { ...snp(report), nonce, spki: spki.toString("base64") };
      // A real report, verified (its P-384 signature on the thread), but its report_data was not
      // made for this nonce and key.
      await assert.rejects(
        attestation.attest(request),
        (e: CasError) => e.status === 403 && /does not bind this nonce and key/.test(e.message),
      );
      // Padding after the report that is not zero: refused as malformed (403, not a 500), and
      // the nonce left unspent, as for any evidence not shown bound to it.
      const padded = {
        ...request,
        evidence: { ...request.evidence, quote: Buffer.concat([report, Buffer.from([1])]).toString("base64") },
      };
      for (let i = 0; i < 2; i++)
        await assert.rejects(
          attestation.attest(padded),
          (e: CasError) =>
            e.status === 403 && /evidence refused: format: byte 1184 after the 1184-byte report/.test(e.message),
        );
    } finally {
      await attestation.close();
    }
  });

  test("a policy updated while the evidence is being verified: refused (409), not granted on the old version", async () => {
    const digest = measureFile(readFileSync(program));
    const text = (extra: string, measured: string) =>
      `version: "1"\nname: race\n${extra}security:\n  attestation: {mode: simulation}\nservices:\n  - name: web\n    measurements: [{tee: sim, digest: ${measured}}]\n    command: [${program}]\nsecrets:\n  - {name: token, kind: ascii}\n`;
    const created = await cas
      .client(owner)
      .request<{ hash: string }>("POST", "/v1/policies", { policy: text("", digest) });
    const attestation = new AttestationService(cas.running.service);
    try {
      const request = await boundRequest("race/web", attestation.challenge("race/web").nonce);
      // The attestation runs until it waits for the crypto thread; the update, which generates
      // nothing new, lands while it waits: the measurement it presents is withdrawn.
      const attempt = attestation.attest(request);
      await cas.running.service.update(owner.hash, text(`predecessor: ${created.hash}\n`, "ab".repeat(32)), [], "race");
      await assert.rejects(
        attempt,
        (e: CasError) =>
          e.status === 409 && /policy race changed while this attestation was being verified/.test(e.message),
      );
      const audit = await cas
        .client(owner)
        .request<{ entries: { entry?: { action: string; outcome: string; reason: string } }[] }>("GET", "/v1/audit");
      assert.ok(
        audit.entries.some(
          (e) => e.entry?.outcome === "refused" && /changed while this attestation/.test(e.entry.reason),
        ),
        "the refusal is audited",
      );
      // Deleted and made again with the very same text — the same hash — while an attestation
      // waits: still a change (the secrets are new), so refused too; a hash alone would not see it.
      const same = text("", digest);
      await cas.running.service.delete(owner.hash, "race", []);
      const first = await cas.running.service.create(owner.hash, same, []);
      const waitingRequest = await boundRequest("race/web", attestation.challenge("race/web").nonce);
      const waiting = attestation.attest(waitingRequest);
      await cas.running.service.delete(owner.hash, "race", []);
      const second = await cas.running.service.create(owner.hash, same, []);
      assert.equal(second.hash, first.hash, "the same text, the same hash");
      await assert.rejects(
        waiting,
        (e: CasError) => e.status === 409 && /changed while this attestation/.test(e.message),
      );
      await cas.running.service.update(owner.hash, text(`predecessor: ${second.hash}\n`, "ab".repeat(32)), [], "race");

      // Attested again, against the new version: refused for its measurement.
      await assert.rejects(
        attestation.attest(await boundRequest("race/web", attestation.challenge("race/web").nonce)),
        (e: CasError) => e.status === 403 && /is not allowed for race\/web/.test(e.message),
      );
    } finally {
      await attestation.close();
    }
  });

  test("an unknown service or policy; a nonce for another service", async () => {
    await refused(
      runtime.request("POST", "/v1/attestation/challenge", { config_id: "noslash" }),
      400,
      /POLICY\/SERVICE/,
    );
    const a = await prepare("shop/nothing");
    await refused(send("shop/nothing", a), 404, /policy shop has no service nothing/);
    const b = await prepare("shop/web");
    await refused(send("strict/web", b), 403, /nonce was not issued for strict\/web/);
    await send("shop/web", b); // not spent by the refusal: it was never strict/web's
  });

  test("evidence from a LAS the CAS does not trust", async () => {
    const { key } = await loadOrCreateNodeKey(join(dir, "rogue-las.pem"));
    const rogue = await startLas({ listen: "127.0.0.1:0", key });
    try {
      const { nonce } = await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
        config_id: "shop/web",
      });
      const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const spki = publicKey.export({ type: "spki", format: "der" });
      const e = await new LasProvider(rogue.url, program).evidence(
        expectedReportData(Buffer.from(nonce, "base64"), spki),
      );
      await refused(
        runtime.request("POST", "/v1/attestation", {
          config_id: "shop/web",
          nonce,
          evidence: { tee: "sim", quote: e.quote.toString("base64") },
          spki: spki.toString("base64"),
        }),
        403,
        /not enrolled/,
      );
    } finally {
      await rogue.close();
    }
  });

  test("every grant and refusal is audited with its reason", async () => {
    const audit = await cas
      .client(owner)
      .request<{ entries: { entry?: { action: string; outcome: string; reason: string } }[] }>("GET", "/v1/audit");
    const attestations = audit.entries.map((e) => e.entry).filter((e) => e?.action === "attestation");
    assert.ok(attestations.some((e) => e?.outcome === "granted" && /sim \(simulated\)/.test(e.reason)));
    assert.ok(attestations.some((e) => e?.outcome === "refused" && /does not bind/.test(e.reason)));
    assert.ok(attestations.some((e) => e?.outcome === "refused" && /is not allowed for shop\/web/.test(e.reason)));
  });
});

describe("rate limiting", () => {
  test("a token bucket per source address", () => {
    const limiter = new RateLimiter(10, 20);
    let granted = 0;
    for (let i = 0; i < 50; i++) if (limiter.take("a", 0)) granted++;
    assert.equal(granted, 20, "the burst");
    assert.equal(limiter.take("b", 0), true, "another source has its own bucket");
    assert.equal(limiter.take("a", 1000), true, "refilled after a second");
  });

  test("a flood from many addresses does not reset a drained bucket", () => {
    const limiter = new RateLimiter(10, 20);
    while (limiter.take("flooder", 0));
    for (let i = 0; i < 150_000; i++) {
      limiter.take(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, 0);
      if (i % 1000 === 0) assert.equal(limiter.take("flooder", 0), false, `still limited after ${i} other sources`);
    }
  });

  test("sources: an IPv4 address, an IPv6 address's /64", () => {
    assert.equal(sourceOf("192.0.2.7"), "192.0.2.7");
    assert.equal(sourceOf("::ffff:192.0.2.7"), "192.0.2.7");
    assert.equal(sourceOf("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
    assert.equal(sourceOf("2001:db8:1:2::1"), sourceOf("2001:db8:1:2:ffff::9"));
    assert.notEqual(sourceOf("2001:db8:1:2::1"), sourceOf("2001:db8:1:3::1"));
    assert.equal(sourceOf("::1"), "0:0:0:0::/64");
  });

  test("only evidence bound to its nonce spends it: made-up evidence leaves it, and the spent set, alone", async () => {
    const attestation = new AttestationService(cas.running.service, { maxSpentNonces: 1 });
    const { nonce } = attestation.challenge("shop/web");
    for (let i = 0; i < 20; i++)
      await assert.rejects(
        attestation.attest({ config_id: "shop/web", nonce, evidence: { tee: "sim", quote: "" }, spki: "" }),
        (e: CasError) => e.status === 400,
      );
    // Still unspent, and the set (of one) still empty: the rightful runtime gets in with it.
    await attestation.attest(await boundRequest("shop/web", nonce));
    await assert.rejects(attestation.attest(await boundRequest("shop/web", nonce)), /already used/);
  });

  test("bound evidence fills the spent set: past its bound, 503, audited, and the nonce left for later", async () => {
    let now = Date.now();
    const attestation = new AttestationService(cas.running.service, { now: () => now, maxSpentNonces: 2 });
    for (let i = 0; i < 2; i++)
      await attestation.attest(await boundRequest("shop/web", attestation.challenge("shop/web").nonce));
    const third = await boundRequest("shop/web", attestation.challenge("shop/web").nonce);
    await assert.rejects(attestation.attest(third), (e: CasError) => e.status === 503 && /try again/.test(e.message));
    const audit = await cas
      .client(owner)
      .request<{ entries: { entry?: { action: string; outcome: string; reason: string } }[] }>("GET", "/v1/audit");
    assert.ok(
      audit.entries.some((e) => e.entry?.outcome === "refused" && /too many attestations/.test(e.entry.reason)),
      "the busy refusal is audited",
    );
    now += NONCE_TTL_MS / 2;
    await assert.rejects(attestation.attest(third), (e: CasError) => e.status === 503, "still full");
    now += NONCE_TTL_MS / 2 + 1;
    await assert.rejects(attestation.attest(third), /expired/, "the third's own time ran out meanwhile");
    await attestation.attest(await boundRequest("shop/web", attestation.challenge("shop/web").nonce));
  });

  test("a challenge flood stores nothing: after 250,000 unused challenges the next runtime still gets in", async () => {
    const attestation = new AttestationService(cas.running.service, { maxSpentNonces: 1 });
    let last = "";
    for (let i = 0; i < 250_000; i++) last = attestation.challenge("shop/web").nonce;
    await assert.rejects(
      attestation.attest({ config_id: "shop/web", nonce: last, evidence: { tee: "sim", quote: "" }, spki: "" }),
      (e: CasError) => e.status === 400 && /P-256 public key/.test(e.message),
    );
  });
});

/** A copy with its last byte changed: for a P-256 key, y no longer matches x. */
function flipLastByte(bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  copy[copy.length - 1]! ^= 1;
  return copy;
}
