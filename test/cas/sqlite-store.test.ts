/**
 * The SQLite store's durability and files: commits synced before they return (FULL), the audit
 * entries of one turn group-committed and answered only once written, and every file of the
 * store readable by its owner alone.
 */
import assert from "node:assert/strict";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { SqliteStore } from "../../src/cas/store/sqlite.ts";
import { type AuditRow, StoreFailedError } from "../../src/cas/store/store.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-sqlite-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const entry =
  (tag: string) =>
  (previous: AuditRow | undefined): AuditRow => ({
    seq: (previous?.seq ?? 0) + 1,
    entry: tag,
    chain: `${previous?.entry ?? ""}>${tag}`,
    mac: "m",
  });

describe("durability", () => {
  test("commits are synced before they return: synchronous = FULL, not WAL's usual NORMAL", async () => {
    const store = new SqliteStore(join(dir, "full.db"));
    try {
      assert.equal(store.synchronous(), 2);
    } finally {
      await store.close();
    }
  });

  test("grouped audit entries of one turn are written in one transaction, in order, and resolve once written", async () => {
    const path = join(dir, "grouped.db");
    const store = new SqliteStore(path);
    try {
      await store.appendAudit(entry("a"));
      const pending = [store.appendAuditGrouped(entry("b")), store.appendAuditGrouped(entry("c"))];
      // Not written yet: the group commits after this turn.
      assert.equal((await store.lastAudit())?.entry, "a");
      // A transaction of its own in between goes first; the group follows it in the chain.
      await store.appendAudit(entry("d"));
      const [b, c] = await Promise.all(pending);
      assert.deepEqual([b!.seq, c!.seq, b!.chain, c!.chain], [3, 4, "d>b", "b>c"]);
      assert.deepEqual(
        (await store.audit(0)).map((r) => r.entry),
        ["a", "d", "b", "c"],
      );
    } finally {
      await store.close();
    }
  });

  test("a group that cannot be written rejects every entry of it, and the next group is written", async () => {
    const store = new SqliteStore(join(dir, "failing.db"));
    try {
      const ok = store.appendAuditGrouped(entry("x"));
      const bad = store.appendAuditGrouped(() => {
        throw new Error("cannot make the row");
      });
      await assert.rejects(ok, /cannot make the row/);
      await assert.rejects(bad, /cannot make the row/);
      assert.equal(await store.lastAudit(), undefined, "nothing of the failed group is kept");
      assert.equal((await store.appendAuditGrouped(entry("y"))).seq, 1);
    } finally {
      await store.close();
    }
  });

  test("entries still waiting when the store closes are written first", async () => {
    const path = join(dir, "closing.db");
    const store = new SqliteStore(path);
    const pending = store.appendAuditGrouped(entry("last"));
    await store.close();
    assert.equal((await pending).seq, 1);
    const again = new SqliteStore(path);
    try {
      assert.equal((await again.lastAudit())?.entry, "last");
    } finally {
      await again.close();
    }
  });
});

describe("a sync that fails", () => {
  // A fake of a failing disk: fsync(2) of the WAL answers EIO, as a dying disk or a thin pool
  // out of space does. What the kernel did with the pages is unknowable after that.
  const eio = (_fd: number, done: (error: NodeJS.ErrnoException | null) => void) =>
    setImmediate(() => done(Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" })));

  test("the group's callers are refused, the owner hears once, and the store takes no more writes", async () => {
    const heard: Error[] = [];
    const store = new SqliteStore(join(dir, "eio.db"), { syncWal: eio, onFailed: (e) => heard.push(e) });
    try {
      const group = [store.appendAuditGrouped(entry("a")), store.appendAuditGrouped(entry("b"))];
      for (const pending of group) {
        await assert.rejects(pending, (e: Error) => {
          assert.ok(e instanceof StoreFailedError);
          assert.match(e.message, /could not make its writes durable \(fsync of .*eio\.db-wal: EIO\)/);
          return true;
        });
      }
      assert.equal(heard.length, 1);
      await assert.rejects(store.appendAudit(entry("c")), StoreFailedError);
      await assert.rejects(store.writeMeta("k", Buffer.from("v")), StoreFailedError);
      await assert.rejects(store.appendAuditGrouped(entry("d")), StoreFailedError);
      assert.equal(heard.length, 1, "told once");
    } finally {
      await store.close();
    }
  });
});

describe("files", () => {
  const mode = (path: string) => statSync(path).mode & 0o777;

  test("the database, its WAL and its shared-memory file are 0600, whatever the umask", async () => {
    const previous = process.umask(0o022);
    const path = join(dir, "modes.db");
    try {
      const store = new SqliteStore(path);
      try {
        await store.appendAudit(entry("a"));
        for (const file of [path, `${path}-wal`, `${path}-shm`]) assert.equal(mode(file), 0o600, file);
      } finally {
        await store.close();
      }
    } finally {
      process.umask(previous);
    }
  });

  test("files an older CAS left 0644 are made 0600 when the store opens", async () => {
    const path = join(dir, "older.db");
    const first = new SqliteStore(path);
    await first.appendAudit(entry("a"));
    await first.close();
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      closeSync(openSync(file, "a"));
      chmodSync(file, 0o644);
    }
    const store = new SqliteStore(path);
    try {
      for (const file of [path, `${path}-wal`, `${path}-shm`]) assert.equal(mode(file), 0o600, file);
      assert.equal((await store.lastAudit())?.entry, "a");
    } finally {
      await store.close();
    }
  });
});
