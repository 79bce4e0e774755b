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
    if (!b) {
      if (this.#buckets.size > 100_000) this.#buckets.clear();
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(source, b);
    }
    b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) / 1000) * this.#rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
