/**
 * Every single-bit flip of what is signed in each report and quote of ../shared/testvectors/more
 * is refused, exhaustively, as test/attestation/snp.test.ts and dcap.test.ts do for the first
 * vectors; and so is every flip of the signatures themselves. A file of its own so that the test
 * runner runs it beside the others (the SEV-SNP reports cost one P-384 verification a flip:
 * about 6,000 flips and 5 s a report here).
 *
 * A quote that is refused anyway (no TCB level matches) must be refused earlier than that, by
 * the check the flip breaks: a flip refused only at the TCB level would have passed the signature.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { HEADER_SIZE, parseQuote, SGX_REPORT_SIZE, TD15_REPORT_SIZE } from "../../src/attestation/dcap/abi.ts";
import { Collateral } from "../../src/attestation/dcap/collateral.ts";
import { verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { REPORT_SIZE, SIGNED_END } from "../../src/attestation/snp/abi.ts";
import { verifySnpReport } from "../../src/attestation/snp/verify.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";

const MORE = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "more");
const file = (...path: string[]) => readFileSync(join(MORE, ...path));

/**
 * Flip every bit of [from, to) and collect the flips that were accepted, or refused by `late`
 * (a check that comes after the signature).
 */
function badFlips(evidence: Buffer, verify: (b: Buffer) => unknown, from: number, to: number, late?: string): string[] {
  const bad: string[] = [];
  for (let byte = from; byte < to; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      const copy = Buffer.from(evidence);
      copy[byte]! ^= 1 << bit;
      try {
        verify(copy);
        bad.push(`${byte}.${bit} accepted`);
      } catch (error) {
        if (!(error instanceof VerificationError)) throw new Error(`flip ${byte}.${bit}: ${error}`);
        if (late && error.check === late) bad.push(`${byte}.${bit} refused only by ${late}`);
      }
    }
  }
  return bad;
}

describe("SEV-SNP reports: every bit of [0, 0x2A0) and of the signature field", () => {
  const reports = [
    ["Turin v5", "snp-turin-msft/turin_attestation_report.bin", "snp-turin-msft/turin_vcek.pem", "2026-03-01"],
    ["Genoa v3", "snp-genoa-msft/genoa_attestation_report.bin", "snp-genoa-msft/genoa_vcek.pem", "2026-03-01"],
    ["Milan v3, VLEK", "snp-milan-vlek-aws/test-vlek-report.bin", "snp-milan-vlek-aws/test-vlek.der", "2025-06-01"],
    ["Milan v2", "snp-milan-vcek-bad-certs/test-report.bin", "snp-milan-vcek-bad-certs/test-vcek.der", "2026-03-01"],
  ] as const;
  for (const [name, reportPath, keyPath, day] of reports) {
    test(name, () => {
      const report = file(reportPath);
      const key = file(keyPath);
      const endorsementKey = keyPath.endsWith(".pem") ? key.toString("utf8") : key;
      const at = new Date(`${day}T00:00:00Z`);
      const verify = (b: Buffer) => verifySnpReport(b, { endorsementKey, at });
      verify(report); // the unflipped report is accepted
      assert.deepEqual(badFlips(report, verify, 0, SIGNED_END), []);
      assert.deepEqual(badFlips(report, verify, SIGNED_END, REPORT_SIZE), []);
    });
  }
});

describe("TDX quotes v5 (TD 1.5): header, body descriptor and body; signature, key, QE report and auth data", () => {
  const at = new Date("2026-03-01T00:00:00Z");
  const quotes = [
    ["go-tdx-guest", "tdx-v5-gotdx/quote_v5_sample.dat", "tdx-v5-gotdx/collateral_fmspc90C06F000000_from_phala.json"],
    [
      "Phala's outdated",
      "tdx-v5-phala-outdated/tdx_quote_outdated",
      "tdx-v5-phala-outdated/tdx_quote_outdated_collateral.json",
    ],
  ] as const;
  for (const [name, quotePath, collateralPath] of quotes) {
    const quote = file(quotePath);
    const collateral = Collateral.parse(JSON.parse(file(collateralPath).toString("utf8")));
    const verify = (b: Buffer) => verifyDcapQuote(b, collateral, { at });
    // The outdated quote is refused at its TCB level: its flips must be refused before that.
    const late = name.startsWith("Phala") ? "tcb" : undefined;
    const signedEnd = HEADER_SIZE + 6 + TD15_REPORT_SIZE;
    test(`${name}: what the attestation key signs`, () => {
      assert.equal(parseQuote(quote).signed.length, signedEnd);
      assert.deepEqual(badFlips(quote, verify, 0, signedEnd, late), []);
    });
    test(`${name}: the quote's signature, attestation key, QE report, its signature and auth data`, () => {
      const q = parseQuote(quote);
      const start = signedEnd + 4; // after the signature data length
      const qeStart = start + 128 + 6; // the type-6 certification data header
      const end = qeStart + SGX_REPORT_SIZE + 64 + 2 + q.certification.qeAuthData.length;
      assert.deepEqual(badFlips(quote, verify, start, end, late), []);
    });
  }
});
