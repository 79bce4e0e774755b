/** `cloister policy …`: check offline; create, update, get, list, delete, history and sign against the CAS. */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { isMap, parseDocument } from "yaml";
import { type CasClient, CasRequestError, policyPath } from "../client/cas-client.ts";
import { signPolicy } from "../crypto/signatures.ts";
import { cloisterHome, IdentityError, loadIdentity } from "../identity/store.ts";
import {
  checkPolicyText,
  formatPolicyError,
  formatPolicyWarning,
  MAX_POLICY_BYTES,
  type PolicyCheck,
  type PolicyWarning,
} from "../policy/check.ts";
import { type ConnectionFlags, connect, unreachable, withConnection } from "./connection.ts";
import { CliError, EXIT_FAILED } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

interface Summary {
  name: string;
  hash: string;
  version: number;
}

/** What create and update answer: warnings only when the CAS found some (src/cas/api.ts). */
type Written = Summary & { warnings?: PolicyWarning[] };
const written = (r: Written) => ({
  name: r.name,
  hash: r.hash,
  ...(r.warnings?.length ? { warnings: r.warnings } : {}),
});

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
Warnings (FILE:LINE:COL: warning: …, on stderr) do not fail the check: a template that lost its
$$ delimiters, a secret nothing uses. See docs/policy.md for the language.`,
    )
    .action(async (file: string, opts: { output: OutputFormat }) => {
      const text = await readPolicyFile(file, io);
      const result = checkOrReport(text, file, io, opts.output);
      io.stdout(
        render(
          opts.output,
          { name: result.policy.name, hash: result.hash, warnings: result.warnings },
          () => result.hash,
        ),
      );
    });

  const signatureOption = () =>
    new Option(
      "--signature <signature...>",
      "detached signatures from `cloister policy sign`, for multi-party rules",
    ).default([]);

  withConnection(
    policy
      .command("create")
      .description("store a new policy in the CAS; prints its hash")
      .argument("<file>", "policy file; - reads standard input")
      .addOption(signatureOption())
      .addOption(outputOption()),
  ).action(async (file: string, opts: ConnectionFlags & { signature: string[]; output: OutputFormat }) => {
    const text = await readPolicyFile(file, io);
    checkOrReport(text, file, io, opts.output);
    const client = await connect(opts, io);
    const r = await unreachable(() =>
      client.request<Written>("POST", "/v1/policies", { policy: text, signatures: opts.signature }),
    );
    io.stdout(render(opts.output, written(r), () => r.hash));
  });

  withConnection(
    policy
      .command("update")
      .description("replace a policy in the CAS; fills in predecessor from the CAS when the file has none")
      .argument("<file>", "policy file; - reads standard input")
      .addOption(signatureOption())
      .option(
        "--regenerate-secrets",
        "consent to a change of attestation mode: every generated value is made anew (the old ones, a volume's key among them, are discarded)",
        false,
      )
      .addOption(outputOption()),
  ).action(
    async (
      file: string,
      opts: ConnectionFlags & { signature: string[]; regenerateSecrets: boolean; output: OutputFormat },
    ) => {
      const text = await readPolicyFile(file, io);
      const checked = checkOrReport(text, file, io, opts.output);
      const client = await connect(opts, io);
      const withPredecessor = await fillPredecessor(text, checked, client);
      const r = await unreachable(() =>
        client.request<Written>("PUT", policyPath(checked.policy.name), {
          policy: withPredecessor.text,
          signatures: opts.signature,
          regenerate_secrets: opts.regenerateSecrets,
        }),
      );
      io.stdout(render(opts.output, written(r), () => r.hash));
    },
  );

  withConnection(
    policy
      .command("get")
      .description("print a policy as written, explicit secret values shown as <redacted>")
      .argument("<name>", "policy name, e.g. acme/shop")
      .addOption(outputOption()),
  ).action(async (name: string, opts: ConnectionFlags & { output: OutputFormat }) => {
    const client = await connect(opts, io);
    const r = await unreachable(() => client.request<Summary & { policy: string }>("GET", policyPath(name)));
    io.stdout(render(opts.output, r, () => r.policy));
  });

  withConnection(policy.command("list").description("the policies you may read").addOption(outputOption())).action(
    async (opts: ConnectionFlags & { output: OutputFormat }) => {
      const client = await connect(opts, io);
      const r = await unreachable(() => client.request<{ policies: Summary[] }>("GET", "/v1/policies"));
      io.stdout(render(opts.output, r, () => r.policies.map((p) => `${p.name}\t${p.hash}\tv${p.version}`).join("\n")));
    },
  );

  withConnection(
    policy
      .command("delete")
      .description("delete a policy and its secrets")
      .argument("<name>", "policy name")
      .addOption(signatureOption())
      .addOption(outputOption()),
  ).action(async (name: string, opts: ConnectionFlags & { signature: string[]; output: OutputFormat }) => {
    const client = await connect(opts, io);
    const query = opts.signature.map((s) => `signature=${encodeURIComponent(s)}`).join("&");
    await unreachable(() => client.request("DELETE", `${policyPath(name)}${query ? `?${query}` : ""}`));
    io.stdout(render(opts.output, { name, deleted: true }, () => `deleted ${name}`));
  });

  withConnection(
    policy
      .command("history")
      .description("hash, time and actor of every version")
      .argument("<name>", "policy name")
      .addOption(outputOption()),
  ).action(async (name: string, opts: ConnectionFlags & { output: OutputFormat }) => {
    const client = await connect(opts, io);
    type History = { name: string; versions: { version: number; hash: string; time: string; actor: string }[] };
    const r = await unreachable(() => client.request<History>("GET", policyPath(name, "/history")));
    io.stdout(
      render(opts.output, r, () => r.versions.map((v) => `v${v.version}\t${v.hash}\t${v.time}\t${v.actor}`).join("\n")),
    );
  });

  withConnection(
    policy
      .command("sign")
      .description("sign a policy version (or a deletion) with your identity, for multi-party rules")
      .argument("<file-or-name>", "the policy file to approve; with --delete, the name of the policy to delete")
      .option("--delete", "approve deleting the current version of the named policy", false)
      .addOption(outputOption())
      .addHelpText(
        "after",
        `
