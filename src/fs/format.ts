/**
 * The protected-tree format, version 1 (docs/fs-format.md is its specification; keep the two
 * in step). A protected tree is a directory:
 *
 *   .cloister-fs/manifest          the sealed manifest: a public header, a sealed body
 *   .cloister-fs/objects/<id>      one object per protected file, never overwritten
 *   .cloister-fs/lock              empty; locked by the runtime that has the tree open
 *   <path>                         files of not-protected regions, as they are
 *
 * The manifest body (AES-256-GCM under a key derived from the tree key) lists every protected
 * file and directory with its region, object id, random per-file key (encrypted region), size,
 * mode and digest (authenticated region). The tag is SHA-256 over the manifest's bytes: it names
 * exactly one state of the tree.
 */
import { createHash, hkdfSync } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../policy/canonical.ts";

export const FORMAT = "cloister-fs";
export const FORMAT_VERSION = 1;
export const META_DIR = ".cloister-fs";
export const MANIFEST = `${META_DIR}/manifest`;
export const OBJECTS = `${META_DIR}/objects`;
/** A copy of each recent manifest by tag: the state to go back to when a commit was refused. */
export const STATES = `${META_DIR}/states`;
/** Empty; a runtime holds an exclusive lock on it while the tree is open (runtime/directory-lock.ts). */
export const LOCK = `${META_DIR}/lock`;
/** Plaintext bytes per chunk: large enough that per-chunk costs vanish next to AES-GCM itself. */
export const DEFAULT_CHUNK_SIZE = 256 * 1024;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;
export const REGION_TYPES = ["encrypted", "authenticated", "not-protected"] as const;
export type RegionType = (typeof REGION_TYPES)[number];

/**
 * A protected tree that is malformed, altered, of another key, or not the expected state.
 * `redacted` says the same without a protected file's name (which is confidential): what the
 * runtime prints where the host can read it.
 */
export class TreeError extends Error {
  readonly redacted: string;
  constructor(message: string, redacted: string = message) {
    super(message);
    this.redacted = redacted;
  }
}

/** A problem with one protected file: named by its path for the key holder, by its object id otherwise. */
export const fileError = (entry: { path: string; id: string }, problem: string) =>
  new TreeError(`${entry.path}: ${problem}`, `object ${entry.id}: ${problem}`);

