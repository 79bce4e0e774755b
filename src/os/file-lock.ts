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
import { DatabaseSync } from "node:sqlite";

export class FileLockHeld extends Error {}

/**
 * Every lock held, so that none is garbage: a DatabaseSync nobody refers to is closed when it is
 * collected, and its lock with it — a caller that keeps the lock for the life of the process
 * and drops the release function (as a runtime does) would otherwise lose it at some GC.
 */
const held = new Set<DatabaseSync>();

const SQLITE_BUSY = 5;

/** Lock `path` (made if missing); throws FileLockHeld if another holder has it. */
export function lockFile(path: string): () => void {
  const db = new DatabaseSync(path, { timeout: 0 });
  try {
    // The exclusive lock is taken by BEGIN EXCLUSIVE and held while the transaction stays open
    // (closing the database ends it). Nothing is written: the file stays as it is (empty, for
    // a new one), and no journal file appears beside it (node:sqlite's defensive mode refuses
    // journal_mode OFF; MEMORY keeps the journal, were there one, in memory).
    db.exec("PRAGMA journal_mode = MEMORY; BEGIN EXCLUSIVE;");
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
