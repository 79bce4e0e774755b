/**
 * Volumes in the runtime (DESIGN.md §5, §7): a protected tree on the host, opened in the state
 * the CAS names, presented as plaintext in memory, and committed back — sealed objects, the
 * manifest by rename, then the tag compare-and-swapped in the CAS. The order makes a crash at
 * any instant harmless: the disk holds the old state or the new one, and a new state whose
 * commit did not reach the CAS names the CAS's tag as `previous`, so the next start commits it
 * before anything else (reconcile). Anything else — an older copy, a fork — is refused, and
 * nothing on disk is touched unless the CAS's answer says what is current.
 */
import { chmodSync, mkdirSync, type Stats } from "node:fs";
import { join } from "node:path";
import { type Body, DEFAULT_CHUNK_SIZE, type Header, MANIFEST, type Region, TreeError } from "../fs/format.ts";
import {
  checkTreeDirectories,
  collectGarbage,
  openManifest,
  restoreState,
  verifyTree,
  writePlaintext,
} from "../fs/open.ts";
import { freshHeader, type Known, makeDirectory, sealDirectory, type Walked, walk } from "../fs/seal.ts";
import { entryExists } from "../fs/walk.ts";
import type { ConfiguredVolume } from "../protocol/attestation.ts";

/** Where the CAS keeps tags: compare-and-swap `previous` → `next`. */
export interface TagKeeper {
  /** Throws TagConflict when the CAS holds another tag; anything else is a failure to ask. */
  commit(volume: string, previous: string | null, next: string): Promise<void>;
}

/** The CAS holds another tag than `previous`: another runtime committed from the same state. */
export class TagConflict extends Error {}

/** A volume opened for a run: where its plaintext is, and the state it was opened in. */
export interface OpenVolume {
  readonly volume: ConfiguredVolume;
  readonly tree: string;
  readonly plaintext: string;
  readonly treeKey: Buffer;
  header: Header;
  regions: readonly Region[];
  /** The current state's tag (null: a fresh volume never committed) and sequence number. */
  tag: string | null;
  sequence: number;
  /** A state written to disk whose commit the CAS has not confirmed: retried before anything else. */
  pending: string | null;
  known: Map<string, Known>;
  /** The plaintext's shape when last sealed, to notice any change. */
  shape: string;
}

export class VolumeError extends Error {}

/**
 * Open `volume` from its tree at `tree` into the empty directory `plaintext`: checked against
 * the tag the CAS gave, reconciled if the last commit did not reach the CAS, verified and
 * decrypted in full before the program may start; only then is what the state does not need
 * removed from the tree.
 */
export async function openVolume(
  volume: ConfiguredVolume,
  tree: string,
  plaintext: string,
  tags: TagKeeper,
): Promise<OpenVolume> {
  const treeKey = Buffer.from(volume.key, "hex");
  const fail = (why: string): never => {
    throw new VolumeError(`volume ${volume.name}: ${why}`);
  };
  // Messages go where the host can read them: protected file names stay out (TreeError.redacted).
  const treeFailure = (error: unknown): never => {
    if (error instanceof TreeError) fail(error.redacted);
    throw error;
  };
  // The volume's root, as the program sees it at the mount path: traversable by any user (its
  // files keep their own modes), like a directory made by mkdir under the usual umask.
  mkdirSync(plaintext, { recursive: true });
  chmodSync(plaintext, 0o755);
  try {
    checkTreeDirectories(tree);
  } catch (error) {
    treeFailure(error);
  }
  if (!entryExists(join(tree, MANIFEST))) {
    if (volume.tag !== null)
      fail(`no protected tree at ${tree}, but the policy expects tag ${volume.tag}; put the tree there`);
    makeDirectory(tree);
    return {
      volume,
      tree,
      plaintext,
      treeKey,
      header: freshHeader(DEFAULT_CHUNK_SIZE),
      regions: [{ prefix: "/", type: "encrypted" }],
      tag: null,
      sequence: -1,
      pending: null,
      known: new Map(),
      shape: shapeOf(plaintext),
    };
  }
  let manifest = (() => {
    try {
      return openManifest(tree, treeKey);
    } catch (error) {
      return treeFailure(error);
    }
  })();
  // Files of a not-protected region are read and written on the host by name, where the host
  // could swap in a symbolic link into the plaintext: volumes hold protected files only.
  if (manifest.body.regions.some((r) => r.type === "not-protected"))
    fail("the tree has a not-protected region; volumes hold encrypted and authenticated files only");
  if (volume.update_policy !== "no-rollback-protection" && manifest.tag !== volume.tag) {
    const successor = volume.update_policy === "rollback-protected" && manifest.body.previous === volume.tag;
    if (successor && verifies(tree, treeKey, manifest.tag)) {
      // The last run wrote this state and was stopped before the CAS heard of it: commit it now.
      try {
        await tags.commit(volume.name, volume.tag, manifest.tag);
      } catch (error) {
        // The disk is left as it is: the CAS either moved on since this run was attested, or
        // could not be asked; either way a new start will know more.
        fail(
          error instanceof TagConflict
            ? "the CAS's state of this volume changed since this run was attested (another runtime committed): start again"
            : `cannot commit the state the last run left (${(error as Error).message}): start again when the CAS can be reached`,
        );
      }
    } else {
      // A state the CAS never accepted (a fork's loser, a refused commit): back to the CAS's
      // state if the tree still keeps it; otherwise this is an older copy, or another branch.
      if (volume.tag === null || !restoreState(tree, volume.tag))
        fail(
          `the tree at ${tree} is at tag ${manifest.tag}, but the CAS expects ${volume.tag ?? "a fresh volume"}: an older copy, or a fork`,
        );
      process.stderr.write(
        `cloister: volume ${volume.name}: the tree held state ${manifest.tag.slice(0, 12)}…, which the CAS never accepted; back to ${volume.tag!.slice(0, 12)}…\n`,
      );
      try {
        manifest = openManifest(tree, treeKey, volume.tag!);
      } catch (error) {
        treeFailure(error);
      }
    }
  }
  try {
    writePlaintext(tree, manifest, plaintext);
  } catch (error) {
    treeFailure(error);
  }
  const { header, body, tag } = manifest;
  collectGarbage(tree, body, tag);
  const { files, directories, others } = walk(plaintext, () => {});
  return {
    volume,
    tree,
    plaintext,
    treeKey,
    header,
    regions: body.regions,
    tag,
    sequence: body.sequence,
    pending: null,
    known: knownFrom(body, files),
    shape: shapeFrom([...files, ...directories, ...others]),
  };
}

