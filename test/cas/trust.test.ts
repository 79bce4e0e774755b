/**
 * What the CAS trusts besides the pinned roots: LAS keys and collateral, imported by
 * administrators, sealed in the store, and used to verify evidence as the runtime presents it.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { signSimReport } from "../../src/attestation/sim/evidence.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { verifyEvidence } from "../../src/cas/evidence.ts";
import type { TrustStore } from "../../src/cas/trust-store.ts";
import { CryptoWorker } from "../../src/crypto/crypto-worker.ts";
import { spkiHash } from "../../src/crypto/keys.ts";
import { checkSignature, type SignatureCheck } from "../../src/crypto/signature-check.ts";
import type { Evidence } from "../../src/protocol/attestation.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

const VECTORS = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors");
const dcap = (tee: string) =>
  JSON.parse(readFileSync(join(VECTORS, "intel-dcap", `${tee}_quote_collateral.json`), "utf8"));
const quote = (tee: string) => readFileSync(join(VECTORS, "intel-dcap", `${tee}_quote`)).toString("base64");
const vcekPem = () =>
  `-----BEGIN CERTIFICATE-----\n${readFileSync(join(VECTORS, "amd-snp", "vcek_milan.der"))
    .toString("base64")
    .replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`;
const snpReport = () =>
  Buffer.from(readFileSync(join(VECTORS, "amd-snp", "report_milan.hex"), "utf8").trim(), "hex").toString("base64");
const at = new Date("2025-07-01T00:00:00Z");
/** Evidence verified with its signature checked on this thread: what the crypto thread's answers must equal. */
const verifyHere = (trust: TrustStore, evidence: Evidence, when?: Date) =>
  verifyEvidence(trust, evidence, async (check) => checkSignature(check), { at: when });

let cas: TestCas;
let admin: TestIdentity;
let other: TestIdentity;
before(async () => {
  admin = await makeIdentity("admin");
  other = await makeIdentity("other");
  cas = await startTestCas({ admins: [admin.hash] });
});
after(() => cas.dispose());

describe("administration", () => {
  test("only administrators enrol LAS keys and import collateral; refusals are audited", async () => {
    await assert.rejects(cas.client(other).request("POST", "/v1/las", { key: "ab".repeat(32) }), { status: 403 });
    await assert.rejects(cas.client(other).request("POST", "/v1/collateral", { dcap: dcap("sgx") }), { status: 403 });
    await cas.client(admin).request("POST", "/v1/las", { key: "ab".repeat(32) });
    const list = await cas.client(other).request<{ keys: string[] }>("GET", "/v1/las");
    assert.deepEqual(list.keys, ["ab".repeat(32)]);
    const audit = await cas
      .client(other)
      .request<{ entries: { entry?: { action: string; outcome: string } }[] }>("GET", "/v1/audit");
    assert.ok(audit.entries.some((e) => e.entry?.action === "las.enrol" && e.entry.outcome === "refused"));
  });

  test("a CAS with no administrators refuses everyone", async () => {
    const closed = await startTestCas();
    try {
      await assert.rejects(closed.client(admin).request("POST", "/v1/las", { key: "ab".repeat(32) }), { status: 403 });
    } finally {
      await closed.dispose();
    }
  });
});

