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
import { type PendingSignature, type SignatureCheck, settle, settledNow } from "../attestation/pending-signature.ts";
import { simVerdict, verifySimEvidence } from "../attestation/sim/evidence.ts";
import { parseReport, SnpAbiError } from "../attestation/snp/abi.ts";
import { prepareSnpReport, type SnpVerified, snpVerdict } from "../attestation/snp/verify.ts";
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
  if (evidence.tee !== "snp") return verifyOnThisThread(trust, evidence.tee, evidence.quote, at);
  let last: unknown;
  for (const prepare of snpCandidates(trust, evidence, at)) {
    try {
      return snpVerdict(settledNow(prepare()));
    } catch (error) {
      last = error;
    }
  }
  throw last;
}

/**
 * verifyEvidence, with SEV-SNP's report signature (ECDSA P-384, the one costly check a warm
 * verification cannot remember) checked by `checkSignature` — the CAS's crypto thread — so that
 * the event loop goes on serving while it runs. Every other check, in the same order, and the
 * same refusals.
 */
export async function verifyEvidenceOffloaded(
  trust: TrustStore,
  evidence: Evidence,
  checkSignature: (check: SignatureCheck) => Promise<boolean>,
  at: Date = new Date(),
): Promise<Verdict> {
  if (evidence.tee !== "snp") return verifyOnThisThread(trust, evidence.tee, evidence.quote, at);
  let last: unknown;
  for (const prepare of snpCandidates(trust, evidence, at)) {
    try {
      const pending = prepare();
      return snpVerdict(settle(pending, await checkSignature(pending.check)));
    } catch (error) {
      last = error;
    }
  }
  throw last;
}

/** Simulated and DCAP evidence: their one uncached signature is P-256, checked here (crypto-worker.ts says why). */
function verifyOnThisThread(trust: TrustStore, tee: "sim" | "sgx" | "tdx", quote: string, at: Date): Verdict {
  const bytes = Buffer.from(quote, "base64");
  switch (tee) {
    case "sim":
      return simVerdict(verifySimEvidence(bytes, { trustedKeys: trust.lasKeys(), at }));
    case "sgx":
    case "tdx": {
      if (evidenceKind(bytes) !== "dcap-quote")
        throw new VerificationError("format", `the evidence is not a DCAP quote, as tee ${tee} says`);
      let fmspc: string;
      try {
        const quote = parseQuote(bytes);
        if (quote.tee !== tee) throw new VerificationError("format", `a ${quote.tee} quote presented as ${tee}`);
        fmspc = pckExtension(splitPem(quote.certification.pckChainPem)[0]!.raw).fmspc;
      } catch (error) {
        if (error instanceof VerificationError) throw error;
        throw new VerificationError("format", (error as Error).message);
      }
      const collateral = trust.dcapFor(tee, fmspc);
      if (!collateral) {
        throw new VerificationError(
          "collateral",
          `no ${tee.toUpperCase()} collateral for FMSPC ${fmspc} in this CAS: import it with cloister collateral import`,
        );
      }
      return dcapVerdict(verifyDcapQuote(bytes, collateral, { at }));
    }
  }
}

/**
 * An SEV-SNP report's verification, prepared up to its signature, once per endorsement key that
 * may have signed it: the one sent with the report, or those imported for its chip. The first
 * that verifies wins; if none does, the last refusal is the answer.
 */
function snpCandidates(trust: TrustStore, evidence: Evidence, at: Date): (() => PendingSignature<SnpVerified>)[] {
  const bytes = Buffer.from(evidence.quote, "base64");
  if (evidenceKind(bytes) !== "snp-report")
    throw new VerificationError("format", "the evidence is not an SEV-SNP report, as tee snp says");
  let chip: string;
  try {
    chip = parseReport(bytes).chipId.toString("hex");
  } catch (error) {
    if (error instanceof SnpAbiError) throw new VerificationError("format", error.message);
    throw error;
  }
  const candidates = evidence.aux
    ? [evidence.aux.includes("BEGIN") ? evidence.aux : Buffer.from(evidence.aux, "base64")]
    : trust.amdKeysFor(chip);
  if (candidates.length === 0)
    throw new VerificationError("collateral", "no VCEK for this chip in the CAS, and none sent with the report");
  return candidates.map((key) => () => prepareSnpReport(bytes, { endorsementKey: key, at }));
}
