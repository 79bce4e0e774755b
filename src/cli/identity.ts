/** `cloister identity create|show`. */
import type { Command } from "commander";
import { cloisterHome, createIdentity, DEFAULT_IDENTITY, IdentityError, loadIdentity } from "../identity/store.ts";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

export function identityCommands(program: Command, io: Io): void {
  const identity = program
    .command("identity")
    .description("your key pair: how CAS recognises you (named by the SHA-256 of its public key)")
    .addHelpText(
      "after",
      `
Identities live under $CLOISTER_HOME/identities (default ~/.cloister/identities), key files
mode 0600. Policies name identities by their hash, e.g. access_policy: {update: [<hash>]}.`,
    );

  identity
    .command("create")
    .description("generate a P-256 key and a self-signed certificate")
    .option("-n, --name <name>", "identity name", DEFAULT_IDENTITY)
    .option("-f, --force", "replace an existing identity of that name (its old key is lost)", false)
    .addOption(outputOption())
    .action(async (opts: { name: string; force: boolean; output: OutputFormat }) => {
      const created = await wrap(() => createIdentity(cloisterHome(io.env), opts.name, opts.force));
      io.stdout(
        render(opts.output, asJson(created), () =>
          [
            `created identity "${created.name}"`,
            `identity    ${created.hash}`,
            `key         ${created.keyPath}`,
            `certificate ${created.certificatePath}`,
          ].join("\n"),
        ),
      );
    });

  identity
    .command("show")
    .description("print an identity's hash (what policies name)")
    .option("-n, --name <name>", "identity name", DEFAULT_IDENTITY)
    .addOption(outputOption())
    .action(async (opts: { name: string; output: OutputFormat }) => {
      const loaded = await wrap(() => loadIdentity(cloisterHome(io.env), opts.name));
      io.stdout(render(opts.output, asJson(loaded), () => loaded.hash));
    });
}

const asJson = (i: { hash: string; name: string; certificatePath: string }) => ({
  identity: i.hash,
  name: i.name,
  certificate: i.certificatePath,
});

async function wrap<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (error) {
    if (error instanceof IdentityError) throw new CliError(error.message);
    throw error;
  }
}
