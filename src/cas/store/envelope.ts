/**
 * Envelope encryption. The master key (KEK) wraps one data key per policy; the data key seals
 * that policy's records with AES-256-GCM. The additional data binds each sealed blob to its
 * record kind, policy name and version, so that a blob swapped between rows, altered, or
 * restored from an older copy of the database does not open where it does not belong.
 */
import { randomBytes } from "node:crypto";
import { aad, KEY_BYTES, open, SealError, seal } from "../../crypto/aead.ts";

export type RecordKind = "policy" | "version" | "secrets";

export class TamperError extends Error {}

export class Envelope {
  readonly #master: Buffer;
  readonly #keys = new Map<string, { wrapped: Buffer; key: Buffer }>();

  constructor(masterKey: Buffer) {
    if (masterKey.length !== KEY_BYTES) throw new Error("the master key must be 32 bytes");
    this.#master = masterKey;
  }

  /** A fresh data key for a new policy, and its wrapped form to store. */
  newDataKey(policy: string): { key: Buffer; wrapped: Buffer } {
    const key = randomBytes(KEY_BYTES);
    const wrapped = seal(this.#master, key, aad("cloister-dek-v1", policy));
    this.#keys.set(policy, { wrapped, key });
    return { key, wrapped };
  }

  /** Unwrap (and cache) a policy's data key. */
  dataKey(policy: string, wrapped: Buffer): Buffer {
    const cached = this.#keys.get(policy);
    if (cached?.wrapped.equals(wrapped)) return cached.key;
    try {
      const key = open(this.#master, wrapped, aad("cloister-dek-v1", policy));
      this.#keys.set(policy, { wrapped, key });
      return key;
    } catch (error) {
      if (error instanceof SealError)
        throw new TamperError(`the data key of policy ${policy} does not open: it was altered or moved`);
      throw error;
    }
  }

  forget(policy: string): void {
    this.#keys.delete(policy);
  }

  sealRecord(key: Buffer, kind: RecordKind, policy: string, version: number, value: unknown): Buffer {
    return seal(key, Buffer.from(JSON.stringify(value), "utf8"), aad("cloister-record-v1", kind, policy, version));
  }

  openRecord<T>(key: Buffer, kind: RecordKind, policy: string, version: number, sealed: Buffer): T {
    try {
      return JSON.parse(open(key, sealed, aad("cloister-record-v1", kind, policy, version)).toString("utf8")) as T;
    } catch (error) {
      if (error instanceof SealError) {
        throw new TamperError(
          `the ${kind} record of policy ${policy} version ${version} does not open: it was altered, swapped or restored`,
        );
      }
      throw error;
    }
  }

  /** Seal something that belongs to the CAS itself (its identity key) under the master key. */
  sealOwn(label: string, value: Buffer): Buffer {
    return seal(this.#master, value, aad("cloister-own-v1", label));
  }

  openOwn(label: string, sealed: Buffer): Buffer {
    try {
      return open(this.#master, sealed, aad("cloister-own-v1", label));
    } catch (error) {
      if (error instanceof SealError)
        throw new TamperError(`${label} does not open: wrong master key, or the store was altered`);
      throw error;
    }
  }
}
