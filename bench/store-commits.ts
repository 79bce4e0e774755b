/**
 * bench/store-commits: how long the CAS's store holds its event loop per commit, on average and
 * at the longest, in four ways alternated in one run:
 *   - inline: the WAL checkpointed by the commits themselves (SQLite's default), synchronous NORMAL;
 *   - thread: checkpointed on a thread of its own (src/cas/store/wal-checkpointer.ts), NORMAL —
 *     the CAS before issue 17;
 *   - full: the thread, synchronous FULL (each commit synced before it returns: the CAS's policy
 *     writes and volume commits now);
 *   - grouped: the thread, FULL, the entries of one event-loop turn group-committed
 *     (appendAuditGrouped: the attestation flow's grants now).
 * Each commit is what an attestation writes: one audit entry appended (BEGIN IMMEDIATE, the last
 * entry read, the new one inserted, COMMIT), paced at `--rate` a second, the CAS's attestation
 * rate at capacity. Reported: the event loop's busy time per entry (performance.eventLoopUtilization,
 * the pacing loop included), and how long each entry took to be written — for the synchronous
 * modes the event loop is held all that time, and a stall there is a stall of every runtime in
 * flight (bench/attest-throughput's p99); a grouped entry waits for its sync without holding it.
 *
 *   node bench/store-commits.ts [--seconds 5] [--rate 1500] [--rounds 2] [--modes inline,thread,full,grouped]
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { SqliteStore } from "../src/cas/store/sqlite.ts";
import type { AuditRow } from "../src/cas/store/store.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rate: { type: "string", default: "1500" },
    rounds: { type: "string", default: "2" },
    modes: { type: "string", default: "inline,thread,full,grouped" },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const ROUNDS = Number(args.rounds);
const MODES = args.modes.split(",") as Mode[];
type Mode = "inline" | "thread" | "full" | "grouped";
for (const m of MODES)
  if (!["inline", "thread", "full", "grouped"].includes(m)) throw new Error(`--modes: unknown mode ${m}`);
// An attestation's audit entry is about this long (action, actor, target, reason, time, hash).
const ENTRY = JSON.stringify({ detail: "x".repeat(400) });
const append = (previous: AuditRow | undefined): AuditRow => ({
  seq: (previous?.seq ?? 0) + 1,
  entry: ENTRY,
  chain: "a".repeat(64),
  mac: "b".repeat(64),
});

async function measure(mode: Mode) {
  const dir = mkdtempSync(join(tmpdir(), "cloister-bench-commits-"));
  const path = join(dir, "cas.db");
  const store = new SqliteStore(path, {
    walCheckpoints: mode === "inline" ? "inline" : "thread",
    synchronous: mode === "full" || mode === "grouped" ? "full" : "normal",
  });
  try {
    // Per entry: how long until it was written (durable, for full and grouped) and the caller
    // could answer. Synchronous modes hold the event loop all that time; grouped does not.
    const waits: number[] = [];
    const pending: Promise<void>[] = [];
    let entries = 0;
    let walMost = 0;
    const before = performance.eventLoopUtilization();
    const start = performance.now();
    while (performance.now() - start < SECONDS * 1000) {
      const due = Math.floor(((performance.now() - start) * RATE) / 1000);
      while (entries < due) {
        const t = performance.now();
        if (mode === "grouped")
          pending.push(store.appendAuditGrouped(append).then(() => void waits.push(performance.now() - t)));
        else {
          await store.appendAudit(append);
          waits.push(performance.now() - t);
        }
        entries++;
      }
      if (entries % 256 === 0) walMost = Math.max(walMost, statSync(`${path}-wal`).size);
      // Idle until the next millisecond, as a CAS between requests: the event loop's busy time is then the commits'.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await Promise.all(pending);
    // The event loop's busy time (the pacing loop's own included, the same in every mode).
    const busy = performance.eventLoopUtilization(before).active;
    walMost = Math.max(walMost, statSync(`${path}-wal`).size);
    waits.sort((a, b) => a - b);
    const at = (q: number) => waits[Math.min(waits.length - 1, Math.floor(waits.length * q))]!;
    return {
      n: entries,
      meanUs: (busy * 1000) / entries,
      p50: at(0.5),
      p99: at(0.99),
      p999: at(0.999),
      max: waits.at(-1)!,
      over1: waits.filter((t) => t > 1).length,
      over10: waits.filter((t) => t > 10).length,
      walMiB: walMost / 1048576,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  `store-commits: ${RATE} audit appends a second for ${SECONDS} s, ${ROUNDS} rounds, ${MODES.join(", ")} alternated`,
);
const means = new Map<Mode, number[]>();
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of MODES) {
    const r = await measure(mode);
    const ms = (v: number) => v.toFixed(2);
    means.set(mode, [...(means.get(mode) ?? []), r.meanUs]);
    console.log(
      `${mode.padEnd(7)} round ${round}: ${r.n} entries, ${r.meanUs.toFixed(0)} µs of event loop an entry; ` +
        `written after p50 ${ms(r.p50)} p99 ${ms(r.p99)} p99.9 ${ms(r.p999)} max ${ms(r.max)} ms; ` +
        `${r.over1} over 1 ms, ${r.over10} over 10 ms; WAL at most ${r.walMiB.toFixed(1)} MiB`,
    );
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const base = means.get("thread");
if (base)
  for (const mode of MODES)
    if (mode !== "thread")
      console.log(
        `${mode} / thread (event loop per entry, medians): ${(median(means.get(mode)!) / median(base)).toFixed(2)}`,
      );
