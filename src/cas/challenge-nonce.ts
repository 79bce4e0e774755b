/**
 * Challenge nonces the CAS does not have to remember until they come back (DESIGN.md §5: 32
 * bytes, single-use, short-lived). A nonce carries its own expiry and is authenticated for one
 * config id:
 *
 *   expiry (6 bytes, ms since the epoch, big-endian) ‖ 10 random bytes ‖
 *   HMAC-SHA-256(key, "cloister-challenge-v1" ‖ 0x00 ‖ config id ‖ 0x00 ‖ expiry ‖ random)[0..16)
 *
 * Why: a challenge is the cheapest request there is, and answered without a client certificate.
 * Kept in a table until used or expired, challenges let a flood from many addresses fill memory
 * or the table's bound, after which honest runtimes were refused. Now issuing one stores nothing;
 * memory grows only with nonces *used* within their lifetime — each kept only once evidence bound
 * to it was shown (see unspend) — and that set is bounded too.
 *
 * The 80 random bits make every nonce distinct; the MAC (HMAC truncated to 128 bits, as RFC 2104
 * allows) makes it unforgeable and unpredictable, so evidence cannot be prepared for a future
 * nonce. The key is the CAS's (derived from its master key, CasService.challengeKey), so that a
 * challenge issued by one replica can be answered at another. The spent set here is this
 * process's fast path — a concurrent replay is caught before its evidence is verified — and not
 * the record: a nonce is recorded as spent in the database, in the transaction of the grant it
 * was used for (Store.appendAuditGrouped), where every replica, and this one after a restart,
 * finds it.
 */
import { createHmac, createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from "node:crypto";
import { randomBytesPooled } from "../crypto/random-pool.ts";

export const NONCE_BYTES = 32;
const EXPIRY_BYTES = 6;
const RANDOM_BYTES = 10;
const MAC_BYTES = NONCE_BYTES - EXPIRY_BYTES - RANDOM_BYTES;
const LABEL = Buffer.from("cloister-challenge-v1\0");
const SEPARATOR = Buffer.from([0]);
/** How far ahead of this one another replica's clock may be. */
const MAX_CLOCK_SKEW_MS = 5_000;

/** Why a nonce was not accepted; `busy` leaves it unspent (it may be tried again). */
export type NonceProblem = "malformed" | "not-issued" | "expired" | "spent" | "busy";

export class NonceError extends Error {
  readonly problem: NonceProblem;
  constructor(problem: NonceProblem, message: string) {
    super(message);
    this.problem = problem;
  }
}

export interface ChallengeNonceOptions {
  /** How long a nonce is valid. */
  readonly ttlMs: number;
  /** Used, unexpired nonces remembered at once, at most; past it attestations get `busy`. */
  readonly maxSpent: number;
  /**
   * Milliseconds since the epoch, never stepping back: the process's monotonic clock counted from
   * its start, by default. A wall clock stepped forward then back would let a used nonce be
   * forgotten as expired and then accepted again.
   */
  readonly now?: () => number;
  /** The MAC key; random if not given (the CAS passes its own: every replica agrees). */
  readonly key?: Buffer;
}

export class ChallengeNonces {
  readonly #key: KeyObject;
  readonly #ttlMs: number;
  readonly #maxSpent: number;
  readonly #now: () => number;
  /**
   * Used nonces (base64) → their expiry, in the order they were used. Each is kept until it
   * expires — after that the expiry check refuses it anyway.
   */
  readonly #spent = new Map<string, number>();

  constructor(options: ChallengeNonceOptions) {
    this.#key = createSecretKey(options.key ?? randomBytes(32));
    this.#ttlMs = options.ttlMs;
    this.#maxSpent = options.maxSpent;
    this.#now = options.now ?? monotonicNow;
  }

  /** A fresh nonce for `configId`, and when it expires (ms since the epoch). */
  issue(configId: string): { nonce: Buffer; expires: number } {
    const expires = this.#now() + this.#ttlMs;
    const nonce = Buffer.allocUnsafe(NONCE_BYTES);
    nonce.writeUIntBE(expires, 0, EXPIRY_BYTES);
    randomBytesPooled(RANDOM_BYTES).copy(nonce, EXPIRY_BYTES);
    this.#mac(configId, nonce.subarray(0, EXPIRY_BYTES + RANDOM_BYTES)).copy(nonce, EXPIRY_BYTES + RANDOM_BYTES);
    return { nonce, expires };
  }

  /**
   * Spend `encoded` (base64), which must be a nonce this instance issued for `configId`, not yet
   * expired or used; throws NonceError saying which it is not. Once this returns, the nonce is
   * spent — a concurrent replay finds it so — until `unspend` takes it back. Returns when it
   * expires (ms since the epoch).
   */
  spend(encoded: string, configId: string): number {
    const nonce = Buffer.from(typeof encoded === "string" ? encoded : "", "base64");
    if (nonce.length !== NONCE_BYTES || nonce.toString("base64") !== encoded)
      throw new NonceError("malformed", `the nonce is not ${NONCE_BYTES} bytes of base64: ask for a new challenge`);
    const body = nonce.subarray(0, EXPIRY_BYTES + RANDOM_BYTES);
    if (!timingSafeEqual(this.#mac(configId, body), nonce.subarray(EXPIRY_BYTES + RANDOM_BYTES)))
      throw new NonceError(
        "not-issued",
        `the nonce was not issued for ${configId} by this CAS (issued for another service, or made up): ask for a new challenge`,
      );
    const expires = nonce.readUIntBE(0, EXPIRY_BYTES);
    const now = this.#now();
    // Issued by this key, so by this CAS, a replica's clock a little ahead at most.
    if (expires > now + this.#ttlMs + MAX_CLOCK_SKEW_MS)
      throw new NonceError("not-issued", "the nonce expires later than any this CAS issues: ask for a new challenge");
    if (expires < now)
      throw new NonceError(
        "expired",
        `the nonce expired at ${new Date(expires).toISOString()}: ask for a new challenge`,
      );
    this.#sweep(now);
    if (this.#spent.has(encoded))
      throw new NonceError("spent", "the nonce was already used (replayed?): ask for a new challenge");
    if (this.#spent.size >= this.#maxSpent)
      throw new NonceError("busy", "too many attestations in the last minute; try again shortly");
    this.#spent.set(encoded, expires);
    return expires;
  }

  /**
   * Take back a spend that proved nothing: the attestation was refused before its evidence was
   * shown to be bound to this nonce. Only such evidence — which needs a TEE (or an enrolled LAS)
   * per nonce — then fills the spent set; a flood of made-up evidence does not.
   */
  unspend(encoded: string): void {
    this.#spent.delete(encoded);
  }

  /** Used nonces remembered now (tests and metrics). */
  get spentCount(): number {
    return this.#spent.size;
  }

  #mac(configId: string, body: Buffer): Buffer {
    return createHmac("sha256", this.#key)
      .update(LABEL)
      .update(configId)
      .update(SEPARATOR)
      .update(body)
      .digest()
      .subarray(0, MAC_BYTES);
  }

  /**
   * Forget expired nonces from the front of the map (the oldest used). Each used nonce expires
   * at most one lifetime after it was used, so one that expires late holds the ones behind it
   * for at most that long: constant time per call, memory bounded by a lifetime's worth of use.
   */
  #sweep(now: number): void {
    for (const [nonce, expires] of this.#spent) {
      if (expires >= now) break;
      this.#spent.delete(nonce);
    }
  }
}

function monotonicNow(): number {
  return Math.floor(performance.timeOrigin + performance.now());
}
