/**
 * Detached signatures by identities over a policy hash, for multi-party rules. A signature is
 * `cloister-sig-v1.<base64url SPKI>.<base64url ECDSA P-256/SHA-256 DER signature>`: it carries
 * the public key so that the CAS can check it against the identity hash a rule names.
 */
import { createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { spkiHash } from "./keys.ts";

const PREFIX = "cloister-sig-v1";

/**
 * "write" approves a policy version (a create has no predecessor, an update names one, so the
 * hash tells them apart); "delete" approves deleting the version with that hash. Without the
 * action, an approval of version H could be replayed to delete H.
 */
export type SignedAction = "write" | "delete";

/** What is signed: the action and the policy hash, domain-separated from everything else. */
export function signedMessage(action: SignedAction, policyName: string, policyHash: string): Buffer {
  return Buffer.from(`cloister-policy-signature-v1\0${action}\0${policyName}\0${policyHash}`, "utf8");
}

export function signPolicy(
  privateKey: KeyObject | string,
  action: SignedAction,
  policyName: string,
  policyHash: string,
): string {
  const key = typeof privateKey === "string" ? privateKey : privateKey;
  const spki = createPublicKey(key).export({ type: "spki", format: "der" });
  const signature = sign("sha256", signedMessage(action, policyName, policyHash), key);
  return `${PREFIX}.${spki.toString("base64url")}.${signature.toString("base64url")}`;
}

export class SignatureError extends Error {}

/** The identity that made `signature` over the action and hash; throws SignatureError otherwise. */
export function verifyPolicySignature(
  signature: string,
  action: SignedAction,
  policyName: string,
  policyHash: string,
): string {
  const parts = signature.split(".");
  if (parts.length !== 3 || parts[0] !== PREFIX) throw new SignatureError(`not a ${PREFIX} signature`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(parts[1]!, "base64url"), format: "der", type: "spki" });
  } catch {
    throw new SignatureError("the signature's public key cannot be parsed");
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new SignatureError("identities are P-256 keys");
  }
  const ok = verify("sha256", signedMessage(action, policyName, policyHash), key, Buffer.from(parts[2]!, "base64url"));
  if (!ok)
    throw new SignatureError(
      `the signature does not match ${action} of ${policyName} at hash ${policyHash.slice(0, 12)}…`,
    );
  return spkiHash(key);
}
