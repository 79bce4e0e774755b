/**
 * Intel DCAP verification on real evidence: the SGX v3 and TDX v4 quotes of
 * ../shared/testvectors with their offline collateral. Every single-bit change of every signed
 * byte is refused; so are wrong roots, collateral of another platform or TEE, collateral
 * outside its window, and a revoked PCK certificate (in a PKI built here, named as fake).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { HEADER_SIZE, parseQuote, SGX_REPORT_SIZE, TD10_REPORT_SIZE } from "../../src/attestation/dcap/abi.ts";
import { Collateral, splitPem } from "../../src/attestation/dcap/collateral.ts";
import { dcapVerdict, verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { decodeEvidence, evidenceKind } from "../../src/attestation/evidence.ts";
import { settingsProblems } from "../../src/attestation/validate.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { type FakeDcap, makeFakeDcap } from "../helpers/fake-dcap.ts";

const DIR = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "intel-dcap");
const at = new Date("2025-07-01T00:00:00Z");
const load = (tee: "sgx" | "tdx") => ({
  quote: readFileSync(join(DIR, `${tee}_quote`)),
  collateral: Collateral.parse(JSON.parse(readFileSync(join(DIR, `${tee}_quote_collateral.json`), "utf8"))),
});
const sgx = load("sgx");
const tdx = load("tdx");

const refusedBy = (check: string | RegExp, f: () => unknown) =>
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof VerificationError, String(e));
    if (typeof check === "string") assert.equal(e.check, check, e.message);
    else assert.match(e.message, check);
    return true;
  });

describe("the vectors give their documented results", () => {
  test("SGX quote v3: ConfigurationAndSWHardeningNeeded with INTEL-SA-00289 and INTEL-SA-00615", () => {
    const v = dcapVerdict(verifyDcapQuote(sgx.quote, sgx.collateral, { at }));
    assert.equal(v.tee, "sgx");
    assert.equal(v.status, "ConfigurationAndSWHardeningNeeded");
    assert.deepEqual(v.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert.equal(v.debug, false);
    assert.match(String(v.measurements.mrenclave), /^33d8736d[0-9a-f]{50}452fbb$/);
    assert.match(String(v.measurements.mrsigner), /^815f42f1[0-9a-f]{50}a3e0e6$/);
    assert.equal(v.measurements.isvprodid, 0);
    assert.equal(v.measurements.isvsvn, 0);
    assert.equal(Buffer.from(v.report_data, "hex").subarray(0, 13).toString(), "Hello, world!");
    assert.equal(v.collateral_expires, "2025-07-19T10:01:18.000Z");
  });

  test("TDX quote v4 (70 bytes of trailing zeros): UpToDate, no advisories", () => {
    assert.equal(tdx.quote.length, 5006);
    const v = dcapVerdict(verifyDcapQuote(tdx.quote, tdx.collateral, { at }));
    assert.equal(v.tee, "tdx");
    assert.equal(v.status, "UpToDate");
    assert.deepEqual(v.advisories, []);
    assert.equal(v.debug, false);
    assert.match(String(v.measurements.mrtd), /^91eb2b44[0-9a-f]{80}873118b7$/);
    assert.equal(v.details.module_status, "UpToDate");
  });

  test("evidence as hex and base64 decodes to the quote", () => {
    assert.deepEqual(decodeEvidence(Buffer.from(sgx.quote.toString("hex"))), sgx.quote);
    assert.deepEqual(decodeEvidence(Buffer.from(sgx.quote.toString("base64"))), sgx.quote);
    assert.equal(evidenceKind(sgx.quote), "dcap-quote");
    assert.equal(evidenceKind(tdx.quote), "dcap-quote");
  });
});

/** Flip every bit of [from, to) and collect the flips that were accepted. */
function acceptedFlips(quote: Buffer, collateral: Collateral, from: number, to: number): string[] {
  const accepted: string[] = [];
  for (let byte = from; byte < to; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      const copy = Buffer.from(quote);
      copy[byte]! ^= 1 << bit;
      try {
        verifyDcapQuote(copy, collateral, { at });
        accepted.push(`${byte}.${bit}`);
      } catch (error) {
        if (!(error instanceof VerificationError)) throw new Error(`flip ${byte}.${bit}: ${error}`);
      }
    }
  }
  return accepted;
}

