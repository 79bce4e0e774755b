/**
 * Protected trees (src/fs): what goes in comes out, bit for bit, with modes, times and empty
 * directories; and every way of changing the tree on disk is refused — every single-bit flip of
 * a small tree (exhaustive), reordered, dropped, truncated, extended, swapped and renamed
 * objects, an older copy of one file or of the whole tree, another key.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { MANIFEST, OBJECTS, type Region, regionOf, regionsFrom, TreeError } from "../../src/fs/format.ts";
import { extractTree, openManifest, restoreState, verifyTree } from "../../src/fs/open.ts";
import { freshHeader, type Known, sealDirectory } from "../../src/fs/seal.ts";

const root = mkdtempSync(join(tmpdir(), "cloister-fs-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(root, `${name}-${n++}`);

/** A small source tree: encrypted, authenticated and not-protected files, an empty directory. */
function sourceTree(): string {
  const dir = fresh("src");
  mkdirSync(join(dir, "www/private"), { recursive: true });
  mkdirSync(join(dir, "logs"));
  mkdirSync(join(dir, "empty"), { mode: 0o750 });
  writeFileSync(join(dir, "www/index.html"), "<h1>public page</h1>\n");
  writeFileSync(join(dir, "www/private/key.pem"), "TOP-SECRET-KEY-MATERIAL\n", { mode: 0o600 });
  writeFileSync(join(dir, "www/private/big.bin"), randomBytes(70_000));
  writeFileSync(join(dir, "notes.txt"), "");
  writeFileSync(join(dir, "logs/app.log"), "not protected\n");
  chmodSync(join(dir, "empty"), 0o750);
  utimesSync(join(dir, "www/index.html"), new Date("2024-01-02T03:04:05Z"), new Date("2024-01-02T03:04:05Z"));
  return dir;
}

const REGIONS: Region[] = regionsFrom({ authenticate: ["/www"], encrypt: ["/www/private"], notProtected: ["/logs"] });

function protect(source: string, key = randomBytes(32), chunkSize = 4096) {
  const tree = fresh("tree");
  const sealed = sealDirectory(source, tree, { header: freshHeader(chunkSize), treeKey: key, regions: REGIONS });
  return { tree, key, tag: sealed.tag };
}

