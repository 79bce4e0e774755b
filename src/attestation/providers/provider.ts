/**
 * Evidence providers: how the runtime, inside a TEE, obtains evidence binding a report_data.
 * Hardware evidence comes from the kernel (TDX, SEV-SNP: configfs-tsm) or the library OS (SGX:
 * Gramine's /dev/attestation); simulated evidence from a LAS. Detection never falls back from
 * hardware to simulation: simulation is used only when asked for.
 */

export type ProviderTee = "sgx" | "tdx" | "snp" | "sim";

export interface ProvidedEvidence {
  readonly tee: ProviderTee;
  /** The quote, report or simulated evidence. */
  readonly quote: Buffer;
  /** SEV-SNP: the certificate table from the host (auxblob), when there is one. */
  readonly aux?: Buffer;
}

export interface EvidenceProvider {
  readonly tee: ProviderTee;
  evidence(reportData: Buffer): Promise<ProvidedEvidence>;
}

export class ProviderError extends Error {}

export function checkReportData(reportData: Buffer): void {
  if (reportData.length !== 64) throw new ProviderError(`report_data is 64 bytes, got ${reportData.length}`);
}
