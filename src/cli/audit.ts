/** `cloister audit export|verify`: the tamper-evident audit log, online and offline. */
import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { AuditExport, AuditPage, AuditVerifyError, verifyExport } from "../cas/audit.ts";
import { type ConnectionFlags, casKeyOf, connect, unreachable, withConnection } from "./connection.ts";
import { CliError } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

export function auditCommands(program: Command, io: Io): void {
  const audit = program.command("audit").description("the CAS's append-only, hash-chained audit log");

  withConnection(
    audit
      .command("export")
      .description("export the log with signed checkpoints; entries of policies you cannot read appear as digests")
      .option("--since <seq>", "only entries after this sequence number", "0")
      .option("--out <file>", "write to a file instead of standard output"),
  ).action(async (opts: ConnectionFlags & { since: string; out?: string }) => {
    if (!/^\d+$/.test(opts.since)) throw new CliError(`--since ${opts.since}: expected a sequence number`);
    const client = await connect(opts, io);
    const doc = await exportPages(Number(opts.since), (since) =>
      unreachable(() => client.request<unknown>("GET", `/v1/audit?since=${since}&limit=${PAGE}`)),
    );
    const text = `${JSON.stringify(doc, null, 2)}\n`;
    if (opts.out) {
      await writeFile(resolve(io.cwd, opts.out), text);
      io.stderr(`exported ${doc.entries.length} entries and ${doc.checkpoints.length} checkpoints to ${opts.out}\n`);
    } else io.stdout(text);
  });

  audit
    .command("verify")
    .description(
      "check an exported log offline: exit 1 on any modified, reordered, inserted, deleted or truncated entry",
    )
    .argument("<file>", "a file written by cloister audit export")
    .addOption(
      new Option("--cas-key <hash>", "the CAS key hash the checkpoints must be signed by (env CLOISTER_CAS_KEY)"),
    )
    .addOption(outputOption())
    .action(async (file: string, opts: { casKey?: string; output: OutputFormat }) => {
      const pin = casKeyOf(opts.casKey, io.env);
      let raw: unknown;
      try {
        raw = JSON.parse(await readFile(resolve(io.cwd, file), "utf8"));
      } catch (error) {
        throw new CliError(
          `${file}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : `not JSON (${(error as Error).message})`}`,
        );
      }
      const parsed = AuditExport.safeParse(raw);
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        throw new CliError(
          `${file}: not an audit export: ${first ? `${first.path.join(".")}: ${first.message}` : "unknown shape"}`,
        );
      }
      let verdict: ReturnType<typeof verifyExport>;
      try {
        verdict = verifyExport(parsed.data);
      } catch (error) {
        if (error instanceof AuditVerifyError) throw new CliError(`${file}: ${error.message}`);
        throw error;
      }
      if (!pin) {
        throw new CliError(
          `${file} is consistent and signed by CAS key ${verdict.casKey}, but no key is pinned: pass --cas-key or set CLOISTER_CAS_KEY to trust it`,
        );
      }
      if (pin !== verdict.casKey) {
        throw new CliError(`${file} is signed by CAS key ${verdict.casKey}, not the pinned ${pin}`);
      }
      io.stdout(
        render(
          opts.output,
          { ok: true, ...verdict },
          () =>
            `ok: ${plural(verdict.entries, "entry", "entries")}, ${plural(verdict.checkpoints, "checkpoint", "checkpoints")}, signed through entry ${verdict.lastCheckpoint} by CAS key ${verdict.casKey}`,
        ),
      );
    });
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** Entries asked for a page: the CAS's largest. */
const PAGE = 10_000;

/**
 * The log from `since` as one export: the CAS's pages followed to the last (which ends at a
 * signed checkpoint), each checked on receipt.
 */
export async function exportPages(since: number, fetchPage: (since: number) => Promise<unknown>): Promise<AuditExport> {
  let doc: AuditExport | undefined;
  for (let at = since; ; ) {
    const parsed = AuditPage.safeParse(await fetchPage(at));
    if (!parsed.success)
      throw new CliError(`the CAS sent an audit page that is not one: ${parsed.error.issues[0]?.message}`);
    const { next, ...page } = parsed.data;
    if (!doc) doc = page;
    else {
      if (page.cas_key !== doc.cas_key) throw new CliError("the CAS's key changed between pages of the audit log");
      doc.entries.push(...page.entries);
      doc.checkpoints.push(...page.checkpoints);
    }
    if (next === null) return doc;
    // Each page starts after the last: a CAS that did not move on would loop.
    if (next <= at) throw new CliError(`the CAS's audit page after ${at} points back to ${next}`);
    at = next;
  }
}
