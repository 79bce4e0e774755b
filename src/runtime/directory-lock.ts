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
 * not a regular file (a symbolic link planted by the host) is refused, and the file locked must
 * still be the one checked, so that a link swapped in between does not make the runtime create
 * or lock a file elsewhere. (A first version used an abstract socket named after the tree's
 * path, which a runtime in another network namespace did not meet and any local user could take
 * first.)
 */
import { closeSync, constants, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { LOCK, META_DIR, TreeError } from "../fs/format.ts";
import { checkTreeDirectories } from "../fs/open.ts";
import { makeDirectory } from "../fs/seal.ts";
import { entryAt } from "../fs/walk.ts";
import { FileLockHeld, lockFile } from "../os/file-lock.ts";

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
  let release: () => void;
  try {
    release = lockFile(path);
  } catch (error) {
    if (error instanceof FileLockHeld)
      throw new VolumeInUse(`${tree} is in use by another runtime; one runtime per volume tree`);
    throw error;
  }
  const locked = entryAt(path);
  if (!locked?.isFile() || locked.ino !== checked.ino || locked.dev !== checked.dev) {
    release();
    throw new TreeError(`${path}: replaced while it was being locked, refused`);
  }
  return release;
}
