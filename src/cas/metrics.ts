/** Prometheus text exposition of request counts and latencies; no client library needed. */

const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5] as const;

interface Series {
  count: number;
  sum: number;
  buckets: number[];
}

export class Metrics {
  readonly #requests = new Map<string, number>();
  readonly #latency = new Map<string, Series>();

  /** Label sets by route, method and status, escaped once (every request is counted). */
  readonly #labels = new Map<string, { requests: string; latency: string }>();

  request(route: string, method: string, status: number, elapsedMs: number): void {
    const id = `${route}\0${method}\0${status}`;
    let labels = this.#labels.get(id);
    if (!labels) {
      const latency = `route="${escapeLabel(route)}",method="${escapeLabel(method)}"`;
      labels = { requests: `${latency},status="${status}"`, latency };
      this.#labels.set(id, labels);
    }
    this.#requests.set(labels.requests, (this.#requests.get(labels.requests) ?? 0) + 1);
    let series = this.#latency.get(labels.latency);
    if (!series) {
      series = { count: 0, sum: 0, buckets: BUCKETS.map(() => 0) };
      this.#latency.set(labels.latency, series);
    }
    const seconds = elapsedMs / 1000;
    series.count++;
    series.sum += seconds;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) series.buckets[i]!++;
  }

  render(gauges: Record<string, number>): string {
    const lines: string[] = [
      "# HELP cloister_cas_requests_total HTTP requests by route, method and status.",
      "# TYPE cloister_cas_requests_total counter",
    ];
    for (const [k, v] of this.#requests) lines.push(`cloister_cas_requests_total{${k}} ${v}`);
    lines.push("# HELP cloister_cas_request_seconds Request latency.", "# TYPE cloister_cas_request_seconds histogram");
    for (const [k, s] of this.#latency) {
      BUCKETS.forEach((b, i) => {
        lines.push(`cloister_cas_request_seconds_bucket{${k},le="${b}"} ${s.buckets[i]}`);
      });
      lines.push(`cloister_cas_request_seconds_bucket{${k},le="+Inf"} ${s.count}`);
      lines.push(
        `cloister_cas_request_seconds_sum{${k}} ${s.sum}`,
        `cloister_cas_request_seconds_count{${k}} ${s.count}`,
      );
    }
    for (const [name, value] of Object.entries(gauges)) lines.push(`# TYPE ${name} gauge`, `${name} ${value}`);
    return `${lines.join("\n")}\n`;
  }
}

const escapeLabel = (s: string) => s.replace(/["\\\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
