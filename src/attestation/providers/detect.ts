/**
 * Choosing a provider for `--tee auto|sgx|tdx|snp|sim`. Auto looks for hardware only (Gramine's
 * /dev/attestation, then configfs-tsm) and fails when there is none: it never picks simulation,
 * which must be asked for by name.
 */
import { ConfigfsTsmProvider, TSM_REPORT_ROOT, type TsmFs, tsmProvider } from "./configfs-tsm.ts";
import { GRAMINE_ATTESTATION, GramineProvider, gramineDcap } from "./gramine.ts";
import { LasProvider } from "./las.ts";
import { type EvidenceProvider, ProviderError } from "./provider.ts";

export interface DetectOptions {
  readonly tee: "auto" | "sgx" | "tdx" | "snp" | "sim";
  /** For sim: the LAS address and the program it must measure. */
  readonly lasUrl?: string | undefined;
  readonly program?: string | undefined;
  readonly gramineRoot?: string;
  readonly tsmRoot?: string;
  readonly tsmFs?: TsmFs;
}

export async function selectProvider(options: DetectOptions): Promise<EvidenceProvider> {
  const gramineRoot = options.gramineRoot ?? GRAMINE_ATTESTATION;
  const tsmRoot = options.tsmRoot ?? TSM_REPORT_ROOT;
  switch (options.tee) {
    case "sim": {
      if (!options.lasUrl)
        throw new ProviderError("--tee sim needs a LAS: set CLOISTER_LAS_ADDR or --las (cloister dev prints it)");
      if (!options.program) throw new ProviderError("--tee sim needs the program to measure");
      return new LasProvider(options.lasUrl, options.program);
    }
    case "sgx":
      if (!(await gramineDcap(gramineRoot)))
        throw new ProviderError(
          `no Gramine DCAP attestation at ${gramineRoot}: not inside an SGX enclave under Gramine`,
        );
      return new GramineProvider(gramineRoot);
    case "tdx":
    case "snp": {
      const found = await tsmProvider(tsmRoot, options.tsmFs);
      if (found !== options.tee) {
        throw new ProviderError(
          `no ${options.tee === "tdx" ? "TDX" : "SEV-SNP"} guest here: configfs-tsm at ${tsmRoot} ${found ? `is ${found}` : "is absent"}`,
        );
      }
      return new ConfigfsTsmProvider(options.tee, tsmRoot, options.tsmFs);
    }
    case "auto": {
      if (await gramineDcap(gramineRoot)) return new GramineProvider(gramineRoot);
      const found = await tsmProvider(tsmRoot, options.tsmFs);
      if (found) return new ConfigfsTsmProvider(found, tsmRoot, options.tsmFs);
      throw new ProviderError(
        "no TEE found (no Gramine /dev/attestation, no configfs-tsm): to run without hardware protection, ask for --tee sim",
      );
    }
  }
}
