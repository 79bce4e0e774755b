/** Simulated evidence from a LAS: it measures the program file itself and signs the report_data. */
import type { IncomingMessage } from "node:http";
import { checkReportData, type EvidenceProvider, type ProvidedEvidence, ProviderError } from "./provider.ts";

// http.request rather than fetch: fetch loads undici, about 25 ms of every `cloister run` start
// (and an ES import of node:http would too, through its lazy WebSocket getters).
const { request } = process.getBuiltinModule("node:http");

export class LasProvider implements EvidenceProvider {
  readonly tee = "sim" as const;
  readonly #url: string;
  readonly #program: string;

  /** `program`: the absolute path of the program to be measured. */
  constructor(lasUrl: string, program: string) {
    this.#url = lasUrl.replace(/\/+$/, "");
    this.#program = program;
  }

  async evidence(reportData: Buffer): Promise<ProvidedEvidence> {
    checkReportData(reportData);
    let response: { status: number; body: Buffer };
    try {
      response = await post(
        `${this.#url}/v1/report`,
        JSON.stringify({ program: this.#program, report_data: reportData.toString("hex") }),
      );
    } catch (error) {
      throw new ProviderError(`cannot reach the LAS at ${this.#url}: ${(error as Error).message}`);
    }
    const { status, body } = response;
    if (status !== 200) {
      let message = body.toString("utf8");
      try {
        message = (JSON.parse(message) as { error?: { message?: string } }).error?.message ?? message;
      } catch {
        // keep the text
      }
      throw new ProviderError(`the LAS refused (${status}): ${message}`);
    }
    return { tee: "sim", quote: body };
  }
}

/** POST a JSON body; the whole answer, within ten seconds. */
function post(url: string, json: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(json) },
      timeout: 10_000,
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
    req.on("response", (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.end(json);
  });
}
