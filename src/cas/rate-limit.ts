import { isIP } from "node:net";
import { ipBytes } from "../crypto/certificate.ts";

/** Sources remembered at once, at most. */
const MAX_SOURCES = 100_000;

/** A token bucket per source address: cheap, in memory, forgetting idle sources. */
export class RateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(perSecond: number, burst = perSecond * 2) {
    this.#rate = perSecond;
    this.#burst = burst;
  }

  /** Whether `source` may make one more request now. */
  take(source: string, now = performance.now()): boolean {
    let b = this.#buckets.get(source);
    if (b) {
      // Most recently used last: the map's order is the order in which sources fall idle.
      this.#buckets.delete(source);
    } else {
      b = { tokens: this.#burst, at: now };
      // Too many sources: the longest idle is forgotten (it would have refilled soonest), never
      // every bucket at once — a flood from many addresses must not reset the others' limits.
      if (this.#buckets.size >= MAX_SOURCES) this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    this.#buckets.set(source, b);
    b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) / 1000) * this.#rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/**
 * The source a request is counted against: its IPv4 address, or an IPv6 address's /64 — one
 * host commonly holds a whole /64, and counting its addresses apart would give it 2^64 budgets.
 */
export function sourceOf(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  const bytes = ipBytes(ip);
  // ::ffff:a.b.c.d — an IPv4 client on a dual-stack socket — is that IPv4 address.
  if (bytes.subarray(0, 12).equals(V4_MAPPED)) return [...bytes.subarray(12)].join(".");
  const groups = [0, 2, 4, 6].map((at) => bytes.readUInt16BE(at).toString(16));
  return `${groups.join(":")}::/64`;
}

const V4_MAPPED = Buffer.from("00000000000000000000ffff", "hex");
