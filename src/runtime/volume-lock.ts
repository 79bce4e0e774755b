/**
 * One runtime per volume tree. Two runtimes on one tree directory (overlapping restarts) would
 * each remove the other's uncommitted objects as garbage. The lock is a Linux abstract socket
 * named after the tree's real path, held while the runtime runs: the kernel releases it when the
 * process ends, however it ends (SIGKILL included), so there is no stale lock file to judge and no
 * PID to be reused. Abstract names belong to a network namespace; runtimes share the host's.
 * Whoever can bind the name first (root on the host) can keep a volume from opening — a denial
 * of service, which the host has anyway — never make two runtimes share one.
 */
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { realDirectory } from "./launcher.ts";

export class VolumeInUse extends Error {}

/** Hold the tree at `tree` until this process ends (or the returned release is called). */
export async function lockTree(tree: string): Promise<() => Promise<void>> {
  const name = `\0cloister-volume-${createHash("sha256").update(realDirectory(tree)).digest("hex").slice(0, 40)}`;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "EADDRINUSE"
          ? new VolumeInUse(`${tree} is in use by another runtime; one runtime per volume tree`)
          : error,
      ),
    );
    server.listen(name, resolve);
  });
  // Held, not waited on: the lock must not keep the process alive.
  server.unref();
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}
