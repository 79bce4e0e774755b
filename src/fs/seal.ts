/**
 * Writing protected trees: a plaintext directory sealed into a tree's objects and manifest.
 * Objects are written under fresh ids and never overwritten; the manifest is replaced last, by
 * rename, after everything it names is on disk — so a crash at any instant leaves the previous
 * state or the new one, never a mix (docs/fs-format.md, "Commit").
 */
import { createCipheriv, createSecretKey, randomBytes } from "node:crypto";
import {
  closeSync,
  constants,
  copyFileSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  type Stats,
  writeFileSync,
  writevSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { canonicalJson } from "../policy/canonical.ts";
import {
  authenticatedDigest,
  type Body,
  chunkAad,
  chunkCount,
  type FileEntry,
  fileError,
  type Header,
  KEY_BYTES,
  MANIFEST,
  META_DIR,
  manifestBytes,
  manifestKey,
  NONCE_BYTES,
  OBJECTS,
  type Region,
  regionOf,
  STATES,
  TreeError,
  tagOf,
} from "./format.ts";
import { entryExists, walkTree } from "./walk.ts";

export interface Progress {
  readonly files: number;
  readonly totalFiles: number;
  readonly bytes: number;
  readonly totalBytes: number;
}

/** What a file looked like when its entry was made: unchanged files keep their object. */
export interface Known {
  readonly entry: FileEntry;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
}

export interface SealOptions {
  readonly header: Header;
  readonly treeKey: Buffer;
  readonly regions: readonly Region[];
  /** The state this one follows: its tag and sequence number (none for a fresh tree). */
  readonly previous?: { readonly tag: string; readonly sequence: number };
  /** Entries of files sealed before, by path, with what their plaintext looked like then. */
  readonly known?: ReadonlyMap<string, Known>;
  readonly progress?: (p: Progress) => void;
  /**
   * What to do with symbolic links, sockets and the like in `source`: by default they are
   * refused; a volume (whose program may make them) skips them and says so.
   */
  readonly skip?: (path: string, stat: Stats) => void;
}

export interface Sealed {
  readonly tag: string;
  readonly body: Body;
  /** Files whose content was sealed anew, and their bytes. */
  readonly sealedFiles: number;
  readonly sealedBytes: number;
  /** Every entry of `source` as the walk saw it, before its content was read. */
  readonly walked: readonly Walked[];
}

export interface Walked {
  readonly path: string;
  readonly stat: Stats;
}

/**
 * Seal the plaintext directory `source` as a new state of the tree at `treeDir` (made if
 * missing) and make it current. Returns the new tag.
 */
export function sealDirectory(source: string, treeDir: string, options: SealOptions): Sealed {
  const { header, treeKey, regions } = options;
  const { files, directories, others } = walk(source, options.skip);
  const protectedFiles = files.filter((f) => regionOf(f.path, regions) !== "not-protected");
  const totalBytes = protectedFiles.reduce((n, f) => n + f.stat.size, 0);
  makeDirectory(join(treeDir, OBJECTS));
  const entries: FileEntry[] = [];
  let bytes = 0;
  let sealedFiles = 0;
  let sealedBytes = 0;
  let done = 0;
  const report = () =>
    options.progress?.({ files: done, totalFiles: protectedFiles.length, bytes, totalBytes: totalBytes });
  for (const file of files) {
    const region = regionOf(file.path, regions);
    const from = join(source, file.path);
    if (region === "not-protected") {
      const to = join(treeDir, file.path);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(from, to);
      continue;
    }
    const known = options.known?.get(file.path);
    const unchanged =
      known &&
      known.entry.region === region &&
      known.size === file.stat.size &&
      known.mtimeMs === file.stat.mtimeMs &&
      known.ino === file.stat.ino;
    if (unchanged) {
      entries.push({ ...known.entry, mode: file.stat.mode & 0o7777 });
    } else {
      const base = {
        path: file.path,
        id: randomBytes(16).toString("hex"),
        size: file.stat.size,
        mode: file.stat.mode & 0o7777,
        mtime_ms: Math.trunc(file.stat.mtimeMs),
      };
      const object = join(treeDir, OBJECTS, base.id);
      if (region === "encrypted") {
        const key = randomBytes(KEY_BYTES);
        encryptFile(from, object, header, base, key);
        entries.push({ ...base, region, key: key.toString("hex") });
      } else {
        entries.push({ ...base, region, digest: copyAuthenticated(from, object, header, base) });
      }
      sealedFiles++;
      sealedBytes += file.stat.size;
    }
    done++;
    bytes += file.stat.size;
    report();
  }
  fsyncDirectory(join(treeDir, OBJECTS));
  const body: Body = {
    sequence: options.previous ? options.previous.sequence + 1 : 0,
    previous: options.previous?.tag ?? null,
    regions: [...regions],
    directories: directories.map((d) => ({ path: d.path, mode: d.stat.mode & 0o7777 })),
    files: entries,
  };
  const tag = writeManifest(treeDir, header, treeKey, body);
  return { tag, body, sealedFiles, sealedBytes, walked: [...files, ...directories, ...others] };
}

/**
 * Seal and write the manifest, making it current: a copy under states/TAG first, then a
 * temporary file, fsync, rename over the old manifest, fsync the directory.
 */
export function writeManifest(treeDir: string, header: Header, treeKey: Buffer, body: Body): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", manifestKey(treeKey, header.tree_id), nonce);
  cipher.setAAD(Buffer.from(canonicalJson(header)));
  const sealed = Buffer.concat([nonce, cipher.update(JSON.stringify(body)), cipher.final(), cipher.getAuthTag()]);
  const bytes = manifestBytes(header, sealed);
  const tag = tagOf(bytes);
  makeDirectory(join(treeDir, STATES));
  writeDurably(join(treeDir, STATES, tag), bytes);
  fsyncDirectory(join(treeDir, STATES));
  replaceManifest(treeDir, bytes);
  return tag;
}

