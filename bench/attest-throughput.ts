/**
 * bench/attest-throughput: full attestation flows per second against one CAS — challenge,
 * simulated evidence bound to the nonce and a fresh key K, and the configuration with a freshly
 * issued service certificate, as a JWE to K. `cloister cas start` runs in its own process; this
 * process plays the runtimes on keep-alive HTTPS connections (through a minimal HTTP/1.1 client,
 * bench/support/http1-client.ts, which costs it a third less CPU per flow than node:https) and
 * signs the simulated evidence itself with an enrolled LAS key (what `cloister las start` would
 * do), with the runtimes' fresh keys made before each measurement starts, so that the figure is
 * the CAS's. Three measurements, one run:
 *
 * - capacity: 32 runtimes in a closed loop, each starting its next flow when its last ended —
 *   the most flows per second the CAS completes (target ≥ 1,000/s). Their latency is reported
 *   too, but in a closed loop it is set by the loop: the mean is 32 divided by the throughput
 *   (Little's law), whatever the CAS does with each flow.
 * - latency at the target rate: flows started on a schedule, Poisson arrivals at 1,000/s, each
 *   timed from the instant it was due, whether or not the CAS had kept up (no coordinated
 *   omission) — what a runtime starting while 1,000 others a second do waits (target p99 ≤ 50 ms);
 *   three rounds, pooled.
 * - a TLS handshake per flow: the closed loop again, each flow on a connection of its own, as a
 *   real `cloister run` has — what the first two leave out. The load generator's own handshakes
 *   share the machine with the CAS, so the CPU the CAS's event loop spends per flow (from
 *   /proc, its main thread) is reported for both kinds of connection, with the ceiling it sets,
 *   and the CPU a flow costs the CAS and the load generator together, with the ceiling that sets
 *   for the whole machine.
 *
 * The machine's speed before and after the run (bench/support/machine-speed.ts) is printed with
 * the results: this VM's varies from day to day, and every figure here with it.
 *
 *   node bench/attest-throughput.ts [--seconds 5] [--clients 32] [--rate 1000]
 */
import { spawn } from "node:child_process";
import { createECDH, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import { parseArgs } from "node:util";
import { expectedReportData } from "../src/attestation/binding.ts";
import { measureFile, signSimReport } from "../src/attestation/sim/evidence.ts";
import { CasClient } from "../src/client/cas-client.ts";
import { P256_SPKI_PREFIX, spkiHash } from "../src/crypto/keys.ts";
import { selfSignedP256 } from "../src/crypto/self-signed.ts";
import { Http1Connection, Http1Pool, type Http1Response } from "./support/http1-client.ts";
import { machineSpeedLine, opensslVerifyPerSecond } from "./support/machine-speed.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    clients: { type: "string", default: "32" },
    rate: { type: "string", default: "1000" },
  },
});
const SECONDS = Number(args.seconds);
const CLIENTS = Number(args.clients);
const RATE = Number(args.rate);
/** Connections the runtimes share, at most: enough for the open loop's bursts. */
const SOCKETS = Math.max(CLIENTS, 64);
/** USER_HZ: the unit of /proc's CPU times; 100 on Linux's every common architecture. */
const CLOCK_TICKS = 100;
const BIN = join(import.meta.dirname, "..", "bin", "cloister.js");
const PROGRAM = realpathSync("/bin/true");

/**
 * User and system CPU from /proc, in ms: of a process's main thread (its thread id is its pid),
 * or with `whole`, of all its threads.
 */
