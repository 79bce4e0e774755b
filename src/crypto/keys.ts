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
