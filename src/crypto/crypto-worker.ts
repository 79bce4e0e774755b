/**
 * The CAS's costliest public-key operations on a worker thread: ECDH-ES's key management, and
 * the one signature a warm evidence verification cannot remember (see
 * attestation/pending-signature.ts) — ECDSA P-384 for SEV-SNP (~0.7–1.4 ms), P-256 for DCAP
 * quotes and simulated reports (~70–110 µs). Sealing a configuration to a runtime's key costs two
 * P-256 scalar multiplications (a fresh ephemeral key, then the shared secret): about 130 µs, the
 * largest single step of an attestation on the CAS's event loop; the KDF and the key wrap after
 * them (a hash and a cipher set up) about 20 µs more. Sent to a worker with its 65-byte point, it
 * costs the event loop about 14 µs, and the CAS's second core does the rest
 * (bench/attest-throughput). Only the point goes over, and only the ephemeral public key, the
 * content key and the wrapped content key come back, within the process; the configuration
 * itself never leaves the event loop (handing over the whole JWE was tried: cloning the
 * configuration cost what it saved).
 *
 * A message to the thread and back costs the event loop 50–700 µs on this machine (measured with
 * process.threadCpuUsage, batches of 16 and of 1) — more than a P-256 check. So the attestation
 * flow asks for its key management and its evidence's signature check in the same turn of the
 * event loop, and they go over in one message: the check adds a question to a message that is
 * sent anyway, not a message of its own. The answers come back as they are ready, a message
 * each millisecond or so (crypto-worker-thread.ts says why). (The service certificate's
 * signature was tried on the thread too: it can only be asked once the evidence is accepted, so
 * as a second message, whose cost to both threads took what it saved — docs/benchmarks.md.)
 *
 * If the thread cannot start or dies, its pending work fails with the reason and later work is
 * done on the calling thread: slower, never wrong.
 */
import { Worker } from "node:worker_threads";
import { JweError, type KeyManagement, manageKey } from "./jwe.ts";
import { checkSignature, type SignatureCheck } from "./signature-check.ts";

export type Question =
  | { readonly id: number; readonly point: Uint8Array }
  | { readonly id: number; readonly signature: SignatureCheck };

export type Answer =
  | { readonly id: number; readonly epk: Uint8Array; readonly cek: Uint8Array; readonly encryptedKey: Uint8Array }
  | { readonly id: number; readonly verified: boolean }
  /** `refused`: the point was refused (a JweError on the thread); otherwise the thread failed. */
  | { readonly id: number; readonly error: string; readonly refused: boolean };

interface Waiting {
  resolve(answer: Answer): void;
  reject(error: Error): void;
}

export class CryptoWorker {
  #worker: Worker | undefined;
  #failed = false;
  #next = 0;
  #batch: Question[] = [];
  readonly #flush = () => {
    const batch = this.#batch;
    this.#batch = [];
    if (batch.length > 0) this.#worker?.postMessage(batch);
  };
  readonly #pending = new Map<number, Waiting>();

  /** A JWE's key management for the uncompressed P-256 point `point` (jwe.ts's manageKey). */
  manageKey = async (point: Buffer): Promise<KeyManagement> => {
    if (this.#failed) return manageKey(point);
    // A fresh array, not `point` itself: see the thread's note on pooled Buffers.
    const answer = await this.#ask((id) => ({ id, point: new Uint8Array(point) }));
    if ("error" in answer) throw errorOf(answer);
    if (!("epk" in answer)) throw new Error("the crypto thread answered a key management with something else");
    return { epk: asBuffer(answer.epk), cek: asBuffer(answer.cek), encryptedKey: asBuffer(answer.encryptedKey) };
  };

  /** Whether `check`'s signature verifies. */
  verify = async (check: SignatureCheck): Promise<boolean> => {
    if (this.#failed) return checkSignature(check);
    // Fresh arrays (pooled Buffers, again); the KeyObject is cloned, its key data shared.
    const signature = { ...check, data: new Uint8Array(check.data), signature: new Uint8Array(check.signature) };
    const answer = await this.#ask((id) => ({ id, signature }));
    if ("error" in answer) throw errorOf(answer);
    if (!("verified" in answer)) throw new Error("the crypto thread answered a signature check with something else");
    return answer.verified === true;
  };

  #ask(question: (id: number) => Question): Promise<Answer> {
    const worker = this.#start();
    const id = this.#next++;
    return new Promise<Answer>((resolve, reject) => {
      // Referenced while an answer is awaited, so that the process waits for it; idle, not.
      if (this.#pending.size === 0) worker.ref();
      this.#pending.set(id, { resolve, reject });
      // Questions asked in one turn of the event loop go over in one message: each message
      // wakes the thread, and on a busy machine a wake-up costs the event loop its core for a
      // while.
      if (this.#batch.length === 0) setImmediate(this.#flush);
      this.#batch.push(question(id));
    });
  }

  /**
   * Start the thread now rather than at the first question (starting takes tens of milliseconds,
   * which the first runtime to attest would otherwise wait for).
   */
  start(): void {
    if (!this.#failed) this.#start();
  }

  /** Whether work is being done on the thread (false before the first, and after a failure). */
  get threaded(): boolean {
    return this.#worker !== undefined;
  }

  /** Stop the thread; pending work fails, later work is done on the calling thread. */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#failed = true;
    this.#failAll(new Error("the crypto thread was stopped"));
    // Referenced again while it stops: an unreferenced thread's exit would not keep the event
    // loop alive long enough to resolve terminate().
    worker?.ref();
    await worker?.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL("./crypto-worker-thread.ts", import.meta.url));
    worker.on("message", (answers: Answer[]) => {
      for (const answer of answers) {
        const waiting = this.#pending.get(answer.id);
        if (!waiting) continue;
        this.#pending.delete(answer.id);
        waiting.resolve(answer);
      }
      // Not once closed or failed: close() references the thread until it has stopped, and an
      // answer arriving after that (they come as they are ready) must not undo it.
      if (this.#pending.size === 0 && this.#worker === worker) worker.unref();
    });
    const fail = (error: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#failed = true;
      this.#failAll(new Error(`the crypto thread failed: ${error.message}`));
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`it exited with code ${code}`)));
    // The CAS's life is its server's: an idle thread must not keep the process up. (After the
    // listeners: adding a "message" listener references the thread again.)
    worker.unref();
    this.#worker = worker;
    return worker;
  }

  #failAll(error: Error): void {
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }
}

/**
 * The error a thread's answer stands for: a JweError if the point was refused (the caller's
 * input), a plain Error if the thread failed (the CAS's fault: a 500, never a 400).
 */
export function errorOf(answer: { readonly error: string; readonly refused: boolean }): Error {
  return answer.refused ? new JweError(answer.error) : new Error(`the crypto thread failed: ${answer.error}`);
}

/** An answer for `error` thrown on the thread (see errorOf). */
export function errorAnswer(id: number, error: unknown): Answer {
  return { id, error: error instanceof Error ? error.message : String(error), refused: error instanceof JweError };
}

/** A Buffer over the same bytes (a structured clone arrives as a plain Uint8Array). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
