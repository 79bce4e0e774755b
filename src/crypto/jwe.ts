/**
 * Compact JWE (RFC 7516) in the one suite Cloister uses: key agreement with ECDH-ES+A256KW
 * (RFC 7518 §4.6) to a P-256 key, content sealed with A256GCM. The configuration a runtime
 * receives travels this way, to the ephemeral key its evidence bound.
 *
 * Built from node:crypto (OpenSSL) primitives — ECDH, SHA-256 for the Concat KDF, AES key wrap
 * (RFC 3394), AES-256-GCM — composed exactly as RFC 7518 says, rather than through `jose`:
 * loading jose cost a `cloister run` about 20 ms at every start and its WebCrypto path was a
 * fifth of the CAS's work per attestation. `jose` stays in the tests as an independent reader
 * and writer (test/crypto/jwe.test.ts checks both directions).
 *
 * Keys go to ciphers as KeyObjects (createSecretKey): given raw bytes, Node 24's cipher
 * constructors first test whether they are a KeyObject or a CryptoKey by throwing and catching,
 * which costs four times what making the KeyObject does.
 */
import {
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHash,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  type KeyObject,
} from "node:crypto";
import { p256SpkiPoint } from "./keys.ts";
import { randomBytesPooled } from "./random-pool.ts";

export const JWE_ALG = "ECDH-ES+A256KW";
export const JWE_ENC = "A256GCM";

/** The protected header of a JWE this module writes or accepts. */
export interface JweHeader {
  readonly alg: typeof JWE_ALG;
  readonly enc: typeof JWE_ENC;
  readonly epk: { readonly kty: "EC"; readonly crv: "P-256"; readonly x: string; readonly y: string };
  readonly apu?: string;
  readonly apv?: string;
  readonly cty?: string;
  readonly typ?: string;
  readonly kid?: string;
}

/** A JWE that is malformed, of another suite, altered, or for another key. */
export class JweError extends Error {}

/** RFC 3394's default initial value: the integrity check of AES key wrap. */
const KEY_WRAP_IV = Buffer.from("a6a6a6a6a6a6a6a6", "hex");
const CEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Header members understood here; any other (say `zip` or `crit`) is refused, never ignored. */
const KNOWN = new Set(["alg", "enc", "epk", "apu", "apv", "cty", "typ", "kid"]);

/**
 * ECDH-ES's key agreement: a fresh ephemeral key and its shared secret with the recipient's
 * point — the one costly step of sealing (two P-256 scalar multiplications).
 */
export interface KeyAgreement {
  /** The ephemeral public key, uncompressed (04 ‖ x ‖ y). */
  readonly epk: Buffer;
  readonly shared: Buffer;
}

/** The key agreement for the uncompressed P-256 point `point`, on this thread. */
export function agreeEphemeral(point: Buffer): KeyAgreement {
  // The raw ECDH interface: a third of the cost of KeyObjects for a one-off ephemeral key.
  const ephemeral = createECDH("prime256v1");
  const epk = ephemeral.generateKeys();
  try {
    return { epk, shared: ephemeral.computeSecret(point) };
  } catch {
    throw new JweError("expected a P-256 public key: the point is not on the curve");
  }
}

/**
 * ECDH-ES+A256KW's key management for one JWE (RFC 7518 §4.6): the key agreement, the Concat
 * KDF's key-encryption key, a fresh content key and that key wrapped — everything of sealing
 * but the content's own encryption, and none of it depending on the content. So it is the part
 * the CAS hands to a worker thread (CryptoWorker), in one piece: each cipher and hash made costs
 * the event loop its set-up, whatever the size of what it then processes.
 */
export interface KeyManagement {
  /** The ephemeral public key, uncompressed (04 ‖ x ‖ y). */
  readonly epk: Buffer;
  /** The content-encryption key (A256GCM), fresh. */
  readonly cek: Buffer;
  /** The content-encryption key wrapped (A256KW) under the agreed key. */
  readonly encryptedKey: Buffer;
}

/** The key management for the uncompressed P-256 point `point`, on this thread. */
export function manageKey(point: Buffer): KeyManagement {
  const { epk, shared } = agreeEphemeral(point);
  let kek: Buffer | undefined;
  const cek = randomBytesPooled(CEK_BYTES);
  try {
    kek = concatKdf(shared, JWE_ALG, 256);
    const wrap = createCipheriv("id-aes256-wrap", createSecretKey(kek), KEY_WRAP_IV);
    return { epk, cek, encryptedKey: Buffer.concat([wrap.update(cek), wrap.final()]) };
  } catch (error) {
    cek.fill(0);
    throw error;
  } finally {
    // Best effort, as clearing memory from JavaScript is: OpenSSL's own copies are out of reach.
    shared.fill(0);
    kek?.fill(0);
  }
}

