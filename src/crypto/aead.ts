/**
 * AES-256-GCM sealing: nonce ‖ ciphertext ‖ tag. The additional data is authenticated, not
 * encrypted: it binds a sealed blob to where it belongs, so that a blob moved elsewhere fails.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from "node:crypto";

const NONCE = 12;
const TAG = 16;
export const KEY_BYTES = 32;

export class SealError extends Error {}

export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new Error("AES-256-GCM needs a 32-byte key");
  const nonce = randomBytes(NONCE);
  // A KeyObject, not the bytes: cheaper for the cipher to take (src/crypto/jwe.ts says why).
  const cipher = createCipheriv("aes-256-gcm", createSecretKey(key), nonce);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Open a sealed blob; throws SealError when it was altered or belongs elsewhere. */
export function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new Error("AES-256-GCM needs a 32-byte key");
  if (sealed.length < NONCE + TAG) throw new SealError("sealed data is too short");
  const nonce = sealed.subarray(0, NONCE);
  const tag = sealed.subarray(sealed.length - TAG);
  const decipher = createDecipheriv("aes-256-gcm", createSecretKey(key), nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(sealed.subarray(NONCE, sealed.length - TAG)), decipher.final()]);
  } catch {
    throw new SealError("authentication failed: the data was altered or belongs elsewhere");
  }
}

/** Additional data from labelled parts, unambiguous however the parts are chosen. */
export function aad(...parts: readonly (string | number)[]): Buffer {
  return Buffer.from(JSON.stringify(parts.map(String)), "utf8");
}
