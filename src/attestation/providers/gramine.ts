/**
 * SGX evidence through Gramine's /dev/attestation: write the 64-byte report_data to
 * `user_report_data`, read a DCAP quote from `quote`. `attestation_type` says "dcap" when
 * Gramine is set up for DCAP.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { checkReportData, type EvidenceProvider, type ProvidedEvidence, ProviderError } from "./provider.ts";

export const GRAMINE_ATTESTATION = "/dev/attestation";

/** Whether Gramine offers DCAP attestation here. */
export async function gramineDcap(root = GRAMINE_ATTESTATION): Promise<boolean> {
  try {
    return (await fs.readFile(join(root, "attestation_type"), "utf8")).trim() === "dcap";
  } catch {
    return false;
  }
}

export class GramineProvider implements EvidenceProvider {
  readonly tee = "sgx" as const;
  readonly #root: string;

  constructor(root = GRAMINE_ATTESTATION) {
    this.#root = root;
  }

  async evidence(reportData: Buffer): Promise<ProvidedEvidence> {
    checkReportData(reportData);
    try {
      await fs.writeFile(join(this.#root, "user_report_data"), reportData);
      const quote = await fs.readFile(join(this.#root, "quote"));
      if (quote.length === 0) throw new ProviderError("Gramine returned an empty quote");
      return { tee: "sgx", quote };
    } catch (error) {
      if (error instanceof ProviderError) throw error;
      throw new ProviderError(
        `Gramine attestation at ${this.#root} failed: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
  }
}
