/**
 * SQLite's write-ahead-log checkpoints on a thread of their own.
 *
 * Why: by default a commit that finds the WAL past 1,000 pages checkpoints it then and there —
 * copies the pages into the database file and syncs it — inside the commit, on the CAS's event
 * loop. Every attestation appends an audit entry, so under load one commit in several hundred
 * did, stalling the event loop for milliseconds to tens of milliseconds (bench/store-commits):
 * every runtime in flight waited. Here a second connection, on a worker thread, checkpoints every
 * 100 ms with PASSIVE checkpoints, which never wait for the event loop's connection nor make it
 * wait.
 *
 * If the thread cannot start or dies, `onFailed` is called, and the store gives checkpoints back
 * to the commits: slower, never unbounded.
 */
import { Worker } from "node:worker_threads";

const CHECKPOINT_INTERVAL_MS = 100;

export class WalCheckpointer {
  readonly #worker: Worker;
  #ended = false;

  /** `busyTimeoutMs`: how long the thread's connection waits for a lock (the store's own). */
  constructor(path: string, options: { busyTimeoutMs: number; onFailed: (error: Error) => void }) {
    this.#worker = new Worker(new URL("./wal-checkpointer-thread.ts", import.meta.url), {
      workerData: { path, intervalMs: CHECKPOINT_INTERVAL_MS, busyTimeoutMs: options.busyTimeoutMs },
    });
    const failed = (error: Error) => {
      if (this.#ended) return;
      this.#ended = true;
      options.onFailed(error);
    };
    this.#worker.on("error", failed);
    this.#worker.on("exit", (code) => failed(new Error(`the checkpoint thread exited with code ${code}`)));
    // The store's life is its owner's: the thread must not keep the process up.
    this.#worker.unref();
  }

  /** Whether checkpoints are being made on the thread (false once stopped or failed). */
  get running(): boolean {
    return !this.#ended;
  }

  /** Stop: the thread closes its connection and ends; resolves when it has. */
  stop(): Promise<void> {
    if (this.#ended) return Promise.resolve();
    this.#ended = true;
    const exited = new Promise<void>((resolve) => this.#worker.once("exit", () => resolve()));
    // Referenced while it stops, or an otherwise idle process would not wait for its exit.
    this.#worker.ref();
    this.#worker.postMessage("stop");
    return exited;
  }
}