describe("collateral", () => {
  test("PCCS collateral and a VCEK are verified on import and listed", async () => {
    const c = cas.client(admin);
    const sgx = await c.request<{ tee: string; fmspc: string }>("POST", "/v1/collateral", { dcap: dcap("sgx") });
    assert.deepEqual([sgx.tee, sgx.fmspc], ["SGX", "00A067110000"]);
    await c.request("POST", "/v1/collateral", { dcap: dcap("tdx") });
    const vcek = await c.request<{ key_type: string; product: string }>("POST", "/v1/collateral", {
      amd_certificate: vcekPem(),
    });
    assert.deepEqual([vcek.key_type, vcek.product], ["VCEK", "Milan"]);
    const list = await c.request<{ collateral: { kind: string }[] }>("GET", "/v1/collateral");
    assert.equal(list.collateral.length, 3);
  });

  test("a Turin VCEK (8-byte hwID) imported is found for its chip's reports (CHIP_ID: the hwID and 56 zeros)", async () => {
    const dir = join(VECTORS, "more", "snp-turin-msft");
    const imported = await cas.client(admin).request<{ product: string; chip: string }>("POST", "/v1/collateral", {
      amd_certificate: readFileSync(join(dir, "turin_vcek.pem"), "utf8"),
    });
    assert.deepEqual([imported.product, imported.chip], ["Turin", "59790fb1c39f35c1"]);
    const report = readFileSync(join(dir, "turin_attestation_report.bin")).toString("base64");
    const v = await verifyHere(
      cas.running.service.trust,
      { tee: "snp", quote: report },
      new Date("2026-03-01T00:00:00Z"),
    );
    assert.equal(v.details.product, "Turin");
  });

  test("altered collateral and foreign certificates are refused", async () => {
    const c = cas.client(admin);
    const altered = { ...dcap("sgx"), tcb_info: dcap("sgx").tcb_info.replace("SWHardeningNeeded", "UpToDate") };
    await assert.rejects(c.request("POST", "/v1/collateral", { dcap: altered }), {
      status: 400,
      code: "bad_collateral",
    });
    await assert.rejects(
      c.request("POST", "/v1/collateral", { amd_certificate: cas.running.identity.certificatePem }),
      { status: 400, code: "bad_collateral" },
    );
    await assert.rejects(c.request("POST", "/v1/collateral", {}), { status: 400 });
  });

  test("evidence is verified with what was imported; the declared TEE must be what the evidence is", async () => {
    const trust = cas.running.service.trust;
    assert.equal(
      (await verifyHere(trust, { tee: "sgx", quote: quote("sgx") }, at)).status,
      "ConfigurationAndSWHardeningNeeded",
    );
    assert.equal((await verifyHere(trust, { tee: "tdx", quote: quote("tdx") }, at)).status, "UpToDate");
    assert.equal((await verifyHere(trust, { tee: "snp", quote: snpReport() }, at)).tee, "snp");
    const refused = (check: string, p: Promise<unknown>) =>
      assert.rejects(p, (e: unknown) => e instanceof VerificationError && e.check === check);
    await refused("format", verifyHere(trust, { tee: "tdx", quote: quote("sgx") }, at));
    await refused("format", verifyHere(trust, { tee: "snp", quote: quote("sgx") }, at));
    await refused("format", verifyHere(trust, { tee: "sim", quote: quote("sgx") }, at));
  });

  test("evidence's signature on the crypto thread: the verdict and every refusal as on the event loop", async () => {
    const trust = cas.running.service.trust;
    const worker = new CryptoWorker();
    let onThread = 0;
    const checkOnThread = (check: SignatureCheck) => {
      onThread++;
      return worker.verify(check);
    };
    try {
      const report = snpReport();
      const here = await verifyHere(trust, { tee: "snp", quote: report }, at);
      assert.deepEqual(await verifyEvidence(trust, { tee: "snp", quote: report }, checkOnThread, { at }), here);
      assert.equal(onThread, 1);
      assert.equal(worker.threaded, true, "the signature was checked on the thread");

      // Each altered report is refused for the same reason on both: a byte of the signature, a
      // byte of what it signs, the report sent with a key that is not its chip's, no key at all.
      const altered = (offset: number) => {
        const bytes = Buffer.from(report, "base64");
        bytes[offset]! ^= 1;
        return bytes.toString("base64");
      };
      const cases: Evidence[] = [
        { tee: "snp", quote: altered(0x2a0) },
        { tee: "snp", quote: altered(0x50) },
        { tee: "snp", quote: altered(0x1a0) },
        { tee: "snp", quote: report, aux: cas.running.identity.certificatePem },
        { tee: "snp", quote: quote("sgx") },
        { tee: "snp", quote: Buffer.concat([Buffer.from(report, "base64"), Buffer.from([1])]).toString("base64") },
      ];
      for (const evidence of cases) {
        let expected: unknown;
        await assert.rejects(verifyHere(trust, evidence, at), (e) => {
          expected = e;
          return true;
        });
        await assert.rejects(verifyEvidence(trust, evidence, checkOnThread, { at }), (e: Error) => {
          assert.equal(e.constructor, (expected as Error).constructor);
          assert.equal(e.message, (expected as Error).message);
          return true;
        });
      }
      assert.ok(onThread >= 3, "the altered reports' signatures were checked on the thread");

      // DCAP quotes too (P-256): the same verdict, the quote's signature checked on the thread;
      // an altered quote refused for the same reason.
      for (const tee of ["sgx", "tdx"] as const) {
        const before: number = onThread;
        assert.deepEqual(
          await verifyEvidence(trust, { tee, quote: quote(tee) }, checkOnThread, { at }),
          await verifyHere(trust, { tee, quote: quote(tee) }, at),
        );
        assert.equal(onThread, before + 1);
        const bytes = Buffer.from(quote(tee), "base64");
        bytes[60]! ^= 1; // in the signed report body
        const altered: Evidence = { tee, quote: bytes.toString("base64") };
        await assert.rejects(verifyHere(trust, altered, at), /not signed by the attestation key/);
        await assert.rejects(
          verifyEvidence(trust, altered, checkOnThread, { at }),
          /not signed by the attestation key/,
        );
      }

      // The thread failing is not the evidence's answer: with two keys known for the chip, the
      // failure on the first (the right one) is not replaced by the second's refusal — it stays
      // an internal error (an audited 500), not a 403 for evidence that would have verified.
      const other = (await makeIdentity("not an AMD key")).certificatePem;
      const twoKeys = { amdKeysFor: () => [readFileSync(join(VECTORS, "amd-snp", "vcek_milan.der")), other] };
      const failed = new Error("the crypto thread failed: it exited with code 1");
      await assert.rejects(
        verifyEvidence(twoKeys as unknown as TrustStore, { tee: "snp", quote: report }, () => Promise.reject(failed), {
          at,
        }),
        (e) => e === failed,
      );

      // onPrepared (where the CAS asks for its key agreement) runs only for evidence that passed
      // every check but its signature — never for made-up evidence — and before the signature
      // check is asked for, in the same turn.
      const events: string[] = [];
      const recording = (check: SignatureCheck) => {
        events.push("check");
        return worker.verify(check);
      };
      await verifyEvidence(trust, { tee: "sgx", quote: quote("sgx") }, recording, {
        at,
        onPrepared: () => events.push("prepared"),
      });
      assert.deepEqual(events, ["prepared", "check"]);
      events.length = 0;
      for (const madeUp of [
        { tee: "sgx", quote: Buffer.from("not a quote").toString("base64") },
        { tee: "snp", quote: quote("sgx") },
        { tee: "sim", quote: Buffer.from("{}").toString("base64") },
      ] as Evidence[])
        await assert.rejects(
          verifyEvidence(trust, madeUp, recording, { at, onPrepared: () => events.push("prepared") }),
          VerificationError,
        );
      assert.deepEqual(events, [], "nothing asked of the thread for made-up evidence");

      // A stopped thread: the check is made on the calling thread, with the same answer.
      await worker.close();
      assert.deepEqual(await verifyEvidence(trust, { tee: "snp", quote: report }, worker.verify, { at }), here);
      await assert.rejects(
        verifyEvidence(trust, { tee: "snp", quote: altered(0x2a0) }, worker.verify, { at }),
        /signature does not verify/,
      );
    } finally {
      await worker.close();
    }
  });

  test("simulated evidence only from an enrolled LAS", async () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const evidence = Buffer.from(
      JSON.stringify(signSimReport(privateKey, "cd".repeat(32), Buffer.alloc(64, 1))),
    ).toString("base64");
    const trust = cas.running.service.trust;
    await assert.rejects(verifyHere(trust, { tee: "sim", quote: evidence }), /not enrolled/);
    await cas.client(admin).request("POST", "/v1/las", { key: spkiHash(privateKey) });
    const v = await verifyHere(trust, { tee: "sim", quote: evidence });
    assert.equal(v.simulated, true);
    assert.equal(v.measurements.digest, "cd".repeat(32));
    // With the signature checked on the crypto thread: the same verdict; a report signed by
    // another key than the one it names, refused the same way.
    const worker = new CryptoWorker();
    try {
      const now = new Date();
      assert.deepEqual(
        await verifyEvidence(trust, { tee: "sim", quote: evidence }, worker.verify, { at: now }),
        await verifyHere(trust, { tee: "sim", quote: evidence }, now),
      );
      assert.equal(worker.threaded, true);
      const parsed = JSON.parse(Buffer.from(evidence, "base64").toString());
      const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
      parsed.signature = signSimReport(
        other,
        "cd".repeat(32),
        Buffer.alloc(64, 1),
        new Date(parsed.report.time),
      ).signature;
      const forged = Buffer.from(JSON.stringify(parsed)).toString("base64");
      await assert.rejects(verifyHere(trust, { tee: "sim", quote: forged }), /signature does not verify/);
      await assert.rejects(
        verifyEvidence(trust, { tee: "sim", quote: forged }, worker.verify),
        /signature does not verify/,
      );
    } finally {
      await worker.close();
    }
  });

  test("what was imported survives a restart, sealed; a tampered row stops the CAS", async () => {
    cas = await cas.restart();
    const list = await cas.client(admin).request<{ collateral: unknown[] }>("GET", "/v1/collateral");
    assert.equal(list.collateral.length, 4); // SGX, TDX, the Milan and the Turin VCEK
    assert.ok(cas.running.service.trust.lasKeys().has("ab".repeat(32)));
    await cas.stop();
    const db = new DatabaseSync(join(cas.dataDir, "cas.db"));
    const label = `las/${"ab".repeat(32)}`;
    const row = db.prepare("SELECT key, value FROM meta WHERE key = ?").get(label) as {
      key: string;
      value: Uint8Array;
    };
    const value = Buffer.from(row.value);
    value[value.length - 1]! ^= 1;
    db.prepare("UPDATE meta SET value = ? WHERE key = ?").run(value, label);
    db.close();
    await assert.rejects(cas.restart(), new RegExp(`${label} does not open`));
  });
});
