/**
 * An exclusive lock on a file, held by this process until released or until it ends, however it
 * ends (the kernel lets go of it then: no stale lock to judge, no PID to be reused). It is
 * SQLite's own exclusive lock — an fcntl lock, held by an open exclusive transaction — because
 * node:sqlite is the one way to fcntl locks in Node without a native addon. The lock belongs to
 * the file, not to a name: another path to it, a bind mount, another mount or network namespace
 * (a second container on the same volume) all meet it. Only who can open the file can hold it.
 *
 * fcntl locks are per process: within one process SQLite's own bookkeeping refuses a second
 * holder of the same file, and it keeps the descriptor open while the lock is held (closing any
 * descriptor of a file drops a process's fcntl locks on it).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";

export class FileLockHeld extends Error {}

/** The file locked was not the one expected: its path was swapped while it was being opened. */
export class FileLockMismatch extends Error {}

/**
 * Every lock held, so that none is garbage: a DatabaseSync nobody refers to is closed when it is
 * collected, and its lock with it — a caller that keeps the lock for the life of the process
 * and drops the release function (as a runtime does) would otherwise lose it at some GC.
 */
const held = new Set<DatabaseSync>();

const SQLITE_BUSY = 5;

export interface LockOptions {
  /**
   * The file must exist already (default: it is made if missing). Opened without O_CREAT, so
   * that a name swapped for a dangling symbolic link cannot make SQLite create a file elsewhere.
   */
  readonly existing?: boolean;
  /** The file (device and inode) the lock must be on: checked on the open descriptor, not by name. */
  readonly expect?: { readonly dev: number; readonly ino: number };
}

/** Lock `path`; throws FileLockHeld if another holder has it. */
export function lockFile(path: string, options: LockOptions = {}): () => void {
  let location: string | URL = path;
  if (options.existing) {
    location = pathToFileURL(path);
    location.searchParams.set("mode", "rw");
  }
  const db = new DatabaseSync(location, { timeout: 0 });
  try {
    // The exclusive lock is taken by BEGIN EXCLUSIVE and held while the transaction stays open
    // (closing the database ends it). Nothing is written to an empty file, and no journal file
    // appears beside it (node:sqlite's defensive mode refuses journal_mode OFF; MEMORY keeps
    // the journal, were there one, in memory).
    db.exec("PRAGMA journal_mode = MEMORY; BEGIN EXCLUSIVE;");
    // A file SQLite cannot open for writing it opens read-only, without a word, and then BEGIN
    // EXCLUSIVE holds only a shared (read) lock, which a second holder shares: the lock counts
    // only on a descriptor open for reading and writing — on the file expected, if one is.
    const expected = options.expect ?? statSync(path);
    if (!holdsReadWriteDescriptorOf(expected)) {
      throw options.expect
        ? new FileLockMismatch(`${path}: not the file checked (replaced meanwhile), or not writable`)
        : new Error(`${path}: not writable, so it cannot be locked exclusively`);
    }
  } catch (error) {
    db.close();
    if ((error as { errcode?: number }).errcode === SQLITE_BUSY) throw new FileLockHeld(`${path} is locked`);
    throw error;
  }
  held.add(db);
  return () => {
    held.delete(db);
    if (db.isOpen) db.close();
  };
}

/**
 * Whether this process has a descriptor open for reading and writing on the file `file` (SQLite
 * does not say which descriptor is its own; the caller has none of its own open on the file, so
 * one that is, is SQLite's). /proc/self/fd/N is stat'ed through the descriptor itself, not by
 * any name; /proc/self/fdinfo/N gives its open flags (octal; O_RDWR is 2 in the access bits).
 */
function holdsReadWriteDescriptorOf(file: { dev: number; ino: number }): boolean {
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const stat = statSync(`/proc/self/fd/${fd}`);
      if (stat.ino !== file.ino || stat.dev !== file.dev) continue;
      const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      if (flags && (Number.parseInt(flags[1]!, 8) & 3) === 2) return true;
    } catch {
      // closed since the listing, or not a file
    }
  }
  return false;
}
