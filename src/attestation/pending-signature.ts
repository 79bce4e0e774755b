/**
 * A verification that is complete but for one signature check. SEV-SNP's report signature is
 * ECDSA P-384: ~0.7–1.4 ms of CPU, more than everything else an attestation costs the CAS, and
 * done on the event loop it stalls every other runtime for that long. A verifier can instead
 * hand back what it would check (`check`) and what it would do after (`afterwards`), so that the
 * check runs elsewhere (the CAS's crypto worker thread) and the rest runs only once it passed:
 * `settle` is the one way to the result, and it refuses unless the signature verified.
 *
 * Checks stay in the verifier's order: whatever the verifier checked before the signature it
 * still checks before, and whatever after, after — so the same evidence is refused with the
 * same reason wherever its signature is checked.
 *
 * The check itself is crypto's (crypto/signature-check.ts): the worker thread runs it without
 * knowing what it is for; what a failed check means for the evidence is settled here.
 */
import { checkSignature, type SignatureCheck } from "../crypto/signature-check.ts";
import { VerificationError } from "./verdict.ts";

export interface PendingSignature<T> {
  readonly check: SignatureCheck;
  /** Why the evidence is refused if the signature does not verify. */
  readonly failure: string;
  /** The rest of the verification; not named `then`, which would make this a thenable. */
  readonly afterwards: () => T;
}

/** The verification's result if its signature verified (`verified`); a refusal otherwise. */
export function settle<T>(pending: PendingSignature<T>, verified: boolean): T {
  if (verified !== true) throw new VerificationError("signature", pending.failure);
  return pending.afterwards();
}

/** Prepare, check on the calling thread, settle: the synchronous verification. */
export const settledNow = <T>(pending: PendingSignature<T>): T => settle(pending, checkSignature(pending.check));

/** The same pending verification, its result passed through `f` afterwards. */
export const mapPending = <T, U>(pending: PendingSignature<T>, f: (t: T) => U): PendingSignature<U> => ({
  check: pending.check,
  failure: pending.failure,
  afterwards: () => f(pending.afterwards()),
});
