/** Validation of a verdict against a policy: measurements, simulation, debug, TCB status, binding. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  entryMismatches,
  measurementProblems,
  reportDataMatches,
  settingsProblems,
} from "../../src/attestation/validate.ts";
import type { Verdict } from "../../src/attestation/verdict.ts";

const base: Verdict = {
  tee: "snp",
  status: "UpToDate",
  advisories: [],
  debug: false,
  measurements: { measurement: "aa".repeat(48), host_data: "00".repeat(32), guest_svn: 3, vmpl: 0 },
  report_data: "11".repeat(64),
  simulated: false,
  collateral_expires: null,
  details: {},
};
const hardware = { mode: "hardware", tolerate: [], ignore_advisories: [] } as const;

describe("settings", () => {
  test("simulated evidence only under mode: simulation", () => {
    const sim = { ...base, tee: "sim" as const, simulated: true };
    assert.match(
      settingsProblems(sim, hardware).join(),
      /simulated evidence, but the policy's attestation mode is hardware/,
    );
    assert.deepEqual(settingsProblems(sim, { ...hardware, mode: "simulation" }), []);
  });

  test("debug only when tolerated", () => {
    assert.match(settingsProblems({ ...base, debug: true }, hardware).join(), /debug mode/);
    assert.deepEqual(settingsProblems({ ...base, debug: true }, { ...hardware, tolerate: ["debug-mode"] }), []);
  });

  test("each TCB status needs its tolerations; Revoked never passes", () => {
    const cases: [Verdict["status"], string[], boolean][] = [
      ["UpToDate", [], true],
      ["Unevaluated", [], true],
      ["SWHardeningNeeded", [], false],
      ["SWHardeningNeeded", ["sw-hardening-needed"], true],
      ["ConfigurationNeeded", ["configuration-needed"], true],
      ["ConfigurationAndSWHardeningNeeded", ["configuration-needed"], false],
      ["ConfigurationAndSWHardeningNeeded", ["configuration-needed", "sw-hardening-needed"], true],
      ["OutOfDate", ["configuration-needed"], false],
      ["OutOfDate", ["outdated-tcb"], true],
      ["OutOfDateConfigurationNeeded", ["outdated-tcb"], false],
      ["OutOfDateConfigurationNeeded", ["outdated-tcb", "configuration-needed"], true],
      ["Revoked", ["outdated-tcb", "configuration-needed", "sw-hardening-needed", "debug-mode"], false],
    ];
    for (const [status, tolerate, ok] of cases) {
      assert.equal(
        settingsProblems({ ...base, status }, { ...hardware, tolerate }).length === 0,
        ok,
        `${status} with ${tolerate}`,
      );
    }
  });

  test("ignoring every advisory stands in for sw-hardening-needed, ignoring some does not", () => {
    const v = { ...base, status: "SWHardeningNeeded" as const, advisories: ["INTEL-SA-00289", "INTEL-SA-00615"] };
    assert.deepEqual(settingsProblems(v, { ...hardware, ignore_advisories: ["INTEL-SA-00289", "INTEL-SA-00615"] }), []);
    assert.match(
      settingsProblems(v, { ...hardware, ignore_advisories: ["INTEL-SA-00615"] }).join(),
      /needs tolerate: \[sw-hardening-needed\]/,
    );
  });
});

describe("measurements", () => {
  test("every named field must match; minimums compare; any entry suffices", () => {
    assert.deepEqual(
      entryMismatches(base, { tee: "snp", measurement: "aa".repeat(48), guest_svn_min: 3, vmpl: 0 }),
      [],
    );
    assert.equal(entryMismatches(base, { tee: "snp", measurement: "ab".repeat(48) }).length, 1);
    assert.match(
      entryMismatches(base, { tee: "snp", measurement: "aa".repeat(48), guest_svn_min: 4 }).join(),
      /guest_svn 3 < 4/,
    );
    assert.deepEqual(
      measurementProblems(base, [
        { tee: "snp", measurement: "ab".repeat(48) },
        { tee: "snp", host_data: "00".repeat(32), measurement: "aa".repeat(48) },
      ]),
      [],
    );
    assert.match(measurementProblems(base, [{ tee: "sgx", mrenclave: "00".repeat(32) }]).join(), /no snp measurement/);
  });

  test("report_data binding", () => {
    assert.ok(reportDataMatches(base, Buffer.alloc(64, 0x11)));
    assert.ok(!reportDataMatches(base, Buffer.alloc(64, 0x12)));
    assert.ok(!reportDataMatches(base, Buffer.alloc(32, 0x11)));
  });
});