/**
 * Commit what the program changed: seal, write, then (rollback-protected) compare-and-swap the
 * tag. Returns the new tag, or null when nothing changed or the volume is ephemeral. A commit
 * the CAS could not be asked about stays pending and is retried first next time; one it
 * refuses (TagConflict) means this runtime is a fork's loser.
 */
export async function commitVolume(
  open: OpenVolume,
  tags: TagKeeper,
  warn: (message: string) => void = () => {},
): Promise<string | null> {
  if (open.volume.update_policy === "ephemeral") return null;
  if (open.pending !== null) {
    await tags.commit(open.volume.name, open.tag, open.pending);
    open.tag = open.pending;
    open.pending = null;
  }
  if (!changed(open)) return null;
  let sealed: ReturnType<typeof sealDirectory>;
  try {
    sealed = sealDirectory(open.plaintext, open.tree, {
      header: open.header,
      treeKey: open.treeKey,
      regions: open.regions,
      ...(open.tag !== null ? { previous: { tag: open.tag, sequence: open.sequence } } : {}),
      known: open.known,
      skip: (_path, stat) =>
        warn(`a ${stat.isSymbolicLink() ? "symbolic link" : "special file"} in volume ${open.volume.name} is not kept`),
    });
  } catch (error) {
    if (error instanceof TreeError) throw new VolumeError(`volume ${open.volume.name}: ${error.redacted}`);
    throw error;
  }
  // What was sealed is what the walk saw before reading: a file changed since then differs from
  // it, and is sealed again next time.
  const files = sealed.walked.filter((w) => w.stat.isFile());
  open.known = knownFrom(sealed.body, files);
  open.shape = shapeFrom(sealed.walked);
  open.sequence = sealed.body.sequence;
  if (open.volume.update_policy === "rollback-protected") {
    open.pending = sealed.tag;
    await tags.commit(open.volume.name, open.tag, sealed.tag);
    open.pending = null;
  }
  open.tag = sealed.tag;
  collectGarbage(open.tree, sealed.body, sealed.tag);
  return sealed.tag;
}

/** Whether the plaintext differs from the last state: files added, removed, rewritten, or directories or modes changed. */
function changed(open: OpenVolume): boolean {
  if (open.tag === null && open.sequence < 0) return true;
  return shapeOf(open.plaintext) !== open.shape;
}

/**
 * A fingerprint of the plaintext tree's shape: every path with its mode, size, mtime and inode.
 * Any write changes a file's mtime or size; renames and removals change the paths.
 */
function shapeOf(root: string): string {
  const { files, directories, others } = walk(root, () => {});
  return shapeFrom([...files, ...directories, ...others]);
}

function shapeFrom(entries: readonly Walked[]): string {
  return [...entries]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map(({ path, stat: s }) => `${path}\0${s.mode}\0${s.size}\0${s.mtimeMs}\0${s.ino}`)
    .join("\n");
}

function knownFrom(body: Body, files: readonly Walked[]): Map<string, Known> {
  const stats = new Map<string, Stats>(files.map((f) => [f.path, f.stat]));
  const known = new Map<string, Known>();
  for (const entry of body.files) {
    const s = stats.get(entry.path);
    if (s) known.set(entry.path, { entry, size: s.size, mtimeMs: s.mtimeMs, ino: s.ino });
  }
  return known;
}

/** Whether every object of the state `tag` checks out (before committing it blind). */
function verifies(tree: string, treeKey: Buffer, tag: string): boolean {
  try {
    verifyTree(tree, treeKey, tag);
    return true;
  } catch (error) {
    if (error instanceof TreeError) return false;
    throw error;
  }
}
