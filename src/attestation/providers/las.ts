/** Simulated evidence from a LAS: it measures the program file itself and signs the report_data. */
import { checkReportData, type EvidenceProvider, type ProvidedEvidence, ProviderError } from "./provider.ts";

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
    let response: Response;
    try {
      response = await fetch(`${this.#url}/v1/report`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ program: this.#program, report_data: reportData.toString("hex") }),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (error) {
      throw new ProviderError(`cannot reach the LAS at ${this.#url}: ${(error as Error).message}`);
    }
    const body = Buffer.from(await response.arrayBuffer());
    if (!response.ok) {
      let message = body.toString("utf8");
      try {
        message = (JSON.parse(message) as { error?: { message?: string } }).error?.message ?? message;
      } catch {
        // keep the text
      }
      throw new ProviderError(`the LAS refused (${response.status}): ${message}`);
    }
    return { tee: "sim", quote: body };
  }
}
