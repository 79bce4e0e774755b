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

  request(route: string, method: string, status: number, elapsedMs: number): void {
    const key = `route="${escapeLabel(route)}",method="${method}",status="${status}"`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    const lkey = `route="${escapeLabel(route)}",method="${method}"`;
    const series = this.#latency.get(lkey) ?? { count: 0, sum: 0, buckets: BUCKETS.map(() => 0) };
    const seconds = elapsedMs / 1000;
    series.count++;
    series.sum += seconds;
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) series.buckets[i]!++;
    });
    this.#latency.set(lkey, series);
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
