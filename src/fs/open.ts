/**
 * Reading protected trees: the manifest opened and checked, every object checked against it,
 * and — for `decrypt` and the runtime — the plaintext written out. Nothing is trusted before it
 * is verified: sizes are computed from the manifest, never read from the disk, and a tree that
 * fails anywhere releases nothing (extract writes into a directory it removes on failure).
 */
import { createDecipheriv, createSecretKey, timingSafeEqual } from "node:crypto";
import {
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { canonicalJson } from "../policy/canonical.ts";
import {
  authenticatedDigest,
  Body,
  chunkAad,
  chunkCount,
  encryptedObjectSize,
  type FileEntry,
  fileError,
  type Header,
  MANIFEST,
  MAX_MANIFEST_BYTES,
  ManifestFile,
  META_DIR,
  manifestBytes,
  manifestKey,
  NONCE_BYTES,
  OBJECTS,
  regionOf,
  STATES,
  TAG_BYTES,
  TreeError,
  tagOf,
} from "./format.ts";
import { readExactly, replaceManifest } from "./seal.ts";
import { entryAt, walkTree } from "./walk.ts";

export interface OpenedManifest {
  readonly header: Header;
  readonly body: Body;
  readonly tag: string;
}

/** The manifest's public part, readable without the key: what `cloister fs show` prints. */
export function readHeader(treeDir: string): { header: Header; tag: string } {
  const bytes = readManifestBytes(treeDir);
  return { header: parseManifestFile(bytes).header, tag: tagOf(bytes) };
}

/**
 * Open and check the manifest. With `expectedTag`, any other state — an older copy, a fork, a
 * tree protected again — is refused before its body is even opened.
 */
export function openManifest(treeDir: string, treeKey: Buffer, expectedTag?: string): OpenedManifest {
  checkTreeDirectories(treeDir);
  const bytes = readManifestBytes(treeDir);
  const tag = tagOf(bytes);
  if (expectedTag !== undefined && !sameTag(tag, expectedTag))
    throw new TreeError(
      `the tree is at tag ${tag}, not the expected ${expectedTag}: an older copy, another branch, or another tree`,
    );
  const { header, body: sealedBase64 } = parseManifestFile(bytes);
  const sealed = Buffer.from(sealedBase64, "base64");
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new TreeError("manifest: the sealed body is too short");
  const decipher = createDecipheriv(
    "aes-256-gcm",
    manifestKey(treeKey, header.tree_id),
    sealed.subarray(0, NONCE_BYTES),
  );
  decipher.setAAD(Buffer.from(canonicalJson(header)));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  let plaintext: Buffer;
  try {
    plaintext = Buffer.concat([
      decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw new TreeError("manifest: does not open with this key (another tree's key, or the manifest was altered)");
  }
  const parsed = Body.safeParse(JSON.parse(plaintext.toString("utf8")));
  if (!parsed.success) throw new TreeError(`manifest: ${parsed.error.issues[0]?.message ?? "malformed body"}`);
  checkBody(parsed.data);
  return { header, body: parsed.data, tag };
}

/** Check every object of the tree against its manifest; returns the manifest. */
export function verifyTree(treeDir: string, treeKey: Buffer, expectedTag?: string): OpenedManifest {
  const manifest = openManifest(treeDir, treeKey, expectedTag);
  for (const entry of manifest.body.files) readObject(treeDir, manifest.header, entry, () => {});
  return manifest;
}

/**
 * Verify and write the plaintext of the tree into `outDir`, which must not exist: it is built
 * beside it and renamed into place only when everything verified, and removed otherwise.
 * Not-protected files are copied as they are.
 */
export function extractTree(
  treeDir: string,
  treeKey: Buffer,
  outDir: string,
  options: { expectedTag?: string; progress?: (bytes: number, total: number) => void } = {},
): OpenedManifest {
  const manifest = openManifest(treeDir, treeKey, options.expectedTag);
  const partial = `${outDir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { mode: 0o700 });
  try {
    writePlaintext(treeDir, manifest, partial, options.progress);
    renameSync(partial, outDir);
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    throw error;
  }
  return manifest;
}

/** Write the verified plaintext of an opened tree into the existing, empty directory `dir`. */
export function writePlaintext(
  treeDir: string,
  manifest: OpenedManifest,
  dir: string,
  progress?: (bytes: number, total: number) => void,
): void {
  const { header, body } = manifest;
  for (const d of body.directories) mkdirSync(join(dir, d.path), { recursive: true, mode: 0o700 });
  const total = body.files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  for (const entry of body.files) {
    const target = join(dir, entry.path);
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    const fd = openSync(target, "wx", 0o600);
    try {
      readObject(treeDir, header, entry, (plain) => writeFully(fd, plain));
    } finally {
      closeSync(fd);
    }
    chmodSync(target, entry.mode);
    const time = new Date(entry.mtime_ms);
    utimesSync(target, time, time);
    done += entry.size;
    progress?.(done, total);
  }
  for (const path of notProtectedFiles(treeDir, body)) {
    const target = join(dir, path);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(join(treeDir, path), target);
  }
  // Directory modes last: a read-only directory must not stop its own files being written.
  for (const d of [...body.directories].reverse()) chmodSync(join(dir, d.path), d.mode);
}

/** The files of the tree's not-protected regions, as they are on disk now. */
export function notProtectedFiles(treeDir: string, body: Body): string[] {
  if (!body.regions.some((r) => r.type === "not-protected")) return [];
  const found: string[] = [];
  walkTree(
    treeDir,
    (path, stat) => {
      if (stat.isFile() && regionOf(path, body.regions) === "not-protected") found.push(path);
    },
    (path) => path === `/${META_DIR}`,
  );
  return found;
}

/**
 * Read one object, verifying as it goes, and hand its plaintext to `sink` chunk by chunk. A
 * chunk is handed over only after it verified; an authenticated file's digest is compared at
 * the end (callers that wrote its chunks discard them when this throws).
 */
export function readObject(treeDir: string, header: Header, entry: FileEntry, sink: (plain: Buffer) => void): void {
  const path = join(treeDir, OBJECTS, entry.id);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    throw fileError(entry, `its object ${entry.id} is missing`);
  }
  try {
    const expected = entry.region === "encrypted" ? encryptedObjectSize(entry.size, header.chunk_size) : entry.size;
    const actual = fstatSync(fd).size;
    if (actual !== expected)
      throw fileError(entry, `its object holds ${actual} bytes, not ${expected} (truncated or extended)`);
    if (entry.region === "encrypted") {
      const key = createSecretKey(Buffer.from(entry.key, "hex")); // once per file, not per chunk
      const buffer = Buffer.allocUnsafe(header.chunk_size + NONCE_BYTES + TAG_BYTES);
      const count = chunkCount(entry.size, header.chunk_size);
      for (let index = 0; index < count; index++) {
        const length = Math.min(header.chunk_size, entry.size - index * header.chunk_size);
        readExactly(fd, buffer, length + NONCE_BYTES + TAG_BYTES, entry);
        const decipher = createDecipheriv("aes-256-gcm", key, buffer.subarray(0, NONCE_BYTES));
        decipher.setAAD(chunkAad(header.tree_id, entry, index));
        decipher.setAuthTag(buffer.subarray(NONCE_BYTES + length, NONCE_BYTES + length + TAG_BYTES));
        let plain: Buffer;
        try {
          plain = decipher.update(buffer.subarray(NONCE_BYTES, NONCE_BYTES + length));
          decipher.final();
        } catch {
          throw fileError(entry, `chunk ${index} was altered, moved or belongs to another file`);
        }
        sink(plain);
      }
    } else {
      const digest = authenticatedDigest(header.tree_id, entry);
      const buffer = Buffer.allocUnsafe(header.chunk_size);
      for (let at = 0; at < entry.size; at += header.chunk_size) {
        const length = Math.min(header.chunk_size, entry.size - at);
        readExactly(fd, buffer, length, entry);
        digest.update(buffer.subarray(0, length));
        sink(Buffer.from(buffer.subarray(0, length)));
      }
      if (!timingSafeEqual(digest.digest(), Buffer.from(entry.digest, "hex")))
        throw fileError(entry, "its content was altered");
    }
  } finally {
    closeSync(fd);
  }
}

/** Objects no file of `body` names: left by an interrupted commit or an older state. */
export function unreferencedObjects(treeDir: string, body: Body): string[] {
  const used = new Set(body.files.map((f) => f.id));
  let names: string[];
  try {
    names = readdirSync(join(treeDir, OBJECTS));
  } catch {
    return [];
  }
  return names.filter((n) => !used.has(n));
}

/**
 * Remove what the state `tag` (with `body`) does not need: objects no file names, other states'
 * manifests, temporary files. Run after a commit reached the CAS, or at start.
 */
export function collectGarbage(treeDir: string, body: Body, tag: string): number {
  checkTreeDirectories(treeDir);
  const unused = unreferencedObjects(treeDir, body).filter((n) => /^[0-9a-f]{32}$/.test(n));
  const remove = (path: string) => {
    // Only regular files this format names: never whatever the host put there.
    if (entryAt(path)?.isFile()) rmSync(path, { force: true });
  };
  for (const name of unused) remove(join(treeDir, OBJECTS, name));
  for (const name of readdirSafe(join(treeDir, STATES))) {
    if (/^[0-9a-f]{64}$/.test(name) && name !== tag) remove(join(treeDir, STATES, name));
  }
  for (const name of readdirSafe(join(treeDir, META_DIR))) {
    if (/^manifest\.[0-9a-f]{8}\.tmp$/.test(name)) remove(join(treeDir, META_DIR, name));
  }
  return unused.length;
}

/**
 * Make the kept state `tag` current again (its copy under states/), when the current manifest
 * holds a state that was never accepted — a commit the CAS refused. False when no copy is kept.
 */
export function restoreState(treeDir: string, tag: string): boolean {
  checkTreeDirectories(treeDir);
  let bytes: Buffer;
  try {
    bytes = readRegularFile(join(treeDir, STATES, tag), MAX_MANIFEST_BYTES);
  } catch {
    return false;
  }
  if (tagOf(bytes) !== tag) return false;
  replaceManifest(treeDir, bytes);
  return true;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readManifestBytes(treeDir: string): Buffer {
  try {
    return readRegularFile(join(treeDir, MANIFEST), MAX_MANIFEST_BYTES);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT")
      throw new TreeError(`${treeDir}: not a protected tree (no ${MANIFEST})`);
    throw error;
  }
}

/**
 * A regular file's bytes, never through a symbolic link (in the last component) and never
 * more than `limit`: the host may have put a link, a FIFO or /dev/zero there.
 */
export function readRegularFile(path: string, limit: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOOP") throw new TreeError(`${path}: a symbolic link, refused`);
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new TreeError(`${path}: not a regular file`);
    if (stat.size > limit) throw new TreeError(`${path}: ${stat.size} bytes, more than the ${limit} accepted`);
    const bytes = Buffer.allocUnsafe(stat.size);
    let got = 0;
    while (got < stat.size) {
      const n = readSync(fd, bytes, got, stat.size - got, null);
      if (n === 0) break;
      got += n;
    }
    return bytes.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/**
 * The tree's own directories must be directories, not symbolic links: the runtime writes into
 * them and removes from them, and must not be sent elsewhere (checked before each use; a host
 * that swaps them during the use is the limit docs/fs-format.md states).
 */
export function checkTreeDirectories(treeDir: string): void {
  for (const path of [treeDir, join(treeDir, META_DIR), join(treeDir, OBJECTS), join(treeDir, STATES)]) {
    const stat = entryAt(path);
    if (stat && !stat.isDirectory()) throw new TreeError(`${path}: not a directory (a symbolic link?), refused`);
  }
}

function parseManifestFile(bytes: Buffer): { header: Header; body: string } {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new TreeError("manifest: not JSON");
  }
  const parsed = ManifestFile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TreeError(`manifest: ${issue ? `${issue.path.join(".")}: ${issue.message}` : "malformed"}`);
  }
  // One state, one encoding: the bytes must be exactly what the writer makes of them, so that
  // no change of spelling (whitespace, key order, base64 padding bits) passes with another tag.
  if (!manifestBytes(parsed.data.header, Buffer.from(parsed.data.body, "base64")).equals(bytes))
    throw new TreeError("manifest: not in its canonical form (altered)");
  return parsed.data;
}

/** Consistency a sealed body must have anyway; checked so that a bug cannot pass as a tree. */
function checkBody(body: Body): void {
  const paths = new Set<string>();
  const ids = new Set<string>();
  for (const d of body.directories) {
    if (paths.has(d.path)) throw new TreeError(`manifest: ${d.path} is listed twice`);
    paths.add(d.path);
  }
  for (const f of body.files) {
    if (paths.has(f.path)) throw new TreeError(`manifest: ${f.path} is listed twice`);
    if (ids.has(f.id)) throw new TreeError(`manifest: object ${f.id} is used twice`);
    if (regionOf(f.path, body.regions) !== f.region)
      throw new TreeError(`manifest: ${f.path} is ${f.region}, but its region is ${regionOf(f.path, body.regions)}`);
    paths.add(f.path);
    ids.add(f.id);
  }
}

function sameTag(a: string, b: string): boolean {
  const x = Buffer.from(a.toLowerCase(), "utf8");
  const y = Buffer.from(b.toLowerCase(), "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}

function writeFully(fd: number, data: Buffer): void {
  let at = 0;
  while (at < data.length) at += writeSync(fd, data, at, data.length - at);
}
