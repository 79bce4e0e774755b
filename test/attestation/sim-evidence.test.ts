/**
 * The simulated report's canonical JSON, written out by hand for speed (reportJson), is the text
 * the general encoder (canonicalJson, RFC 8785) gives — for any strings at all: a report signed
 * by one and checked with the other (an older LAS or CAS) must still verify.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { reportJson, SIM_FORMAT, type SimReport } from "../../src/attestation/sim/evidence.ts";
import { canonicalJson } from "../../src/policy/canonical.ts";

const text = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.string({ unit: "binary" }));

test("reportJson is canonicalJson for any report", () => {
  fc.assert(
    fc.property(
      fc.record({
        format: fc.oneof(fc.constant(SIM_FORMAT), text),
        measurement: text,
        report_data: text,
        las_key: text,
        time: text,
      }),
      (report) => {
        assert.equal(reportJson(report as SimReport), canonicalJson(report));
      },
    ),
    { numRuns: 2000 },
  );
});

test("a real report: keys in sorted order, escapes as canonicalJson's", () => {
  const report = {
    format: SIM_FORMAT,
    measurement: "ab".repeat(32),
    report_data: "cd".repeat(64),
    las_key: "ef".repeat(32),
    time: "2026-11-24T00:00:00.000Z",
  } as SimReport;
  assert.equal(reportJson(report), canonicalJson(report));
  assert.match(
    reportJson(report),
    /^\{"format":"cloister-sim-v1","las_key":"(ef)+","measurement":.*"time":"2026-11-24T00:00:00.000Z"\}$/,
  );
  const odd = { ...report, time: 'a"\\\u0000\ud800\u2028' };
  assert.equal(reportJson(odd), canonicalJson(odd));
});
