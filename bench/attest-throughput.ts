/**
 * bench/attest-throughput: full attestation flows per second against one CAS — challenge,
 * simulated evidence bound to the nonce and a fresh key K, and the configuration with a freshly
 * issued service certificate, as a JWE to K. `cloister cas start` runs in its own process; this
 * process plays 32 concurrent runtimes on keep-alive HTTPS connections and signs the simulated
 * evidence itself with an enrolled LAS key (what `cloister las start` would do), so that the
 * figure is the CAS's. Targets on this machine: ≥ 1,000 flows/s, p99 ≤ 50 ms.
 *
 *   node bench/attest-throughput.ts [--seconds 5] [--clients 32]
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { Agent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { expectedReportData } from "../src/attestation/binding.ts";
import { measureFile, signSimReport } from "../src/attestation/sim/evidence.ts";
import { CasClient } from "../src/client/cas-client.ts";
import { spkiHash } from "../src/crypto/keys.ts";
import { selfSignedP256 } from "../src/crypto/self-signed.ts";

const { values: args } = parseArgs({
  options: { seconds: { type: "string", default: "5" }, clients: { type: "string", default: "32" } },
});
const SECONDS = Number(args.seconds);
const CLIENTS = Number(args.clients);
const BIN = join(import.meta.dirname, "..", "bin", "cloister.js");
const PROGRAM = realpathSync("/bin/true");

const dir = mkdtempSync(join(tmpdir(), "cloister-bench-attest-"));
const admin = await selfSignedP256("bench", 1);
const child = spawn(
  process.execPath,
  [BIN, "--", "cas", "start", "--data-dir", dir, "--listen", "127.0.0.1:0", "--admin", spkiHash(admin.keyPem)],
  { stdio: ["ignore", "pipe", "ignore"] },
);
let out = "";
child.stdout.on("data", (d: Buffer) => (out += d));
for (let i = 0; i < 400 && !/CAS key [0-9a-f]{64}/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
const url = new URL(/CAS listening on (\S+)/.exec(out)![1]!);
const casKey = /CAS key ([0-9a-f]{64})/.exec(out)![1]!;
try {
  const lasKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  const owner = new CasClient({ url: url.href, casKey, keyPem: admin.keyPem, certificatePem: admin.certificatePem });
  await owner.request("POST", "/v1/las", { key: spkiHash(lasKey) });
  await owner.request("POST", "/v1/policies", {
    policy: `version: "1"\nname: bench\nsecurity:\n  attestation: {mode: simulation}\nservices:\n  - name: svc\n    measurements: [{tee: sim, digest: ${measureFile(readFileSync(PROGRAM))}}]\n    command: [${PROGRAM}, "$$cloister::token$$"]\n    environment: {TOKEN: "$$cloister::token$$"}\n    files: [{path: /etc/bench/key, content: "$$cloister::key:hex$$"}]\nsecrets:\n  - {name: token, kind: ascii}\n  - {name: key, kind: binary}\n`,
  });
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS, rejectUnauthorized: false, minVersion: "TLSv1.3" });
  const post = <T>(path: string, body: unknown) =>
    new Promise<T>((resolve, reject) => {
      const payload = Buffer.from(JSON.stringify(body));
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path,
          method: "POST",
          agent,
          headers: { "content-type": "application/json", "content-length": payload.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            res.statusCode === 200
              ? resolve(JSON.parse(Buffer.concat(chunks).toString()) as T)
              : reject(new Error(`${res.statusCode} ${Buffer.concat(chunks)}`)),
          );
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  const measurement = measureFile(readFileSync(PROGRAM));
  const flow = async () => {
    const { nonce } = await post<{ nonce: string }>("/v1/attestation/challenge", { config_id: "bench/svc" });
    const k = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = k.publicKey.export({ type: "spki", format: "der" });
    const evidence = signSimReport(lasKey, measurement, expectedReportData(Buffer.from(nonce, "base64"), spki));
    const r = await post<{ configuration: string }>("/v1/attestation", {
      config_id: "bench/svc",
      nonce,
      evidence: { tee: "sim", quote: Buffer.from(JSON.stringify(evidence)).toString("base64") },
      spki: spki.toString("base64"),
    });
    if (r.configuration.split(".").length !== 5) throw new Error("not a JWE");
  };
  const phase = async (seconds: number) => {
    const latencies: number[] = [];
    const end = performance.now() + seconds * 1000;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          await flow();
          latencies.push(performance.now() - t);
        }
      }),
    );
    latencies.sort((a, b) => a - b);
    return {
      perSecond: latencies.length / ((performance.now() - start) / 1000),
      p50: latencies[Math.floor(latencies.length / 2)]!,
      p99: latencies[Math.floor(latencies.length * 0.99)]!,
      n: latencies.length,
    };
  };
  await phase(1); // warm up
  const r = await phase(SECONDS);
  console.log(`attest-throughput: ${CLIENTS} concurrent runtimes, ${SECONDS} s`);
  console.log(
    `${r.perSecond.toFixed(0)} flows/s  p50 ${r.p50.toFixed(1)} ms  p99 ${r.p99.toFixed(1)} ms  (${r.n} flows; targets ≥ 1,000/s, p99 ≤ 50 ms)`,
  );
  agent.destroy();
} finally {
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
