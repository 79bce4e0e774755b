/**
 * Starting the program in a private mount namespace (as root): `unshare --mount` runs this
 * file's `launch` entry in a new namespace, which puts the policy's files on in-memory
 * filesystems (a tmpfs, or an overlay with a tmpfs upper layer over the file's directory), so
 * that they exist for the program only and nothing is written to the host's filesystem — not
 * even an empty placeholder. The configuration arrives on file descriptor 3, never on disk;
 * standard input, output and error are the program's.
 */
import { spawn, spawnSync } from "node:child_process";
import { createReadStream, promises as fs, statSync } from "node:fs";
import { dirname } from "node:path";
import type { Configuration } from "../cas/attestation.ts";

/** Run `program` (resolved argv) with the configuration: returns its exit code. */
export async function launch(config: Configuration): Promise<number> {
  // A tmpfs of our own over /dev/shm, in this namespace only: the staging area for overlays.
  mount(["-t", "tmpfs", "-o", "mode=1777", "cloister", "/dev/shm"]);
  const staging = "/dev/shm/.cloister";
  await fs.mkdir(staging, { mode: 0o700 });
  const overlays = new Map<string, string>();
  for (const file of config.files) {
    const dir = dirname(file.path);
    if (!overlays.has(dir)) {
      const n = overlays.size;
      const upper = `${staging}/u${n}`;
      const work = `${staging}/w${n}`;
      await fs.mkdir(upper);
      await fs.mkdir(work);
      if (exists(dir))
        mount(["-t", "overlay", "cloister", "-o", `lowerdir=${dir},upperdir=${upper},workdir=${work}`, dir]);
      else {
        // The directory does not exist on the host: make it on a tmpfs mounted at its nearest ancestor that does.
        let anchor = dir;
        while (!exists(anchor)) anchor = dirname(anchor);
        const upperA = `${staging}/a${n}`;
        const workA = `${staging}/aw${n}`;
        await fs.mkdir(upperA);
        await fs.mkdir(workA);
        mount(["-t", "overlay", "cloister", "-o", `lowerdir=${anchor},upperdir=${upperA},workdir=${workA}`, anchor]);
        await fs.mkdir(dir, { recursive: true });
      }
      overlays.set(dir, upper);
    }
    await fs.writeFile(file.path, Buffer.from(file.content, "base64"), { mode: Number.parseInt(file.mode, 8) });
    await fs.chmod(file.path, Number.parseInt(file.mode, 8));
  }
  const [program, ...args] = config.command;
  const child = spawn(program!, args, { cwd: config.pwd, env: { ...config.environment }, stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const) {
    process.on(signal, () => child.kill(signal));
  }
  return new Promise((resolve) => {
    child.on("error", (error) => {
      process.stderr.write(`cloister: cannot start ${program}: ${error.message}\n`);
      resolve(127);
    });
    child.on("exit", (code, signal) => resolve(code ?? 128 + (signal ? signalNumber(signal) : 0)));
  });
}

function mount(args: string[]): void {
  const r = spawnSync("mount", args, { stdio: ["ignore", "ignore", "pipe"] });
  if (r.status !== 0) throw new Error(`mount ${args.join(" ")}: ${r.stderr?.toString().trim() || `exit ${r.status}`}`);
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
};
const signalNumber = (s: string) => SIGNALS[s] ?? 0;

/** Entry point inside the namespace: read the configuration from fd 3, then launch. */
if (process.argv[2] === "--cloister-launch") {
  const chunks: Buffer[] = [];
  for await (const c of createReadStream("", { fd: 3 })) chunks.push(c as Buffer);
  try {
    process.exitCode = await launch(JSON.parse(Buffer.concat(chunks).toString("utf8")) as Configuration);
  } catch (error) {
    process.stderr.write(`cloister: ${(error as Error).message}\n`);
    process.exitCode = 1;
  }
}
