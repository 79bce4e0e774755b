/**
 * Volumes in the runtime (DESIGN.md §5, §7): a protected tree on the host, opened in the state
 * the CAS names, presented as plaintext in memory, and committed back — sealed objects, the
 * manifest by rename, then the tag compare-and-swapped in the CAS. The order makes a crash at
 * any instant harmless: the disk holds the old state or the new one, and a new state whose
 * commit did not reach the CAS names the CAS's tag as `previous`, so the next start commits it
 * before anything else (reconcile). Anything else — an older copy, a fork — is refused.
 */
import { chmodSync, lstatSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ConfiguredVolume } from "../cas/attestation.ts";
import { type Body, DEFAULT_CHUNK_SIZE, type Header, MANIFEST, type Region, TreeError } from "../fs/format.ts";
import { collectGarbage, openManifest, restoreState, writePlaintext } from "../fs/open.ts";
import { freshHeader, type Known, sealDirectory } from "../fs/seal.ts";
import { walkTree } from "../fs/walk.ts";

/** Where the CAS keeps tags: compare-and-swap `previous` → `next`, or throw. */
export interface TagKeeper {
  commit(volume: string, previous: string | null, next: string): Promise<void>;
}

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
  known: Map<string, Known>;
  /** Directories and modes as last committed, to notice a change that touches no file. */
  shape: string;
}

export class VolumeError extends Error {}

/**
 * Open `volume` from its tree at `tree` into the empty directory `plaintext`: checked against
 * the tag the CAS gave, reconciled if the last commit did not reach the CAS, verified and
 * decrypted in full before the program may start.
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
  // The volume's root, as the program sees it at the mount path: traversable by any user (its
  // files keep their own modes), like a directory made by mkdir under the usual umask.
  mkdirSync(plaintext, { recursive: true });
  chmodSync(plaintext, 0o755);
  if (!exists(join(tree, MANIFEST))) {
    if (volume.tag !== null)
      fail(`no protected tree at ${tree}, but the policy expects tag ${volume.tag}; put the tree there`);
    mkdirSync(tree, { recursive: true, mode: 0o700 });
    return {
      volume,
      tree,
      plaintext,
      treeKey,
      header: freshHeader(DEFAULT_CHUNK_SIZE),
      regions: [{ prefix: "/", type: "encrypted" }],
      tag: null,
      sequence: -1,
      known: new Map(),
      shape: shapeOf(plaintext),
    };
  }
  let manifest: ReturnType<typeof openManifest>;
  try {
    manifest = openManifest(tree, treeKey);
  } catch (error) {
    if (error instanceof TreeError) fail(error.message);
    throw error;
  }
  if (volume.update_policy !== "no-rollback-protection" && manifest!.tag !== volume.tag) {
    const pending = volume.update_policy === "rollback-protected" && manifest!.body.previous === volume.tag;
    let reconciled = false;
    if (pending) {
      // The last run wrote this state and was stopped before the CAS heard of it: commit it now.
      try {
        await tags.commit(volume.name, volume.tag, manifest!.tag);
        reconciled = true;
      } catch {
        // Refused (another runtime committed meanwhile): fall back to the CAS's state below.
      }
    }
    if (!reconciled) {
      // A state the CAS never accepted (a fork's loser, a refused commit): back to the CAS's
      // state if the tree still keeps it; otherwise this is an older copy, or another branch.
      if (volume.tag === null || !restoreState(tree, volume.tag))
        fail(
          `the tree at ${tree} is at tag ${manifest!.tag}, but the CAS expects ${volume.tag ?? "a fresh volume"}: an older copy, or a fork`,
        );
      process.stderr.write(
        `cloister: volume ${volume.name}: the tree held state ${manifest!.tag.slice(0, 12)}…, which the CAS never accepted; back to ${volume.tag!.slice(0, 12)}…\n`,
      );
      try {
        manifest = openManifest(tree, treeKey, volume.tag!);
      } catch (error) {
        if (error instanceof TreeError) fail(error.message);
        throw error;
      }
    }
  }
  const { header, body, tag } = manifest!;
  collectGarbage(tree, body, tag);
  try {
    writePlaintext(tree, manifest!, plaintext);
  } catch (error) {
    if (error instanceof TreeError) fail(error.message);
    throw error;
  }
  return {
    volume,
    tree,
    plaintext,
    treeKey,
    header,
    regions: body.regions,
    tag,
    sequence: body.sequence,
    known: knownFrom(plaintext, body),
    shape: shapeOf(plaintext),
  };
}

/**
 * Commit what the program changed: seal, write, then (rollback-protected) compare-and-swap the
 * tag. Returns the new tag, or null when nothing changed or the volume is ephemeral.
 */
export async function commitVolume(open: OpenVolume, tags: TagKeeper): Promise<string | null> {
  if (open.volume.update_policy === "ephemeral") return null;
  if (!changed(open)) return null;
  const sealed = sealDirectory(open.plaintext, open.tree, {
    header: open.header,
    treeKey: open.treeKey,
    regions: open.regions,
    ...(open.tag !== null ? { previous: { tag: open.tag, sequence: open.sequence } } : {}),
    known: open.known,
  });
  if (open.volume.update_policy === "rollback-protected") await tags.commit(open.volume.name, open.tag, sealed.tag);
  collectGarbage(open.tree, sealed.body, sealed.tag);
  open.tag = sealed.tag;
  open.sequence = sealed.body.sequence;
  open.known = knownFrom(open.plaintext, sealed.body);
  open.shape = shapeOf(open.plaintext);
  return sealed.tag;
}

/** Whether the plaintext differs from the last state: files added, removed, rewritten, or directories or modes changed. */
function changed(open: OpenVolume): boolean {
  if (open.tag === null && open.sequence < 0) return true;
  return shapeOf(open.plaintext) !== open.shape;
}

/**
 * A fingerprint of the plaintext tree's shape: every path with its type, mode, size, mtime and
 * inode. Any write changes a file's mtime or size; renames and removals change the paths.
 */
function shapeOf(root: string): string {
  const parts: string[] = [];
  walkTree(root, (path, s) => parts.push(`${path}\0${s.mode}\0${s.size}\0${s.mtimeMs}\0${s.ino}`));
  return parts.join("\n");
}

function knownFrom(plaintext: string, body: Body): Map<string, Known> {
  const known = new Map<string, Known>();
  for (const entry of body.files) {
    const s = lstatSync(join(plaintext, entry.path));
    known.set(entry.path, { entry, size: s.size, mtimeMs: s.mtimeMs, ino: s.ino });
  }
  return known;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
