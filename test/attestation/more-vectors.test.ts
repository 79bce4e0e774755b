/**
 * Every vector of ../shared/testvectors/more at the time and with the verdict its PROVENANCE.md
 * states, through the layers: abi (the bytes parsed as the provenance describes them), verify
 * (chains, signatures, chip, TCB) and validate (a policy's settings and measurements). The
 * negatives are refused by the check their provenance expects, named.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseQuote } from "../../src/attestation/dcap/abi.ts";
import { Collateral } from "../../src/attestation/dcap/collateral.ts";
import { dcapVerdict, verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { parseReport } from "../../src/attestation/snp/abi.ts";
import { snpVerdict, verifySnpReport } from "../../src/attestation/snp/verify.ts";
import { measurementProblems, settingsProblems } from "../../src/attestation/validate.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";

const MORE = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "more");
const file = (...path: string[]) => readFileSync(join(MORE, ...path));
const hardware = { mode: "hardware", tolerate: [], ignore_advisories: [] } as const;

const refusedBy = (check: string, f: () => unknown, why?: RegExp) =>
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof VerificationError, String(e));
    assert.equal(e.check, check, e.message);
    if (why) assert.match(e.message, why);
    return true;
  });
const hex = (b: Buffer) => b.toString("hex");

describe("SEV-SNP", () => {
  const turin = {
    report: file("snp-turin-msft", "turin_attestation_report.bin"),
    vcek: file("snp-turin-msft", "turin_vcek.pem").toString("utf8"),
  };
  const genoa = {
    report: file("snp-genoa-msft", "genoa_attestation_report.bin"),
    vcek: file("snp-genoa-msft", "genoa_vcek.pem").toString("utf8"),
  };
  const vlek = {
    report: file("snp-milan-vlek-aws", "test-vlek-report.bin"),
    key: file("snp-milan-vlek-aws", "test-vlek.der"),
  };
  const bad = (name: string) => file("snp-milan-vcek-bad-certs", name);
  const milanV2 = bad("test-report.bin");
  const at2026 = new Date("2026-03-01T00:00:00Z");

  test("Turin, report v5: valid; FMC in the TCB, CHIP_ID its 8-byte hwID and zeros, debug off", () => {
    const r = parseReport(turin.report);
    assert.deepEqual([r.version, r.policy, r.vmpl, r.signingKey], [5, 0x3001fn, 0, 0]);
    assert.deepEqual(r.cpuid, { family: 0x1a, model: 0x02, stepping: 1 });
    assert.equal(hex(r.reportedTcb), "0101010400000051");
    assert.equal(hex(r.chipId), `59790fb1c39f35c1${"00".repeat(56)}`);
    const v = verifySnpReport(turin.report, { endorsementKey: turin.vcek, at: at2026 });
    assert.deepEqual([v.product, v.key, v.chip], ["Turin", "VCEK", "hwID"]);
    assert.deepEqual(v.reportedTcb, {
      raw: "0101010400000051",
      fmc: 1,
      bootloader: 1,
      tee: 1,
      snp: 4,
      microcode: 0x51,
    });
    const verdict = snpVerdict(v);
    assert.deepEqual([verdict.status, verdict.advisories, verdict.debug], ["Unevaluated", [], false]);
    assert.equal(verdict.measurements.measurement, hex(turin.report.subarray(0x90, 0xc0)));
    assert.equal(verdict.collateral_expires, "2033-02-05T01:04:33.000Z");
    assert.deepEqual(settingsProblems(verdict, hardware), []);
    const entry = { tee: "snp", measurement: String(verdict.measurements.measurement), vmpl: 0 } as const;
    assert.deepEqual(measurementProblems(verdict, [entry]), []);
    assert.equal(measurementProblems(verdict, [{ ...entry, measurement: "00".repeat(48) }]).length, 1);
  });

  test("Genoa, report v3: valid; its measurement and host_data, the VCEK's validity", () => {
    const v = verifySnpReport(genoa.report, { endorsementKey: genoa.vcek, at: at2026 });
    assert.deepEqual([v.product, v.key, v.chip, v.report.version], ["Genoa", "VCEK", "hwID", 3]);
    assert.deepEqual([v.report.vmpl, v.report.policy], [0, 0x3001fn]);
    assert.equal(v.reportedTcb.raw, "0a00000000001754");
    assert.deepEqual(
      [v.reportedTcb.bootloader, v.reportedTcb.tee, v.reportedTcb.snp, v.reportedTcb.microcode],
      [10, 0, 0x17, 0x54],
    );
    const verdict = snpVerdict(v);
    assert.match(String(verdict.measurements.measurement), /^5feee30d[0-9a-f]{80}0c23fca1$/);
    assert.match(String(verdict.measurements.host_data), /^4f4448c6[0-9a-f]{48}ec777d10$/);
    assert.equal(verdict.debug, false);
    assert.equal(verdict.collateral_expires, "2033-02-05T02:05:07.000Z");
    assert.deepEqual(
      measurementProblems(verdict, [
        {
          tee: "snp",
          measurement: String(verdict.measurements.measurement),
          host_data: String(verdict.measurements.host_data),
        },
      ]),
      [],
    );
    assert.deepEqual(settingsProblems(verdict, hardware), []);
    // Before the VCEK's validity (2026-02-05) and after it.
    refusedBy("expired", () =>
      verifySnpReport(genoa.report, { endorsementKey: genoa.vcek, at: new Date("2026-02-01T00:00:00Z") }),
    );
    refusedBy("expired", () =>
      verifySnpReport(genoa.report, { endorsementKey: genoa.vcek, at: new Date("2033-03-01T00:00:00Z") }),
    );
  });

  test("Milan, VLEK-signed (AWS): valid inside the VLEK's year, refused after it expired", () => {
    const r = parseReport(vlek.report);
    assert.deepEqual([r.version, r.signingKey, r.vmpl, r.policy], [3, 1, 1, 0x30000n]);
    assert.ok(r.chipId.every((b) => b === 0));
    const at = new Date("2025-06-01T00:00:00Z");
    const v = verifySnpReport(vlek.report, { endorsementKey: vlek.key, at });
    assert.deepEqual(
      [v.product, v.key, v.chip, v.cspId],
      ["Milan", "VLEK", "none (VLEK)", "CN=cc-us-east-2.amazonaws.com"],
    );
    assert.deepEqual(v.reportedTcb, { raw: "04000000000018d9", bootloader: 4, tee: 0, snp: 24, microcode: 0xd9 });
    // current and committed TCB are newer than the VLEK's (the VLEK was issued for reported_tcb).
    assert.equal(hex(r.currentTcb), "04000000000018dc");
    const verdict = snpVerdict(v);
    assert.equal(verdict.collateral_expires, "2025-12-10T22:14:21.000Z");
    assert.deepEqual(settingsProblems(verdict, hardware), []);
    // The guest runs at VMPL 1: a policy that names VMPL 0 does not match.
    const entry = { tee: "snp", measurement: String(verdict.measurements.measurement) } as const;
    assert.deepEqual(measurementProblems(verdict, [{ ...entry, vmpl: 1 }]), []);
    assert.match(measurementProblems(verdict, [{ ...entry, vmpl: 0 }]).join(), /vmpl/);
    refusedBy(
      "expired",
      () => verifySnpReport(vlek.report, { endorsementKey: vlek.key, at: new Date("2025-12-11T00:00:00Z") }),
      /VLEK chain is valid from 2024-12-10T22:14:21.000Z to 2025-12-10T22:14:21.000Z/,
    );
    // The source's own tampering cases: byte 42 and byte 384 (both signed).
    for (const offset of [42, 384]) {
      const copy = Buffer.from(vlek.report);
      copy[offset]! ^= 1;
      assert.throws(() => verifySnpReport(copy, { endorsementKey: vlek.key, at }), VerificationError);
    }
  });

  test("Milan v2: the good VCEK verifies; the two with broken signatures are refused by the chain", () => {
    const v = verifySnpReport(milanV2, { endorsementKey: bad("test-vcek.der"), at: at2026 });
    assert.deepEqual(
      [v.product, v.key, v.chip, v.report.version, v.reportedTcb.raw],
      ["Milan", "VCEK", "hwID", 2, "0300000000000873"],
    );
    assert.match(hex(v.report.chipId), /^c38427a3[0-9a-f]{112}e477524e$/);
    assert.equal(v.report.policy, 0x3001fn);
    for (const name of ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"]) {
      refusedBy(
        "chain",
        () => verifySnpReport(milanV2, { endorsementKey: bad(name), at: at2026 }),
        /names AMD's ASK for Milan as its issuer, but its signature does not verify/,
      );
    }
  });

  test("each report with another's key is refused", () => {
    refusedBy("chain", () => verifySnpReport(turin.report, { endorsementKey: genoa.vcek, at: at2026 }));
    refusedBy("chain", () => verifySnpReport(genoa.report, { endorsementKey: turin.vcek, at: at2026 }));
    refusedBy("chain", () =>
      verifySnpReport(milanV2, { endorsementKey: vlek.key, at: new Date("2025-06-01T00:00:00Z") }),
    );
    refusedBy("chain", () =>
      verifySnpReport(vlek.report, { endorsementKey: bad("test-vcek.der"), at: new Date("2025-06-01T00:00:00Z") }),
    );
  });
});

describe("Intel DCAP: TDX quotes v5 with TD 1.5 bodies", () => {
  const at = new Date("2026-03-01T00:00:00Z");
  const collateralOf = (...path: string[]) => Collateral.parse(JSON.parse(file(...path).toString("utf8")));
  const gotdx = {
    quote: file("tdx-v5-gotdx", "quote_v5_sample.dat"),
    collateral: collateralOf("tdx-v5-gotdx", "collateral_fmspc90C06F000000_from_phala.json"),
  };
  const outdated = {
    quote: file("tdx-v5-phala-outdated", "tdx_quote_outdated"),
    collateral: collateralOf("tdx-v5-phala-outdated", "tdx_quote_outdated_collateral.json"),
  };

  test("go-tdx-guest's quote: the v5 header and TD 1.5 body as its provenance describes them", () => {
    const q = parseQuote(gotdx.quote);
    assert.deepEqual([q.version, q.tee, gotdx.quote.length], [5, "tdx", 5006]);
    assert.equal(q.td?.mrservicetd?.length, 48);
    assert.equal(hex(q.td!.teeTcbSvn), `0b0104${"00".repeat(13)}`);
    assert.equal(q.certification.qeReport.isvsvn, 7);
  });

  test("go-tdx-guest's quote with the collateral of its FMSPC: UpToDate, no advisories", () => {
    const v = dcapVerdict(verifyDcapQuote(gotdx.quote, gotdx.collateral, { at }));
    assert.deepEqual([v.tee, v.status, v.advisories, v.debug], ["tdx", "UpToDate", [], false]);
    assert.match(String(v.measurements.mrtd), /^7348651a[0-9a-f]{80}3bc8f876$/);
    assert.deepEqual(
      [v.details.fmspc, v.details.quote_version, v.details.tcb_date, v.details.platform_status],
      ["90C06F000000", 5, "2024-11-13T00:00:00Z", "UpToDate"],
    );
    assert.deepEqual([v.details.module_status, v.details.qe_status], ["UpToDate", "UpToDate"]);
    assert.equal(v.details.mrservicetd, "00".repeat(48));
    assert.deepEqual(settingsProblems(v, hardware), []);
    assert.deepEqual(measurementProblems(v, [{ tee: "tdx", mrtd: String(v.measurements.mrtd) }]), []);
    assert.equal(measurementProblems(v, [{ tee: "tdx", mrtd: "00".repeat(48) }]).length, 1);
  });

  test("and with go-tdx-guest's own TCB info v5 (its PCS response, signed by Intel's TCB signing key): UpToDate", () => {
    const response = file("tdx-v5-gotdx", "sample_tcbinfo_response_v5.json").toString("utf8");
    // The signed text is the tcbInfo value exactly as it stands in the response.
    const match = /^\{"tcbInfo":(\{.*\}),"signature":"([0-9a-f]+)"\}\s*$/s.exec(response);
    assert.ok(match, "the response is {tcbInfo, signature}");
    const collateral = { ...gotdx.collateral, tcb_info: match[1]!, tcb_info_signature: match[2]! };
    const v = verifyDcapQuote(gotdx.quote, collateral, { at });
    assert.equal(v.status, "UpToDate");
    // Its window is 2026-02-01T14:49:26Z … 2026-03-03T14:49:26Z.
    refusedBy("expired collateral", () =>
      verifyDcapQuote(gotdx.quote, collateral, { at: new Date("2026-03-04T00:00:00Z") }),
    );
  });

  test("Phala's outdated quote: no TCB level matches (SGX component 8 is 3, every level needs 5)", () => {
    const q = parseQuote(outdated.quote);
    assert.deepEqual([q.version, q.tee, outdated.quote.length], [5, "tdx", 5006]);
    assert.equal(hex(q.td!.teeTcbSvn).slice(0, 6), "070103");
    refusedBy(
      "tcb",
      () => verifyDcapQuote(outdated.quote, outdated.collateral, { at }),
      /no TCB level .* TCB_NOT_SUPPORTED.*SGX TCB component 8 is 3, needs 5/,
    );
  });

  test("outside the collateral's window; each quote with the other's collateral gives the same verdicts", () => {
    refusedBy("expired collateral", () =>
      verifyDcapQuote(gotdx.quote, gotdx.collateral, { at: new Date("2026-03-21T00:00:00Z") }),
    );
    refusedBy("expired collateral", () =>
      verifyDcapQuote(gotdx.quote, gotdx.collateral, { at: new Date("2026-02-18T00:00:00Z") }),
    );
    // The two collaterals are the same file (the gotdx one is a copy): same FMSPC, same answers.
    assert.equal(verifyDcapQuote(gotdx.quote, outdated.collateral, { at }).status, "UpToDate");
    refusedBy("tcb", () => verifyDcapQuote(outdated.quote, gotdx.collateral, { at }));
  });
});