/**
 * Encrypt `plaintext` to the P-256 public key `recipient` (a KeyObject, or its
 * SubjectPublicKeyInfo DER); `header` adds cty, typ or kid.
 */
export function encryptCompact(
  plaintext: Uint8Array,
  recipient: KeyObject | Buffer,
  header: Pick<JweHeader, "cty" | "typ" | "kid"> = {},
): string {
  return sealCompact(plaintext, manageKey(p256Point(recipient)), header);
}

/**
 * The compact JWE of `plaintext` with its key management already done (manageKey, on a worker
 * thread, say): the content's encryption, cheap and synchronous.
 */
export function sealCompact(
  plaintext: Uint8Array,
  { epk, cek, encryptedKey }: KeyManagement,
  header: Pick<JweHeader, "cty" | "typ" | "kid">,
): string {
  const protectedHeader: JweHeader = {
    alg: JWE_ALG,
    enc: JWE_ENC,
    ...header,
    epk: {
      kty: "EC",
      crv: "P-256",
      x: epk.subarray(1, 33).toString("base64url"),
      y: epk.subarray(33).toString("base64url"),
    },
  };
  const encodedHeader = Buffer.from(JSON.stringify(protectedHeader)).toString("base64url");
  const iv = randomBytesPooled(IV_BYTES);
  const gcm = createCipheriv("aes-256-gcm", createSecretKey(cek), iv);
  gcm.setAAD(Buffer.from(encodedHeader, "ascii"));
  const ciphertext = Buffer.concat([gcm.update(plaintext), gcm.final()]);
  return [encodedHeader, encryptedKey, iv, ciphertext, gcm.getAuthTag()]
    .map((part) => (typeof part === "string" ? part : part.toString("base64url")))
    .join(".");
}

/** Decrypt a compact JWE with the P-256 private key `key`; throws JweError saying what is wrong. */
export function decryptCompact(jwe: string, key: KeyObject): { plaintext: Buffer; header: JweHeader } {
  requireP256(key, "private");
  const parts = jwe.split(".");
  if (parts.length !== 5)
    throw new JweError(`a compact JWE has 5 parts separated by ".", this one has ${parts.length}`);
  const [encodedHeader, encodedKey, encodedIv, encodedCiphertext, encodedTag] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  const header = parseHeader(encodedHeader);
  const encryptedKey = base64url(encodedKey, "encrypted key", CEK_BYTES + 8);
  const iv = base64url(encodedIv, "initialization vector", IV_BYTES);
  const ciphertext = base64url(encodedCiphertext, "ciphertext");
  const tag = base64url(encodedTag, "authentication tag", TAG_BYTES);

  let epk: KeyObject;
  try {
    // OpenSSL refuses a point that is not on the curve: no invalid-curve attack on `key`.
    epk = createPublicKey({ key: { kty: "EC", crv: "P-256", x: header.epk.x, y: header.epk.y }, format: "jwk" });
  } catch {
    throw new JweError("header epk: not a point on P-256");
  }
  const shared = diffieHellman({ privateKey: key, publicKey: epk });
  const kek = concatKdf(
    shared,
    JWE_ALG,
    256,
    header.apu === undefined ? Buffer.alloc(0) : base64url(header.apu, "header apu"),
    header.apv === undefined ? Buffer.alloc(0) : base64url(header.apv, "header apv"),
  );
  shared.fill(0);
  let cek: Buffer;
  try {
    const unwrap = createDecipheriv("id-aes256-wrap", createSecretKey(kek), KEY_WRAP_IV);
    cek = Buffer.concat([unwrap.update(encryptedKey), unwrap.final()]);
  } catch {
    throw new JweError("the content key does not unwrap: encrypted for another key, or altered");
  } finally {
    kek.fill(0); // best effort, as in manageKey
  }
  const contentKey = createSecretKey(cek);
  cek.fill(0);
  const gcm = createDecipheriv("aes-256-gcm", contentKey, iv);
  gcm.setAAD(Buffer.from(encodedHeader, "ascii"));
  gcm.setAuthTag(tag);
  try {
    return { plaintext: Buffer.concat([gcm.update(ciphertext), gcm.final()]), header };
  } catch {
    throw new JweError("authentication failed: the JWE was altered");
  }
}