function cpuMs(pid: number, whole = false): number {
  const stat = readFileSync(whole ? `/proc/${pid}/stat` : `/proc/${pid}/task/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces, so split after its closing paren).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  return (ticks * 1000) / CLOCK_TICKS;
}

/** The machine's CPU time from /proc/stat, in ticks: all of it, and the part spent idle. */
function machineTicks(): { total: number; idle: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is counted within user).
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: fields[3]! + fields[4]! };
}

/** OpenSSL's P-256 rate before the run (and after it, below): this VM's speed varies. */
const speedBefore = opensslVerifyPerSecond("p256", 1);
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
  // The runtimes' side of HTTP: a minimal HTTP/1.1 client (bench/support/http1-client.ts), so
  // that the CPU the load generator takes from the CAS's two cores is as little as it can be;
  // the CAS receives the same requests as from node:https.
  const sharedContext = createSecureContext({ minVersion: "TLSv1.3" });
  /** Where the runtimes' flows go: the CAS, then Node's floor (bench/support/https-floor.ts). */
  interface Target {
    readonly host: string;
    readonly port: number;
    readonly pool: Http1Pool;
    /** The server's process, for its CPU. */
    readonly pid: number;
  }
  let target: Target = {
    host: url.hostname,
    port: Number(url.port),
    pool: new Http1Pool(url.hostname, Number(url.port), sharedContext, SOCKETS),
    pid: child.pid!,
  };
  /** The sizes of the CAS's answers (the floor answers with as many bytes). */
  const answerBytes = { challenge: 0, configuration: 0 };
  const measurement = measureFile(readFileSync(PROGRAM));
  const json = <T>({ status, body }: Http1Response): T => {
    if (status !== 200) throw new Error(`${status} ${body}`);
    return JSON.parse(body.toString()) as T;
  };
  /**
   * The runtimes' fresh keys K, as a runtime sends its own (SubjectPublicKeyInfo DER), made before
   * each measurement starts: a runtime makes its key on its own machine, and these runtimes share
   * the CAS's two cores (a key costs about a tenth of the load generator's CPU per flow). Each is
   * used for one flow. If a measurement needs more than were made, the rest are made as needed,
   * and counted.
   */
  const keys: Buffer[] = [];
  let keysMadeDuring = 0;
  const makeKey = () => Buffer.concat([P256_SPKI_PREFIX, createECDH("prime256v1").generateKeys()]);
  const keysFor = (flows: number) => {
    while (keys.length < flows) keys.push(makeKey());
  };
  const runtimeKey = () => {
    const key = keys.pop();
    if (key) return key;
    keysMadeDuring++;
    return makeKey();
  };
  /**
   * One runtime's flow. `fresh`: on a connection of its own, closed after, as a `cloister run`
   * has (one TLS handshake per flow); otherwise on the shared keep-alive connections.
   */
  const flow = async (fresh = false) => {
    const { host, port, pool } = target;
    const own = fresh ? await Http1Connection.open(host, port, sharedContext) : pool;
    try {
      let bytes = 0;
      const post = async <T>(path: string, body: unknown) => {
        const response = await own.post(path, body);
        bytes = response.body.length;
        return json<T>(response);
      };
      const { nonce } = await post<{ nonce: string }>("/v1/attestation/challenge", { config_id: "bench/svc" });
      answerBytes.challenge = bytes;
      const spki = runtimeKey();
      const evidence = signSimReport(lasKey, measurement, expectedReportData(Buffer.from(nonce, "base64"), spki));
      const r = await post<{ configuration: string }>("/v1/attestation", {
        config_id: "bench/svc",
        nonce,
        evidence: { tee: "sim", quote: Buffer.from(JSON.stringify(evidence)).toString("base64") },
        spki: spki.toString("base64"),
      });
      if (r.configuration.split(".").length !== 5) throw new Error("not a JWE");
      answerBytes.configuration = bytes;
    } finally {
      if (own instanceof Http1Connection) own.close();
    }
  };
  /** The p50 and p99 of `latencies` (sorted in place). */
  const percentiles = (latencies: number[]) => {
    latencies.sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.floor(latencies.length * q)]!;
    return { p50: at(0.5), p99: at(0.99), n: latencies.length };
  };
  const summary = (latencies: number[], started: number) => ({
    ...percentiles(latencies),
    perSecond: latencies.length / ((performance.now() - started) / 1000),
  });
  /**
   * CPU spent per flow during `run`, in ms: by the CAS's event loop (its main thread), by the
   * whole CAS, and by this process (the load generator); and the share of the machine's CPU time
   * left idle meanwhile.
   */
  const withCpuPerFlow = async <T extends { n: number }>(run: () => Promise<T>) => {
    const { pid } = target;
    const before = [cpuMs(pid), cpuMs(pid, true), process.cpuUsage(), machineTicks()] as const;
    const result = await run();
    const own = process.cpuUsage(before[2]);
    const machine = machineTicks();
    return {
      idle: (machine.idle - before[3].idle) / (machine.total - before[3].total),
      ...result,
      loopCpuMs: (cpuMs(pid) - before[0]) / result.n,
      casCpuMs: (cpuMs(pid, true) - before[1]) / result.n,
      generatorCpuMs: (own.user + own.system) / 1000 / result.n,
    };
  };
  /** `clients` runtimes, each starting its next flow when its last one ended. */
  const closedLoop = async (seconds: number, clients = CLIENTS, fresh = false) => {
    const latencies: number[] = [];
    const end = performance.now() + seconds * 1000;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          await flow(fresh);
          latencies.push(performance.now() - t);
        }
      }),
    );
    return summary(latencies, start);
  };
  /** Flows due at Poisson arrivals of `rate` a second, each timed from when it was due. */
  const openLoop = async (rate: number, seconds: number) => {
    const latencies: number[] = [];
    const flows: Promise<void>[] = [];
    const start = performance.now();
    const end = start + seconds * 1000;
    let due = start;
    let mostInFlight = 0;
    let inFlight = 0;
    while (due < end) {
      const now = performance.now();
      if (now < due) {
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - now - 0.5)));
        continue;
      }
      const scheduled = due;
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      flows.push(
        flow().then(() => {
          inFlight--;
          latencies.push(performance.now() - scheduled);
        }),
      );
      due += (-Math.log(1 - Math.random()) * 1000) / rate;
    }
    await Promise.all(flows);
    return { ...summary(latencies, start), mostInFlight, latencies };
  };
  keysFor(2500);
  await closedLoop(1); // warm up: connections, JIT
  keysFor(SECONDS * 2500);
  const capacity = await withCpuPerFlow(() => closedLoop(SECONDS));
  // Every connection the open loop may use, opened now: otherwise the first burst of more flows
  // than open connections pays for TLS handshakes on both sides, and the first round measures
  // the benchmark's connection pool growing (seen: p99 60–170 ms in the first round, 15–30 in the
  // next two, every run).
  await closedLoop(1, SOCKETS);
  await openLoop(RATE, 1);
  keysFor(Math.ceil(RATE * SECONDS * 3 * 1.1));
  // Three rounds, their flows pooled: one of this VM's stalls of tens of milliseconds backs up
  // every flow due while the CAS catches up, and the rounds show how much one stall moves p99.
  const rounds = [];
  for (let round = 0; round < 3; round++) rounds.push(await openLoop(RATE, SECONDS));
  keysFor(SECONDS * 1500);
  const fresh = await withCpuPerFlow(() => closedLoop(SECONDS, CLIENTS, true));
  // Node's floor: the same flows against a bare node:https server with canned answers of the
  // CAS's sizes — what HTTP and TLS cost by themselves here, in this same run.
  const floorProcess = spawn(
    process.execPath,
    [
      join(import.meta.dirname, "support", "https-floor.ts"),
      String(answerBytes.challenge),
      String(answerBytes.configuration),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let floor: { kept: typeof fresh; fresh: typeof fresh };
  try {
    const floorPort = await new Promise<number>((resolve, reject) => {
      let said = "";
      floorProcess.stdout.on("data", (d: Buffer) => {
        said += d;
        const m = /listening (\d+)/.exec(said);
        if (m) resolve(Number(m[1]));
      });
      floorProcess.on("exit", (code) => reject(new Error(`https-floor exited with ${code}`)));
    });
    target.pool.close();
    target = {
      host: "127.0.0.1",
      port: floorPort,
      pool: new Http1Pool("127.0.0.1", floorPort, sharedContext, SOCKETS),
      pid: floorProcess.pid!,
    };
    keysFor(5000);
    await closedLoop(1);
    keysFor(SECONDS * 8000);
    const kept = await withCpuPerFlow(() => closedLoop(SECONDS));
    keysFor(SECONDS * 1500);
    floor = { kept, fresh: await withCpuPerFlow(() => closedLoop(SECONDS, CLIENTS, true)) };
  } finally {
    floorProcess.kill("SIGTERM");
  }
  const atRate = {
    ...percentiles(rounds.flatMap((r) => r.latencies)),
    perSecond: rounds.reduce((sum, r) => sum + r.perSecond, 0) / rounds.length,
    mostInFlight: Math.max(...rounds.map((r) => r.mostInFlight)),
  };
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  const percent = (x: number) => `${(100 * x).toFixed(0)} %`;
  console.log(`attest-throughput: one CAS, ${SECONDS} s per measurement`);
  console.log(
    `capacity, ${CLIENTS} runtimes in a closed loop: ${capacity.perSecond.toFixed(0)} flows/s  (p50 ${ms(capacity.p50)}, p99 ${ms(capacity.p99)}; ${capacity.n} flows; the machine ${percent(capacity.idle)} idle)`,
  );
  console.log(
    `latency at ${RATE} flows/s offered (Poisson): p50 ${ms(atRate.p50)}  p99 ${ms(atRate.p99)}  (3 × ${SECONDS} s pooled, ${atRate.n} flows; p99 per round ${rounds.map((r) => ms(r.p99)).join(", ")}; ${atRate.perSecond.toFixed(0)} flows/s completed, at most ${atRate.mostInFlight} in flight)`,
  );
  console.log(
    `a TLS handshake per flow, ${CLIENTS} runtimes in a closed loop: ${fresh.perSecond.toFixed(0)} flows/s  (p50 ${ms(fresh.p50)}, p99 ${ms(fresh.p99)}; ${fresh.n} flows; the machine ${percent(fresh.idle)} idle)`,
  );
  const ceiling = (cpu: number) => `${cpu.toFixed(3)} ms, at most ${(1000 / cpu).toFixed(0)} flows/s on one core`;
  console.log(
    `the CAS's event loop per flow: ${ceiling(capacity.loopCpuMs)} on kept-alive connections; ${ceiling(fresh.loopCpuMs)} with a handshake per flow`,
  );
  const cores = availableParallelism();
  const machine = (r: typeof fresh) =>
    `CAS ${r.casCpuMs.toFixed(3)} + load generator ${r.generatorCpuMs.toFixed(3)} ms, at most ${((cores * 1000) / (r.casCpuMs + r.generatorCpuMs)).toFixed(0)} flows/s on ${cores} cores`;
  console.log(`CPU per flow in all: ${machine(capacity)} kept alive; ${machine(fresh)} with a handshake per flow`);
  const times = (cas: number, bare: number) => `${(cas / bare).toFixed(1)}×`;
  console.log(
    `Node's floor (a bare node:https server, canned answers of the same sizes; bench/support/https-floor.ts): event loop ${floor.kept.loopCpuMs.toFixed(3)} ms per flow kept alive (${floor.kept.perSecond.toFixed(0)} flows/s), ${floor.fresh.loopCpuMs.toFixed(3)} ms with a handshake per flow (${floor.fresh.perSecond.toFixed(0)} flows/s); the CAS's event loop is ${times(capacity.loopCpuMs, floor.kept.loopCpuMs)} and ${times(fresh.loopCpuMs, floor.fresh.loopCpuMs)} that, the CAS's whole process ${times(capacity.casCpuMs, floor.kept.casCpuMs)} and ${times(fresh.casCpuMs, floor.fresh.casCpuMs)}`,
  );
  if (keysMadeDuring > 0) console.log(`(runtime keys made while measuring, not before: ${keysMadeDuring})`);
  console.log(machineSpeedLine(speedBefore, opensslVerifyPerSecond("p256", 1)));
  console.log("targets: capacity ≥ 1,000 flows/s; p99 ≤ 50 ms at 1,000 flows/s");
  target.pool.close();
} finally {
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
