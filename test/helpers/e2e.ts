/** A world for end-to-end tests: a real CAS, a real enrolled LAS, and `cloister run` of real programs. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import type { StoredSecret } from "../../src/cas/secrets.ts";
import type { CasClient } from "../../src/client/cas-client.ts";
import { loadOrCreateNodeKey, type RunningLas, startLas } from "../../src/las/server.ts";
import { makeIdentity, startTestCas, type TestCas } from "./cas.ts";
import { BIN, type CliResult, runCli } from "./cli.ts";

export interface World {
  readonly cas: TestCas;
  readonly owner: CasClient;
  readonly env: Record<string, string>;
  /** Where `cloister run` keeps volumes' protected trees (DIR/POLICY/VOLUME). */
  readonly volumesDir: string;
  /** The sim digest of a program file (after symlinks). */
  digest(program: string): string;
  /** A secret's value as the CAS holds it (tests only: no endpoint gives values to owners). */
  secret(policy: string, name: string): Promise<StoredSecret>;
  /** `cloister run` until it exits. */
  run(configId: string, program: string): Promise<CliResult>;
  /** `cloister run` in the background. */
  start(
    configId: string,
    program: string,
    extraEnv?: Record<string, string>,
  ): { child: ChildProcess; output: () => string };
  dispose(): Promise<void>;
}

export async function startWorld(): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), "cloister-e2e-"));
  const identity = await makeIdentity("owner");
  const cas = await startTestCas({ admins: [identity.hash] });
  const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  const las: RunningLas = await startLas({ listen: "127.0.0.1:0", key });
  const owner = cas.client(identity);
  await owner.request("POST", "/v1/las", { key: las.key });
  const env = {
    CLOISTER_CAS_ADDR: cas.running.url,
    CLOISTER_CAS_KEY: cas.running.identity.hash,
    CLOISTER_LAS_ADDR: las.url,
    CLOISTER_VOLUMES_DIR: join(dir, "volumes"),
  };
  const children: ChildProcess[] = [];
  return {
    cas,
    owner,
    env,
    volumesDir: env.CLOISTER_VOLUMES_DIR,
    digest: (program) => measureFile(readFileSync(realpathSync(program))),
    secret: async (policy, name) => (await cas.running.service.secretValues(policy))!.values[name]!,
    run: (configId, program) => runCli(["run", "--config-id", configId, "--tee", "sim", "--", program], { env }),
    start(configId, program, extraEnv = {}) {
      const child = spawn(
        process.execPath,
        [BIN, "--", "run", "--config-id", configId, "--tee", "sim", "--", program],
        {
          env: { ...process.env, ...env, ...extraEnv },
          stdio: ["ignore", "pipe", "pipe"],
          // A process group of its own, so that a run that will not stop can be killed whole: a
          // grandchild left alive would hold the output pipes, and with them this test, open.
          detached: true,
        },
      );
      children.push(child);
      let out = "";
      child.stdout!.on("data", (d) => (out += d));
      child.stderr!.on("data", (d) => (out += d));
      return { child, output: () => out };
    },
    async dispose() {
      await Promise.all(children.filter(running).map((c) => stopWithin(c, 5_000).catch(() => {})));
      await las.close();
      await cas.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Retry `probe` until it succeeds or `ms` pass. */
export async function eventually<T>(probe: () => Promise<T>, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await probe();
    } catch (error) {
      if (Date.now() > end) throw new Error(`${what}: ${(error as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** `world.start`, then wait until the program has written `marker`. */
export async function startUntil(
  world: World,
  configId: string,
  program: string,
  marker = "ready",
  extraEnv: Record<string, string> = {},
): Promise<ReturnType<World["start"]>> {
  const started = world.start(configId, program, extraEnv);
  await eventually(async () => {
    if (!started.output().includes(marker)) throw new Error(`no "${marker}" yet: ${started.output()}`);
  }, `${configId} running`);
  return started;
}

/**
 * SIGTERM, and the exit code once it has exited. A run still there 20 s later fails the test,
 * with its output, and is killed with its process group — rather than hang the suite (CI saw
 * that once, unexplained; see the session note of 2026-11-23).
 */
export async function stop(started: ReturnType<World["start"]>): Promise<number | null> {
  try {
    return await stopWithin(started.child, 20_000);
  } catch (error) {
    throw new Error(`${(error as Error).message}; its output:\n${started.output()}`);
  }
}

const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

async function stopWithin(child: ChildProcess, ms: number): Promise<number | null> {
  if (!running(child)) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((r) => {
    timer = setTimeout(() => r("late"), ms);
  });
  const first = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (first !== "late") return first;
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {
    // Gone meanwhile.
  }
  throw new Error(`cloister run (pid ${child.pid}) did not exit within ${ms / 1000} s of SIGTERM; killed`);
}
