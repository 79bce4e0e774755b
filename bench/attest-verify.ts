/**
 * bench/attest-verify: evidence verifications per second on one core, warm caches.
 *
 *   node bench/attest-verify.ts [--seconds 3] [--json]
 *
 * SEV-SNP: the Milan report and VCEK from ../shared/testvectors, against the machine's limit:
 * one ECDSA P-384 verification per report, measured in the same run with `openssl speed`.
 * (Intel DCAP — SGX and TDX against @phala/dcap-qvl — joins when the DCAP verifier exists.)
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { verifySnpReport } from "../src/attestation/snp/verify.ts";

const { values: args } = parseArgs({
  options: { seconds: { type: "string", default: "3" }, json: { type: "boolean", default: false } },
});
const SECONDS = Number(args.seconds);
const VECTORS = join(import.meta.dirname, "..", "..", "shared", "testvectors");

function rate(work: () => void): number {
  for (let i = 0; i < 50; i++) work(); // warm the caches and the JIT
  let n = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 20; i++) work();
    n += 20;
  }
  return n / ((performance.now() - start) / 1000);
}

/** OpenSSL's own P-384 verifications per second on one core: the ceiling for SNP. */
function opensslP384(): number | undefined {
  try {
    const out = execFileSync("openssl", ["speed", "-seconds", String(SECONDS), "ecdsap384"], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    const line = out.split("\n").find((l) => /384 bits ecdsa/.test(l));
    const verify = line?.trim().split(/\s+/).pop();
    return verify ? Number(verify) : undefined;
  } catch {
    return undefined;
  }
}

const report = Buffer.from(readFileSync(join(VECTORS, "amd-snp", "report_milan.hex"), "utf8").trim(), "hex");
const vcek = readFileSync(join(VECTORS, "amd-snp", "vcek_milan.der"));
const at = new Date("2025-07-01T00:00:00Z");
const snp = rate(() => verifySnpReport(report, { endorsementKey: vcek, at }));
const limit = opensslP384();
const result = {
  snp_per_second: Math.round(snp),
  openssl_p384_verify_per_second: limit,
  ratio: limit ? snp / limit : null,
};
if (args.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(`attest-verify: one core, ${SECONDS} s per measurement`);
  console.log(
    `snp      ${result.snp_per_second}/s   (openssl P-384 verify ${limit ?? "?"}/s; ${result.ratio ? `${(100 * result.ratio).toFixed(0)}% of it` : "no openssl"})  target ≥ 800/s`,
  );
}
