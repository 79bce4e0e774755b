/**
 * Starting the program in a private mount namespace. `cloister run` spawns
 *
 *   unshare [--user --map-root-user] --mount --propagation private -- /bin/sh -c SCRIPT cloister COMMAND…
 *
 * and the script, inside the new namespace, puts the policy's files on in-memory filesystems (a
 * tmpfs over /dev/shm for staging, an overlay with a tmpfs upper layer over each file's
 * directory), so that they exist for the program only and nothing is written to the host's
 * filesystem — not even an empty placeholder — then starts the program.
 *
 * Nothing of the service may outlive the runtime: not the program, nor anything it started
 * (nginx's workers, PostgreSQL's backends), even when `cloister run` is killed with SIGKILL and
 * can do nothing. So the namespace has a PID namespace of its own too, and the chain is
 *
 *   setpriv --pdeathsig KILL -- unshare … --pid --fork --kill-child -- /bin/sh -c SCRIPT …
 *
 * unshare dies with cloister (setpriv's parent-death signal, kept across its exec); the shell,
 * forked by unshare as the new namespace's init, dies with unshare (--kill-child); and when a PID
 * namespace's init dies, the kernel kills every process in it. The signals leave windows, which
 * the init's lifeline closes (see lifeline()). The shell stays as that init: the
 * program runs as its child, because an init receives no signal it has no handler for (a
 * `sleep`, or Python, would ignore the SIGTERM it was sent). It relays the signals cloister
 * forwards to it, reaps orphans, and exits with the program's status.
 *
 * A shell script rather than a second Node process: it saves about 40 ms of every start. What
 * the script must not see on its command line, it reads from file descriptor 3: the files'
 * contents and any PWD or OLDPWD the policy sets (the shell would replace those). The script
 * text holds paths, modes and sizes only; the program's argv follows it as "$@", as visible as
 * it is in the program's own /proc/PID/cmdline. The environment is the policy's alone, given to
 * unshare directly; the shell's own additions (PWD) are removed before the exec.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, readFileSync, realpathSync, statSync } from "node:fs";
import { constants as os } from "node:os";
import { basename, dirname, isAbsolute, join } from "node:path";
import type { Writable } from "node:stream";
import type { Configuration } from "../protocol/attestation.ts";
import {
  inHostUserNamespace,
  NEW_DIRECTORY_MODE,
  type OverlayMount,
  planOverlays,
  refusedAs,
  throughStaging,
  upperLook,
} from "./overlays.ts";

/** What to spawn: the command line, its environment, and what to write to its file descriptor 3. */
export interface Launch {
  readonly file: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly fd3: Buffer;
  /**
   * Whether the process spawned is unshare supervising a PID namespace's init (inNamespace):
   * signals are then sent to that init, its child — unshare itself holds SIGINT and SIGTERM.
   */
  readonly supervised: boolean;
}

/** unshare's options that give the launch a PID namespace of its own, ended with its runtime. */
export const PID_NAMESPACE = ["--pid", "--fork", "--kill-child"] as const;

/** `argv` run in a new namespace (unshare's `options`), killed with the calling process. */
export function inNamespace(options: readonly string[], argv: readonly string[]): { file: string; args: string[] } {
  return {
    file: findTool("setpriv"),
    args: ["--pdeathsig", "KILL", "--", findTool("unshare"), ...options, ...PID_NAMESPACE, "--", ...argv],
  };
}

export class LaunchError extends Error {}

export const STAGING = "/dev/shm/.cloister";
/**
 * Where cloister finds its own tools (unshare, mount, …): its own PATH, then the usual places —
 * never the policy's PATH, which is the program's business.
 */
const toolPath = () => [
  ...(process.env.PATH ?? "").split(":").filter((d) => d.startsWith("/")),
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
];

/**
 * The launch of `config` in a new mount namespace (`namespace`: unshare's options). `exists`
 * answers for the host's filesystem, which the new namespace starts as a copy of.
 */
