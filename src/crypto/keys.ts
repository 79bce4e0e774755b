/** Key helpers over node:crypto. */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";

/**
 * The name of an identity: lowercase hex SHA-256 of its public key's SubjectPublicKeyInfo
 * (DER). Certificates can be renewed; the key, and so the name, stays.
 */
export function spkiHash(key: KeyObject | string): string {
  const publicKey =
    typeof key === "string" ? createPublicKey(key) : key.type === "private" ? createPublicKey(key) : key;
  const der = publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("hex");
}

/** DER of a P-256 SubjectPublicKeyInfo up to the point: id-ecPublicKey, prime256v1, BIT STRING. */
export const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

/**
 * The uncompressed point of a P-256 SubjectPublicKeyInfo by its encoding alone, not checked to
 * be on the curve: for callers whose next step (an ECDH) decodes the point and so checks it.
 */
export function p256SpkiPoint(spki: Uint8Array): Buffer | undefined {
  const der = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength);
  if (der.length !== P256_SPKI_PREFIX.length + 65 || !der.subarray(0, P256_SPKI_PREFIX.length).equals(P256_SPKI_PREFIX))
    return undefined;
  const point = der.subarray(P256_SPKI_PREFIX.length);
  return point[0] === 0x04 ? point : undefined;
}
