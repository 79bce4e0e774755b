/**
 * The JWE suite of src/crypto/jwe.ts: RFC 7518's published Concat KDF example, interoperation
 * with `jose` in both directions, and refusal of everything altered, misaddressed or foreign.
 */
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import { CompactEncrypt, compactDecrypt, importSPKI } from "jose";
import { concatKdf, decryptCompact, encryptCompact, JweError } from "../../src/crypto/jwe.ts";

const p256 = () => generateKeyPairSync("ec", { namedCurve: "P-256" });
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

describe("Concat KDF", () => {
  test("RFC 7518 Appendix C: Alice's ephemeral key, Bob's key, A128GCM, apu Alice, apv Bob", () => {
    // The keys as the RFC prints them (a published test vector, not ours).
    const alice = createPrivateKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
        y: "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
        d: "0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo",
      },
      format: "jwk",
    });
    const bob = createPublicKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
        y: "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
      },
      format: "jwk",
    });
    const z = diffieHellman({ privateKey: alice, publicKey: bob });
    assert.deepEqual(
      [...z],
      [
        158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128, 106, 72,
        246, 218, 167, 121, 140, 254, 144, 196,
      ],
    );
    const key = concatKdf(z, "A128GCM", 128, Buffer.from("Alice"), Buffer.from("Bob"));
    assert.equal(key.toString("base64url"), "VqqN6vgjbSBcIijNcacQGg");
  });
});

describe("interoperation with jose", () => {
  test("what we encrypt, jose decrypts, header included", async () => {
    const { privateKey, publicKey } = p256();
    const jwe = encryptCompact(Buffer.from("the configuration"), publicKey, { cty: "cloister-configuration+json" });
    const { plaintext, protectedHeader } = await compactDecrypt(jwe, privateKey);
    assert.equal(Buffer.from(plaintext).toString(), "the configuration");
    assert.equal(protectedHeader.alg, "ECDH-ES+A256KW");
    assert.equal(protectedHeader.enc, "A256GCM");
    assert.equal(protectedHeader.cty, "cloister-configuration+json");
  });

  test("what jose encrypts, we decrypt — with and without apu/apv", async () => {
    const { privateKey, publicKey } = p256();
    const recipient = await importSPKI(publicKey.export({ type: "spki", format: "pem" }).toString(), "ECDH-ES+A256KW");
    for (const parties of [{}, { apu: Buffer.from("Alice"), apv: Buffer.from("Bob") }]) {
      for (const size of [0, 1, 15, 16, 17, 4096]) {
        const message = Buffer.alloc(size, size % 251);
        const jwe = await new CompactEncrypt(message)
          .setProtectedHeader({ alg: "ECDH-ES+A256KW", enc: "A256GCM" })
          .setKeyManagementParameters(parties)
          .encrypt(recipient);
        assert.deepEqual(decryptCompact(jwe, privateKey).plaintext, message);
      }
    }
  });

  test("jose refuses what we refuse: our JWE with any part altered", async () => {
    const { privateKey, publicKey } = p256();
    const jwe = encryptCompact(Buffer.from("x".repeat(40)), publicKey);
    for (const altered of everyPartAltered(jwe)) {
      await assert.rejects(compactDecrypt(altered, privateKey));
      assert.throws(() => decryptCompact(altered, privateKey), JweError);
    }
  });
});

