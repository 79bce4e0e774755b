/**
 * What verifying evidence concludes, the same for every TEE. Measurement names are the policy
 * language's, so that a verdict can be pasted into a policy's measurements.
 */

/** Intel's TCB status words; "Unevaluated" where a vendor publishes no TCB status (AMD SEV-SNP). */
export type TcbStatus =
  | "UpToDate"
  | "SWHardeningNeeded"
  | "ConfigurationNeeded"
  | "ConfigurationAndSWHardeningNeeded"
  | "OutOfDate"
  | "OutOfDateConfigurationNeeded"
  | "Revoked"
  | "Unevaluated";

export interface Verdict {
  readonly tee: "sgx" | "tdx" | "snp" | "sim";
  readonly status: TcbStatus;
  readonly advisories: readonly string[];
  /** The enclave, TD or guest runs with debugging allowed: its memory is open to the host. */
  readonly debug: boolean;
  /** By the policy language's names: mrenclave, mrtd, rtmr0…, measurement, host_data, digest… */
  readonly measurements: Readonly<Record<string, string | number>>;
  /** 64 bytes, hex. */
  readonly report_data: string;
  /** True only for evidence from a LAS: no hardware protection at all. */
  readonly simulated: boolean;
  /** ISO time after which the collateral used no longer vouches for this verdict; null if none. */
  readonly collateral_expires: string | null;
  /** TEE-specific facts worth showing (product, TCB components, policy bits…). */
  readonly details: Readonly<Record<string, unknown>>;
}

/** A check that failed, named for the user: "signature", "chain", "CRL", "expired collateral"… */
export class VerificationError extends Error {
  readonly check: string;
  constructor(check: string, message: string) {
    super(`${check}: ${message}`);
    this.check = check;
  }
}
