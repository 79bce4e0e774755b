/**
 * The CAS's crypto worker thread. The JWE's key management: what it seals opens with the
 * recipient's key (by this project's reader and by jose), answers go to their own callers
 * however many are in flight, a point off the curve is refused as on the calling thread, and a
 * stopped thread leaves key management to the calling thread. Signature checks: the thread's
 * answer is the calling thread's, for good, altered and unusable signatures, mixed with key
 * management in one batch.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import { compactDecrypt } from "jose";
import { type Answer, CryptoWorker, errorOf } from "../../src/crypto/crypto-worker.ts";
import { agreeEphemeral, decryptCompact, JweError, type KeyManagement, sealCompact } from "../../src/crypto/jwe.ts";
import { p256SpkiPoint } from "../../src/crypto/keys.ts";
import { checkSignature, type SignatureCheck } from "../../src/crypto/signature-check.ts";

const p256 = () => generateKeyPairSync("ec", { namedCurve: "P-256" });
const spkiOf = (k: ReturnType<typeof p256>) => k.publicKey.export({ type: "spki", format: "der" });
/** A JWE to `spki` with the key management done by `agree` (the CAS's way: that, then sealCompact). */
const sealWith = async (
  agree: (point: Buffer) => Promise<KeyManagement>,
  plaintext: Buffer,
  spki: Buffer,
  header: { cty?: string } = {},
) => sealCompact(plaintext, await agree(p256SpkiPoint(spki)!), header);

/** A good P-384 signature check, as an SEV-SNP report's (the costliest question the thread gets). */
function p384Check(): SignatureCheck {
  const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
  const data = randomBytes(672);
  return {
    algorithm: "sha384",
    data,
    key: p384.publicKey,
    signature: sign("sha384", data, { key: p384.privateKey, dsaEncoding: "ieee-p1363" }),
    dsaEncoding: "ieee-p1363",
  };
}

/**
 * `body` run as a module of its own in a child process, with CryptoWorker imported: for what only
 * a process's exit shows (whether the thread keeps it up, or lets it go too early).
 */