export function planLaunch(
  config: Configuration,
  /**
   * unshare's options; null: already inside the namespace, with the staging tmpfs mounted and
   * the files' directories made writable (planOverlays over fileDirectories) by the caller.
   */
  namespace: readonly string[] | null,
  exists: (path: string) => boolean = pathExists,
  realpath: (path: string) => string = realpathSync,
  /**
   * The files' real directories, resolved by the caller before it mounted anything (the volume
   * launcher): resolved again under its overlays, a link hidden beneath a mount would show.
   */
  resolved: ReadonlyMap<string, string> = resolveFileDirectories(config, realpath),
  /** The host's directories' modes and owners (the overlays' anchors). */
  stat: (path: string) => { mode: number; uid: number; gid: number } = statSync,
  /** With `namespace` null: the overlays the caller mounted (the files' directories are in them). */
  mounted: readonly OverlayMount[] = [],
): Launch {
  const [mount, mkdir, head, chmod, rm] = ["mount", "mkdir", "head", "chmod", "rm"].map(findTool) as [
    string,
    string,
    string,
    string,
    string,
  ];
  const lines = [
    // As the namespace's init, from its first line: a signal with no handler would be ignored.
    ...(namespace === null ? [] : RELAYED.map(([name, number]) => `trap 'exit ${128 + number}' ${name}`)),
    ...(namespace === null ? ["exec 4<&-"] : lifeline()),
    `fail() { printf 'cloister: %s\\n' "$1" >&2; exit 1; }`,
    // Files are created private, then given their modes.
    "umask 077",
    // `>` creates, never opens what is there (O_EXCL: not through a symbolic link either).
    "set -C",
  ];
  if (namespace !== null)
    lines.push(
      `${mount} -t tmpfs -o mode=1777 cloister /dev/shm || fail 'cannot mount a tmpfs on /dev/shm'`,
      `${mkdir} -m 700 ${STAGING} || fail 'cannot make the staging directory'`,
    );
  const data: Buffer[] = [];
  for (const file of config.files) {
    if (!isAbsolute(file.path)) throw new LaunchError(`file ${file.path}: the path must be absolute`);
    // The launcher mounts a tmpfs of its own there; the host's, which anyone may write to, would
    // be what the planning resolved links in.
    if (`${file.path}/`.startsWith("/dev/shm/"))
      throw new LaunchError(
        `file ${file.path}: /dev/shm is cloister's staging area; put the file elsewhere (e.g. /run)`,
      );
  }
  // Inside a namespace prepared by the volume launcher, it has made every directory writable.
  let mounts = mounted;
  if (namespace !== null) {
    const plan = refused(() => planOverlays(fileDirectories(config, resolved), exists, STAGING, ""));
    // As the host's root, the upper layers can take their anchors' owners too; not in a user
    // namespace, whether of this launch (--user) or one cloister runs in already as its root (a
    // rootless container, `unshare -r`), where the host's owners are not mapped.
    const hostRoot = !namespace.includes("--user") && inHostUserNamespace();
    for (const m of plan.mounts) {
      const look = refused(() => upperLook(m.anchor, stat));
      // The merged directory looks as the upper layer does (overlays.ts says why); the work
      // directory and the staged mount point, overlayfs's and ours, may look the same.
      lines.push(
        `${mkdir} -m ${look.mode.toString(8)} ${m.upper} ${m.work} ${m.staged} || fail 'cannot make the staging directory'`,
      );
      if (hostRoot && (look.uid !== 0 || look.gid !== 0))
        lines.push(
          `${findTool("chown")} ${look.uid}:${look.gid} ${m.upper} || fail 'cannot make the staging directory'`,
        );
      // Mounted on the private tmpfs first, then bound at the anchor (throughStaging says why).
      lines.push(
        `${mount} -t overlay cloister -o ${quote(`lowerdir=${m.anchor},upperdir=${m.upper},workdir=${m.work}`)} ${m.staged} || fail ${quote(`cannot mount an overlay on ${m.anchor}`)}`,
        `${mount} --bind ${m.staged} ${quote(m.anchor)} || fail ${quote(`cannot mount an overlay on ${m.anchor}`)}`,
      );
    }
    mounts = plan.mounts;
    if (plan.directories.length > 0) {
      // What the host lacks is made as mkdir makes it under the usual umask (NEW_DIRECTORY_MODE),
      // in the overlay by way of its staged mount, one level at a time from inside its parent —
      // entered with `cd -P` and checked — and never with -p: a link the host plants at a missing
      // name since planning is refused, not followed (mkdir -p would make the rest on its disk).
      lines.push(`umask ${(0o777 & ~NEW_DIRECTORY_MODE).toString(8).padStart(3, "0")}`);
      const byParent = new Map<string, string[]>();
      for (const d of plan.directories) byParent.set(dirname(d), [...(byParent.get(dirname(d)) ?? []), d]);
      for (const [parent, made] of byParent) {
        const inOverlay = staged(parent, mounts);
        lines.push(
          `cd -P -- ${quote(inOverlay)} && [ "$(pwd -P)" = ${quote(inOverlay)} ] && ${mkdir} -- ${made.map((d) => quote(basename(d))).join(" ")} || fail ${quote(`cannot make ${made.join(", ")}`)}`,
        );
      }
      lines.push("umask 077");
    }
  }
  // Each file is written in its real directory (symbolic links resolved when planning), entered
  // by way of its overlay's staged mount with `cd -P` and checked to be that directory still — so
  // that a link at the file's path or swapped in for a directory on the way, or an anchor swapped
  // while its overlay was mounted, cannot send its content outside the overlays — and then
  // checked to be the directory the program finds at the file's path. Within the directory:
  // whatever is at the name is removed (in the overlay: the host keeps its own), and the file is
  // created anew (noclobber: O_EXCL, never through a link).
  const byDirectory = new Map<string, { file: Configuration["files"][number]; name: string }[]>();
  for (const file of config.files) {
    const real = resolved.get(dirname(file.path));
    if (real === undefined) throw new LaunchError(`file ${file.path}: its directory was not resolved`);
    byDirectory.set(real, [...(byDirectory.get(real) ?? []), { file, name: basename(file.path) }]);
  }
  for (const [directory, files] of byDirectory) {
    const inOverlay = staged(directory, mounts);
    lines.push(
      `cd -P -- ${quote(inOverlay)} && [ "$(pwd -P)" = ${quote(inOverlay)} ] && [ . -ef ${quote(directory)} ] || fail ${quote(`${directory} is not the directory planned for ${files[0]!.file.path}`)}`,
    );
    const modes = new Map<string, string[]>();
    for (const { file, name } of files) {
      const content = Buffer.from(file.content, "base64");
      data.push(content);
      lines.push(
        `${rm} -f -- ${quote(name)} && ${head} -c ${content.length} <&3 > ${quote(name)} || fail ${quote(`cannot write ${file.path}`)}`,
      );
      const mode = file.mode.replace(/^0*(?=.)/, "");
      if (!/^[0-7]{1,4}$/.test(mode)) throw new LaunchError(`file ${file.path}: mode ${file.mode} is not octal`);
      modes.set(mode, [...(modes.get(mode) ?? []), name]);
    }
    // In a setgid directory (as the host has it, or made under one) a new file takes the
    // directory's group, and a mode such as 0440 would then open it to that group: the policy's
    // files stay in root's group, as everywhere else. (Created 0600 under umask 077: the group
    // has no access before this.) A test of the shell's, no process, where there is none.
    const all = files.map(({ name }) => quote(name)).join(" ");
    lines.push(`[ ! -g . ] || ${findTool("chgrp")} 0 -- ${all} || fail 'cannot set the group of the files'`);
    for (const [mode, names] of modes) {
      lines.push(`${chmod} ${mode} -- ${names.map(quote).join(" ")} || fail 'cannot set file modes'`);
    }
  }
  if (!isAbsolute(config.pwd)) throw new LaunchError(`pwd ${config.pwd}: the working directory must be absolute`);
  lines.push(`cd -P -- ${quote(config.pwd)} || fail ${quote(`cannot enter the working directory ${config.pwd}`)}`);
  // The shell set PWD and OLDPWD; the program's environment is the policy's alone.
  lines.push("unset PWD OLDPWD");
  for (const name of ["PWD", "OLDPWD"] as const) {
    const value = config.environment[name];
    if (value === undefined) continue;
    const bytes = Buffer.from(value, "utf8");
    data.push(bytes);
    // `$(…)` drops trailing newlines: a final "." keeps them, and is taken off again.
    lines.push(`${name}=$(${head} -c ${bytes.length} <&3; echo .) && ${name}=\${${name}%.} && export ${name}`);
  }
  const program = config.command[0];
  if (!program) throw new LaunchError("the policy's command is empty");
  lines.push("exec 3<&-", `command -v -- "$1" > /dev/null || fail "cannot start $1: not found"`);
  // Simulation is labelled in every output (DESIGN §1): said as the program starts, so that a
  // failure before it is still the one line that says why.
  if (config.verdict.simulated || config.verdict.status === "Unevaluated") {
    const { tee, status, simulated } = config.verdict;
    const warning = `cloister: warning: ${config.config_id} runs without hardware attestation (${tee}, ${status}${simulated ? ", simulated" : ""}): no TEE protects its secrets`;
    lines.push(`printf '%s\n' ${quote(warning)} >&2`);
  }
  if (namespace === null) lines.push(`exec "$@"`);
  else lines.push(...init());
  const shell = ["/bin/sh", "-c", lines.join("\n"), "cloister", ...config.command];
  const started = namespace === null ? { file: shell[0]!, args: shell.slice(1) } : inNamespace(namespace, shell);
  return { ...started, env: config.environment, fd3: Buffer.concat(data), supervised: namespace !== null };
}

