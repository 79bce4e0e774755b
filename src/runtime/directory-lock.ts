/**
 * One process per directory, where two would undo each other's work:
 *
 * - one runtime per volume tree — two runtimes on one tree (overlapping restarts) would each
 *   remove the other's uncommitted objects as garbage;
 * - one CAS per data directory — a CAS keeps what it rebuilt from the audit log (the policy
 *   index, the volume tags) in memory, so a second one on the same store would hand out tags the
 *   first had moved past, and rollback protection with them.
 *
 * The lock is a Linux abstract socket named after the directory's real path, held while the
 * process runs: the kernel releases it when the process ends, however it ends (SIGKILL
 * included), so there is no stale lock file to judge and no PID to be reused. Abstract names
 * belong to a network namespace; runtimes and CAS share the host's. Whoever can bind the name
 * first (root on the host) can keep a directory from opening — a denial of service, which the
 * host has anyway — never make two processes share one.
 */
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { realDirectory } from "./launcher.ts";

export class VolumeInUse extends Error {}
export class DataDirectoryInUse extends Error {}

/** Hold the tree at `tree` until this process ends (or the returned release is called). */
export function lockTree(tree: string): Promise<() => Promise<void>> {
  return lockDirectory(
    tree,
    "volume",
    () => new VolumeInUse(`${tree} is in use by another runtime; one runtime per volume tree`),
  );
}

/** Hold the CAS data directory `dir` until this process ends (or the returned release is called). */
export function lockDataDirectory(dir: string): Promise<() => Promise<void>> {
  return lockDirectory(
    dir,
    "cas",
    () => new DataDirectoryInUse(`${dir} is in use by another CAS; one CAS per data directory`),
  );
}

async function lockDirectory(dir: string, kind: string, inUse: () => Error): Promise<() => Promise<void>> {
  const name = `\0cloister-${kind}-${createHash("sha256").update(realDirectory(dir)).digest("hex").slice(0, 40)}`;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => reject(error.code === "EADDRINUSE" ? inUse() : error));
    server.listen(name, resolve);
  });
  // Held, not waited on: the lock must not keep the process alive.
  server.unref();
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}
