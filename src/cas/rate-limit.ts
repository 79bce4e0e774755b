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
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4) return v4[1]!;
  if (!ip.includes(":")) return ip;
  const [head = "", tail = ""] = ip.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...left, ...Array(8 - left.length - right.length).fill("0"), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || "0", 16).toString(16))
    .join(":")}::/64`;
}