/** The signals cloister relays to the program, with their numbers (for 128 + n). */
const RELAYED = (["HUP", "INT", "QUIT", "TERM", "USR1", "USR2"] as const).map(
  (name) => [name, os.signals[`SIG${name}`]] as const,
);

/**
 * The lifeline (file descriptor 4, a pipe whose other end only cloister holds): when cloister is
 * gone, however it went, a reader of it sees the end of the file. The parent-death signals alone
 * leave windows — cloister killed after forking but before setpriv armed its signal, unshare
 * killed before it armed --kill-child's — in which the service would run on unsupervised. So
 * the init watches the lifeline from its first line and, when it ends, exits (SIGALRM, which
 * nothing else sends it): the kernel then kills every process of the namespace. The watcher is
 * a child of the init; the lifeline is closed in the init itself, so the program never holds it.
 */
const lifeline = () => [
  `trap 'exit ${128 + os.signals.SIGKILL}' ALRM`,
  "{ read -r _ <&4; kill -ALRM $$; } &",
  "exec 4<&-",
];

/**
 * The script's end as the PID namespace's init: the program as a child (standard input given
 * explicitly: an asynchronous command's is otherwise /dev/null; SIGINT and SIGQUIT back at their
 * defaults, which the shell ignores for it), the relayed signals passed on to
 * it, and its status as the init's. `wait` returns early when a trapped signal arrives; the
 * program's own end is waited for again (the shell keeps its status), and orphans reparented to
 * the init are reaped meanwhile.
 */
