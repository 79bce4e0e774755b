/**
 * Exclusive file locks (src/os/file-lock.ts): one holder at a time, nothing written, a lock
 * that outlives every reference to it, and — for files in a directory someone else controls —
 * no file made through a link, and no lock on a file other than the one checked.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { FileLockHeld, FileLockMismatch, lockFile } from "../../src/os/file-lock.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-file-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("one holder at a time; nothing written, no journal beside it; free again once released", () => {
  const path = join(dir, "a.lock");
  writeFileSync(path, "");
  const release = lockFile(path, { existing: true });
  assert.throws(() => lockFile(path), FileLockHeld);
  assert.equal(statSync(path).size, 0);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith("a.lock")),
    ["a.lock"],
  );
  release();
  release(); // twice is harmless
  lockFile(path)();
});

test("made if missing, unless it must exist: then a dangling link makes nothing where it points", () => {
  const made = join(dir, "made.lock");
  lockFile(made)();
  assert.ok(statSync(made).isFile());
  const target = join(dir, "target");
  const link = join(dir, "link.lock");
  symlinkSync(target, link);
  assert.throws(() => lockFile(link, { existing: true }), /unable to open/);
  assert.equal(existsSync(target), false, "no file made through the link");
});

test("the lock is confirmed on the file expected, by its open descriptor", () => {
  const path = join(dir, "b.lock");
  const other = join(dir, "c.lock");
  writeFileSync(path, "");
  writeFileSync(other, "");
  const { dev, ino } = statSync(other);
  // As if `path` had been swapped for another file between the check and the open.
  assert.throws(() => lockFile(path, { existing: true, expect: { dev, ino } }), FileLockMismatch);
  lockFile(path, { existing: true, expect: statSync(path) })(); // and the failed attempt let go
});

test("a file that can be opened only for reading is not locked: SQLite would hold a shared lock", () => {
  // A read-only bind mount: even root cannot open the file for writing there, and SQLite then
  // opens it read-only without a word.
  const source = join(dir, "ro-source");
  const mounted = join(dir, "ro");
  mkdirSync(source);
  mkdirSync(mounted);
  writeFileSync(join(source, "d.lock"), "");
  const mount = (...args: string[]) => assert.equal(spawnSync("mount", args, { stdio: "inherit" }).status, 0);
  mount("--bind", source, mounted);
  try {
    mount("-o", "remount,ro,bind", mounted);
    const path = join(mounted, "d.lock");
    assert.throws(() => lockFile(path), /not writable/);
    assert.throws(() => lockFile(path, { existing: true, expect: statSync(path) }), FileLockMismatch);
    // And nothing stays locked: the writable path to the same file locks.
    lockFile(join(source, "d.lock"))();
  } finally {
    spawnSync("umount", ["-l", mounted]);
    rmdirSync(mounted);
  }
});