A signature approves exactly one policy hash. Give it to whoever submits the change:
  cloister policy update shop.yaml --signature <theirs> --signature <yours>
When the file has no predecessor, the CAS's current hash is filled in first (as update does),
so that the signature matches what update will send.`,
      ),
  ).action(async (target: string, opts: ConnectionFlags & { delete: boolean; output: OutputFormat }) => {
    const identity = await loadIdentity(cloisterHome(io.env), opts.identity).catch((e: unknown) => {
      throw e instanceof IdentityError ? new CliError(e.message) : e;
    });
    let name: string;
    let hash: string;
    if (opts.delete) {
      const client = await connect(opts, io);
      const r = await unreachable(() => client.request<Summary>("GET", policyPath(target)));
      name = r.name;
      hash = r.hash;
    } else {
      const text = await readPolicyFile(target, io);
      const checked = checkOrReport(text, target, io, opts.output);
      const filled =
        checked.policy.predecessor === undefined
          ? await fillPredecessor(text, checked, await connect(opts, io))
          : { checked };
      name = filled.checked.policy.name;
      hash = filled.checked.hash;
    }
    const action = opts.delete ? "delete" : "write";
    const signature = signPolicy(identity.keyPem, action, name, hash);
    io.stdout(render(opts.output, { identity: identity.hash, name, hash, action, signature }, () => signature));
  });
}

/**
 * Check a policy locally (errors name the user's file); print every problem and fail on any.
 * Warnings go to stderr in text output; the other formats carry them in their document.
 */
function checkOrReport(text: string, file: string, io: Io, output: OutputFormat): Extract<PolicyCheck, { ok: true }> {
  const shown = file === "-" ? "<stdin>" : file;
  const result = checkPolicyText(text, shown);
  if (result.ok) {
    const n = result.warnings.length;
    if (output === "text" && n > 0) {
      io.stderr(`${result.warnings.map(formatPolicyWarning).join("\n")}\n`);
      io.stderr(`${n} warning${n === 1 ? "" : "s"} in ${shown}\n`);
    }
    return result;
  }
  if (output === "text") {
    io.stderr(`${result.errors.map(formatPolicyError).join("\n")}\n`);
    io.stderr(`${result.errors.length} problem${result.errors.length === 1 ? "" : "s"} in ${shown}\n`);
  } else {
    io.stdout(render(output, { errors: result.errors }, () => ""));
  }
  throw new CliError("", EXIT_FAILED);
}

/**
 * An update names the hash it replaces. When the file does not, ask the CAS for the current
 * hash and add it, so that the update applies to exactly the version the user last saw… or fails
 * with 409 if someone else got there first.
 */
async function fillPredecessor(
  text: string,
  checked: Extract<PolicyCheck, { ok: true }>,
  client: CasClient,
): Promise<{ text: string; checked: Extract<PolicyCheck, { ok: true }> }> {
  if (checked.policy.predecessor !== undefined) return { text, checked };
  let current: Summary;
  try {
    current = await client.request<Summary>("GET", policyPath(checked.policy.name));
  } catch (error) {
    if (error instanceof CasRequestError && error.status === 404) {
      throw new CliError(`no policy ${checked.policy.name} in the CAS: use cloister policy create`);
    }
    return unreachable(() => Promise.reject(error));
  }
  const doc = parseDocument(text, { version: "1.2" });
  if (!isMap(doc.contents)) throw new CliError("the policy is not a map");
  doc.set("predecessor", current.hash);
  const filled = doc.toString({ lineWidth: 0 });
  const rechecked = checkPolicyText(filled, "policy");
  if (!rechecked.ok)
    throw new CliError(
      `adding the predecessor broke the policy: ${rechecked.errors.map(formatPolicyError).join("; ")}`,
    );
  return { text: filled, checked: rechecked };
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
