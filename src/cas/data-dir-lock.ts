/**
 * One CAS per data directory. A CAS keeps what it rebuilt from the audit log — the policy index,
 * the volume tags — in memory, so a second CAS on the same store would hand out volume tags the
 * first had moved past, and rollback protection with them.
 *
 * The lock is SQLite's own exclusive lock (an fcntl lock, held by `locking_mode = EXCLUSIVE`) on
 * a file of its own, `cas.lock`, beside the database: it belongs to the file, so another path to
 * it, a bind mount or another network namespace (a second container on the same volume) meets
 * it too; the kernel releases it when the process ends, however it ends; and only who can open
 * the file — the data directory is 0700 — can hold it. (A first version used an abstract socket
 * named after the path, like the volume lock: a security review showed network namespaces and
 * bind mounts going round it, and any local user able to take the name first.) The database
 * itself is not locked this way, so that its file stays readable for inspection and tests.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";

export class DataDirectoryInUse extends Error {}

const SQLITE_BUSY = 5;

/** Hold the CAS data directory `dir` until this process ends or the returned release is called. */
export function lockDataDirectory(dir: string): () => void {
  const db = new DatabaseSync(join(dir, "cas.lock"), { timeout: 0 });
  try {
    // No journal file left beside it; the exclusive lock is taken by BEGIN EXCLUSIVE and, in
    // this locking mode, kept after COMMIT.
    db.exec("PRAGMA journal_mode = OFF; PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;");
  } catch (error) {
    db.close();
    if ((error as { errcode?: number }).errcode === SQLITE_BUSY)
      throw new DataDirectoryInUse(`${dir} is in use by another CAS; one CAS per data directory`);
    throw error;
  }
  return () => db.close();
}
