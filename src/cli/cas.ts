/** `cloister cas start` and `cloister dev`: run a CAS until interrupted. */
import { promises as fs, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Command, Option } from "commander";
import { DataDirectoryInUse } from "../cas/data-dir-lock.ts";
import { MasterKeyError } from "../cas/master-key.ts";
import { ListenError, type RunningCas, StoreOptionError, startCas } from "../cas/start.ts";
import { TamperError } from "../cas/store/envelope.ts";
import { StoreUnavailableError } from "../cas/store/store.ts";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";
import { startNodeLas } from "./las.ts";
import { untilSignal } from "./process.ts";

export function casCommands(program: Command, io: Io): Command {
  const cas = program.command("cas").description("the configuration and attestation service");
  cas
    .command("start")
    .description("run a CAS on a persistent store until interrupted")
    .requiredOption(
      "--data-dir <dir>",
      "where the store lives (created 0700); with --store postgres://…, this replica's own files",
    )
    .option(
      "--store <sqlite|url>",
      "sqlite (the embedded store in DATA-DIR) or postgres://USER@HOST:PORT/DB?sslmode=verify-full, shared by replicas",
      "sqlite",
    )
    .option("--listen <host:port>", "address to listen on", "127.0.0.1:8081")
    .option("--master-key-file <file>", "the master key (created 0600 when absent); default DATA-DIR/master.key")
    .option("--env-file <file>", "write CLOISTER_CAS_ADDR and CLOISTER_CAS_KEY lines here")
    .addOption(
      new Option(
        "--create-top-level <identity...>",
        'identities that may create top-level policies, besides the administrators; "any" opens it to every identity',
      ),
    )
    .addOption(
      new Option(
        "--admin <identity...>",
        "identities that may enrol LAS keys, import collateral and create top-level policies",
      ),
    )
    .option("--log", "log requests (never bodies) to standard output", false)
    .addHelpText(
      "after",
      `
Keep the master key apart from the data directory in production: whoever holds both can open
the store. Clients pin the CAS by the key hash printed at start.

Replicas: start several with the same --store postgres://… and the same --master-key-file,
each on its own --listen address; all serve every route and present one CAS key. Give clients
every address, comma-separated (--cas or CLOISTER_CAS_ADDR). The password belongs in PGPASSWORD
or ~/.pgpass rather than the URL. See docs/operations.md.

Only the administrators and the identities named by --create-top-level may create top-level
policies; everyone else creates under a policy whose create_policies admits them.
--create-top-level any lets any identity create them: anyone who can reach the CAS can then grow
its store, so keep that for development and closed networks (cloister dev does it).`,
    )
    .action(
      async (opts: {
        dataDir: string;
        store: string;
        listen: string;
        masterKeyFile?: string;
        envFile?: string;
        createTopLevel?: string[];
        admin?: string[];
        log: boolean;
      }) => {
        const creators = opts.createTopLevel ?? [];
        const open = creators.includes("any");
        if (open && creators.length > 1)
          throw new CliError(`--create-top-level any admits every identity: name no others beside it`);
        for (const id of [...(open ? [] : creators), ...(opts.admin ?? [])]) {
          if (!/^[0-9a-f]{64}$/.test(id))
            throw new CliError(`${id}: expected an identity hash (64 lowercase hex digits)`);
        }
        const running = await start(() =>
          startCas({
            dataDir: opts.dataDir,
            store: opts.store,
            listen: opts.listen,
            masterKeyFile: opts.masterKeyFile,
            createTopLevel: open ? "any" : creators,
            admins: opts.admin ?? [],
            log: opts.log,
          }),
        );
        if (running.masterKeyCreated)
          io.stderr(`created master key ${opts.masterKeyFile ?? join(opts.dataDir, "master.key")} (mode 0600)\n`);
        // The env file first: whoever waits for the printed key may read it at once.
        if (opts.envFile) await writeEnvFile(opts.envFile, running);
        io.stdout(`CAS listening on ${running.url}\nCAS key ${running.identity.hash}\n`);
        if (!open && creators.length === 0 && !opts.admin?.length)
          io.stderr(
            "no identity may create top-level policies: name them with --create-top-level ID… or --admin ID… (or --create-top-level any)\n",
          );
        await untilStopped(running);
      },
    );

  program
    .command("dev")
    .description(
      "a CAS and a LAS on a throw-away store with a generated master key, for development (like vault server -dev)",
    )
    .option("--port <port>", "CAS port", "8081")
    .option("--las-port <port>", "LAS port (simulation mode)", "18766")
    .option("--data-dir <dir>", "keep the store here instead of a temporary directory")
    .option("--env-file <file>", "write CLOISTER_CAS_ADDR, CLOISTER_CAS_KEY and CLOISTER_LAS_ADDR lines here")
    .action(async (opts: { port: string; lasPort: string; dataDir?: string; envFile?: string }) => {
      for (const [flag, port] of [
        ["--port", opts.port],
        ["--las-port", opts.lasPort],
      ] as const) {
        if (!/^\d{1,5}$/.test(port) || Number(port) > 65535)
          throw new CliError(`${flag} ${port}: expected a port number`);
      }
      const temporary = opts.dataDir === undefined;
      const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "cloister-dev-"));
      // Dev mode: every identity administers (enrols, imports); the LAS is started and enrolled here.
      const running = await start(() => startCas({ dataDir, listen: `127.0.0.1:${opts.port}`, admins: "any" }));
      const las = await startNodeLas(`127.0.0.1:${opts.lasPort}`, join(dataDir, "las-node-key.pem"), io).catch(
        async (error: unknown) => {
          await running.close();
          throw error;
        },
      );
      await running.service.trust.enrolLas(las.key);
      if (opts.envFile) await writeEnvFile(opts.envFile, running, las.url);
      io.stdout(
        [
          "Cloister dev mode: NOT for production. The store and its master key are in",
          `  ${dataDir}${temporary ? " (removed on exit)" : ""}`,
          "",
          `CAS      ${running.url}`,
          `CAS key  ${running.identity.hash}`,
          `LAS      ${las.url}   (SIMULATION, key ${las.key.slice(0, 16)}… enrolled)`,
          "",
          "Paste into your shell:",
          `  export CLOISTER_CAS_ADDR=${running.url}`,
          `  export CLOISTER_CAS_KEY=${running.identity.hash}`,
          `  export CLOISTER_LAS_ADDR=${las.url}`,
          "",
          "Then: cloister identity create; cloister policy create my-policy.yaml. Ctrl-C stops.",
          "",
        ].join("\n"),
      );
      try {
        await untilStopped(running);
      } finally {
        await las.close();
        if (temporary) rmSync(dataDir, { recursive: true, force: true });
      }
    });
  return cas;
}

