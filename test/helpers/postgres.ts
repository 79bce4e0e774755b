/**
 * A real, throwaway PostgreSQL 15 cluster for tests: Debian's binaries, a data directory in a
 * fresh temporary directory, a free port on 127.0.0.1, and a database `cloister` owned by a
 * login role `cloister` that is not a superuser (as the CAS would be deployed).
 *
 * The postmaster is this process's own child (not daemonised by pg_ctl), started through
 * setpriv(1) with a parent-death signal: a test process that dies or exits without stop() takes
 * its server with it rather than leave one running, and the helper sees the server exit (a port
 * taken meanwhile, a bad setting) at once instead of waiting out a timeout. stop and start are
 * pg_ctl's: SIGINT is `pg_ctl stop -m fast`, SIGQUIT `-m immediate`.
 *
 * PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user,
 * so the cluster lives under os.tmpdir() (which that user can enter), not under the repository,
 * which may be in a directory only root may enter (/root). Nothing is registered globally: a
 * test starts the cluster in a before hook and stops it in an after hook.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "pg";
import { freePort } from "./net.ts";

const BIN = "/usr/lib/postgresql/15/bin";
const HOST = "127.0.0.1";
/** The role (and database) the store connects as; the bootstrap superuser is `postgres`. */
const ROLE = "cloister";
const SUPERUSER = "postgres";
/** How long initdb, a start (until the server takes connections) or a stop may take. */
const STEP_TIMEOUT_MS = 60_000;
/** Starts that find their port taken (by another test's listener, between freePort and bind). */
const PORT_ATTEMPTS = 5;

export interface TestPostgres {
  /** The `cloister` database, as its owner `cloister` (trust authentication: no password). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** A URL for `database` on this cluster, as `cloister`. */
  urlFor(database: string): string;
  /** A new, empty database owned by `cloister` (a fresh one per test); its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Run one statement as the superuser, in `database` (default `postgres`). */
  sql(text: string, params?: unknown[], database?: string): Promise<Record<string, unknown>[]>;
  /**
   * Stop the server, keeping its data and port: "fast" (pg_ctl stop -m fast: sessions are
   * ended, the last commits are on disk) or "immediate" (-m immediate: a crash, recovered from
   * at the next start).
   */
  pause(mode?: "fast" | "immediate"): Promise<void>;
  /** Start the paused server again on the same data directory and port. */
  resume(): Promise<void>;
  /** pause() then resume(). */
  restart(mode?: "fast" | "immediate"): Promise<void>;
  /** Run `work` while the server is stopped; the server is started again however it ends. */
  whilePaused<T>(work: () => Promise<T>, mode?: "fast" | "immediate"): Promise<T>;
  /** Whatever the server wrote to its log so far. */
  log(): string;
  /** Stop the server (fast) and remove its directory. */
  stop(): Promise<void>;
}

interface Server {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitedAlready: boolean;
}

