/**
 * One runtime per volume tree (src/runtime/directory-lock.ts): a second holder is refused — by
 * any path to the tree, through a bind mount, from another network namespace — the lock is gone
 * with its process however it ends, and what the host plants at the lock's path is refused.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { TreeError } from "../../src/fs/format.ts";
import { lockTree, VolumeInUse } from "../../src/runtime/directory-lock.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const module = new URL("../../src/runtime/directory-lock.ts", import.meta.url).href;

/**
 * A process of its own holding the lock on `tree` (optionally in a new network namespace). It
 * drops the release function, as a runtime does, and collects its garbage before it says so:
 * the lock must outlive every reference to it.
 */
async function holder(tree: string, command: string[] = []) {
  const child = spawn(
    command[0] ?? process.execPath,
    [
      ...command.slice(1),
      ...(command.length > 0 ? [process.execPath] : []),
      "--expose-gc",
      "--input-type=module",
      "-e",
      `const { lockTree } = await import(${JSON.stringify(module)}); lockTree(${JSON.stringify(tree)}); for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); } console.log("held"); setInterval(() => {}, 1000);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await once(child.stdout!, "data");
  return child;
}

test("a second holder is refused, by any path to the tree; released, it is free again", () => {
  const tree = join(dir, "a", "records");
  mkdirSync(tree, { recursive: true });
  symlinkSync(join(dir, "a"), join(dir, "link"));
  const release = lockTree(tree);
  assert.throws(() => lockTree(tree), VolumeInUse);
  assert.throws(() => lockTree(join(dir, "link", "records")), /in use by another runtime/);
  assert.throws(() => lockTree(`${tree}/.`), VolumeInUse);
  const other = lockTree(join(dir, "a", "other"));
  other();
  release();
  const again = lockTree(tree);
  again();
});

test("a missing tree is made (0700), with the lock in .cloister-fs; nothing else is written", () => {
  const tree = join(dir, "fresh", "volume");
  const release = lockTree(tree);
  assert.equal(statSync(tree).mode & 0o777, 0o700);
  assert.equal(statSync(join(tree, ".cloister-fs")).mode & 0o777, 0o700);
  assert.deepEqual(readdirSync(tree), [".cloister-fs"]);
  assert.deepEqual(readdirSync(join(tree, ".cloister-fs")), ["lock"]);
  assert.equal(statSync(join(tree, ".cloister-fs", "lock")).mode & 0o777, 0o600);
  release();
});

test("a holder killed with SIGKILL leaves nothing behind", async () => {
  const tree = join(dir, "b");
  mkdirSync(tree);
  const child = await holder(tree);
  try {
    assert.throws(() => lockTree(tree), VolumeInUse);
  } finally {
    child.kill("SIGKILL");
    await once(child, "exit");
  }
  lockTree(tree)();
});

test("a bind mount of the tree and a holder in another network namespace meet the same lock", async () => {
  const tree = join(dir, "c");
  mkdirSync(tree);
  // The other holder runs in a network namespace of its own (what an abstract socket's name
  // did not cross): a second container on the same volume.
  const child = await holder(tree, ["unshare", "-n"]);
  try {
    assert.throws(() => lockTree(tree), VolumeInUse);
    const mounted = join(dir, "c-bound");
    mkdirSync(mounted);
    assert.equal(spawnSync("mount", ["--bind", tree, mounted], { stdio: "inherit" }).status, 0, "mount --bind");
    try {
      assert.throws(() => lockTree(mounted), VolumeInUse);
    } finally {
      // Lazily: a lock wrongly taken through the mount would keep it busy, and the test must
      // fail on its assertion, not here.
      spawnSync("umount", ["-l", mounted]);
      rmdirSync(mounted);
    }
  } finally {
    child.kill("SIGKILL");
    await once(child, "exit");
  }
  lockTree(tree)();
});

test("what the host plants at the lock's path is refused, and nothing is made where it points", () => {
  const target = join(dir, "elsewhere");
  const linked = join(dir, "d");
  mkdirSync(join(linked, ".cloister-fs"), { recursive: true });
  symlinkSync(target, join(linked, ".cloister-fs", "lock"));
  assert.throws(
    () => lockTree(linked),
    (e: Error) => e instanceof TreeError && /lock: not a regular file \(a symbolic link\?\), refused/.test(e.message),
  );
  assert.throws(() => statSync(target), /ENOENT/, "no file made through the link");

  const directory = join(dir, "e");
  mkdirSync(join(directory, ".cloister-fs", "lock"), { recursive: true });
  assert.throws(() => lockTree(directory), TreeError);

  const metaLink = join(dir, "f");
  mkdirSync(metaLink);
  mkdirSync(join(dir, "f-meta"));
  symlinkSync(join(dir, "f-meta"), join(metaLink, ".cloister-fs"));
  assert.throws(
    () => lockTree(metaLink),
    (e: Error) => e instanceof TreeError && /not a directory/.test(e.message),
  );
  assert.deepEqual(readdirSync(join(dir, "f-meta")), [], "nothing made in the linked directory");

  // A lock file with content is not one a runtime made (an SQLite database the host planted,
  // say, which SQLite would open and might rewrite): refused, and left as it was.
  const planted = join(dir, "h");
  mkdirSync(join(planted, ".cloister-fs"), { recursive: true });
  writeFileSync(join(planted, ".cloister-fs", "lock"), "SQLite format 3\0");
  assert.throws(
    () => lockTree(planted),
    (e: Error) => e instanceof TreeError && /lock: not empty/.test(e.message),
  );
  assert.equal(readFileSync(join(planted, ".cloister-fs", "lock"), "utf8"), "SQLite format 3\0");

  // An existing regular lock file (left by an earlier runtime) is simply locked again.
  const kept = join(dir, "g");
  mkdirSync(join(kept, ".cloister-fs"), { recursive: true });
  writeFileSync(join(kept, ".cloister-fs", "lock"), "");
  lockTree(kept)();
});
