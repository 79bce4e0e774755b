/** The `cloister` command: one binary for every component, like `vault`. */
import { Command, CommanderError } from "commander";
import { CliError, EXIT_FAILED, EXIT_OK, EXIT_USAGE } from "./errors.ts";
import { type Io, processIo } from "./io.ts";

type Register = (program: Command, io: Io) => Promise<void>;

/**
 * Command groups, loaded only when used: `cloister run` should not pay for the CAS's web server
 * or the policy compiler at every start. Help and unknown commands load them all; --version none.
 */
const GROUPS: Record<string, Register> = {
  identity: async (p, io) => (await import("./identity.ts")).identityCommands(p, io),
  policy: async (p, io) => (await import("./policy.ts")).policyCommands(p, io),
  cas: async (p, io) => {
    const cas = (await import("./cas.ts")).casCommands(p, io);
    (await import("./collateral.ts")).collateralCommands(p, cas, io);
  },
  las: async (p, io) => (await import("./las.ts")).lasCommands(p, io),
  audit: async (p, io) => (await import("./audit.ts")).auditCommands(p, io),
  attest: async (p, io) => (await import("./attest.ts")).attestCommands(p, io),
  run: async (p, io) => (await import("./run.ts")).runCommand(p, io),
  fs: async (p, io) => (await import("./fs.ts")).fsCommands(p, io),
};
/** Which group registers each top-level command. */
const GROUP_OF: Record<string, string> = { dev: "cas", collateral: "cas", measure: "attest" };

export const VERSION = "0.1.0";

/**
 * Where the CLI writes, for the program and every subcommand alike. Commander's own usage errors
 * ("error: unknown option …") take the prefix the CLI's other errors have, so that a script or a
 * person reading stderr sees one form: `cloister: what was wrong`.
 */
const output = (io: Io) => ({
  writeOut: io.stdout,
  writeErr: io.stderr,
  outputError: (text: string, write: (text: string) => void) =>
    write(text.startsWith("error: ") ? `cloister: ${text.slice("error: ".length)}` : text),
});

export async function buildProgram(io: Io, argv: readonly string[] = []): Promise<Command> {
  const program = new Command("cloister")
    .description("Run unmodified programs in TEEs; release secrets only after remote attestation.")
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput(output(io))
    .exitOverride()
    .addHelpText(
      "after",
      `
Start here:   cloister dev   (a CAS and a LAS for development), then cloister identity create.
Partly built:  attest verify (SGX, TDX, SEV-SNP; offline collateral), measure (--tee sim).
Built:         run (files and volumes in a private mount namespace, as root or in a user namespace; TLS shield).
Built:         fs (protect, show, verify, decrypt, tag): protected trees, docs/fs-format.md.

Exit codes: 0 ok, 1 refused or failed, 2 usage. Docs: docs/policy.md.`,
    );
  const first = argv.find((a) => !a.startsWith("-"));
  const group = first === undefined ? undefined : (GROUP_OF[first] ?? (first in GROUPS ? first : undefined));
  // `cloister --version` needs no command: loading them all took it half a second.
  const versionOnly = argv.length > 0 && argv.every((a) => a === "-V" || a === "--version");
  const groups = group ? [group] : versionOnly ? [] : Object.keys(GROUPS);
  for (const name of groups) await GROUPS[name]!(program, io);
  // Every subcommand inherits the same output and exit behaviour.
  for (const c of allCommands(program)) c.configureOutput(output(io)).exitOverride();
  return program;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((child) => [child, ...allCommands(child)]);
}

/** Run the CLI; returns the exit code instead of exiting, so that tests can call it in-process. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
  const program = await buildProgram(io, argv);
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
