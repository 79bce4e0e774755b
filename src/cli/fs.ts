/** `cloister fs protect|show|verify|decrypt|tag`: protected trees, offline (docs/fs-format.md). */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import type { Command } from "commander";
import { DEFAULT_CHUNK_SIZE, parseKey, regionsFrom, TreeError } from "../fs/format.ts";
import { extractTree, openManifest, readHeader, verifyTree } from "../fs/open.ts";
import { freshHeader, type Progress, sealDirectory } from "../fs/seal.ts";
import { CliError, UsageError } from "./errors.ts";
import type { Io } from "./io.ts";
import { type OutputFormat, outputOption, render } from "./output.ts";

const collect = (value: string, previous: string[]) => [...previous, value];

export function fsCommands(program: Command, io: Io): void {
  const fs = program
    .command("fs")
    .description("protected file trees: encrypt or authenticate a directory, ship it anywhere, check and open it")
    .addHelpText(
      "after",
      `
A protected tree keeps each file's content in chunks sealed with AES-256-GCM under a random
per-file key, and a manifest sealed under the tree key. Its tag (printed by protect) names one
exact state: give a policy the key and the tag, and only an attested service sees the
plaintext of exactly that state. The key file holds 64 hex digits, which are the value of the
policy's binary secret:

  secrets: [{name: www_key, kind: binary, value: <the key file's 64 hex digits>}]
  volumes: [{name: www, key: www_key, tag: <the tag>}]

Then put the tree where cloister run looks for it (--volumes DIR: DIR/POLICY/VOLUME). Format
and guarantees: docs/fs-format.md; volumes: docs/runtime.md.

  cloister fs protect ./www --out ./www.protected --key-file www.key
  cloister fs verify ./www.protected --key-file www.key --tag <tag>`,
    );

  fs.command("protect")
    .description("seal DIR into a protected tree at --out; prints its tag")
    .argument("<dir>", "the plaintext directory")
    .requiredOption("--out <dir>", "where the protected tree goes (must not exist)")
    .option("--encrypt <prefix>", "encrypt files under this path (repeatable; the default for everything)", collect, [])
    .option(
      "--authenticate <prefix>",
      "keep files under this path readable, but tamper-evident (repeatable)",
      collect,
      [],
    )
    .option("--not-protected <prefix>", "leave files under this path as they are (repeatable)", collect, [])
    .option("--key-file <file>", "the tree key: read if it exists, else made (default: OUT.key beside the tree)")
    .option("--chunk-size <bytes>", "plaintext bytes per sealed chunk", String(DEFAULT_CHUNK_SIZE))
    .addOption(outputOption())
    .action(
      async (
        dir: string,
        opts: {
          out: string;
          encrypt: string[];
          authenticate: string[];
          notProtected: string[];
          keyFile?: string;
          chunkSize: string;
          output: OutputFormat;
        },
      ) => {
        const source = resolve(io.cwd, dir);
        if (!isDirectory(source)) throw new CliError(`${dir}: not a directory`);
        const out = resolve(io.cwd, opts.out);
        if (existsSync(out) && !(isDirectory(out) && readdirSync(out).length === 0))
          throw new CliError(`--out ${opts.out}: already exists; choose a new directory`);
        if (out === source || out.startsWith(`${source}/`))
          throw new CliError(`--out ${opts.out}: inside the directory being protected`);
        const chunkSize = Number(opts.chunkSize);
        if (!Number.isInteger(chunkSize) || chunkSize < 4096 || chunkSize > 16 * 1024 * 1024)
          throw new UsageError(`--chunk-size ${opts.chunkSize}: expected bytes between 4096 and 16777216`);
        const regions = tree(() =>
          regionsFrom({ encrypt: opts.encrypt, authenticate: opts.authenticate, notProtected: opts.notProtected }),
        );
        const keyFile = resolve(io.cwd, opts.keyFile ?? `${out}.key`);
        const { key, made } = keyFor(keyFile);
        // Built beside --out and renamed into place: a failed protect leaves nothing half-made.
        const partial = resolve(dirname(out), `.${basename(out)}.partial-${randomBytes(4).toString("hex")}`);
        let sealed: ReturnType<typeof sealDirectory>;
        const bar = progressBar(io);
        try {
          sealed = tree(() =>
            sealDirectory(source, partial, {
              header: freshHeader(chunkSize),
              treeKey: key,
              regions,
              progress: bar.update,
            }),
          );
          bar.done();
          if (existsSync(out)) rmSync(out, { recursive: true });
          renameSync(partial, out);
        } catch (error) {
          bar.done();
          rmSync(partial, { recursive: true, force: true });
          if (made) rmSync(keyFile, { force: true });
          throw error;
        }
        if (made) io.stderr(`wrote a new tree key to ${keyFile} (mode 0600): keep it apart from the tree\n`);
        io.stdout(
          render(
            opts.output,
            {
              tag: sealed.tag,
              tree: out,
              key_file: keyFile,
              files: sealed.body.files.length,
              bytes: sealed.sealedBytes,
              regions: sealed.body.regions,
            },
            () => sealed.tag,
          ),
        );
      },
    );

  fs.command("show")
    .description("what anyone can see of a protected tree, without its key: format, chunk size, tag")
    .argument("<dir>", "a protected tree")
    .addOption(outputOption())
    .action(async (dir: string, opts: { output: OutputFormat }) => {
      const { header, tag } = tree(() => readHeader(resolve(io.cwd, dir)));
      io.stdout(
        render(opts.output, { tag, ...header }, () =>
          [
            `tag        ${tag}`,
            `format     ${header.format} ${header.version}`,
            `tree id    ${header.tree_id}`,
            `chunk size ${header.chunk_size}`,
          ].join("\n"),
        ),
      );
    });

  fs.command("verify")
    .description("check every file of a protected tree; with --tag, that it is exactly that state")
    .argument("<dir>", "a protected tree")
    .requiredOption("--key-file <file>", "the tree key")
    .option("--tag <tag>", "the state the tree must be in")
    .addOption(outputOption())
    .action(async (dir: string, opts: { keyFile: string; tag?: string; output: OutputFormat }) => {
      const key = readKey(resolve(io.cwd, opts.keyFile));
      const { tag, body } = tree(() => verifyTree(resolve(io.cwd, dir), key, checkTag(opts.tag)));
      const bytes = body.files.reduce((n, f) => n + f.size, 0);
      io.stdout(
        render(
          opts.output,
          { ok: true, tag, files: body.files.length, bytes, sequence: body.sequence },
          () => `ok: ${body.files.length} files, ${bytes} bytes, tag ${tag}`,
        ),
      );
    });

  fs.command("decrypt")
    .description("verify a protected tree and write its plaintext to --out (nothing is written if any check fails)")
    .argument("<dir>", "a protected tree")
    .requiredOption("--key-file <file>", "the tree key")
    .requiredOption("--out <dir>", "where the plaintext goes (must not exist)")
    .option("--tag <tag>", "the state the tree must be in")
    .action(async (dir: string, opts: { keyFile: string; out: string; tag?: string }) => {
      const key = readKey(resolve(io.cwd, opts.keyFile));
      const out = resolve(io.cwd, opts.out);
      if (existsSync(out)) throw new CliError(`--out ${opts.out}: already exists; choose a new directory`);
      const bar = progressBar(io);
      try {
        tree(() =>
          extractTree(resolve(io.cwd, dir), key, out, {
            ...(opts.tag ? { expectedTag: checkTag(opts.tag) } : {}),
            progress: (bytes, totalBytes) => bar.update({ bytes, totalBytes, files: 0, totalFiles: 0 }),
          }),
        );
      } finally {
        bar.done();
      }
    });

  fs.command("tag")
    .description("print the tag of a protected tree, after checking its manifest opens with the key")
    .argument("<dir>", "a protected tree")
    .requiredOption("--key-file <file>", "the tree key")
    .action(async (dir: string, opts: { keyFile: string }) => {
      const key = readKey(resolve(io.cwd, opts.keyFile));
      io.stdout(`${tree(() => openManifest(resolve(io.cwd, dir), key)).tag}\n`);
    });
}