export async function startPostgres(): Promise<TestPostgres> {
  for (const program of ["initdb", "postgres"]) {
    if (!existsSync(join(BIN, program)))
      throw new Error(`PostgreSQL 15 is not installed (no ${join(BIN, program)}): apt-get install postgresql-15`);
  }
  const root = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), "cloister-pg-"));
  const data = join(dir, "data");
  const logPath = join(dir, "server.log");
  chmodSync(dir, 0o700);
  closeSync(openSync(logPath, "a", 0o600));
  if (root) {
    const uid = Number(execFileSync("id", ["-u", SUPERUSER], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", SUPERUSER], { encoding: "utf8" }).trim());
    chownSync(dir, uid, gid);
    chownSync(logPath, uid, gid);
  }
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  // As root, everything PostgreSQL runs runs as `postgres`; the parent-death signal (SIGINT, a
  // fast shutdown) ends a server whose test process is gone. setpriv sets it after the uid
  // change, which would otherwise clear it.
  const as = (program: string, args: readonly string[]): [string, string[]] => [
    "setpriv",
    [
      ...(root ? [`--reuid=${SUPERUSER}`, `--regid=${SUPERUSER}`, "--init-groups"] : []),
      "--pdeathsig=INT",
      "--",
      join(BIN, program),
      ...args,
    ],
  ];
  // Nothing of the caller's PG* environment (PGDATA, PGPORT, …) or locale reaches the cluster.
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C", LC_ALL: "C", TZ: "UTC" };

  let server: Server | undefined;
  let port = 0;
  let removed = false;

  const kill = async (signal: NodeJS.Signals) => {
    const s = server;
    if (!s || s.exitedAlready) {
      server = undefined;
      return;
    }
    s.child.kill(signal);
    const timer = setTimeout(() => s.child.kill("SIGKILL"), STEP_TIMEOUT_MS);
    try {
      await s.exited;
    } finally {
      clearTimeout(timer);
      server = undefined;
    }
  };

  /** Start the postmaster on `port` and wait until it takes connections; false if the port was taken. */
  const launch = async (): Promise<boolean> => {
    const logStart = log().length;
    const logFd = openSync(logPath, "a");
    let child: ChildProcess;
    try {
      const [command, args] = as("postgres", [
        "-D",
        data,
        "-p",
        String(port),
        "-c",
        `listen_addresses=${HOST}`,
        "-c",
        `unix_socket_directories=${dir}`,
        "-c",
        "fsync=on",
        "-c",
        "synchronous_commit=on",
        "-c",
        "logging_collector=off",
      ]);
      child = spawn(command, args, { cwd: dir, env, stdio: ["ignore", logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const s: Server = {
      child,
      exitedAlready: false,
      exited: new Promise((resolve) =>
        child.once("exit", (code, signal) => {
          s.exitedAlready = true;
          resolve({ code, signal });
        }),
      ),
    };
    // A forgotten stop() must not keep the test process alive; the parent-death signal then
    // stops the server.
    child.unref();
    server = s;
    const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    for (;;) {
      const outcome = await Promise.race([
        ready(port).then((r) => ({ kind: "probe" as const, ...r })),
        s.exited.then(() => ({ kind: "exited" as const })),
        spawnError.then((error) => ({ kind: "spawn" as const, error })),
      ]);
      if (outcome.kind === "probe" && outcome.ready) return true;
      if (outcome.kind === "spawn") throw new Error(`could not run the PostgreSQL server: ${outcome.error.message}`);
      if (outcome.kind === "exited" || s.exitedAlready) {
        server = undefined;
        const since = log().slice(logStart);
        if (/could not bind|Address already in use|could not create any TCP\/IP sockets/.test(since)) return false;
        throw new Error(`the PostgreSQL server exited while starting; its log:\n${since}`);
      }
      if (Date.now() > deadline) {
        await kill("SIGQUIT");
        throw new Error(
          `the PostgreSQL server did not take connections within ${STEP_TIMEOUT_MS} ms (last: ${outcome.reason}); its log:\n${log().slice(logStart)}`,
        );
      }
      // A bounded poll: the server announces readiness nowhere this process can wait on.
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };

  const sql = async (text: string, params: unknown[] = [], database = "postgres") => {
    const client = new Client({ host: HOST, port, user: SUPERUSER, database, connectionTimeoutMillis: 10_000 });
    client.on("error", () => {});
    await client.connect();
    try {
      return (await client.query(text, params)).rows as Record<string, unknown>[];
    } finally {
      await client.end();
    }
  };

  try {
    await run(
      ...as("initdb", ["-D", data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]),
      {
        cwd: dir,
        env,
      },
    );
    let started = false;
    for (let attempt = 0; attempt < PORT_ATTEMPTS && !started; attempt++) {
      port = await freePort();
      started = await launch();
    }
    if (!started) throw new Error(`no free port for PostgreSQL after ${PORT_ATTEMPTS} attempts; its log:\n${log()}`);
    await sql(`CREATE ROLE ${ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`);
    await sql(`CREATE DATABASE ${ROLE} OWNER ${ROLE}`);
  } catch (error) {
    await kill("SIGQUIT");
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  const urlFor = (database: string) => `postgres://${ROLE}@${HOST}:${port}/${database}`;
  let databases = 0;
  const pause = async (mode: "fast" | "immediate" = "fast") => kill(mode === "fast" ? "SIGINT" : "SIGQUIT");
  const resume = async () => {
    if (removed) throw new Error("the PostgreSQL cluster was stopped and removed");
    if (server) return;
    // The same port: the store under test must find its server where it was. A port taken
    // meanwhile is retried a few times (a client's connection in TIME_WAIT does not block it).
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) if (await launch()) return;
    throw new Error(`PostgreSQL could not listen on ${HOST}:${port} again; its log:\n${log()}`);
  };

  return {
    get url() {
      return urlFor(ROLE);
    },
    host: HOST,
    get port() {
      return port;
    },
    urlFor,
    async createDatabase(name = `t${process.pid}_${++databases}`) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
      await sql(`CREATE DATABASE ${name} OWNER ${ROLE}`);
      return urlFor(name);
    },
    sql,
    pause,
    resume,
    async restart(mode) {
      await pause(mode);
      await resume();
    },
    async whilePaused(work, mode) {
      await pause(mode);
      try {
        return await work();
      } finally {
        await resume();
      }
    },
    log,
    async stop() {
      if (removed) return;
      removed = true;
      await kill("SIGINT");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether the server on `port` answers a query now (and if not, why, for the timeout's message). */
async function ready(port: number): Promise<{ ready: boolean; reason: string }> {
  const client = new Client({ host: HOST, port, user: SUPERUSER, database: "postgres", connectionTimeoutMillis: 2000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return { ready: true, reason: "" };
  } catch (error) {
    // ECONNREFUSED before it listens; 57P03 (the database system is starting up) after.
    const e = error as { code?: string; message?: string };
    return { ready: false, reason: e.code ?? e.message ?? String(error) };
  } finally {
    await client.end().catch(() => {});
  }
}

function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(
      command,
      args,
      { ...options, timeout: STEP_TIMEOUT_MS, killSignal: "SIGKILL" },
      (error, stdout, stderr) => {
        if (error)
          reject(
            new Error(
              `${command} ${args.join(" ")} failed (${error.code ?? error.signal ?? error.message}); as root it runs as ${SUPERUSER}, who must be able to enter ${tmpdir()}:\n${stdout}${stderr}`,
            ),
          );
        else resolve();
      },
    ),
  );
}