function runWithCryptoWorker(body: string, timeout: number) {
  const module = join(import.meta.dirname, "..", "..", "src", "crypto", "crypto-worker.ts");
  const dir = mkdtempSync(join(tmpdir(), "cloister-crypto-worker-"));
  try {
    writeFileSync(join(dir, "child.mjs"), `import { CryptoWorker } from ${JSON.stringify(module)};\n${body}`);
    return spawnSync(process.execPath, [join(dir, "child.mjs")], { timeout });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("the crypto worker thread", () => {
  const worker = new CryptoWorker();
  after(() => worker.close());

  test("a JWE sealed with the thread's key management opens with the recipient's key, here and in jose", async () => {
    const recipient = p256();
    const jwe = await sealWith(worker.manageKey, Buffer.from("for K only"), spkiOf(recipient), { cty: "text" });
    assert.equal(worker.threaded, true, "the agreement was made on the thread");
    assert.equal(decryptCompact(jwe, recipient.privateKey).plaintext.toString(), "for K only");
    const opened = await compactDecrypt(jwe, recipient.privateKey);
    assert.equal(Buffer.from(opened.plaintext).toString(), "for K only");
    assert.equal(opened.protectedHeader.cty, "text");
  });

  test("200 in flight at once: each answer reaches its own caller", async () => {
    const recipients = Array.from({ length: 200 }, p256);
    const sealed = await Promise.all(
      recipients.map((r, i) => sealWith(worker.manageKey, Buffer.from(`message ${i}`), spkiOf(r))),
    );
    for (const [i, jwe] of sealed.entries())
      assert.equal(decryptCompact(jwe, recipients[i]!.privateKey).plaintext.toString(), `message ${i}`);
    const epks = new Set(sealed.map((jwe) => jwe.split(".")[0]));
    assert.equal(epks.size, 200, "a fresh ephemeral key each time");
    // The content keys themselves (their wrapped forms differ anyway: each has its own KEK).
    const point = p256SpkiPoint(spkiOf(recipients[0]!))!;
    const managed = await Promise.all(Array.from({ length: 50 }, () => worker.manageKey(point)));
    assert.equal(new Set(managed.map((k) => k.cek.toString("hex"))).size, 50, "a fresh content key each time");
  });

  test("a point off the curve is refused, as on the calling thread", async () => {
    const point = Buffer.from(spkiOf(p256()).subarray(-65));
    point[64]! ^= 1;
    assert.throws(() => agreeEphemeral(point), JweError);
    await assert.rejects(
      worker.manageKey(point),
      (e: Error) => e instanceof JweError && /not on the curve/.test(e.message),
    );
  });

  test("only a point the thread refuses is a JweError (a 400); a failure of the thread is not", async () => {
    // The thread itself, sent a question no CryptoWorker would send (no point): it fails.
    const thread = new Worker(new URL("../../src/crypto/crypto-worker-thread.ts", import.meta.url));
    try {
      const offCurve = Buffer.from(spkiOf(p256()).subarray(-65));
      offCurve[64]! ^= 1;
      thread.postMessage([
        { id: 1, point: undefined },
        { id: 2, point: new Uint8Array(offCurve) },
      ]);
      const [failed, refused] = await new Promise<Answer[]>((resolve) => thread.once("message", resolve));
      assert.ok(failed && "error" in failed && refused && "error" in refused);
      assert.equal(failed.refused, false);
      assert.equal(refused.refused, true);
      assert.ok(!(errorOf(failed) instanceof JweError));
      assert.match(errorOf(failed).message, /^the crypto thread failed: /);
      assert.ok(errorOf(refused) instanceof JweError);
      assert.match(errorOf(refused).message, /not on the curve/);
    } finally {
      await thread.terminate();
    }
  });

  test("stopped: pending key management fails, later is done on the calling thread", async () => {
    const own = new CryptoWorker();
    const recipient = p256();
    const point = spkiOf(recipient).subarray(-65);
    const pending = assert.rejects(own.manageKey(point), /stopped/);
    await own.close();
    await pending;
    assert.equal(own.threaded, false);
    const jwe = await sealWith(own.manageKey, Buffer.from("still sealed"), spkiOf(recipient));
    assert.equal(decryptCompact(jwe, recipient.privateKey).plaintext.toString(), "still sealed");
    assert.equal(own.threaded, false, "no thread was started again");
  });

  test("a signature check's answer is the calling thread's: good, altered, unusable", async () => {
    const good = p384Check();
    const { data } = good;
    const flipped = (bytes: Uint8Array) => {
      const copy = Buffer.from(bytes);
      copy[copy.length - 1]! ^= 1;
      return copy;
    };
    const checks: SignatureCheck[] = [
      good,
      { ...good, data: flipped(data) },
      { ...good, signature: flipped(good.signature) },
      { ...good, key: p256().publicKey },
      { ...good, signature: good.signature.subarray(0, 10) },
    ];
    // Asked in one turn with key agreements: one batch of mixed questions.
    const recipient = p256();
    const [answers, sealed] = await Promise.all([
      Promise.all(checks.map(worker.verify)),
      sealWith(worker.manageKey, Buffer.from("mixed"), spkiOf(recipient)),
    ]);
    assert.deepEqual(answers, checks.map(checkSignature));
    assert.deepEqual(answers, [true, false, false, false, false]);
    assert.equal(decryptCompact(sealed, recipient.privateKey).plaintext.toString(), "mixed");
    // What the calling thread cannot check at all (a key that cannot verify), the thread
    // refuses too, with OpenSSL's reason.
    const unusable = { ...good, key: generateKeyPairSync("x25519").publicKey };
    assert.throws(() => checkSignature(unusable));
    await assert.rejects(worker.verify(unusable), Error);
  });

  test("a batch's answers come back as they are ready, not all at its end", async () => {
    // 80 P-384 checks asked in one turn: one batch, 50–100 ms of work on the thread — so that
    // the answers sent during it are taken in before the next come, unless this thread stalls
    // for that long.
    const check = p384Check();
    let settled = 0;
    let pendingAfterFirst: number | undefined;
    const answers = Array.from({ length: 80 }, () =>
      worker.verify(check).then((verified) => {
        settled++;
        // Answers that arrive in one message all settle before setImmediate's turn comes.
        if (settled === 1) setImmediate(() => (pendingAfterFirst = 80 - settled));
        return verified;
      }),
    );
    assert.deepEqual(await Promise.all(answers), Array(80).fill(true));
    await new Promise(setImmediate);
    assert.ok(pendingAfterFirst! > 0, "the first answer came back with all the others, at the batch's end");
  });

  test("closed while a batch's answers are still coming back, the process waits for close()", () => {
    // An answer message landing after close() had referenced the thread again used to unreference
    // it, so the process could exit with close() — and the CAS's shutdown after it — unfinished.
    const child = runWithCryptoWorker(
      `
      import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
      const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
      const data = randomBytes(672);
      const signature = sign("sha384", data, { key: p384.privateKey, dsaEncoding: "ieee-p1363" });
      const check = { algorithm: "sha384", data, key: p384.publicKey, signature, dsaEncoding: "ieee-p1363" };
      for (let i = 0; i < 30; i++) {
        const worker = new CryptoWorker();
        await worker.verify(check);
        const all = Array.from({ length: 40 }, () => worker.verify(check).catch(() => undefined));
        await new Promise((resolve) => setTimeout(resolve, 2 + i));
        await worker.close();
        await Promise.all(all);
      }
      console.log("done");`,
      60_000,
    );
    assert.equal(child.stdout.toString().trim(), "done", `exited ${child.status}: ${child.stderr}`);
  });

  test("an idle thread does not keep the process up, started or used", () => {
    const child = runWithCryptoWorker(
      `
      import { createECDH } from "node:crypto";
      new CryptoWorker().start();
      const used = new CryptoWorker();
      await used.manageKey(createECDH("prime256v1").generateKeys());
      console.log("done");`,
      20_000,
    );
    assert.equal(child.stdout.toString().trim(), "done", child.stderr.toString());
    assert.equal(child.status, 0, "exited by itself, not killed at the timeout");
  });
});
