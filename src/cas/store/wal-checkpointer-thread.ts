/**
 * The body of WalCheckpointer's thread: a connection of its own to the CAS's database, which
 * checkpoints the write-ahead log every `intervalMs` (PASSIVE: it copies what it can and never
 * waits for, or blocks, the event loop's connection) until told to stop. Then it closes its
 * connection, which, as the last one open, checkpoints and removes the WAL, holding the database
 * for that moment: the store's close() waits for it. An error ends the thread, and
 * WalCheckpointer hands checkpoints back to the commits.
 */
import { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";
import { parentPort, workerData } from "node:worker_threads";

const { path, intervalMs, busyTimeoutMs } = workerData as { path: string; intervalMs: number; busyTimeoutMs: number };
// The store's own file or nothing: mode=rw never creates one (a file removed or renamed before
// this opens it is an error, not a new empty database), and it must be the store's WAL database.
const url = pathToFileURL(path);
url.searchParams.set("mode", "rw");
const db = new DatabaseSync(url, { timeout: busyTimeoutMs });
const { journal_mode: journal } = db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
if (journal !== "wal") throw new Error(`${path} is not in WAL mode (${journal}): not the store's database`);
// The checkpoint writes and syncs the database file as the event loop's commits would have.
db.exec("PRAGMA synchronous = NORMAL;");
const checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
// (The WAL goes back to its start only at a commit that finds all of it copied, which commits
// landing during a checkpoint's sync put off under load; the store bounds it with a commit's own
// checkpoint at 10,000 pages. Passes repeated at once, to catch those last frames, were measured
// not to change that, and cost a sync each: one pass per interval.)
const timer = setInterval(() => checkpoint.get(), intervalMs);

parentPort!.on("message", (message: unknown) => {
  if (message !== "stop") return;
  clearInterval(timer);
  db.close();
  parentPort!.close();
});
