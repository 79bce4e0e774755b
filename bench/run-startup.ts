/**
 * bench/run-startup: what `cloister run` adds to a program's start. `cloister run --tee sim` of
 * /bin/true (attestation against a local CAS and LAS, the JWE, the private mount namespace, the
 * launch) against /bin/true alone; the median of 30 runs each. Target: overhead ≤ 150 ms. The
 * machine's speed before and after (bench/support/machine-speed.ts) is printed with the result.
 *
 *   node bench/run-startup.ts [--runs 30]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { measureFile } from "../src/attestation/sim/evidence.ts";
import { startCas } from "../src/cas/start.ts";
import { CasClient } from "../src/client/cas-client.ts";
import { spkiHash } from "../src/crypto/keys.ts";
import { selfSignedP256 } from "../src/crypto/self-signed.ts";
import { loadOrCreateNodeKey, startLas } from "../src/las/server.ts";
import { machineSpeedLine, opensslVerifyPerSecond } from "./support/machine-speed.ts";

const { values: args } = parseArgs({ options: { runs: { type: "string", default: "30" } } });
const RUNS = Number(args.runs);
const BIN = join(import.meta.dirname, "..", "bin", "cloister");
const TRUE = realpathSync("/bin/true");

/** OpenSSL's P-256 rate before the run (and after it, below): this VM's speed varies. */
const speedBefore = opensslVerifyPerSecond("p256", 1);
const dir = mkdtempSync(join(tmpdir(), "cloister-bench-run-"));
const admin = await selfSignedP256("bench", 1);
const adminHash = spkiHash(admin.keyPem);
const cas = await startCas({ dataDir: join(dir, "cas"), listen: "127.0.0.1:0", admins: [adminHash] });
const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
const las = await startLas({ listen: "127.0.0.1:0", key });
try {
  const client = new CasClient({
    url: cas.url,
    casKey: cas.identity.hash,
    keyPem: admin.keyPem,
    certificatePem: admin.certificatePem,
  });
  await client.request("POST", "/v1/las", { key: las.key });
  await client.request("POST", "/v1/policies", {
    policy: `version: "1"\nname: bench\nsecurity:\n  attestation: {mode: simulation}\nservices:\n  - name: truth\n    measurements: [{tee: sim, digest: ${measureFile(readFileSync(TRUE))}}]\n    command: [${TRUE}]\n    files: [{path: /etc/cloister-bench/x, content: "x"}]\n`,
  });
  const env = {
    ...process.env,
    CLOISTER_CAS_ADDR: cas.url,
    CLOISTER_CAS_KEY: cas.identity.hash,
    CLOISTER_LAS_ADDR: las.url,
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  // Asynchronous: the CAS and LAS answer from this process's event loop.
  const time = (cmd: string, argv: string[]) =>
    new Promise<number>((resolve, reject) => {
      const t = performance.now();
      const child = spawn(cmd, argv, { env, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (d) => (err += d));
      child.on("exit", (code) =>
        code === 0 ? resolve(performance.now() - t) : reject(new Error(`${cmd} failed: ${err}`)),
      );
    });
  await time(BIN, ["run", "--config-id", "bench/truth", "--tee", "sim", "--", TRUE]); // warm the page cache
  const plain: number[] = [];
  const run: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    plain.push(await time(TRUE, []));
    run.push(await time(BIN, ["run", "--config-id", "bench/truth", "--tee", "sim", "--", TRUE]));
  }
  const overhead = median(run) - median(plain);
  console.log(`run-startup: median of ${RUNS}`);
  console.log(`/bin/true                 ${median(plain).toFixed(1)} ms`);
  console.log(
    `cloister run /bin/true    ${median(run).toFixed(1)} ms   overhead ${overhead.toFixed(1)} ms (target ≤ 150 ms)`,
  );
  console.log(machineSpeedLine(speedBefore, opensslVerifyPerSecond("p256", 1)));
} finally {
  await las.close();
  await cas.close();
  rmSync(dir, { recursive: true, force: true });
}
