/**
 * One CAS per data directory. A CAS keeps what it rebuilt from the audit log — the policy index,
 * the volume tags — in memory, so a second CAS on the same store would hand out volume tags the
 * first had moved past, and rollback protection with them.
 *
 * The lock is an exclusive file lock (src/os/file-lock.ts) on a file of its own, `cas.lock`,
 * beside the database: another path to it, a bind mount or another network namespace (a second
 * container on the same volume) meets it too; the kernel releases it when the process ends,
 * however it ends; and only who can open the file — the data directory is 0700 — can hold it.
 * (A first version used an abstract socket named after the path: a security review showed
 * network namespaces and bind mounts going round it, and any local user able to take the name
 * first.) The database itself is not locked this way, so that its file stays readable for
 * inspection and tests.
 */
import { join } from "node:path";
import { FileLockHeld, lockFile } from "../os/file-lock.ts";

export class DataDirectoryInUse extends Error {}

/** Hold the CAS data directory `dir` until this process ends or the returned release is called. */
export function lockDataDirectory(dir: string): () => void {
  try {
    return lockFile(join(dir, "cas.lock"));
  } catch (error) {
    if (error instanceof FileLockHeld)
      throw new DataDirectoryInUse(`${dir} is in use by another CAS; one CAS per data directory`);
    throw error;
  }
}
