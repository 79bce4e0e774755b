/**
 * How fast this machine runs right now, by OpenSSL's own measure: ECDSA verifications per second
 * on one core (`openssl speed`). This VM's speed changes from day to day and within a day — P-256
 * verifications from 9,282/s to 19,690/s on different days (docs/benchmarks.md) — and every
 * figure of a benchmark moves with it, so a benchmark whose target is in absolute terms prints
 * this next to its result: a run is only comparable with another made at the same speed.
 */
import { execFileSync } from "node:child_process";

/** OpenSSL's ECDSA verifications per second on one core; undefined if openssl cannot say. */
export function opensslVerifyPerSecond(curve: "p256" | "p384", seconds: number): number | undefined {
  try {
    const out = execFileSync("openssl", ["speed", "-seconds", String(seconds), `ecdsa${curve}`], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    const line = out.split("\n").find((l) => l.includes(`${curve.slice(1)} bits ecdsa`));
    const verify = Number(line?.trim().split(/\s+/).pop());
    return Number.isFinite(verify) && verify > 0 ? verify : undefined;
  } catch {
    return undefined;
  }
}

/** The fastest this machine was seen (2026-11-23): the reference the other days are read against. */
export const FASTEST_P256_VERIFY_PER_SECOND = 19_690;

/** A line for a benchmark's output: OpenSSL's P-256 rate before and after the run. */
export function machineSpeedLine(before: number | undefined, after: number | undefined): string {
  const known = [before, after].filter((r): r is number => r !== undefined);
  if (known.length === 0) return "this machine's speed: unknown (openssl speed failed)";
  const rate = (r: number | undefined) => (r === undefined ? "?" : Math.round(r).toLocaleString("en-US"));
  const share = Math.round((100 * Math.min(...known)) / FASTEST_P256_VERIFY_PER_SECOND);
  return `this machine's speed: OpenSSL's P-256 verifications on one core ${rate(before)}/s before the run, ${rate(after)}/s after — at the slower, ${share} % of the fastest day seen (${FASTEST_P256_VERIFY_PER_SECOND.toLocaleString("en-US")}/s)`;
}