/** Make `bytes` the current manifest, atomically and durably. */
export function replaceManifest(treeDir: string, bytes: Buffer): void {
  const path = join(treeDir, MANIFEST);
  const temporary = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  writeDurably(temporary, bytes);
  renameSync(temporary, path);
  fsyncDirectory(join(treeDir, META_DIR));
}

function writeDurably(path: string, bytes: Buffer): void {
  const fd = openSync(path, "wx", 0o600);
  try {
    writeFileSync(fd, bytes);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function encryptFile(
  from: string,
  to: string,
  header: Header,
  entry: { id: string; path: string; size: number },
  key: Buffer,
): void {
  const input = openSync(from, constants.O_RDONLY | constants.O_NOFOLLOW);
  const output = openSync(to, "wx", 0o600);
  try {
    const chunk = Buffer.allocUnsafe(header.chunk_size);
    // One key object per file: given raw bytes, createCipheriv would build one for every chunk,
    // which costs more than encrypting a small chunk.
    const fileKey = createSecretKey(key);
    const count = chunkCount(entry.size, header.chunk_size);
    for (let index = 0; index < count; index++) {
      const length = Math.min(header.chunk_size, entry.size - index * header.chunk_size);
      readExactly(input, chunk, length, entry);
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv("aes-256-gcm", fileKey, nonce);
      cipher.setAAD(chunkAad(header.tree_id, entry, index));
      const ciphertext = cipher.update(chunk.subarray(0, length));
      cipher.final();
      writeAll(output, [nonce, ciphertext, cipher.getAuthTag()]);
    }
    if (readSync(input, chunk, 0, 1, null) !== 0) throw fileError(entry, "grew while it was being sealed");
    fsyncSync(output);
  } finally {
    closeSync(input);
    closeSync(output);
  }
}

function copyAuthenticated(
  from: string,
  to: string,
  header: Header,
  entry: { id: string; path: string; size: number },
): string {
  const digest = authenticatedDigest(header.tree_id, entry);
  const input = openSync(from, constants.O_RDONLY | constants.O_NOFOLLOW);
  const output = openSync(to, "wx", 0o600);
  try {
    const chunk = Buffer.allocUnsafe(header.chunk_size);
    for (let at = 0; at < entry.size; at += header.chunk_size) {
      const length = Math.min(header.chunk_size, entry.size - at);
      readExactly(input, chunk, length, entry);
      digest.update(chunk.subarray(0, length));
      writeAll(output, [chunk.subarray(0, length)]);
    }
    if (readSync(input, chunk, 0, 1, null) !== 0) throw fileError(entry, "grew while it was being sealed");
    fsyncSync(output);
  } finally {
    closeSync(input);
    closeSync(output);
  }
  return digest.digest("hex");
}

/**
 * Every directory and regular file under `root`, as tree paths; anything else is refused, or
 * handed to `skip` and listed in `others`.
 */
export function walk(
  root: string,
  skip?: (path: string, stat: Stats) => void,
): { files: Walked[]; directories: Walked[]; others: Walked[] } {
  const files: Walked[] = [];
  const directories: Walked[] = [];
  const others: Walked[] = [];
  walkTree(root, (path, stat) => {
    if (path === `/${META_DIR}`) throw new TreeError(`${path}: the name ${META_DIR} is reserved for protected trees`);
    if (stat.isDirectory()) directories.push({ path, stat });
    else if (stat.isFile()) files.push({ path, stat });
    else if (skip) {
      skip(path, stat);
      others.push({ path, stat });
    } else
      throw new TreeError(
        `${path}: ${stat.isSymbolicLink() ? "a symbolic link" : "not a regular file or directory"}; protected trees hold files and directories only`,
      );
  });
  return { files, directories, others };
}

export function readExactly(fd: number, buffer: Buffer, length: number, entry: { path: string; id: string }): void {
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buffer, got, length - got, null);
    if (n === 0) throw fileError(entry, "shorter than expected (it changed while it was read)");
    got += n;
  }
}

function writeAll(fd: number, parts: Buffer[]): void {
  let pending = parts.filter((p) => p.length > 0);
  while (pending.length > 0) {
    let written = writevSync(fd, pending);
    const rest: Buffer[] = [];
    for (const part of pending) {
      if (written >= part.length) written -= part.length;
      else {
        rest.push(part.subarray(written));
        written = 0;
      }
    }
    pending = rest;
  }
}

/**
 * mkdir -p, durably: each directory made is fsynced into its parent, so that a power loss after
 * a commit reached the CAS cannot take the tree's directories with it.
 */
export function makeDirectory(path: string): void {
  const made: string[] = [];
  for (let p = path; !entryExists(p); p = dirname(p)) made.unshift(p);
  for (const p of made) {
    mkdirSync(p, { mode: 0o700 });
    fsyncDirectory(dirname(p));
  }
}

export function fsyncDirectory(path: string): void {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A fresh tree's header: a random tree id. */
export function freshHeader(chunkSize: number): Header {
  return { format: "cloister-fs", version: 1, tree_id: randomBytes(16).toString("hex"), chunk_size: chunkSize };
}
