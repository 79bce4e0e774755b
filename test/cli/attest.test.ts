/** `cloister attest verify` and `cloister measure` as a user runs them. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { runCli } from "../helpers/cli.ts";

const SNP = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "amd-snp");
const DCAP = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "intel-dcap");
const dir = mkdtempSync(join(tmpdir(), "cloister-attest-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const at = ["--at", "2025-07-01T00:00:00Z"];
const MORE = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "more");

describe("cloister attest verify", () => {
  test("an SEV-SNP report: exit 0 and a verdict a policy can use", async () => {
    const r = await runCli([
      "attest",
      "verify",
      join(SNP, "report_milan.hex"),
      "--vcek",
      join(SNP, "vcek_milan.der"),
      ...at,
      "-o",
      "json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as {
      tee: string;
      measurements: Record<string, string>;
      simulated: boolean;
      status: string;
    };
    assert.equal(v.tee, "snp");
    assert.equal(v.simulated, false);
    assert.match(v.measurements.measurement!, /^7a1e5c26/);
    const text = await runCli([
      "attest",
      "verify",
      join(SNP, "report_milan.hex"),
      "--vcek",
      join(SNP, "vcek_milan.der"),
      ...at,
    ]);
    assert.match(text.stdout, /^verified: snp\nstatus: Unevaluated/);
  });

  test("a changed report: exit 1 naming the check", async () => {
    const bytes = Buffer.from(readFileSync(join(SNP, "report_milan.hex"), "utf8").trim(), "hex");
    bytes[0x90]! ^= 1; // the measurement
    const file = join(dir, "changed.bin");
    writeFileSync(file, bytes);
    const r = await runCli(["attest", "verify", file, "--vcek", join(SNP, "vcek_milan.der"), ...at]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "cloister: refused: signature: the report's signature does not verify with the VCEK\n");
  });

  test("usage: no --vcek for a report, a bad --at", async () => {
    const noKey = await runCli(["attest", "verify", join(SNP, "report_milan.hex")]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /--vcek FILE/);
    const badAt = await runCli(["attest", "verify", join(SNP, "report_milan.hex"), "--at", "yesterday"]);
    assert.equal(badAt.code, 2);
  });
});

describe("cloister measure", () => {
  test("--tee sim prints the SHA-256 of the program, found on PATH or by path", async () => {
    const program = join(dir, "prog.sh");
    writeFileSync(program, "#!/bin/sh\necho hi\n", { mode: 0o755 });
    const digest = createHash("sha256").update(readFileSync(program)).digest("hex");
    const byPath = await runCli(["measure", "--tee", "sim", program]);
    assert.equal(byPath.stdout, `${digest}\n`);
    const onPath = await runCli(["measure", "--tee", "sim", "prog.sh"], { env: { PATH: dir } });
    assert.equal(onPath.stdout, `${digest}\n`);
    const missing = await runCli(["measure", "--tee", "sim", "no-such-program"], { env: { PATH: dir } });
    assert.equal(missing.code, 1);
    const hardware = await runCli(["measure", "--tee", "sgx", program]);
    assert.equal(hardware.code, 2);
  });
});

describe("cloister attest verify with DCAP quotes", () => {
  test("SGX and TDX quotes with their collateral: the documented statuses", async () => {
    const sgx = await runCli([
      "attest",
      "verify",
      join(DCAP, "sgx_quote"),
      "--collateral",
      join(DCAP, "sgx_quote_collateral.json"),
      ...at,
      "-o",
      "json",
    ]);
    assert.equal(sgx.code, 0, sgx.stderr);
    const v = JSON.parse(sgx.stdout) as { tee: string; status: string; advisories: string[] };
    assert.deepEqual(
      [v.tee, v.status, v.advisories],
      ["sgx", "ConfigurationAndSWHardeningNeeded", ["INTEL-SA-00289", "INTEL-SA-00615"]],
    );
    const tdx = await runCli([
      "attest",
      "verify",
      join(DCAP, "tdx_quote"),
      "--collateral",
      join(DCAP, "tdx_quote_collateral.json"),
      ...at,
    ]);
    assert.equal(tdx.code, 0, tdx.stderr);
    assert.match(tdx.stdout, /^verified: tdx\nstatus: UpToDate\n/);
  });

  test("refusals name the check: expired collateral, another platform's, no collateral", async () => {
    const expired = await runCli([
      "attest",
      "verify",
      join(DCAP, "sgx_quote"),
      "--collateral",
      join(DCAP, "sgx_quote_collateral.json"),
      "--at",
      "2026-01-01T00:00:00Z",
    ]);
    assert.equal(expired.code, 1);
    assert.match(expired.stderr, /^cloister: refused: expired collateral: /);
    const other = await runCli([
      "attest",
      "verify",
      join(DCAP, "sgx_quote"),
      "--collateral",
      join(DCAP, "tdx_quote_collateral.json"),
      ...at,
    ]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /^cloister: refused: /);
    const none = await runCli(["attest", "verify", join(DCAP, "sgx_quote")]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--collateral FILE/);
    const notCollateral = await runCli([
      "attest",
      "verify",
      join(DCAP, "sgx_quote"),
      "--collateral",
      join(SNP, "report_milan.hex"),
    ]);
    assert.equal(notCollateral.code, 1);
    assert.match(notCollateral.stderr, /not JSON/);
  });
});

describe("cloister attest verify with simulated evidence", () => {
  test("verifies only with the LAS key named, and says SIMULATED", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const { signSimReport } = await import("../../src/attestation/sim/evidence.ts");
    const { spkiHash } = await import("../../src/crypto/keys.ts");
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const file = join(dir, "sim.json");
    writeFileSync(file, JSON.stringify(signSimReport(privateKey, "ef".repeat(32), Buffer.alloc(64, 7))));
    const ok = await runCli(["attest", "verify", file, "--las-key", spkiHash(privateKey)]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^verified: sim \(SIMULATED: no hardware protection\)/);
    assert.match(ok.stdout, /digest: (ef){32}\n/);
    const noKey = await runCli(["attest", "verify", file]);
    assert.equal(noKey.code, 2);
    const wrongKey = await runCli(["attest", "verify", file, "--las-key", "00".repeat(32)]);
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.stderr, /refused: chain: LAS key .* is not enrolled/);
  });
});

describe("cloister attest verify on the vectors of testvectors/more, as a new user runs it", () => {
  type Json = {
    tee: string;
    status: string;
    advisories: string[];
    debug: boolean;
    measurements: Record<string, string>;
    details: Record<string, unknown>;
  };
  const verify = async (args: string[]) => {
    const r = await runCli(["attest", "verify", ...args, "-o", "json"]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Json;
  };
  const refused = async (args: string[], line: RegExp) => {
    const r = await runCli(["attest", "verify", ...args]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, line);
  };
  const m = (...p: string[]) => join(MORE, ...p);

  test("Turin (report v5, 8-byte hwID): verified, FMC in the TCB", async () => {
    const v = await verify([
      m("snp-turin-msft", "turin_attestation_report.bin"),
      "--vcek",
      m("snp-turin-msft", "turin_vcek.pem"),
      "--at",
      "2026-03-01T00:00:00Z",
    ]);
    assert.deepEqual(
      [v.tee, v.status, v.debug, v.details.product, v.details.chip_identified_by],
      ["snp", "Unevaluated", false, "Turin", "hwID"],
    );
    assert.deepEqual(v.details.reported_tcb, {
      raw: "0101010400000051",
      fmc: 1,
      bootloader: 1,
      tee: 1,
      snp: 4,
      microcode: 81,
    });
  });

  test("Genoa (report v3): verified, its measurement", async () => {
    const v = await verify([
      m("snp-genoa-msft", "genoa_attestation_report.bin"),
      "--vcek",
      m("snp-genoa-msft", "genoa_vcek.pem"),
      "--at",
      "2026-03-01T00:00:00Z",
    ]);
    assert.deepEqual([v.details.product, v.details.report_version], ["Genoa", 3]);
    assert.match(v.measurements.measurement!, /^5feee30d.*0c23fca1$/);
  });

  test("a VLEK-signed report: verified within the VLEK's year (the provider shown), refused after", async () => {
    const args = [m("snp-milan-vlek-aws", "test-vlek-report.bin"), "--vcek", m("snp-milan-vlek-aws", "test-vlek.der")];
    const v = await verify([...args, "--at", "2025-06-01T00:00:00Z"]);
    assert.deepEqual(
      [v.details.signing_key, v.details.csp_id, v.measurements.vmpl],
      ["VLEK", "CN=cc-us-east-2.amazonaws.com", 1],
    );
    await refused(
      [...args, "--at", "2026-03-01T00:00:00Z"],
      /^cloister: refused: expired: the VLEK chain is valid from .* to 2025-12-10T22:14:21.000Z/,
    );
  });

  test("VCEKs with broken signatures: refused by the chain", async () => {
    const dir = m("snp-milan-vcek-bad-certs");
    assert.equal(
      (
        await verify([
          join(dir, "test-report.bin"),
          "--vcek",
          join(dir, "test-vcek.der"),
          "--at",
          "2026-03-01T00:00:00Z",
        ])
      ).details.product,
      "Milan",
    );
    for (const bad of ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"]) {
      await refused(
        [join(dir, "test-report.bin"), "--vcek", join(dir, bad)],
        /^cloister: refused: chain: the VCEK names AMD's ASK for Milan as its issuer, but its signature does not verify/,
      );
    }
  });

  test("TDX quote v5 (TD 1.5): UpToDate; the outdated one refused, no TCB level matching", async () => {
    const v = await verify([
      m("tdx-v5-gotdx", "quote_v5_sample.dat"),
      "--collateral",
      m("tdx-v5-gotdx", "collateral_fmspc90C06F000000_from_phala.json"),
      "--at",
      "2026-03-01T00:00:00Z",
    ]);
    assert.deepEqual(
      [v.tee, v.status, v.advisories, v.debug, v.details.quote_version],
      ["tdx", "UpToDate", [], false, 5],
    );
    assert.match(v.measurements.mrtd!, /^7348651a.*3bc8f876$/);
    await refused(
      [
        m("tdx-v5-phala-outdated", "tdx_quote_outdated"),
        "--collateral",
        m("tdx-v5-phala-outdated", "tdx_quote_outdated_collateral.json"),
        "--at",
        "2026-03-01T00:00:00Z",
      ],
      /^cloister: refused: tcb: no TCB level of the TCB info matches the platform .*SGX TCB component 8 is 3, needs 5\n$/,
    );
  });
});
