/**
 * One signature check as data — algorithm, data, key, signature and its encoding — so that it
 * can be asked of another thread (crypto-worker.ts) and answered the same as on this one. What
 * it means when a check fails is the caller's (attestation/pending-signature.ts for evidence).
 */
import { type KeyObject, verify } from "node:crypto";

export interface SignatureCheck {
  readonly algorithm: "sha256" | "sha384";
  readonly data: Uint8Array;
  readonly key: KeyObject;
  readonly signature: Uint8Array;
  readonly dsaEncoding: "der" | "ieee-p1363";
}

/** The check, on the calling thread. */
export function checkSignature(check: SignatureCheck): boolean {
  return verify(check.algorithm, check.data, { key: check.key, dsaEncoding: check.dsaEncoding }, check.signature);
}