/**
 * The Concat KDF of NIST SP 800-56A as RFC 7518 §4.6.2 instantiates it with SHA-256:
 * AlgorithmID, PartyUInfo and PartyVInfo length-prefixed, SuppPubInfo the key length in bits.
 */
export function concatKdf(
  sharedSecret: Uint8Array,
  algorithmId: string,
  keyBits: number,
  partyUInfo: Uint8Array = Buffer.alloc(0),
  partyVInfo: Uint8Array = Buffer.alloc(0),
): Buffer {
  const otherInfo = Buffer.concat([
    lengthPrefixed(Buffer.from(algorithmId, "ascii")),
    lengthPrefixed(partyUInfo),
    lengthPrefixed(partyVInfo),
    uint32(keyBits),
  ]);
  const rounds = Math.ceil(keyBits / 256);
  const output: Buffer[] = [];
  for (let round = 1; round <= rounds; round++) {
    output.push(createHash("sha256").update(uint32(round)).update(sharedSecret).update(otherInfo).digest());
  }
  // Memory of its own, not Node's shared pool slab (see random-pool.ts), and the rounds cleared:
  // clearing `key` then clears this module's copies of it.
  const key = Buffer.allocUnsafeSlow(keyBits / 8);
  let at = 0;
  for (const round of output) {
    at += round.copy(key, at);
    round.fill(0);
  }
  return key;
}

function parseHeader(encoded: string): JweHeader {
  let header: unknown;
  try {
    header = JSON.parse(base64url(encoded, "protected header").toString("utf8"));
  } catch (error) {
    if (error instanceof JweError) throw error;
    throw new JweError("protected header: not JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    throw new JweError("protected header: not a JSON object");
  const h = header as Record<string, unknown>;
  for (const name of Object.keys(h)) {
    if (!KNOWN.has(name)) throw new JweError(`protected header: "${name}" is not supported`);
  }
  if (h.alg !== JWE_ALG) throw new JweError(`protected header alg: expected ${JWE_ALG}, got ${JSON.stringify(h.alg)}`);
  if (h.enc !== JWE_ENC) throw new JweError(`protected header enc: expected ${JWE_ENC}, got ${JSON.stringify(h.enc)}`);
  const epk = h.epk as Record<string, unknown> | undefined;
  if (
    typeof epk !== "object" ||
    epk === null ||
    epk.kty !== "EC" ||
    epk.crv !== "P-256" ||
    typeof epk.x !== "string" ||
    typeof epk.y !== "string"
  )
    throw new JweError("protected header epk: expected a P-256 public key (kty EC, crv P-256, x, y)");
  for (const name of ["apu", "apv", "cty", "typ", "kid"] as const) {
    if (h[name] !== undefined && typeof h[name] !== "string")
      throw new JweError(`protected header ${name}: expected a string`);
  }
  return h as unknown as JweHeader;
}

/** Strict base64url: Buffer.from would skip stray characters silently. */
function base64url(text: string, what: string, bytes?: number): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new JweError(`${what}: not base64url`);
  const value = Buffer.from(text, "base64url");
  if (value.toString("base64url") !== text) throw new JweError(`${what}: not canonical base64url`);
  if (bytes !== undefined && value.length !== bytes)
    throw new JweError(`${what}: expected ${bytes} bytes, got ${value.length}`);
  return value;
}

/**
 * The uncompressed point (04 ‖ x ‖ y) of a P-256 public key. Whether it is on the curve, ECDH's
 * computeSecret checks: it decodes the point, and refuses one that is not (tested).
 */
function p256Point(key: KeyObject | Buffer): Buffer {
  if (!Buffer.isBuffer(key) && key.type !== "public") throw new JweError("expected a P-256 public key");
  const point = p256SpkiPoint(Buffer.isBuffer(key) ? key : key.export({ type: "spki", format: "der" }));
  if (!point) throw new JweError("expected a P-256 public key");
  return point;
}

function requireP256(key: KeyObject, type: "public" | "private"): void {
  if (key.type !== type || key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1")
    throw new JweError(`expected a P-256 ${type} key`);
}

function lengthPrefixed(value: Uint8Array): Buffer {
  return Buffer.concat([uint32(value.length), value]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
