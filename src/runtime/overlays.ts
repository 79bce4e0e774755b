/**
 * Which overlays make a set of directories writable in memory without touching the host: for
 * each, an overlay (upper layer on the staging tmpfs) over its nearest existing ancestor, then
 * `mkdir -p` of what the host lacks. Two rules keep this sound:
 * - one overlay per subtree: a directory under an anchor already overlaid needs none (the
 *   kernel stacks overlays at most two deep, and one suffices);
 * - ancestors first: an overlay mounted over /etc after one over /etc/ssl would hide the latter
 *   (a new overlay's lower layer does not show the mounts beneath it).
 * And / itself cannot be overlaid: a mount over / does not change the root a process resolves
 * paths from, so what was written there would land on the host's disk.
 */
import { readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";

export class OverlayError extends Error {}

/** `f`'s result; an OverlayError it throws becomes the caller's own error (`as`), with its message. */
export function refusedAs<T>(as: (message: string) => Error, f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof OverlayError) throw as(error.message);
    throw error;
  }
}

/**
 * How an overlay's upper layer must look. The merged directory's own mode and owner are the
 * upper layer's, not those of the directory it covers: an upper layer made under the launcher's
 * umask 077 showed /etc as 0700, and every program that drops root (nginx's workers, a service
 * that runs as its own user) could no longer read /etc/passwd or /etc/resolv.conf, nor reach its
 * own files there. So the upper layer takes the anchor's permission bits (sticky and setgid
 * included: /tmp stays 1777) and, where the launcher can give it (as root of the host's user
 * namespace), its owner.
 */
export interface UpperLook {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

export function upperLook(
  anchor: string,
  stat: (path: string) => { mode: number; uid: number; gid: number } = statSync,
): UpperLook {
  let s: { mode: number; uid: number; gid: number };
  try {
    s = stat(anchor);
  } catch (error) {
    throw new OverlayError(`cannot read ${anchor}, the directory to overlay: ${(error as Error).message}`);
  }
  return { mode: s.mode & 0o7777, uid: s.uid, gid: s.gid };
}

/**
 * The mode of the directories made where the host has none (plan.directories): what mkdir makes
 * under the usual umask 022, whatever the launcher's own — traversable by a program that drops
 * root; the files in them keep the policy's modes. (A volume's root is made the same way.)
 */
export const NEW_DIRECTORY_MODE = 0o755;

/**
 * Whether this process is in the host's own user namespace, where it can give files any owner;
 * in one of its own (cloister run as a non-root user) the host's owners are not mapped.
 */
export function inHostUserNamespace(): boolean {
  try {
    return /^\s*0\s+0\s+4294967295\s*$/.test(readFileSync("/proc/self/uid_map", "utf8"));
  } catch {
    return false;
  }
}

export interface OverlayMount {
  readonly anchor: string;
  readonly upper: string;
  readonly work: string;
  /**
   * Where the overlay is mounted first, on the private staging tmpfs, before it is bound at the
   * anchor: the way in that the host cannot redirect (see throughStaging).
   */
  readonly staged: string;
}

export interface OverlayPlan {
  /** To mount in this order. */
  readonly mounts: readonly OverlayMount[];
  /**
   * To make after the mounts, one at a time and in this order (parents first): every directory
   * the host lacked when this was planned — so each must be made here, and one found already
   * there (say a link the host planted since, which `mkdir -p` would follow onto its disk) is
   * refused.
   */
  readonly directories: readonly string[];
}

/**
 * `needs`: each directory with what wants it, for messages ("file /etc/x/y"). `exists` answers
 * for the host's filesystem. Staging directories are named `${staging}/${label}u<n>` and `…w<n>`.
 */
export function planOverlays(
  needs: readonly { dir: string; what: string }[],
  exists: (path: string) => boolean,
  staging: string,
  label: string,
): OverlayPlan {
  const anchors = new Set<string>();
  const directories: string[] = [];
  for (const { dir, what } of needs) {
    let anchor = dir;
    while (!exists(anchor)) anchor = dirname(anchor);
    if (anchor === "/")
      throw new OverlayError(
        `${what}: /${dir.split("/")[1]} does not exist on this host, and / itself cannot be overlaid; use a path under an existing top-level directory (such as /etc, /opt, /srv or /run)`,
      );
    if (/[,:\\]/.test(anchor))
      throw new OverlayError(`${what}: cannot overlay ${anchor}, a directory whose name holds , : or \\`);
    anchors.add(anchor);
    const missing: string[] = [];
    for (let d = dir; d !== anchor; d = dirname(d)) missing.unshift(d);
    for (const d of missing) if (!directories.includes(d)) directories.push(d);
  }
  const chosen: string[] = [];
  for (const anchor of [...anchors].sort((a, b) => a.length - b.length || (a < b ? -1 : 1))) {
    if (!chosen.some((c) => anchor === c || anchor.startsWith(`${c}/`))) chosen.push(anchor);
  }
  return {
    mounts: chosen.map((anchor, n) => ({
      anchor,
      upper: `${staging}/${label}u${n}`,
      work: `${staging}/${label}w${n}`,
      staged: `${staging}/${label}m${n}`,
    })),
    directories,
  };
}

/**
 * `dir` (under one of `mounts`' anchors) by way of its overlay's staged mount. The overlays are
 * mounted at their anchors by path, and a host that can write an anchor's parent could swap the
 * anchor for a symbolic link while the mount is made, and back: the overlay would land elsewhere,
 * and a file written by its path would reach the host's disk (shown by a review, 2026-11-24).
 * Made and written through the staged mount, on a tmpfs only this namespace has, what is placed
 * is in the overlay whatever happened to the path; that the program finds it at its path is
 * checked after (the anchor's path and the staged directory are then one directory).
 */
export function throughStaging(dir: string, mounts: readonly OverlayMount[]): string {
  let best: OverlayMount | undefined;
  for (const m of mounts) {
    if ((dir === m.anchor || dir.startsWith(`${m.anchor}/`)) && m.anchor.length > (best?.anchor.length ?? -1)) best = m;
  }
  if (!best) throw new OverlayError(`${dir} is under no overlay`);
  return best.staged + dir.slice(best.anchor.length);
}