const refused = (work: () => unknown, message?: RegExp) =>
  assert.throws(work, (e: Error) => {
    assert.ok(e instanceof TreeError, `a TreeError, not ${e.constructor.name}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  });

function objectOf(tree: string, key: Buffer, path: string): string {
  const entry = openManifest(tree, key).body.files.find((f) => f.path === path)!;
  return join(tree, OBJECTS, entry.id);
}

describe("regions", () => {
  test("the longest whole-segment prefix decides; what nothing covers is encrypted", () => {
    assert.equal(regionOf("/www/index.html", REGIONS), "authenticated");
    assert.equal(regionOf("/www/private/x", REGIONS), "encrypted");
    assert.equal(regionOf("/wwwx", REGIONS), "encrypted");
    assert.equal(regionOf("/logs/a", REGIONS), "not-protected");
    assert.equal(regionOf("/notes.txt", REGIONS), "encrypted");
    assert.throws(() => regionsFrom({ encrypt: ["/a"], authenticate: ["a/"] }), /both encrypted and authenticated/);
    assert.throws(() => regionsFrom({ encrypt: ["/a/../b"] }), /expected a path inside the tree/);
    assert.deepEqual(regionsFrom({ authenticate: ["/"] }), [{ prefix: "/", type: "authenticated" }]);
  });
});

describe("round trip", () => {
  test("decrypt gives back every byte, mode, time and empty directory; the disk holds no encrypted plaintext", () => {
    const source = sourceTree();
    const { tree, key, tag } = protect(source);
    assert.equal(verifyTree(tree, key, tag).tag, tag);
    const out = fresh("out");
    extractTree(tree, key, out, { expectedTag: tag });
    const files = ["www/index.html", "www/private/key.pem", "www/private/big.bin", "notes.txt", "logs/app.log"];
    for (const f of files) assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(source, f)), f);
    for (const p of [...files, "empty", "www", "www/private"]) {
      assert.equal(statSync(join(out, p)).mode & 0o7777, statSync(join(source, p)).mode & 0o7777, `mode of ${p}`);
    }
    assert.equal(statSync(join(out, "www/index.html")).mtime.toISOString(), "2024-01-02T03:04:05.000Z");
    // What the host sees: encrypted content nowhere, authenticated content in its object, logs in place.
    const disk = readdirSync(join(tree, OBJECTS)).map((o) => readFileSync(join(tree, OBJECTS, o)));
    assert.ok(!disk.some((b) => b.includes("TOP-SECRET-KEY-MATERIAL")), "encrypted content never on disk");
    assert.ok(!readFileSync(join(tree, MANIFEST)).includes("key.pem"), "names of protected files are sealed");
    assert.ok(
      disk.some((b) => b.includes("<h1>public page</h1>")),
      "authenticated content is plain text",
    );
    assert.equal(readFileSync(join(tree, "logs/app.log"), "utf8"), "not protected\n");
  });

  test("symbolic links, special files and the reserved name are refused, naming the path", () => {
    const source = sourceTree();
    symlinkSync("/etc/passwd", join(source, "www/link"));
    refused(() => protect(source), /\/www\/link: a symbolic link/);
    const other = sourceTree();
    mkdirSync(join(other, ".cloister-fs"));
    refused(() => protect(other), /\/\.cloister-fs: the name \.cloister-fs is reserved/);
  });
});

describe("tampering is refused", () => {
  test("every single-bit flip of every byte of a small sealed tree (exhaustive)", () => {
    const source = fresh("small");
    mkdirSync(join(source, "a"), { recursive: true });
    writeFileSync(join(source, "a/secret"), "s3cret!");
    writeFileSync(join(source, "readme"), "hello");
    const tree = fresh("tree");
    const key = randomBytes(32);
    sealDirectory(source, tree, {
      header: freshHeader(4096),
      treeKey: key,
      regions: regionsFrom({ authenticate: ["/readme"] }),
    });
    const targets = [MANIFEST, ...readdirSync(join(tree, OBJECTS)).map((o) => `${OBJECTS}/${o}`)];
    let flips = 0;
    for (const target of targets) {
      const path = join(tree, target);
      const original = readFileSync(path);
      for (let i = 0; i < original.length; i++) {
        for (let bit = 0; bit < 8; bit++) {
          const altered = Buffer.from(original);
          altered[i]! ^= 1 << bit;
          writeFileSync(path, altered);
          // No expected tag: the tree itself must notice, not just the tag comparison.
          refused(() => verifyTree(tree, key));
          flips++;
        }
      }
      writeFileSync(path, original);
    }
    verifyTree(tree, key);
    assert.ok(flips > 7000, `${flips} flips: the manifest and both objects, every bit`);
  });

  test("chunks reordered, dropped, truncated, extended", () => {
    const { tree, key } = protect(sourceTree());
    const object = objectOf(tree, key, "/www/private/big.bin");
    const original = readFileSync(object);
    const chunk = 4096 + 28;
    const cases: [string, Buffer][] = [
      [
        "reordered",
        Buffer.concat([original.subarray(chunk, 2 * chunk), original.subarray(0, chunk), original.subarray(2 * chunk)]),
      ],
      ["dropped", Buffer.concat([original.subarray(0, chunk), original.subarray(2 * chunk)])],
      ["truncated", original.subarray(0, original.length - 1)],
      ["extended", Buffer.concat([original, Buffer.alloc(1)])],
      ["last chunk dropped", original.subarray(0, original.length - (original.length % chunk || chunk))],
    ];
    for (const [what, bytes] of cases) {
      writeFileSync(object, bytes);
      refused(
        () => verifyTree(tree, key),
        what === "reordered" ? /chunk 0 was altered, moved/ : /truncated or extended/,
      );
    }
  });

  test("objects swapped between files of the same size, or missing", () => {
    const source = sourceTree();
    writeFileSync(join(source, "www/private/a"), "A".repeat(30));
    writeFileSync(join(source, "www/private/b"), "B".repeat(30));
    const { tree, key } = protect(source);
    const a = objectOf(tree, key, "/www/private/a");
    const b = objectOf(tree, key, "/www/private/b");
    const [bytesA, bytesB] = [readFileSync(a), readFileSync(b)];
    writeFileSync(a, bytesB);
    writeFileSync(b, bytesA);
    refused(() => verifyTree(tree, key), /\/www\/private\/a: chunk 0 was altered, moved or belongs to another file/);
    writeFileSync(a, bytesA);
    writeFileSync(b, bytesB);
    verifyTree(tree, key);
    rmSync(b);
    refused(() => verifyTree(tree, key), /\/www\/private\/b: its object [0-9a-f]+ is missing/);
  });

  test("an older copy of one file, and of the whole tree, is refused against the current tag", () => {
    const source = sourceTree();
    const { tree, key, tag: first } = protect(source);
    const old = fresh("old-copy");
    cpSync(tree, old, { recursive: true });
    // A second state: key.pem changed, everything else kept (unchanged files keep their objects).
    const opened = openManifest(tree, key);
    const known = new Map<string, Known>();
    for (const f of opened.body.files) {
      const s = statSync(join(source, f.path));
      known.set(f.path, { entry: f, size: s.size, mtimeMs: s.mtimeMs, ino: s.ino });
    }
    writeFileSync(join(source, "www/private/key.pem"), "ROTATED-KEY-MATERIAL-2\n");
    const second = sealDirectory(source, tree, {
      header: opened.header,
      treeKey: key,
      regions: REGIONS,
      previous: { tag: first, sequence: opened.body.sequence },
      known,
    });
    assert.equal(second.sealedFiles, 1, "only the changed file was sealed again");
    assert.equal(second.body.previous, first);
    assert.equal(second.body.sequence, 1);
    verifyTree(tree, key, second.tag);
    // One file rolled back: the old object's bytes under the new object's name.
    const oldObject = join(old, OBJECTS, opened.body.files.find((f) => f.path === "/www/private/key.pem")!.id);
    const newObject = objectOf(tree, key, "/www/private/key.pem");
    const saved = readFileSync(newObject);
    writeFileSync(newObject, readFileSync(oldObject));
    refused(() => verifyTree(tree, key, second.tag), /key\.pem: /);
    writeFileSync(newObject, saved);
    // The whole tree rolled back: it verifies on its own, but it is not the state the CAS names.
    verifyTree(old, key);
    refused(() => verifyTree(old, key, second.tag), /not the expected .*older copy/);
  });

  test("a state never accepted is replaced by the kept copy of the accepted one (restoreState)", () => {
    const source = sourceTree();
    const { tree, key, tag: accepted } = protect(source);
    const opened = openManifest(tree, key);
    writeFileSync(join(source, "notes.txt"), "a change the CAS refused\n");
    const refusedState = sealDirectory(source, tree, {
      header: opened.header,
      treeKey: key,
      regions: REGIONS,
      previous: { tag: accepted, sequence: opened.body.sequence },
    });
    assert.equal(openManifest(tree, key).tag, refusedState.tag);
    assert.equal(restoreState(tree, accepted), true);
    verifyTree(tree, key, accepted);
    assert.equal(restoreState(tree, "0".repeat(64)), false, "no copy of a state never kept");
  });

  test("another key opens nothing; decrypt of a bad tree writes nothing", () => {
    const { tree, key, tag } = protect(sourceTree());
    refused(() => verifyTree(tree, randomBytes(32)), /does not open with this key/);
    writeFileSync(objectOf(tree, key, "/www/private/big.bin"), Buffer.alloc(70_000 + 18 * 28));
    const out = fresh("out");
    refused(() => extractTree(tree, key, out, { expectedTag: tag }), /big\.bin: chunk 0/);
    assert.equal(existsSync(out), false);
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes("partial")),
      [],
      "no partial plaintext left behind",
    );
    renameSync(tree, `${tree}-moved`);
    refused(() => verifyTree(`${tree}-moved-nothing`, key), /not a protected tree/);
  });
});
