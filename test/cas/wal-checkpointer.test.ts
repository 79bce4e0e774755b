/**
 * The store's WAL checkpoints on a thread of their own (src/cas/store/wal-checkpointer.ts): the
 * thread copies the WAL into the database file while the event loop's commits do not; without
 * the thread ("inline", SQLite's default) they do; a thread that cannot start says so; and an
 * idle thread keeps no process up.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { SqliteStore } from "../../src/cas/store/sqlite.ts";
import { WalCheckpointer } from "../../src/cas/store/wal-checkpointer.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-wal-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const entry = JSON.stringify({ detail: "x".repeat(400) });
/** Append `n` audit rows, as attestations do. */
const appendRows = (store: SqliteStore, n: number) => {
  for (let i = 0; i < n; i++)
    store.appendAudit((previous) => ({
      seq: (previous?.seq ?? 0) + 1,
      entry,
      chain: "a".repeat(64),
      mac: "b".repeat(64),
    }));
};
const settle = () => new Promise((resolve) => setTimeout(resolve, 500));

describe("WAL checkpoints", () => {
  test("by default on their own thread: the database file fills while the commits checkpoint only a WAL 10,000 pages long", async () => {
    const path = join(dir, "thread.db");
    const store = new SqliteStore(path);
    try {
      assert.deepEqual(store.checkpointing(), { thread: true, inlinePages: 10_000 });
      await settle();
      const before = statSync(path).size;
      appendRows(store, 300); // about a thousand pages: far below what a commit would checkpoint
      await settle();
      assert.ok(statSync(path).size > before + 300 * 400, "the thread copied the rows into the database file");
      assert.equal(store.audit(0).length, 300);
    } finally {
      store.close();
    }
  });

  test("inline (SQLite's default, the fallback): the commits checkpoint at 1,000 pages, and nothing else does", async () => {
    const path = join(dir, "inline.db");
    const store = new SqliteStore(path, { checkpoints: "inline" });
    try {
      assert.deepEqual(store.checkpointing(), { thread: false, inlinePages: 1000 });
      await settle();
      const before = statSync(path).size;
      appendRows(store, 100); // a few hundred pages: no commit checkpoints yet
      await settle();
      assert.equal(statSync(path).size, before, "the rows are still only in the WAL");
    } finally {
      store.close();
    }
  });

  test("a thread that cannot open the database says so, and is no longer counted as running", async () => {
    let reason: Error | undefined;
    const checkpointer = new WalCheckpointer(join(dir, "no such directory", "cas.db"), {
      onFailed: (error) => {
        reason = error;
      },
    });
    assert.equal(checkpointer.running, true);
    for (let i = 0; i < 100 && !reason; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.match(String(reason?.message), /unable to open database file|exited with code/);
    assert.equal(checkpointer.running, false);
  });

  test("stopped: the thread ends; a store left open keeps no process up", () => {
    const module = join(import.meta.dirname, "..", "..", "src", "cas", "store", "sqlite.ts");
    const script = `
      import { SqliteStore } from ${JSON.stringify(module)};
      const closed = new SqliteStore(${JSON.stringify(join(dir, "closed.db"))});
      closed.appendAudit(() => ({ seq: 1, entry: "{}", chain: "a", mac: "b" }));
      closed.close();
      new SqliteStore(${JSON.stringify(join(dir, "open.db"))});
      console.log("done");`;
    writeFileSync(join(dir, "idle.mjs"), script);
    const child = spawnSync(process.execPath, [join(dir, "idle.mjs")], { timeout: 20_000 });
    assert.equal(child.stdout.toString().trim(), "done", child.stderr.toString());
    assert.equal(child.status, 0, "exited by itself, not killed at the timeout");
  });
});
