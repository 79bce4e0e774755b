/**
 * What `cloister` needs at run time, in a directory that every user can reach: for the tests that
 * run it as the user nobody (runuser), wherever the checkout is.
 *
 * A checkout can sit where nobody cannot go: a clone in root's home or in a `mktemp -d` (both
 * 0700), whose Node (node_modules/node) nobody then cannot run and whose sources nobody cannot
 * read. So these tests run a copy instead, in any checkout (the same path in CI's as anywhere):
 * the Node running the tests, bin/, src/, package.json and the packages node_modules holds for
 * the dependencies (not the development ones), laid out as in the checkout, under a
 * mkdtemp of os.tmpdir() made 0755. A file is hard-linked where its own modes already let
 * anyone read it (and run it, if it is a program): a link costs nothing, and shares the modes of
 * the file. Otherwise (another file system, or a checkout made under umask 077) it is copied, and
 * the copy made 0644, or 0755 for a program.
 */
import {
  chmodSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..");

export interface AnyUserInstall {
  /** The Node binary (the copy's node_modules/node/bin/node). */
  readonly node: string;
  /** The copy's bin/cloister.js, to run as `node BIN -- ARGS`, like test/helpers/cli.ts's BIN. */
  readonly bin: string;
  /** The copy's src/. */
  readonly src: string;
  /** Removes the copy (hard links too: the checkout's files stay). */
  dispose(): void;
}

/** Make the copy: once per test file, before its first run as nobody. */
export function installForAnyUser(): AnyUserInstall {
  const root = mkdtempSync(join(tmpdir(), "cloister-any-user-"));
  try {
    chmodSync(root, 0o755);
    reachableByAll(root);
    place(process.execPath, join(root, "node_modules", "node", "bin", "node"));
    for (const path of ["package.json", "bin", "src", ...runtimePackages()]) place(join(ROOT, path), join(root, path));
  } catch (error) {
    rmSync(root, { recursive: true, force: true });
    throw error;
  }
  return {
    node: join(root, "node_modules", "node", "bin", "node"),
    bin: join(root, "bin", "cloister.js"),
    src: join(root, "src"),
    dispose: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** The directories of node_modules that the lock file has for the dependencies (outermost only). */
function runtimePackages(): string[] {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  const paths = Object.entries(lock.packages)
    .filter(([path, entry]) => path !== "" && !entry.dev && !entry.devOptional)
    .map(([path]) => path);
  return paths.filter((path) => !paths.some((outer) => path.startsWith(`${outer}/`)));
}

/** `from` (a file or a directory, recursively) at `to`, readable by anyone, with its parents. */
function place(from: string, to: string): void {
  mkdirs(dirname(to));
  const stat = statSync(from);
  if (stat.isDirectory()) {
    mkdirSync(to);
    chmodSync(to, 0o755); // not the umask's
    for (const name of readdirSync(from)) place(join(from, name), join(to, name));
    return;
  }
  if (!stat.isFile()) return;
  const program = (stat.mode & 0o100) !== 0;
  if ((stat.mode & 0o004) !== 0 && (!program || (stat.mode & 0o001) !== 0)) {
    try {
      linkSync(from, to);
      return;
    } catch {
      // EXDEV (another file system), EPERM (fs.protected_hardlinks, for a user not the owner): copy.
    }
  }
  copyFileSync(from, to);
  chmodSync(to, program ? 0o755 : 0o644);
}

/** Each missing parent of `dir`, made 0755. */
function mkdirs(dir: string): void {
  try {
    statSync(dir);
  } catch {
    mkdirs(dirname(dir));
    mkdirSync(dir);
    chmodSync(dir, 0o755);
  }
}

/** Throws if a directory above `dir` keeps others out: then os.tmpdir() itself is private. */
function reachableByAll(dir: string): void {
  for (let up = dirname(dir); ; up = dirname(up)) {
    if ((statSync(up).mode & 0o001) === 0) {
      throw new Error(
        `the user nobody cannot reach ${dir}: ${up} is ${(statSync(up).mode & 0o777).toString(8)} ` +
          `(set TMPDIR to a directory every user can enter, e.g. /tmp)`,
      );
    }
    if (dirname(up) === up) return;
  }
}