describe("every single-bit change of every signed byte is refused (exhaustive)", () => {
  for (const [name, v, body] of [
    ["SGX", sgx, SGX_REPORT_SIZE],
    ["TDX", tdx, TD10_REPORT_SIZE],
  ] as const) {
    test(`${name}: header and report body (signed by the attestation key)`, () => {
      assert.deepEqual(acceptedFlips(v.quote, v.collateral, 0, HEADER_SIZE + body), []);
    });
    test(`${name}: quote signature, attestation key, QE report, its signature and auth data`, () => {
      const start = HEADER_SIZE + body + 4; // after the signature data length
      const q = parseQuote(v.quote);
      // v4 wraps the QE report certification data in a type-6 header of 6 bytes.
      const qeStart = start + 128 + (q.version === 3 ? 0 : 6);
      const end = qeStart + SGX_REPORT_SIZE + 64 + 2 + q.certification.qeAuthData.length;
      assert.deepEqual(acceptedFlips(v.quote, v.collateral, start, end), []);
    });
  }
});

describe("collateral", () => {
  test("outside its window, before and after", () => {
    refusedBy("expired collateral", () =>
      verifyDcapQuote(sgx.quote, sgx.collateral, { at: new Date("2025-07-20T00:00:00Z") }),
    );
    refusedBy("expired collateral", () =>
      verifyDcapQuote(sgx.quote, sgx.collateral, { at: new Date("2025-06-19T10:00:00Z") }),
    );
    refusedBy("expired collateral", () =>
      verifyDcapQuote(tdx.quote, tdx.collateral, { at: new Date("2025-07-19T10:00:36Z") }),
    );
  });

  test("another platform's or TEE's collateral", () => {
    refusedBy(/another CA|FMSPC|collateral for a/, () => verifyDcapQuote(tdx.quote, sgx.collateral, { at }));
    refusedBy(/another CA|FMSPC|collateral for a/, () => verifyDcapQuote(sgx.quote, tdx.collateral, { at }));
    // SGX CRLs and chains with the (validly signed) TDX TCB info: the FMSPC differs.
    const mixed = {
      ...sgx.collateral,
      tcb_info: tdx.collateral.tcb_info,
      tcb_info_signature: tdx.collateral.tcb_info_signature,
    };
    refusedBy(/FMSPC B0C06F000000, the platform is 00A067110000/, () => verifyDcapQuote(sgx.quote, mixed, { at }));
    // The TD QE's identity for an SGX quote.
    const wrongQe = {
      ...sgx.collateral,
      qe_identity: tdx.collateral.qe_identity,
      qe_identity_signature: tdx.collateral.qe_identity_signature,
    };
    refusedBy(/TD_QE identity for a sgx quote/, () => verifyDcapQuote(sgx.quote, wrongQe, { at }));
  });

  test("altered collateral: TCB info text, QE identity, CRLs", () => {
    const edit = (field: keyof Collateral, f: (s: string) => string) => ({
      ...sgx.collateral,
      [field]: f(sgx.collateral[field]),
    });
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("tcb_info", (s) => s.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"')),
        { at },
      ),
    );
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("tcb_info", (s) => s.replace("SWHardeningNeeded", "UpToDate")),
        { at },
      ),
    );
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("qe_identity", (s) => s.replace('"isvprodid":1', '"isvprodid":2')),
        { at },
      ),
    );
    refusedBy("CRL", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("pck_crl", (s) => `${s.slice(0, 100)}${s[100] === "0" ? "1" : "0"}${s.slice(101)}`),
        { at },
      ),
    );
    refusedBy("CRL", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("root_ca_crl", (s) => `${s.slice(0, -10)}${s.slice(-10, -9) === "0" ? "1" : "0"}${s.slice(-9)}`),
        { at },
      ),
    );
  });
});

