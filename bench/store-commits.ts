/**
 * bench/store-commits: how long the CAS's store holds its event loop per commit, on average and
 * at the longest, with the WAL checkpointed on a thread of its own (the CAS's way,
 * src/cas/store/wal-checkpointer.ts) and by the commits themselves (SQLite's default, "inline")
 * — alternated in one run. Each commit is what an attestation writes: one audit entry appended
 * (BEGIN IMMEDIATE, the last entry read, the new one inserted, COMMIT), paced at `--rate` commits
 * a second, the CAS's attestation rate at capacity. A stall here is a stall of every runtime in
 * flight (bench/attest-throughput's p99).
 *
 *   node bench/store-commits.ts [--seconds 5] [--rate 1500] [--rounds 2]
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { SqliteStore } from "../src/cas/store/sqlite.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rate: { type: "string", default: "1500" },
    rounds: { type: "string", default: "2" },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const ROUNDS = Number(args.rounds);
// An attestation's audit entry is about this long (action, actor, target, reason, time, hash).
const ENTRY = JSON.stringify({ detail: "x".repeat(400) });

async function measure(mode: "thread" | "inline") {
  const dir = mkdtempSync(join(tmpdir(), "cloister-bench-commits-"));
  const path = join(dir, "cas.db");
  const store = new SqliteStore(path, { walCheckpoints: mode });
  try {
    const times: number[] = [];
    let walMost = 0;
    const start = performance.now();
    while (performance.now() - start < SECONDS * 1000) {
      const due = Math.floor(((performance.now() - start) * RATE) / 1000);
      while (times.length < due) {
        const t = performance.now();
        store.appendAudit((previous) => ({
          seq: (previous?.seq ?? 0) + 1,
          entry: ENTRY,
          chain: "a".repeat(64),
          mac: "b".repeat(64),
        }));
        times.push(performance.now() - t);
      }
      if (times.length % 256 === 0) walMost = Math.max(walMost, statSync(`${path}-wal`).size);
      await new Promise((resolve) => setImmediate(resolve));
    }
    walMost = Math.max(walMost, statSync(`${path}-wal`).size);
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.min(times.length - 1, Math.floor(times.length * q))]!;
    return {
      n: times.length,
      meanUs: (times.reduce((a, b) => a + b, 0) * 1000) / times.length,
      p50: at(0.5),
      p99: at(0.99),
      p999: at(0.999),
      max: times.at(-1)!,
      over1: times.filter((t) => t > 1).length,
      over10: times.filter((t) => t > 10).length,
      walMiB: walMost / 1048576,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`store-commits: ${RATE} audit appends a second for ${SECONDS} s, ${ROUNDS} rounds, the two alternated`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of ["inline", "thread"] as const) {
    const r = await measure(mode);
    const ms = (v: number) => v.toFixed(2);
    console.log(
      `${mode.padEnd(6)} round ${round}: ${r.n} commits, ${r.meanUs.toFixed(0)} µs each on average; ` +
        `p50 ${ms(r.p50)} p99 ${ms(r.p99)} p99.9 ${ms(r.p999)} max ${ms(r.max)} ms; ` +
        `${r.over1} over 1 ms, ${r.over10} over 10 ms; WAL at most ${r.walMiB.toFixed(1)} MiB`,
    );
  }
}