/** The largest manifest a reader accepts (a bound on memory, not a format limit in practice). */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`));
/** A path inside the tree: "/" then segments, no "." or ".." or empty segment, no NUL. */
export const TreePath = z
  .string()
  .refine(
    (p) =>
      p === "/" ||
      (p.startsWith("/") && !p.endsWith("/") && !p.includes("\0") && p.split("/").slice(1).every(segmentOk)),
    "a path like /dir/file",
  );

function segmentOk(s: string): boolean {
  return s !== "" && s !== "." && s !== "..";
}

export const Header = z.strictObject({
  format: z.literal(FORMAT),
  version: z.literal(FORMAT_VERSION),
  /** Random, fixed for the tree's life: binds every key, chunk and digest to this tree. */
  tree_id: hex(16),
  chunk_size: z
    .number()
    .int()
    .min(4096)
    .max(16 * 1024 * 1024),
});
export type Header = z.infer<typeof Header>;

export const Region = z.strictObject({ prefix: TreePath, type: z.enum(REGION_TYPES) });
export type Region = z.infer<typeof Region>;

const FileBase = {
  path: TreePath,
  /** Names this file's object; a new id whenever the content changes. */
  id: hex(16),
  size: z.number().int().min(0),
  mode: z.number().int().min(0).max(0o7777),
  mtime_ms: z.number().int(),
};
export const EncryptedFile = z.strictObject({ ...FileBase, region: z.literal("encrypted"), key: hex(KEY_BYTES) });
export const AuthenticatedFile = z.strictObject({
  ...FileBase,
  region: z.literal("authenticated"),
  /** SHA-256 over the domain, tree, id, path, size and content: see authenticatedDigest. */
  digest: hex(32),
});
export const FileEntry = z.discriminatedUnion("region", [EncryptedFile, AuthenticatedFile]);
export type FileEntry = z.infer<typeof FileEntry>;

export const Body = z.strictObject({
  /** 0 for a freshly protected tree, then one more at each commit. */
  sequence: z.number().int().min(0),
  /** The tag of the state this one was made from; null for a freshly protected tree. */
  previous: hex(32).nullable(),
  regions: z.array(Region).min(1),
  directories: z.array(z.strictObject({ path: TreePath, mode: z.number().int().min(0).max(0o7777) })),
  files: z.array(FileEntry),
});
export type Body = z.infer<typeof Body>;

/** The manifest file: the header in the clear (bound as additional data), the body sealed. */
export const ManifestFile = z.strictObject({ header: Header, body: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/) });

/** The manifest file's exact bytes: the one encoding readers accept (canonical JSON, a newline). */
export function manifestBytes(header: Header, sealedBody: Buffer): Buffer {
  return Buffer.from(`{"header":${canonicalJson(header)},"body":"${sealedBody.toString("base64")}"}\n`);
}

/** The key that seals the manifest body: HKDF-SHA256 of the tree key, salted with the tree id. */
export function manifestKey(treeKey: Buffer, treeId: string): Buffer {
  return Buffer.from(hkdfSync("sha256", treeKey, Buffer.from(treeId, "hex"), "cloister-fs-v1 manifest", KEY_BYTES));
}

/** The tag of a manifest: its exact bytes, hashed with a domain of their own. */
export function tagOf(manifestBytes: Uint8Array): string {
  return createHash("sha256").update("cloister-fs-v1 tag\0").update(manifestBytes).digest("hex");
}

/**
 * Additional data of one chunk of an encrypted file: the tree, the file's identity and path,
 * the chunk's index, the file's length. A chunk moved to another place, file, tree or length
 * does not open.
 */
export function chunkAad(treeId: string, entry: { id: string; path: string; size: number }, index: number): Buffer {
  const path = Buffer.from(entry.path, "utf8");
  const fixed = Buffer.alloc(20 + 16 + 16 + 8 + 8 + 4);
  fixed.write("cloister-fs-v1 chunk", 0, "ascii");
  Buffer.from(treeId, "hex").copy(fixed, 20);
  Buffer.from(entry.id, "hex").copy(fixed, 36);
  fixed.writeBigUInt64BE(BigInt(index), 52);
  fixed.writeBigUInt64BE(BigInt(entry.size), 60);
  fixed.writeUInt32BE(path.length, 68);
  return Buffer.concat([fixed, path]);
}

/** A running digest of an authenticated file: the same binding as a chunk's, then the content. */
export function authenticatedDigest(treeId: string, entry: { id: string; path: string; size: number }) {
  return createHash("sha256")
    .update("cloister-fs-v1 authenticated\0")
    .update(chunkAad(treeId, entry, 0));
}

/** How many chunks a file of `size` bytes has, and how long its object is when encrypted. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}
export function encryptedObjectSize(size: number, chunkSize: number): number {
  return size + chunkCount(size, chunkSize) * (NONCE_BYTES + TAG_BYTES);
}

/**
 * The region of `path`: the region whose prefix is the longest whole-segment prefix of it
 * ("/data" covers /data and /data/x, not /database).
 */
export function regionOf(path: string, regions: readonly Region[]): RegionType {
  let best: Region | undefined;
  for (const r of regions) {
    const covers = r.prefix === "/" || path === r.prefix || path.startsWith(`${r.prefix}/`);
    if (covers && (!best || r.prefix.length > best.prefix.length)) best = r;
  }
  return best?.type ?? "encrypted";
}

/** Regions from the command line's prefixes; what no prefix covers is encrypted. */
export function regionsFrom(options: {
  encrypt?: readonly string[];
  authenticate?: readonly string[];
  notProtected?: readonly string[];
}): Region[] {
  const given = new Map<string, RegionType>();
  const lists: [readonly string[] | undefined, RegionType][] = [
    [options.encrypt, "encrypted"],
    [options.authenticate, "authenticated"],
    [options.notProtected, "not-protected"],
  ];
  for (const [prefixes, type] of lists) {
    for (const raw of prefixes ?? []) {
      const prefix = normalisePrefix(raw);
      const seen = given.get(prefix);
      if (seen && seen !== type) throw new TreeError(`${raw}: named as both ${seen} and ${type}`);
      given.set(prefix, type);
    }
  }
  if (!given.has("/")) given.set("/", "encrypted");
  return [...given].map(([prefix, type]) => ({ prefix, type })).sort((a, b) => (a.prefix < b.prefix ? -1 : 1));
}

/** "www/private/" → "/www/private"; refuses "..", "." and empty segments. */
export function normalisePrefix(raw: string): string {
  const trimmed = raw.replace(/\/+$/, "");
  const path = trimmed === "" ? "/" : trimmed.startsWith("/") ? trimmed : `/${trimmed}`;
  if (!TreePath.safeParse(path).success)
    throw new TreeError(`${raw}: expected a path inside the tree such as /www or /www/private`);
  return path;
}

/** A tree key from a key file: 64 hex digits (a newline allowed), or 32 raw bytes. */
export function parseKey(bytes: Buffer, where: string): Buffer {
  const text = bytes.toString("latin1").trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, "hex");
  if (bytes.length === KEY_BYTES) return Buffer.from(bytes);
  throw new TreeError(`${where}: expected a tree key, 64 hex digits (or 32 raw bytes)`);
}
