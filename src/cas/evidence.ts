/**
 * Evidence as the runtime presents it to the CAS — {tee, quote, aux?} — verified with the pinned
 * roots and what the CAS trusts (imported collateral, enrolled LAS keys). The declared TEE must
 * be what the evidence is: hardware evidence is never taken for simulated or the reverse.
 */
import { parseQuote } from "../attestation/dcap/abi.ts";
import { splitPem } from "../attestation/dcap/collateral.ts";
import { pckExtension } from "../attestation/dcap/pck.ts";
import { dcapVerdict, prepareDcapQuote } from "../attestation/dcap/verify.ts";
import { evidenceKind } from "../attestation/evidence.ts";
import { mapPending, type PendingSignature, settle } from "../attestation/pending-signature.ts";
import { prepareSimEvidence, simVerdict } from "../attestation/sim/evidence.ts";
import { parseReport, SnpAbiError } from "../attestation/snp/abi.ts";
import { prepareSnpReport, snpVerdict } from "../attestation/snp/verify.ts";
import { type Verdict, VerificationError } from "../attestation/verdict.ts";
import type { SignatureCheck } from "../crypto/signature-check.ts";
import type { Evidence } from "../protocol/attestation.ts";
import type { TrustStore } from "./trust-store.ts";

/**
 * The runtime's evidence verified, with its own signature — the one check a warm verification
 * cannot remember: ECDSA P-384 for SEV-SNP (~0.7–1.4 ms), P-256 for DCAP quotes and simulated
 * reports — checked by `checkSignature` (the CAS's crypto thread, so that the event loop goes on
 * serving while it runs; or `checkSignature` of crypto/signature-check.ts, on this thread). Every other
 * check runs here, in the verifiers' own order, so the refusals are the same either way.
 */
export async function verifyEvidence(
  trust: TrustStore,
  evidence: Evidence,
  checkSignature: (check: SignatureCheck) => Promise<boolean>,
  options: {
    readonly at?: Date;
    /**
     * Called once the evidence has passed every check but its signature, in the same turn as
     * the signature check is asked for (the CAS asks for its key agreement there, so that the
     * two share a message to the thread); once per endorsement key tried.
     */
    readonly onPrepared?: () => void;
  } = {},
): Promise<Verdict> {
  const at = options.at ?? new Date();
  let last: unknown;
  for (const prepare of candidates(trust, evidence, at)) {
    try {
      const pending = prepare();
      options.onPrepared?.();
      return settle(pending, await checkSignature(pending.check));
    } catch (error) {
      // Only a refusal moves on to the next key; anything else is not the evidence's answer.
      if (!(error instanceof VerificationError)) throw error;
      last = error;
    }
  }
  throw last;
}

/**
 * The evidence's verification, prepared up to its signature: once, or for SEV-SNP once per
 * endorsement key that may have signed the report (the one sent with it, or those imported for
 * its chip). The first that verifies wins; if none does, the last refusal is the answer.
 */
function candidates(trust: TrustStore, evidence: Evidence, at: Date): (() => PendingSignature<Verdict>)[] {
  const bytes = Buffer.from(evidence.quote, "base64");
  switch (evidence.tee) {
    case "sim":
      return [() => mapPending(prepareSimEvidence(bytes, { trustedKeys: trust.lasKeys(), at }), simVerdict)];
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
      return [() => mapPending(prepareDcapQuote(bytes, collateral, { at }), dcapVerdict)];
    }
    case "snp": {
      if (evidenceKind(bytes) !== "snp-report")
        throw new VerificationError("format", "the evidence is not an SEV-SNP report, as tee snp says");
      let chip: string;
      try {
        chip = parseReport(bytes).chipId.toString("hex");
      } catch (error) {
        if (error instanceof SnpAbiError) throw new VerificationError("format", error.message);
        throw error;
      }
      const keys = evidence.aux
        ? [evidence.aux.includes("BEGIN") ? evidence.aux : Buffer.from(evidence.aux, "base64")]
        : trust.amdKeysFor(chip);
      if (keys.length === 0)
        throw new VerificationError("collateral", "no VCEK for this chip in the CAS, and none sent with the report");
      return keys.map((key) => () => mapPending(prepareSnpReport(bytes, { endorsementKey: key, at }), snpVerdict));
    }
  }
}
