/**
 * Evidence as the runtime presents it to the CAS — {tee, quote, aux?} — verified with the pinned
 * roots and what the CAS trusts (imported collateral, enrolled LAS keys). The declared TEE must
 * be what the evidence is: hardware evidence is never taken for simulated or the reverse.
 */
import { parseQuote } from "../attestation/dcap/abi.ts";
import { splitPem } from "../attestation/dcap/collateral.ts";
import { pckExtension } from "../attestation/dcap/pck.ts";
import { dcapVerdict, verifyDcapQuote } from "../attestation/dcap/verify.ts";
import { evidenceKind } from "../attestation/evidence.ts";
import { simVerdict, verifySimEvidence } from "../attestation/sim/evidence.ts";
import { parseReport } from "../attestation/snp/abi.ts";
import { snpVerdict, verifySnpReport } from "../attestation/snp/verify.ts";
import { type Verdict, VerificationError } from "../attestation/verdict.ts";
import type { TrustStore } from "./trust-store.ts";

export interface Evidence {
  readonly tee: "sgx" | "tdx" | "snp" | "sim";
  /** The quote, report or simulated evidence, base64. */
  readonly quote: string;
  /** SEV-SNP: the VCEK or VLEK certificate (PEM or base64 DER), when not imported into the CAS. */
  readonly aux?: string | undefined;
}

export function verifyEvidence(trust: TrustStore, evidence: Evidence, at: Date = new Date()): Verdict {
  const bytes = Buffer.from(evidence.quote, "base64");
  switch (evidence.tee) {
    case "sim":
      return simVerdict(verifySimEvidence(bytes, { trustedKeys: trust.lasKeys(), at }));
    case "sgx":
    case "tdx": {
      if (evidenceKind(bytes) !== "dcap-quote")
        throw new VerificationError("format", `the evidence is not a DCAP quote, as tee ${evidence.tee} says`);
      let fmspc: string;
      try {
        const quote = parseQuote(bytes);
        if (quote.tee !== evidence.tee)
          throw new VerificationError("format", `a ${quote.tee} quote presented as ${evidence.tee}`);
        fmspc = pckExtension(splitPem(quote.certification.pckChainPem)[0]!.raw).fmspc;
      } catch (error) {
        if (error instanceof VerificationError) throw error;
        throw new VerificationError("format", (error as Error).message);
      }
      const collateral = trust.dcapFor(evidence.tee, fmspc);
      if (!collateral) {
        throw new VerificationError(
          "collateral",
          `no ${evidence.tee.toUpperCase()} collateral for FMSPC ${fmspc} in this CAS: import it with cloister collateral import`,
        );
      }
      return dcapVerdict(verifyDcapQuote(bytes, collateral, { at }));
    }
    case "snp": {
      if (evidenceKind(bytes) !== "snp-report")
        throw new VerificationError("format", "the evidence is not an SEV-SNP report, as tee snp says");
      const chip = parseReport(bytes).chipId.toString("hex");
      const candidates = evidence.aux
        ? [evidence.aux.includes("BEGIN") ? evidence.aux : Buffer.from(evidence.aux, "base64")]
        : trust.amdKeysFor(chip);
      if (candidates.length === 0)
        throw new VerificationError("collateral", "no VCEK for this chip in the CAS, and none sent with the report");
      let last: unknown;
      for (const key of candidates) {
        try {
          return snpVerdict(verifySnpReport(bytes, { endorsementKey: key, at }));
        } catch (error) {
          last = error;
        }
      }
      throw last;
    }
  }
}
