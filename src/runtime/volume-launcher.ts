/**
 * The launcher for services with volumes: a Node process inside the private mount namespace
 * (`unshare --mount … node volume-launcher.ts`), because someone must stay there after the
 * program exits to seal what it wrote. It opens each volume into a tmpfs (checked against the
 * CAS's tag, reconciled, decrypted), binds it at the volume's path, runs the same shell script
 * as the plain launcher for the files and the exec, commits at each checkpoint interval and when
 * the program exits (SIGTERM included: it is forwarded, and the exit is awaited), and exits with
 * the program's status. Its input — the configuration, the service key, the CAS — arrives on
 * file descriptor 3, never on disk.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, createReadStream, existsSync, mkdirSync, realpathSync, statSync } from "node:fs";
import { Socket } from "node:net";
import { basename, dirname, join } from "node:path";
import { CasClient, CasRequestError } from "../client/cas-client.ts";
import { TreeError } from "../fs/format.ts";
import type { Configuration } from "../protocol/attestation.ts";
import type { VolumeCommitRequest } from "../protocol/volumes.ts";
import { lockTree, VolumeInUse } from "./directory-lock.ts";
import { fileDirectories, pathExists, planLaunch, resolveFileDirectories, STAGING, startLaunch } from "./launcher.ts";
import {
  inHostUserNamespace,
  NEW_DIRECTORY_MODE,
  planOverlays,
  refusedAs,
  throughStaging,
  upperLook,
} from "./overlays.ts";
import { commitVolume, type OpenVolume, openVolume, TagConflict, type TagKeeper, VolumeError } from "./volumes.ts";

/** A directory's setgid bit (S_ISGID), which node:fs does not export. */
const SETGID = 0o2000;

export interface VolumeLaunchInput {
  readonly config: Configuration;
  readonly serviceKeyPem: string;
  readonly cas: { readonly url: string; readonly casKey: string };
  /** Where the volumes' trees are on the host: DIR/POLICY/VOLUME. */
  readonly volumesDir: string;
}

export async function launchWithVolumes(input: VolumeLaunchInput): Promise<number> {
  const { config } = input;
  const policy = config.config_id.slice(0, config.config_id.lastIndexOf("/"));
  const leaf = config.certificate_chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)![0];
  const tags: TagKeeper = {
    commit: async (volume, previous, next) => {
      // A client (and so a connection) per commit: commits are minutes apart, and a connection
      // kept that long would be closed by the CAS, perhaps just as the next commit is sent on it.
      const cas = new CasClient({ ...input.cas, keyPem: input.serviceKeyPem, certificatePem: leaf });
      try {
        // Only the status is used: 200, the tag moved; 409, it had moved elsewhere first.
        await cas.request("POST", `/v1/volumes/${encodeURIComponent(policy)}/${encodeURIComponent(volume)}/tag`, {
          previous,
          next,
        } satisfies VolumeCommitRequest);
      } catch (error) {
        if (error instanceof CasRequestError && error.status === 409) throw new TagConflict(error.message);
        throw error;
      } finally {
        cas.close();
      }
    },
  };

  mount(["-t", "tmpfs", "-o", "mode=1777", "cloister", "/dev/shm"]);
  mkdirSync(STAGING, { mode: 0o700 });
  // Every directory the volumes and files need, made writable in memory first (ancestors
  // first), then the volumes bound at their paths — an overlay mounted later would hide them.
  for (const v of config.volumes) {
    if (existsSync(v.path) && !statSync(v.path).isDirectory())
      throw new VolumeError(`volume ${v.name}: ${v.path} is not a directory on this host`);
  }
  // Resolved once, before anything is mounted: under the overlays, a link hidden beneath one of
  // the host's mounts would show, and lead a file out of memory.
  const resolved = resolveFileDirectories(config);
  const refused = <T>(f: () => T): T => refusedAs((message) => new VolumeError(message), f);
  const plan = refused(() =>
    planOverlays(
      [
        ...config.volumes.map((v) => ({ dir: v.path, what: `volume ${v.name} at ${v.path}` })),
        ...fileDirectories(config, resolved),
      ],
      pathExists,
      STAGING,
      "o",
    ),
  );
  const hostRoot = inHostUserNamespace();
  for (const m of plan.mounts) {
    // The merged directory looks as the upper layer does: as its anchor (overlays.ts says why).
    const look = refused(() => upperLook(m.anchor));
    mkdirSync(m.upper);
    chmodSync(m.upper, look.mode); // exactly: mkdir's mode passes through the umask
    if (hostRoot) chownSync(m.upper, look.uid, look.gid);
    mkdirSync(m.work);
    mkdirSync(m.staged);
    // Mounted on the private tmpfs first, and bound at the anchor once the volumes are in it
    // (overlays.ts's throughStaging says why).
    mount(["-t", "overlay", "cloister", "-o", `lowerdir=${m.anchor},upperdir=${m.upper},workdir=${m.work}`, m.staged]);
  }
  for (const d of plan.directories) {
    // Every directory the host lacked, made in the overlay by way of its staged mount, one level
    // at a time from inside its parent (entered and checked) — never recursively: a link the host
    // plants at a missing name is refused, not followed onto its disk — as mkdir makes them under
    // the usual umask (NEW_DIRECTORY_MODE), with the setgid bit a setgid parent gives (as the
    // shell launcher's mkdir).
    const made = throughStaging(d, plan.mounts);
    inDirectory(dirname(made), dirname(d), () => {
      const name = basename(made);
      try {
        mkdirSync(name);
      } catch (error) {
        throw new VolumeError(`cannot make ${d}: ${(error as Error).message}`);
      }
      chmodSync(name, NEW_DIRECTORY_MODE | (statSync(name).mode & SETGID));
    });
  }
  const volumes: OpenVolume[] = [];
  for (const [n, volume] of config.volumes.entries()) {
    // An unpredictable name: a path planted in the tree on the host cannot aim at it.
    const plaintext = join(STAGING, `v${n}-${randomBytes(12).toString("hex")}`);
    const tree = join(input.volumesDir, policy, volume.name);
    try {
      // Held until this process ends: the kernel lets go of it then, however it ends.
      lockTree(tree);
    } catch (error) {
      if (error instanceof VolumeInUse) throw new VolumeError(`volume ${volume.name}: ${error.message}`);
      if (error instanceof TreeError) throw new VolumeError(`volume ${volume.name}: ${error.redacted}`);
      throw error;
    }
    volumes.push(await openVolume(volume, tree, plaintext, tags));
    // Bound in the overlay by way of its staged mount, on the directory entered and checked (".",
    // not canonicalized: no path the host could redirect in between).
    const at = throughStaging(volume.path, plan.mounts);
    inDirectory(at, volume.path, () => mount(["--no-canonicalize", "--bind", plaintext, "."]));
  }
  // The overlays, volumes within, bound at their anchors; then the program must find each volume
  // at its path (if an anchor was swapped for a link while it was bound, its path leads elsewhere).
  for (const m of plan.mounts) mount(["--rbind", m.staged, m.anchor]);
  for (const { volume, plaintext } of volumes) {
    if (!sameDirectory(volume.path, plaintext))
      throw new VolumeError(`volume ${volume.name}: ${volume.path} is not where the volume was mounted`);
  }

  // One commit at a time, whatever asks for it (a checkpoint, the exit): two seals from one
  // state would be siblings, and the CAS would take only one of them.
  let queue = Promise.resolve();
  let inFlight = 0;
  let forked = false;
  const commit = (v: OpenVolume, when: string): Promise<void> =>
    commitVolume(v, tags, (m) => process.stderr.write(`cloister: ${m}\n`)).then(
      () => {},
      (error: Error) => {
        process.stderr.write(`cloister: volume ${v.volume.name}: commit ${when} failed: ${error.message}\n`);
        process.exitCode = 1;
        // A fork's loser must not go on serving its own branch.
        if (error instanceof TagConflict && !forked) {
          forked = true;
          launched.child.kill("SIGTERM");
        }
      },
    );
  const serially = (work: () => Promise<void>): Promise<void> => {
    inFlight++;
    queue = queue.then(work).finally(() => {
      inFlight--;
    });
    return queue;
  };
  const timers = volumes
    .filter((v) => v.volume.checkpoint_interval !== null && v.volume.update_policy !== "ephemeral")
    .map((v) =>
      setInterval(() => {
        if (inFlight === 0) void serially(() => commit(v, "at a checkpoint"));
      }, v.volume.checkpoint_interval! * 1000),
    );

  const launched = startLaunch(planLaunch(config, null, pathExists, realpathSync, resolved, statSync, plan.mounts));
  const code = await launched.exit;
  for (const t of timers) clearInterval(t);
  await serially(async () => {
    for (const v of volumes) await commit(v, "at exit");
  });
  return process.exitCode ? Math.max(code, Number(process.exitCode)) : code;
}