describe("refusals", () => {
  const { privateKey, publicKey } = p256();
  const jwe = encryptCompact(Buffer.from("secret"), publicKey);
  const [, key, iv, ciphertext, tag] = jwe.split(".");
  const withHeader = (header: unknown) => [b64(header), key, iv, ciphertext, tag].join(".");
  const epk = JSON.parse(Buffer.from(jwe.split(".")[0]!, "base64url").toString()).epk;

  test("a round trip works, and every single-bit change of any part is refused", () => {
    assert.equal(decryptCompact(jwe, privateKey).plaintext.toString(), "secret");
    const bytes = Buffer.from(jwe, "ascii");
    for (let i = 0; i < bytes.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = Buffer.from(bytes);
        flipped[i]! ^= 1 << bit;
        assert.throws(() => decryptCompact(flipped.toString("latin1"), privateKey), JweError, `byte ${i} bit ${bit}`);
      }
    }
  });

  test("another recipient's key", () => {
    assert.throws(() => decryptCompact(jwe, p256().privateKey), /does not unwrap/);
  });

  test("another suite, an unknown or critical header member, compression", () => {
    assert.throws(
      () => decryptCompact(withHeader({ alg: "ECDH-ES", enc: "A256GCM", epk }), privateKey),
      /alg: expected/,
    );
    assert.throws(
      () => decryptCompact(withHeader({ alg: "ECDH-ES+A256KW", enc: "A128GCM", epk }), privateKey),
      /enc: expected/,
    );
    assert.throws(
      () => decryptCompact(withHeader({ alg: "ECDH-ES+A256KW", enc: "A256GCM", epk, zip: "DEF" }), privateKey),
      /"zip" is not supported/,
    );
    assert.throws(
      () => decryptCompact(withHeader({ alg: "ECDH-ES+A256KW", enc: "A256GCM", epk, crit: ["x"] }), privateKey),
      /"crit" is not supported/,
    );
  });

  test("an ephemeral key that is not on P-256, or of another curve", () => {
    const offCurve = { ...epk, y: Buffer.alloc(32, 1).toString("base64url") };
    assert.throws(
      () => decryptCompact(withHeader({ alg: "ECDH-ES+A256KW", enc: "A256GCM", epk: offCurve }), privateKey),
      /not a point on P-256/,
    );
    assert.throws(
      () =>
        decryptCompact(
          withHeader({ alg: "ECDH-ES+A256KW", enc: "A256GCM", epk: { ...epk, crv: "P-384" } }),
          privateKey,
        ),
      /expected a P-256 public key/,
    );
  });

  test("malformed compact forms say which part", () => {
    assert.throws(() => decryptCompact("a.b.c", privateKey), /5 parts/);
    assert.throws(
      () => decryptCompact(`${jwe.split(".")[0]}.${key}.${iv}.${ciphertext}.${tag}!`, privateKey),
      /tag: not base64url/,
    );
    assert.throws(() => decryptCompact([b64({}), key, iv, ciphertext, tag].join("."), privateKey), /alg: expected/);
    assert.throws(() => decryptCompact(["bm90IGpzb24", key, iv, ciphertext, tag].join("."), privateKey), /not JSON/);
    assert.throws(
      () => decryptCompact([jwe.split(".")[0], key, "AAAA", ciphertext, tag].join("."), privateKey),
      /initialization vector: expected 12 bytes/,
    );
  });

  test("keys of the wrong kind are refused before any work", () => {
    assert.throws(() => encryptCompact(Buffer.from("x"), privateKey), /P-256 public key/);
    assert.throws(() => decryptCompact(jwe, publicKey), /P-256 private key/);
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
    assert.throws(() => encryptCompact(Buffer.from("x"), p384.publicKey), /P-256 public key/);
    // As SubjectPublicKeyInfo bytes: the encoding of a P-256 key, but y changed — off the curve.
    const spki = publicKey.export({ type: "spki", format: "der" });
    spki[spki.length - 1]! ^= 1;
    assert.throws(() => encryptCompact(Buffer.from("x"), spki), /P-256 public key: the point is not on the curve/);
    assert.throws(() => encryptCompact(Buffer.from("x"), spki.subarray(0, 60)), /P-256 public key/);
  });
});

/** The JWE with one character of each part replaced (kept valid base64url). */
function everyPartAltered(jwe: string): string[] {
  const parts = jwe.split(".");
  return parts.map((part, i) => {
    const at = Math.floor(part.length / 2);
    const swapped = part[at] === "A" ? "B" : "A";
    const copy = [...parts];
    copy[i] = part.slice(0, at) + swapped + part.slice(at + 1);
    return copy.join(".");
  });
}
