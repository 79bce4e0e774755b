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
