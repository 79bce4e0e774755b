/**
 * TDX and SEV-SNP evidence through Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm):
 * make a report entry under /sys/kernel/config/tsm/report, write the 64-byte report_data to
 * `inblob`, read `outblob` (the quote or report) and, for SNP, `auxblob` (the host's certificate
 * table). `generation` counts writes to the entry: if it moved between our write and our read,
 * another writer raced us and the result is discarded.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { checkReportData, type EvidenceProvider, type ProvidedEvidence, ProviderError } from "./provider.ts";

export const TSM_REPORT_ROOT = "/sys/kernel/config/tsm/report";

/** The filesystem operations used, so that tests can run against a fake configfs (named so). */
export interface TsmFs {
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  writeFile(path: string, data: Buffer): Promise<void>;
  readFile(path: string): Promise<Buffer>;
}

const realFs: TsmFs = {
  mkdir: async (p) => {
    await fs.mkdir(p);
  },
  rmdir: (p) => fs.rmdir(p),
  writeFile: (p, d) => fs.writeFile(p, d),
  readFile: (p) => fs.readFile(p),
};

const PROVIDERS: Record<string, "tdx" | "snp"> = { tdx_guest: "tdx", sev_guest: "snp" };

/** Which TEE the kernel's configfs-tsm provider is, or undefined when there is none. */
export async function tsmProvider(root = TSM_REPORT_ROOT, ops: TsmFs = realFs): Promise<"tdx" | "snp" | undefined> {
  const entry = join(root, `cloister-probe-${randomBytes(6).toString("hex")}`);
  try {
    await ops.mkdir(entry);
  } catch {
    return undefined;
  }
  try {
    const name = (await ops.readFile(join(entry, "provider"))).toString("utf8").trim();
    return PROVIDERS[name];
  } catch {
    return undefined;
  } finally {
    await ops.rmdir(entry).catch(() => {});
  }
}

export class ConfigfsTsmProvider implements EvidenceProvider {
  readonly tee: "tdx" | "snp";
  readonly #root: string;
  readonly #ops: TsmFs;

  constructor(tee: "tdx" | "snp", root = TSM_REPORT_ROOT, ops: TsmFs = realFs) {
    this.tee = tee;
    this.#root = root;
    this.#ops = ops;
  }

  async evidence(reportData: Buffer): Promise<ProvidedEvidence> {
    checkReportData(reportData);
    const entry = join(this.#root, `cloister-${process.pid}-${randomBytes(8).toString("hex")}`);
    try {
      await this.#ops.mkdir(entry);
    } catch (error) {
      throw new ProviderError(
        `cannot create a configfs-tsm report at ${entry}: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
    try {
      const provider = (await this.#ops.readFile(join(entry, "provider"))).toString("utf8").trim();
      if (PROVIDERS[provider] !== this.tee) {
        throw new ProviderError(
          `configfs-tsm provider is ${provider || "unknown"}, not ${this.tee === "tdx" ? "tdx_guest" : "sev_guest"}`,
        );
      }
      await this.#ops.writeFile(join(entry, "inblob"), reportData);
      const before = await this.#generation(entry);
      const quote = await this.#ops.readFile(join(entry, "outblob"));
      const aux =
        this.tee === "snp" ? await this.#ops.readFile(join(entry, "auxblob")).catch(() => undefined) : undefined;
      const after = await this.#generation(entry);
      if (before !== after)
        throw new ProviderError("another writer changed the configfs-tsm report while it was read; try again");
      if (quote.length === 0) throw new ProviderError("configfs-tsm returned an empty report");
      return { tee: this.tee, quote, ...(aux && aux.length > 0 ? { aux } : {}) };
    } finally {
      await this.#ops.rmdir(entry).catch(() => {});
    }
  }

  async #generation(entry: string): Promise<string> {
    return (await this.#ops.readFile(join(entry, "generation"))).toString("utf8").trim();
  }
}
