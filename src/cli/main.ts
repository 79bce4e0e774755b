/** The `cloister` command: one binary for every component, like `vault`. */
import { Command, CommanderError } from "commander";
import { attestCommands } from "./attest.ts";
import { auditCommands } from "./audit.ts";
import { casCommands } from "./cas.ts";
import { collateralCommands } from "./collateral.ts";
import { CliError, EXIT_FAILED, EXIT_OK, EXIT_USAGE } from "./errors.ts";
import { identityCommands } from "./identity.ts";
import { type Io, processIo } from "./io.ts";
import { lasCommands } from "./las.ts";
import { policyCommands } from "./policy.ts";
import { runCommand } from "./run.ts";

export const VERSION = "0.1.0";

export function buildProgram(io: Io): Command {
  const program = new Command("cloister")
    .description("Run unmodified programs in TEEs; release secrets only after remote attestation.")
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride()
    .addHelpText(
      "after",
      `
Start here:   cloister dev   (a CAS and a LAS for development), then cloister identity create.
Partly built:  attest verify (SGX, TDX, SEV-SNP; offline collateral), measure (--tee sim).
Partly built:  run (as root: files in a private mount namespace, TLS shield).
Not built yet: fs (see README).

Exit codes: 0 ok, 1 refused or failed, 2 usage. Docs: docs/policy.md.`,
    );
  identityCommands(program, io);
  policyCommands(program, io);
  const cas = casCommands(program, io);
  collateralCommands(program, cas, io);
  lasCommands(program, io);
  auditCommands(program, io);
  attestCommands(program, io);
  runCommand(program, io);
  // Every subcommand inherits the same output and exit behaviour.
  for (const c of allCommands(program)) c.configureOutput({ writeOut: io.stdout, writeErr: io.stderr }).exitOverride();
  return program;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((child) => [child, ...allCommands(child)]);
}

/** Run the CLI; returns the exit code instead of exiting, so that tests can call it in-process. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version exit 0; a bare group (`cloister identity`) prints its help and is a usage error.
      return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (error instanceof CliError) {
      if (error.message) io.stderr(`cloister: ${error.message}\n`);
      return error.exitCode;
    }
    io.stderr(`cloister: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return EXIT_FAILED;
  }
}
