/** `cloister policy …`: for now the offline checker; the CAS commands arrive with the CAS. */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { Command } from "commander";
import { checkPolicyText, formatPolicyError, MAX_POLICY_BYTES } from "../policy/check.ts";
import { CliError, EXIT_FAILED } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

export function policyCommands(program: Command, io: Io): void {
  const policy = program.command("policy").description("write, check and manage policies");

  policy
    .command("check")
    .description("validate a policy offline and print its hash")
    .argument("<file>", "policy file (YAML or JSON); - reads standard input")
    .addOption(outputOption())
    .addHelpText(
      "after",
      `
Exit 0 prints the policy hash: SHA-256 over the canonical form of the policy, the same however
it is formatted. Exit 1 prints every problem as FILE:LINE:COL: field.path: what was expected.
See docs/policy.md for the language.`,
    )
    .action(async (file: string, opts: { output: OutputFormat }) => {
      const text = await readPolicyFile(file, io);
      const shown = file === "-" ? "<stdin>" : file;
      const result = checkPolicyText(text, shown);
      if (result.ok) {
        io.stdout(render(opts.output, { name: result.policy.name, hash: result.hash }, () => result.hash));
        return;
      }
      if (opts.output === "text") {
        io.stderr(`${result.errors.map(formatPolicyError).join("\n")}\n`);
        io.stderr(`${result.errors.length} problem${result.errors.length === 1 ? "" : "s"} in ${shown}\n`);
      } else {
        io.stdout(render(opts.output, { errors: result.errors }, () => ""));
      }
      throw new CliError("", EXIT_FAILED);
    });
}

/** Read a policy file, refusing what cannot be a policy before parsing it. */
export async function readPolicyFile(file: string, io: Io): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = file === "-" ? await readStdin() : await readFile(resolve(io.cwd, file));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "no such file"
        : code === "EISDIR"
          ? "is a directory"
          : code === "EACCES"
            ? "permission denied"
            : String(error);
    throw new CliError(`${file}: ${why}`);
  }
  if (bytes.length > MAX_POLICY_BYTES)
    throw new CliError(`${file}: larger than ${MAX_POLICY_BYTES} bytes; a policy is small`);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (text.includes("\uFFFD") || bytes.includes(0)) throw new CliError(`${file}: not UTF-8 text`);
  return text;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total > MAX_POLICY_BYTES) break;
  }
  return Buffer.concat(chunks);
}