/** Tree errors are the user's to read: one line, exit 1. */
function tree<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (error instanceof TreeError) throw new CliError(error.message);
    const e = error as NodeJS.ErrnoException;
    if (e.code && e.path) throw new CliError(`${e.path}: ${e.code === "EACCES" ? "permission denied" : e.message}`);
    throw error;
  }
}

function checkTag(tag: string | undefined): string | undefined {
  if (tag !== undefined && !/^[0-9a-fA-F]{64}$/.test(tag)) throw new UsageError(`--tag ${tag}: expected 64 hex digits`);
  return tag?.toLowerCase();
}

function readKey(file: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new CliError(
      `${file}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such key file" : (error as Error).message}`,
    );
  }
  return tree(() => parseKey(bytes, file));
}

/** The key in `file`, or a new one written there (0600, hex) when the file does not exist. */
function keyFor(file: string): { key: Buffer; made: boolean } {
  if (existsSync(file)) return { key: readKey(file), made: false };
  const key = randomBytes(32);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  return { key, made: true };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** A one-line progress bar on a terminal's standard error, redrawn at most ten times a second. */
function progressBar(io: Io): { update: (p: Progress) => void; done: () => void } {
  if (!process.stderr.isTTY || io.env.CI) return { update: () => {}, done: () => {} };
  let last = 0;
  let drawn = false;
  return {
    update(p) {
      const now = Date.now();
      if (now - last < 100 && p.bytes < p.totalBytes) return;
      last = now;
      drawn = true;
      const fraction = p.totalBytes === 0 ? 1 : p.bytes / p.totalBytes;
      const width = 30;
      const filled = Math.round(fraction * width);
      const files = p.totalFiles ? `  ${p.files}/${p.totalFiles} files` : "";
      io.stderr(
        `\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${mib(p.bytes)}/${mib(p.totalBytes)} MiB${files}`,
      );
    },
    done() {
      if (drawn) io.stderr("\n");
    },
  };
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