describe("a DCAP world made here (FAKE root, PCK, collateral and attestation keys; for tests only)", () => {
  let fake: FakeDcap;
  const settings = { mode: "hardware", tolerate: [] as string[], ignore_advisories: [] as string[] } as const;
  before(async () => {
    fake = await makeFakeDcap();
  });

  test("the fake world is accepted when it is the anchor (so the refusals below mean something)", async () => {
    const v = verifyDcapQuote(fake.quote("sgx"), await fake.collateral("sgx"), { at, anchor: fake.anchor });
    assert.equal(v.status, "ConfigurationAndSWHardeningNeeded");
  });

  test("and refused by the pinned Intel root", async () => {
    const c = await fake.collateral("sgx");
    refusedBy(/^(CRL|chain):/, () => verifyDcapQuote(fake.quote("sgx"), c, { at }));
    refusedBy(/^(CRL|chain):/, () => verifyDcapQuote(fake.quote("sgx"), sgx.collateral, { at }));
  });

  test("a revoked PCK certificate is refused", async () => {
    const revoked = await fake.collateral("sgx", { revokePck: true });
    refusedBy("Revoked", () => verifyDcapQuote(fake.quote("sgx"), revoked, { at, anchor: fake.anchor }));
  });

  test("a debug enclave is refused unless the policy tolerates debug-mode", async () => {
    const c = await fake.collateral("sgx");
    const debug = fake.quote("sgx", {
      editBody: (b) => {
        b[48]! |= 0x02; // ATTRIBUTES.DEBUG
      },
    });
    const v = dcapVerdict(verifyDcapQuote(debug, c, { at, anchor: fake.anchor }));
    assert.equal(v.debug, true);
    const tolerate = ["configuration-needed", "sw-hardening-needed"];
    assert.match(settingsProblems(v, { ...settings, tolerate }).join(), /runs in debug mode/);
    assert.deepEqual(settingsProblems(v, { ...settings, tolerate: [...tolerate, "debug-mode"] }), []);
    assert.equal(dcapVerdict(verifyDcapQuote(fake.quote("sgx"), c, { at, anchor: fake.anchor })).debug, false);
  });

  test("a debug TD is refused unless the policy tolerates debug-mode", async () => {
    const c = await fake.collateral("tdx");
    const debug = fake.quote("tdx", {
      editBody: (b) => {
        b[120]! |= 0x01; // TD_ATTRIBUTES.DEBUG
      },
    });
    const v = dcapVerdict(verifyDcapQuote(debug, c, { at, anchor: fake.anchor }));
    assert.equal(v.debug, true);
    assert.match(settingsProblems(v, settings).join(), /TD runs in debug mode/);
    assert.deepEqual(settingsProblems(v, { ...settings, tolerate: ["debug-mode"] }), []);
  });

  test("quote versions 4 and 5, SGX and TD 1.0 and TD 1.5 bodies", async () => {
    const s = await fake.collateral("sgx");
    const t = await fake.collateral("tdx");
    for (const version of [4, 5] as const) {
      assert.equal(
        verifyDcapQuote(fake.quote("sgx", { version }), s, { at, anchor: fake.anchor }).quote.version,
        version,
      );
    }
    const v5 = verifyDcapQuote(fake.quote("tdx", { version: 5 }), t, { at, anchor: fake.anchor });
    assert.equal(v5.status, "UpToDate");
    const td15 = verifyDcapQuote(fake.quote("tdx", { version: 5, td15: true }), t, { at, anchor: fake.anchor });
    assert.equal(td15.quote.td?.mrservicetd?.length, 48);
    assert.equal(dcapVerdict(td15).measurements.mrtd, dcapVerdict(v5).measurements.mrtd);
    // A TD 1.5 body in a version 4 quote does not parse as one.
    refusedBy("format", () =>
      verifyDcapQuote(fake.quote("tdx", { version: 4, td15: true }), t, { at, anchor: fake.anchor }),
    );
  });

  test("the real PCK chain's root is exactly the pinned one", () => {
    const realRoot = splitPem(parseQuote(sgx.quote).certification.pckChainPem)[2]!;
    const hash = createHash("sha256").update(realRoot.raw).digest("hex");
    assert.equal(
      hash,
      createHash("sha256")
        .update(readFileSync(join(DIR, "TrustedRootCA.der")))
        .digest("hex"),
    );
  });
});
