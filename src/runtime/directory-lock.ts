/**
 * One runtime per volume tree. Two runtimes on one tree directory (overlapping restarts) would
 * each remove the other's uncommitted objects as garbage. The lock is a Linux abstract socket
 * named after the tree's real path, held while the runtime runs: the kernel releases it when the
 * process ends, however it ends (SIGKILL included), so there is no stale lock file to judge and no
 * PID to be reused. What it does not cover: abstract names belong to a network namespace, so two
 * runtimes in different ones (each `cloister run` shares the host's) would not meet; and any local
 * user can bind the name first and keep the volume from opening — a denial of service, never two
 * runtimes sharing one tree. Whoever connects to the name is disconnected at once: a connection
 * held open must not delay the release. (The CAS's data directory lock, src/cas/data-dir-lock.ts,
 * uses a file lock instead, which namespaces do not divide.)
 */
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { realDirectory } from "./launcher.ts";

export class VolumeInUse extends Error {}

/** Hold the tree at `tree` until this process ends (or the returned release is called). */
export async function lockTree(tree: string): Promise<() => Promise<void>> {
  const name = `\0cloister-volume-${createHash("sha256").update(realDirectory(tree)).digest("hex").slice(0, 40)}`;
  const server = createServer((socket) => socket.destroy());
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