/** Until SIGINT or SIGTERM (then close), or until the store fails (the CAS stopped itself: exit 1). */
async function untilStopped(running: RunningCas): Promise<void> {
  const failed = running.failed.then((error) => {
    throw new CliError(error.message);
  });
  await Promise.race([untilSignal(() => running.close()), failed]);
}

async function start(run: () => Promise<RunningCas>): Promise<RunningCas> {
  try {
    return await run();
  } catch (error) {
    if (
      error instanceof MasterKeyError ||
      error instanceof ListenError ||
      error instanceof TamperError ||
      error instanceof DataDirectoryInUse ||
      error instanceof StoreOptionError ||
      error instanceof StoreUnavailableError
    )
      throw new CliError(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new CliError(`cannot listen: the address is in use (${(error as Error).message})`);
    if (code === "EACCES") throw new CliError(`permission denied: ${(error as Error).message}`);
    throw error;
  }
}

async function writeEnvFile(path: string, running: RunningCas, lasUrl?: string): Promise<void> {
  const las = lasUrl ? `CLOISTER_LAS_ADDR=${lasUrl}\n` : "";
  await fs.writeFile(path, `CLOISTER_CAS_ADDR=${running.url}\nCLOISTER_CAS_KEY=${running.identity.hash}\n${las}`, {
    mode: 0o600,
  });
}
