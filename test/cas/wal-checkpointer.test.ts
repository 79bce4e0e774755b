/**
 * The store's WAL checkpoints on a thread of their own (src/cas/store/wal-checkpointer.ts): the
 * thread copies the WAL into the database file while the event loop's commits do not; without
 * the thread ("inline", SQLite's default) they do; a failed thread hands checkpoints back to the
 * commits; the thread opens the store's own WAL database or fails, never creating one; closing
 * waits for the thread, so the store opens again at once; and an idle thread keeps no process up.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, describe, test } from "node:test";
import { SqliteStore } from "../../src/cas/store/sqlite.ts";
import { WalCheckpointer } from "../../src/cas/store/wal-checkpointer.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-wal-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const entry = JSON.stringify({ detail: "x".repeat(400) });
/** Append `n` audit rows, as attestations do. */
const appendRows = async (store: SqliteStore, n: number) => {
  for (let i = 0; i < n; i++)
    await store.appendAudit((previous) => ({
      seq: (previous?.seq ?? 0) + 1,
      entry,
      chain: "a".repeat(64),
      mac: "b".repeat(64),
    }));
};
const settle = () => new Promise((resolve) => setTimeout(resolve, 500));
/** `promise`, or a failure naming `what` after 10 s (a thread that never ends would hang the run). */
const within10s = <T>(promise: Promise<T>, what: string) =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within 10 s`)), 10_000).unref()),
  ]);
/** Wait until `failed` holds a reason, or 5 s. */
const failure = async (failed: () => Error | undefined) => {
  for (let i = 0; i < 100 && !failed(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  return failed();
};

describe("WAL checkpoints", () => {
  test("by default on their own thread: the database file fills while the commits checkpoint only a WAL 10,000 pages long", async () => {
    const path = join(dir, "thread.db");
    const store = new SqliteStore(path);
    try {
      assert.deepEqual(store.walCheckpointing(), { thread: true, inlinePages: 10_000 });
      await settle();
      const before = statSync(path).size;
      await appendRows(store, 300); // a few hundred pages: no commit checkpoints them
      await settle();
      assert.ok(statSync(path).size > before + 300 * 400, "the thread copied the rows into the database file");
      assert.equal((await store.audit(0)).length, 300);
    } finally {
      await store.close();
    }
  });

  test("inline (SQLite's default, the fallback): the commits checkpoint at 1,000 pages, and nothing else does", async () => {
    const path = join(dir, "inline.db");
    const store = new SqliteStore(path, { walCheckpoints: "inline" });
    try {
      assert.deepEqual(store.walCheckpointing(), { thread: false, inlinePages: 1000 });
      await settle();
      const before = statSync(path).size;
      await appendRows(store, 100); // a few hundred pages: no commit checkpoints yet
      await settle();
      assert.equal(statSync(path).size, before, "the rows are still only in the WAL");
    } finally {
      await store.close();
    }
  });

  test("a thread that fails hands checkpoints back to the commits", async () => {
    // A fake thread, failing as soon as it starts (a real one's failures are below).
    const store = new SqliteStore(join(dir, "fallback.db"), {
      walCheckpointer: (onFailed) => {
        setImmediate(() => onFailed(new Error("the checkpoint thread exited with code 1")));
        return { running: false, stop: async () => {} };
      },
    });
    try {
      assert.equal(store.walCheckpointing().inlinePages, 10_000, "the thread's share, until it fails");
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(store.walCheckpointing(), { thread: false, inlinePages: 1000 });
    } finally {
      await store.close();
    }
  });

  test("the thread opens the store's own WAL database or fails: a missing file is not created, another kind is refused", async () => {
    let missing: Error | undefined;
    const absent = join(dir, "absent.db");
    const first = new WalCheckpointer(absent, { busyTimeoutMs: 5000, onFailed: (e) => (missing = e) });
    assert.equal(first.running, true);
    assert.match(String((await failure(() => missing))?.message), /unable to open database file/);
    assert.equal(first.running, false);
    assert.equal(existsSync(absent), false, "no empty database was made in its place");

    const rollback = join(dir, "rollback.db");
    const other = new DatabaseSync(rollback);
    other.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1);"); // a rollback-journal database
    other.close();
    let refused: Error | undefined;
    new WalCheckpointer(rollback, { busyTimeoutMs: 5000, onFailed: (e) => (refused = e) });
    assert.match(String((await failure(() => refused))?.message), /is not in WAL mode \(delete\)/);
  });

  test("closing waits for the thread: the WAL is gone, and the store opens again at once", async () => {
    const path = join(dir, "reopen.db");
    for (let round = 0; round < 5; round++) {
      const store = new SqliteStore(path);
      await appendRows(store, 2000); // a WAL of megabytes: the last connection's checkpoint takes a while
      await within10s(store.close(), "close");
      assert.equal(existsSync(`${path}-wal`), false, "the last connection closed, and removed the WAL");
      // Nothing holds the database any more: a connection that will not wait at all gets it.
      const impatient = new DatabaseSync(path, { timeout: 0 });
      impatient.exec("PRAGMA journal_mode = WAL; BEGIN IMMEDIATE; COMMIT;");
      impatient.close();
    }
    const store = new SqliteStore(path);
    assert.equal((await store.audit(0)).length, 10_000);
    await store.close();
  });

  test("an idle store keeps no process up, closed or left open", () => {
    const module = join(import.meta.dirname, "..", "..", "src", "cas", "store", "sqlite.ts");
    const script = `
      import { SqliteStore } from ${JSON.stringify(module)};
      const closed = new SqliteStore(${JSON.stringify(join(dir, "closed.db"))});
      await closed.appendAudit(() => ({ seq: 1, entry: "{}", chain: "a", mac: "b" }));
      await closed.close();
      new SqliteStore(${JSON.stringify(join(dir, "open.db"))});
      console.log("done");`;
    writeFileSync(join(dir, "idle.mjs"), script);
    const child = spawnSync(process.execPath, [join(dir, "idle.mjs")], { timeout: 20_000 });
    assert.equal(child.stdout.toString().trim(), "done", child.stderr.toString());
    assert.equal(child.status, 0, "exited by itself, not killed at the timeout");
  });
});
