/**
 * ECDH-ES's key agreement on a worker thread. Sealing a configuration to a runtime's key costs
 * two P-256 scalar multiplications (a fresh ephemeral key, then the shared secret): about 130 µs,
 * the largest single step of an attestation on the CAS's event loop. Sent to a worker with its
 * 65-byte point, it costs the event loop about 14 µs, and the CAS's second core does the rest
 * (bench/attest-throughput). Only the point goes over, and only the ephemeral public key and
 * the shared secret come back, within the process; the configuration itself never leaves the
 * event loop (handing over the whole JWE was tried: cloning the configuration cost what it saved).
 *
 * If the thread cannot start or dies, its pending agreements fail with the reason and later
 * ones are made on the calling thread: slower, never wrong.
 */
import { Worker } from "node:worker_threads";
import { agreeEphemeral, JweError, type KeyAgreement } from "./jwe.ts";

export interface AgreementQuestion {
  readonly id: number;
  readonly point: Uint8Array;
}

export type AgreementAnswer =
  | { readonly id: number; readonly epk: Uint8Array; readonly shared: Uint8Array }
  | { readonly id: number; readonly error: string };

export class KeyAgreementWorker {
  #worker: Worker | undefined;
  #failed = false;
  #next = 0;
  #batch: AgreementQuestion[] = [];
  readonly #flush = () => {
    const batch = this.#batch;
    this.#batch = [];
    if (batch.length > 0) this.#worker?.postMessage(batch);
  };
  readonly #pending = new Map<number, { resolve: (a: KeyAgreement) => void; reject: (e: Error) => void }>();

  /** The key agreement for the uncompressed P-256 point `point`. */
  agree = (point: Buffer): Promise<KeyAgreement> => {
    if (this.#failed) return Promise.resolve().then(() => agreeEphemeral(point));
    const worker = this.#start();
    const id = this.#next++;
    return new Promise<KeyAgreement>((resolve, reject) => {
      // Referenced while an answer is awaited, so that the process waits for it; idle, not.
      if (this.#pending.size === 0) worker.ref();
      this.#pending.set(id, { resolve, reject });
      // A fresh array, not `point` itself: see the thread's note on pooled Buffers. Questions
      // asked in one turn of the event loop go over in one message: each message wakes the
      // thread, and on a busy machine a wake-up costs the event loop its core for a while.
      if (this.#batch.length === 0) setImmediate(this.#flush);
      this.#batch.push({ id, point: new Uint8Array(point) });
    });
  };

  /**
   * Start the thread now rather than at the first agreement (starting takes tens of milliseconds,
   * which the first runtime to attest would otherwise wait for).
   */
  start(): void {
    if (!this.#failed) this.#start();
  }

  /** Whether agreements are being made on the thread (false before the first, and after a failure). */
  get threaded(): boolean {
    return this.#worker !== undefined;
  }

  /** Stop the thread; pending agreements fail, later ones are made on the calling thread. */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#failed = true;
    this.#failAll(new Error("the key agreement thread was stopped"));
    // Referenced again while it stops: an unreferenced thread's exit would not keep the event
    // loop alive long enough to resolve terminate().
    worker?.ref();
    await worker?.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL("./key-agreement-thread.ts", import.meta.url));
    worker.on("message", (answers: AgreementAnswer[]) => {
      for (const answer of answers) {
        const waiting = this.#pending.get(answer.id);
        if (!waiting) continue;
        this.#pending.delete(answer.id);
        if ("error" in answer) waiting.reject(new JweError(answer.error));
        else waiting.resolve({ epk: asBuffer(answer.epk), shared: asBuffer(answer.shared) });
      }
      if (this.#pending.size === 0) worker.unref();
    });
    const fail = (error: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#failed = true;
      this.#failAll(new Error(`the key agreement thread failed: ${error.message}`));
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

/** A Buffer over the same bytes (a structured clone arrives as a plain Uint8Array). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