const init = () => [
  "exec 9<&0",
  // An asynchronous command starts with SIGINT and SIGQUIT ignored (POSIX): given back their
  // default before the program's exec, or it could not be interrupted.
  `${findTool("env")} --default-signal=INT,QUIT -- "$@" <&9 9<&- &`,
  "child=$!",
  "exec 9<&-",
  ...RELAYED.map(([name]) => `trap 'relayed=1; kill -${name} "$child" 2>/dev/null' ${name}`),
  "while :; do",
  '  relayed=; wait "$child"; status=$?',
  '  [ -n "$relayed" ] && kill -0 "$child" 2>/dev/null || break',
  "done",
  'exit "$status"',
];

/**
 * Start the launcher; the program replaces it in the same process, so signals sent to cloister
 * go straight to the program and its exit status is the child's. A program killed by a signal
 * exits like a shell reports it: 128 + the signal's number.
 */
export function startLaunch(
  launch: Launch,
  stdio: "inherit" | "pipe" = "inherit",
): { child: ChildProcess; exit: Promise<number> } {
  const child = spawn(launch.file, launch.args, {
    // fd 4: the lifeline of a supervised launch (see lifeline()); never written, closed at exit.
    stdio: [stdio, stdio, stdio, "pipe", ...(launch.supervised ? (["pipe"] as const) : [])],
    env: launch.env,
  });
  const lifelineEnd = child.stdio[4] as Writable | undefined;
  lifelineEnd?.on("error", () => {});
  const fd3 = child.stdio[3] as Writable;
  // The launcher may fail (and close its end) before reading everything: not our error to report.
  fd3.on("error", () => {});
  fd3.end(launch.fd3);
  const exit = new Promise<number>((done) => {
    const forward = (signal: NodeJS.Signals) => () => {
      if (launch.supervised && child.pid !== undefined) signalInit(child.pid, signal);
      else child.kill(signal);
    };
    const handlers = FORWARDED.map((s) => [s, forward(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    child.on("exit", (code, signal) => {
      lifelineEnd?.destroy();
      for (const [s, h] of handlers) process.off(s, h);
      done(code ?? 128 + (signal ? os.signals[signal] : 0));
    });
    child.on("error", (error) => {
      lifelineEnd?.destroy();
      for (const [s, h] of handlers) process.off(s, h);
      process.stderr.write(`cloister: cannot start ${launch.file}: ${error.message}\n`);
      done(1);
    });
  });
  return { child, exit };
}

const FORWARDED = RELAYED.map(([name]) => `SIG${name}` as NodeJS.Signals);

/**
 * Send `signal` to the PID namespace's init, unshare's (`supervisor`'s) child. Before unshare has
 * forked it, tried again a moment later (for at most a second): unshare holds SIGINT and SIGTERM,
 * and the others would kill it, and the service with it, without the program's own ending.
 */
function signalInit(supervisor: number, signal: NodeJS.Signals, tries = 200): void {
  let init: number | undefined;
  try {
    init =
      Number(readFileSync(`/proc/${supervisor}/task/${supervisor}/children`, "utf8").trim().split(" ")[0]) || undefined;
  } catch {
    return; // unshare has exited: nothing left to signal
  }
  if (init !== undefined) {
    try {
      process.kill(init, signal);
    } catch {}
    return;
  }
  if (tries > 0) setTimeout(() => signalInit(supervisor, signal, tries - 1), 5).unref();
}

/**
 * The directories the policy's files really go in — symbolic links on the way resolved, so that
 * the overlays cover where the content lands, not where a link points from — with what wants each
 * (for messages).
 */
export function fileDirectories(
  config: Configuration,
  resolved: ReadonlyMap<string, string>,
): { dir: string; what: string }[] {
  return config.files.map((f) => ({ dir: resolved.get(dirname(f.path))!, what: `file ${f.path}` }));
}

/** Each policy file's directory → its real directory (realDirectory), resolved once. */
export function resolveFileDirectories(
  config: Configuration,
  realpath: (path: string) => string = realpathSync,
): Map<string, string> {
  const resolved = new Map<string, string>();
  for (const f of config.files) {
    if (!isAbsolute(f.path)) continue; // refused by planLaunch, with the file named
    const dir = dirname(f.path);
    if (!resolved.has(dir)) resolved.set(dir, realDirectory(dir, realpath));
  }
  return resolved;
}

/**
 * `dir` with the symbolic links of its existing part resolved (`realpath` of the nearest
 * existing ancestor, then the components the host lacks): where a file named in it really goes.
 */
export function realDirectory(dir: string, realpath: (path: string) => string = realpathSync): string {
  const missing: string[] = [];
  for (let existing = dir; ; existing = dirname(existing)) {
    try {
      return join(realpath(existing), ...missing);
    } catch {
      if (existing === "/") throw new LaunchError(`cannot resolve ${dir}`);
      missing.unshift(basename(existing));
    }
  }
}

/** A word the shell reads back exactly: single quotes, each ' written as '\''. */
export function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** `f`'s result, its OverlayError a LaunchError. */
const refused = <T>(f: () => T): T => refusedAs((message) => new LaunchError(message), f);

/** throughStaging, its refusal a LaunchError. */
const staged = (dir: string, mounts: readonly OverlayMount[]): string => refused(() => throughStaging(dir, mounts));

function findTool(name: string): string {
  const dirs = toolPath();
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // next directory
    }
  }
  throw new LaunchError(`cloister run needs ${name}, which is not in ${dirs.join(":")}`);
}

export function pathExists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
