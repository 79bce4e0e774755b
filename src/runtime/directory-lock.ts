/**
 * One runtime per volume tree. Two runtimes on one tree directory (overlapping restarts, or two
 * containers given the same volume) would each remove the other's uncommitted objects as
 * garbage. The lock is an exclusive file lock (src/os/file-lock.ts) on `.cloister-fs/lock` in the
 * tree, held while the runtime runs: it belongs to the file, so another path to the tree, a bind
 * mount or another network or mount namespace meets it; the kernel releases it when the process
 * ends, however it ends (SIGKILL included). The tree's directories are 0700, so only the
 * runtime's user (and root) can open the file to take it first.
 *
 * The tree is the host's: the lock file is made with O_NOFOLLOW and O_EXCL, a lock file that is
 * not an empty regular file (a symbolic link, a database planted by the host) is refused, SQLite
 * opens it without O_CREAT, and the lock is confirmed on the open descriptor to be on the file
 * checked — so that a name swapped in between makes the runtime neither create nor lock a file
 * elsewhere. What a host that controls the directory can still do: unlink the lock file while
 * a runtime holds it, so that a second runtime makes a new one and gets in — as it could copy
 * the tree or withhold it; the CAS's tags still refuse the second runtime's commit as a fork. (A first version used an abstract socket named after the tree's
 * path, which a runtime in another network namespace did not meet and any local user could take
 * first.)
 */
import { closeSync, constants, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { LOCK, META_DIR, TreeError } from "../fs/format.ts";
import { checkTreeDirectories } from "../fs/open.ts";
import { makeDirectory } from "../fs/seal.ts";
import { entryAt } from "../fs/walk.ts";
import { FileLockHeld, FileLockMismatch, lockFile } from "../os/file-lock.ts";

export class VolumeInUse extends Error {}

/** Hold the tree at `tree` (made if missing) until this process ends or the returned release is called. */
export function lockTree(tree: string): () => void {
  makeDirectory(tree);
  checkTreeDirectories(tree);
  const meta = join(tree, META_DIR);
  if (!entryAt(meta)) mkdirSync(meta, { mode: 0o700 });
  checkTreeDirectories(tree);
  const path = join(tree, LOCK);
  try {
    closeSync(openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const checked = entryAt(path);
  if (!checked?.isFile()) throw new TreeError(`${path}: not a regular file (a symbolic link?), refused`);
  // A runtime's lock file is empty, and stays so: anything else (an SQLite database planted by
  // the host, which SQLite would open and might rewrite) is not one.
  if (checked.size !== 0) throw new TreeError(`${path}: not empty, so not a lock file a runtime made; refused`);
  try {
    // Opened without O_CREAT, and the lock confirmed on the very file checked: a name swapped
    // meanwhile (a host answering lookups itself, as a FUSE or virtiofs host can) neither makes
    // the runtime create a file elsewhere nor leaves it locking some other file.
    return lockFile(path, { existing: true, expect: checked });
  } catch (error) {
    if (error instanceof FileLockHeld)
      throw new VolumeInUse(`${tree} is in use by another runtime; one runtime per volume tree`);
    if (error instanceof FileLockMismatch) throw new TreeError(`${path}: replaced while it was being locked, refused`);
    throw new TreeError(`${path}: cannot be locked: ${(error as Error).message}`);
  }
}