/**
 * `f`, run with this process's working directory `dir` — entered, and checked to be `dir` itself
 * (no link followed on the way) — so that what `f` makes or mounts relative to "." cannot be
 * redirected by a path changed in between; "/" again after.
 */
function inDirectory<T>(dir: string, seen: string, f: () => T): T {
  // `seen`: the directory as the policy names it, for messages (`dir` is its staging path).
  const notPlanned = () => new VolumeError(`${seen} is not the directory planned (a link on its way?)`);
  try {
    process.chdir(dir);
  } catch {
    throw notPlanned();
  }
  try {
    if (process.cwd() !== dir) throw notPlanned();
    return f();
  } finally {
    process.chdir("/");
  }
}

/** Whether two paths name one directory (the same device and inode), as `[ a -ef b ]`. */
function sameDirectory(a: string, b: string): boolean {
  try {
    const x = statSync(a, { bigint: true });
    const y = statSync(b, { bigint: true });
    return x.isDirectory() && x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false; // one of them is gone: not the same
  }
}

function mount(args: string[]): void {
  const r = spawnSync("mount", args, { stdio: ["ignore", "ignore", "pipe"] });
  if (r.status !== 0)
    throw new VolumeError(`mount ${args.join(" ")}: ${r.stderr?.toString().trim() || `exit ${r.status}`}`);
}

/** Entry point inside the namespace: read the input from fd 3, launch, exit with the program's code. */
if (process.argv[2] === "--cloister-volumes") {
  // The lifeline (launcher.ts's lifeline()): its end means cloister is gone. This process is the
  // PID namespace's init, so its exit ends every process of the service with it.
  // A socket, not an fs stream: a read of it would hold one of libuv's threads until it ended.
  const lifeline = new Socket({ fd: 4, readable: true, writable: false })
    .on("data", () => {})
    .on("error", () => {})
    .on("end", () => {
      process.stderr.write("cloister: the runtime is gone: stopping the service, uncommitted\n");
      process.exit(128 + 9);
    });
  lifeline.unref();
  const chunks: Buffer[] = [];
  for await (const c of createReadStream("", { fd: 3 })) chunks.push(c as Buffer);
  try {
    process.exitCode = await launchWithVolumes(JSON.parse(Buffer.concat(chunks).toString("utf8")) as VolumeLaunchInput);
  } catch (error) {
    process.stderr.write(`cloister: ${(error as Error).message}\n`);
    process.exitCode = 1;
  }
  // Done: the lifeline must not hold this process (cloister closes its end when this one ends).
  lifeline.removeAllListeners("end").destroy();
}
