/** `cloister las start`: the local attestation service for simulation mode. */
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { cloisterHome } from "../identity/store.ts";
import { DEFAULT_LAS_LISTEN, loadOrCreateNodeKey, type RunningLas, startLas } from "../las/server.ts";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";
import { untilSignal } from "./process.ts";

export function lasCommands(program: Command, io: Io): void {
  program
    .command("las")
    .description("the local attestation service (simulation mode only)")
    .command("start")
    .description("sign simulated evidence for programs on this node until interrupted")
    .option("--listen <host:port>", "address to listen on (plain HTTP; keep it on loopback)", DEFAULT_LAS_LISTEN)
    .option("--key-file <file>", "the node key (created 0600 when absent); default $CLOISTER_HOME/las/node-key.pem")
    .addHelpText(
      "after",
      `
Simulated evidence protects nothing: it proves only that this LAS measured a program file. A
CAS trusts a LAS once an administrator enrols its key (cloister cas las enrol KEY), and a policy
accepts its evidence only with security.attestation.mode: simulation.`,
    )
    .action(async (opts: { listen: string; keyFile?: string }) => {
      const running = await startNodeLas(
        opts.listen,
        opts.keyFile ? resolve(io.cwd, opts.keyFile) : join(cloisterHome(io.env), "las", "node-key.pem"),
        io,
      );
      io.stdout(`LAS listening on ${running.url} (SIMULATION: no hardware protection)\nLAS key ${running.key}\n`);
      await untilSignal(() => running.close());
    });
}

export async function startNodeLas(listen: string, keyFile: string, io: Io): Promise<RunningLas> {
  try {
    const { key, created } = await loadOrCreateNodeKey(keyFile);
    if (created) io.stderr(`created LAS node key ${keyFile} (mode 0600)\n`);
    return await startLas({ listen, key });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new CliError(`cannot listen on ${listen}: the address is in use`);
    throw new CliError((error as Error).message);
  }
}
