/**
 * One runtime per volume tree (src/runtime/directory-lock.ts): a second holder is refused, by any
 * path to the same directory, and the lock is gone with its process however it ends.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { lockTree, VolumeInUse } from "../../src/runtime/directory-lock.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("a second holder is refused, by any path to the tree; released, it is free again", async () => {
  const tree = join(dir, "a", "records");
  mkdirSync(tree, { recursive: true });
  symlinkSync(join(dir, "a"), join(dir, "link"));
  const release = await lockTree(tree);
  await assert.rejects(lockTree(tree), VolumeInUse);
  await assert.rejects(lockTree(join(dir, "link", "records")), /in use by another runtime/);
  const other = await lockTree(join(dir, "a", "other"));
  await other();
  await release();
  const again = await lockTree(tree);
  await again();
});

test("a holder killed with SIGKILL leaves nothing behind", async () => {
  const tree = join(dir, "b");
  mkdirSync(tree);
  const module = new URL("../../src/runtime/directory-lock.ts", import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { lockTree } = await import(${JSON.stringify(module)}); await lockTree(${JSON.stringify(tree)}); console.log("held"); setInterval(() => {}, 1000);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await once(child.stdout!, "data");
  await assert.rejects(lockTree(tree), VolumeInUse);
  child.kill("SIGKILL");
  await once(child, "exit");
  const release = await lockTree(tree);
  await release();
});

test("a connection held open to the lock's name does not delay its release", async () => {
  const tree = join(dir, "c");
  mkdirSync(tree);
  const release = await lockTree(tree);
  const name = `\0cloister-volume-${createHash("sha256").update(realpathSync(tree)).digest("hex").slice(0, 40)}`;
  const peer = connect(name);
  peer.on("error", () => {});
  await once(peer, "connect");
  const late = new Promise((r) => setTimeout(() => r("late"), 2_000).unref());
  assert.notEqual(await Promise.race([release(), late]), "late", "released while the peer is connected");
  peer.destroy();
  const again = await lockTree(tree);
  await again();
});
