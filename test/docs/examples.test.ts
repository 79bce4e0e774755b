/**
 * The examples in docs/ run as written, through the real binary:
 *
 * - every fenced `yaml` block that is a policy (a top-level `version:` and `name:`) passes
 *   `cloister policy check`, unless an `<!-- invalid -->` comment right before it says it is
 *   meant to fail, and then it must fail;
 * - every `cloister …` command line in a `console` block names a command that exists, with
 *   options it has (`cloister <command> --help` answers for it);
 * - docs/quickstart.md, and the worked multi-owner example of docs/policy.md, run from start to
 *   finish against `cloister dev`, command by command, each person in a shell of their own.
 *
 * A session's commands run in /bin/sh (the `export` lines before them first). What a block shows
 * after a command is checked: a `cloister: …` error line (not a warning) means the command
 * must fail with exit 1 and say that (any other tool's `TOOL: …` line, that it fails); other
 * shown lines must appear in its output. In a shown line, a word ending in `…` stands for
 * anything, digits for any digits, and a comment after two spaces (`# …`, `(…)`) is not output.
 * A command that shows one word (a hash, a signature) is not matched: the word is learned, and
 * later commands and files that use it get the value printed instead — that is how identities,
 * measurements and signatures, which differ on every machine, flow from one step to the next. A
 * file a policy.md session uses is the `yaml` block after `<!-- file: NAME -->`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Command } from "commander";
import type { Io } from "../../src/cli/io.ts";
import { buildProgram } from "../../src/cli/main.ts";
import { BIN, runCli } from "../helpers/cli.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const DOCS = join(ROOT, "docs");
const docs = readdirSync(DOCS)
  .filter((f) => f.endsWith(".md"))
  .sort()
  .map((f) => ({ file: `docs/${f}`, text: readFileSync(join(DOCS, f), "utf8") }));

interface Block {
  readonly file: string;
  /** Line of the opening fence, 1-based. */
  readonly line: number;
  readonly lang: string;
  readonly text: string;
  /** The last non-blank line before the fence (where `<!-- invalid -->` or `<!-- file: … -->` goes). */
  readonly before: string;
  /** The `## ` heading the block is under. */
  readonly section: string;
}

function blocksOf(file: string, text: string): Block[] {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("## ")) section = line.slice(3).trim();
    const open = /^```(\w*)\s*$/.exec(line);
    if (!open) continue;
    let end = i + 1;
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++;
    let b = i - 1;
    while (b >= 0 && lines[b]!.trim() === "") b--;
    blocks.push({
      file,
      line: i + 1,
      lang: open[1]!,
      text: lines.slice(i + 1, end).join("\n"),
      before: b >= 0 ? lines[b]!.trim() : "",
      section,
    });
    i = end;
  }
  return blocks;
}

const allBlocks = docs.flatMap((d) => blocksOf(d.file, d.text));

test("blocks: their language, section and the comment before them", () => {
  const md = "## A\n\n<!-- invalid -->\n```yaml\nversion: 1\n```\n\ntext\n\n```console\n$ cloister x\n```\n";
  assert.deepEqual(
    blocksOf("x.md", md).map((b) => [b.lang, b.section, b.before, b.text, b.line]),
    [
      ["yaml", "A", "<!-- invalid -->", "version: 1", 4],
      ["console", "A", "text", "$ cloister x", 10],
    ],
  );
});

describe("policies in docs/", () => {
  const policies = allBlocks.filter((b) => b.lang === "yaml" && /^version:/m.test(b.text) && /^name:/m.test(b.text));
  test("there are some", () => assert.ok(policies.length >= 3, `${policies.length}`));
  for (const b of policies) {
    const invalid = b.before === "<!-- invalid -->";
    const name = /^name: *(\S+)/m.exec(b.text)?.[1];
    test(`${b.file}:${b.line} (${name}) ${invalid ? "is refused, as marked" : "passes cloister policy check"}`, async () => {
      const r = await runCli(["policy", "check", "-"], { input: `${b.text}\n` });
      if (invalid) assert.equal(r.code, 1, `marked invalid, but it checks: ${r.stdout}`);
      else assert.equal(r.code, 0, r.stderr);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Command lines

interface CommandStep {
  readonly kind: "command";
  readonly who: string;
  readonly command: string;
  readonly shown: readonly string[];
  readonly at: string;
}
interface FileStep {
  readonly kind: "file";
  readonly name: string;
  readonly text: string;
  readonly at: string;
}
type Step = CommandStep | FileStep;

const PROMPT = /^([a-z]*)\$\s+(.*)$/;

/** The commands of a console block, each with the lines shown after it; heredocs and `\` continuations joined. */
function commandsOf(b: Block): CommandStep[] {
  const lines = b.text.split("\n");
  const steps: CommandStep[] = [];
  for (let i = 0; i < lines.length; i++) {
    const prompt = PROMPT.exec(lines[i]!);
    if (!prompt) continue;
    const at = `${b.file}:${b.line + 1 + i}`;
    let command = prompt[2]!;
    while (command.endsWith("\\") && i + 1 < lines.length) command = `${command.slice(0, -1)} ${lines[++i]!.trim()}`;
    const heredoc = /<<-?\s*(['"]?)(\w+)\1/.exec(command);
    if (heredoc) {
      const body: string[] = [];
      while (i + 1 < lines.length && lines[i + 1] !== heredoc[2]) body.push(lines[++i]!);
      i++;
      command = [command, ...body, heredoc[2]].join("\n");
    }
    const shown: string[] = [];
    while (i + 1 < lines.length && !PROMPT.test(lines[i + 1]!)) shown.push(lines[++i]!);
    steps.push({ kind: "command", who: prompt[1]!, command, shown, at });
  }
  return steps;
}

const quiet: Io = { env: process.env, cwd: ROOT, stdout: () => {}, stderr: () => {} };

/** Shell-like words of one command, up to a comment, redirection, pipe or list operator. */
function wordsOf(command: string): string[] {
  const words: string[] = [];
  for (const m of command.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) {
    const bare = m[3];
    if (bare !== undefined && (/^(#|>|<|\||&&|;|2>)/.test(bare) || bare === "&")) break;
    words.push(m[1] ?? m[2] ?? bare!);
  }
  return words;
}

describe("cloister command lines in docs/", () => {
  // Every `cloister …` of every console block, split at |, && and ;.
  const uses = allBlocks
    .filter((b) => b.lang === "console")
    .flatMap((b) => commandsOf(b))
    .flatMap((s) =>
      s.command
        .split("\n")[0]!
        .split(/\|\||&&|\||;/)
        .map((part) => wordsOf(part.trim()))
        .filter((w) => w[0] === "cloister")
        .map((words) => ({ at: s.at, words: words.slice(1) })),
    );

  test("name commands that exist, with options they have", async () => {
    assert.ok(uses.length >= 30, `${uses.length}`);
    const program = await buildProgram(quiet, ["--help"]);
    const paths = new Map<string, string>();
    const problems: string[] = [];
    for (const use of uses) {
      let command: Command = program;
      const path: string[] = [];
      let i = 0;
      for (; i < use.words.length; i++) {
        const sub = command.commands.find((c) => c.name() === use.words[i]);
        if (!sub) break;
        command = sub;
        path.push(use.words[i]!);
      }
      if (command === program || command.commands.length > 0) {
        problems.push(`${use.at}: cloister ${use.words.join(" ")}: no such command`);
        continue;
      }
      for (const word of use.words.slice(i)) {
        if (word === "--") break;
        if (!word.startsWith("-") || word === "-") continue;
        const flag = word.split("=")[0]!;
        const known = [...command.options, ...program.options].some((o) => o.long === flag || o.short === flag);
        if (!known && flag !== "--help" && flag !== "-h")
          problems.push(`${use.at}: cloister ${path.join(" ")} has no option ${flag}`);
      }
      paths.set(path.join(" "), use.at);
    }
    assert.deepEqual(problems, []);
    // And the binary answers --help for each of those commands.
    for (const [path, at] of paths) {
      const r = await runCli([...path.split(" "), "--help"]);
      assert.equal(r.code, 0, `${at}: cloister ${path} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: cloister ${path} `), at);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Sessions

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const foldDigits = (s: string) => s.replace(/\d+/g, "0");

/** A shown line without its comment (two spaces, then `#` or `(`), trimmed; "" when there is nothing to match. */
function shownLine(line: string): string {
  const text = line.trim().replace(/\s{2,}[#(].*$/, "");
  return text === "…" ? "" : text;
}

function pattern(line: string): RegExp {
  const parts = line.split(/\S*…/).map((p) => escapeRegExp(foldDigits(p)));
  return new RegExp(`^${parts.join(".*")}$`);
}

interface Session {
  /** Where to run, and each person's environment. */
  readonly cwd: string;
  env(who: string): NodeJS.ProcessEnv;
  /** Fixed replacements (paths) in commands, files and shown lines. */
  readonly fixed: readonly (readonly [string, string])[];
  /** A command the session does not run itself: return true when handled. */
  instead?(step: CommandStep): boolean;
  /** Called after each command, with what it printed. */
  check?(step: CommandStep, result: { code: number | null; stdout: string; stderr: string }): void;
}

function shell(command: string, cwd: string, env: NodeJS.ProcessEnv) {
  const r = spawnSync("/bin/sh", ["-c", command], { cwd, env, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function runSession(steps: readonly Step[], session: Session): void {
  const learned = new Map<string, string>();
  const apply = (text: string, withLearned: boolean) => {
    let out = text;
    for (const [from, to] of session.fixed) out = out.split(from).join(to);
    if (withLearned) for (const [from, to] of learned) out = out.split(from).join(to);
    return out;
  };
  const exports: string[] = [];
  let last: number | null = 0;
  for (const step of steps) {
    if (step.kind === "file") {
      writeFileSync(join(session.cwd, step.name), `${apply(step.text, true)}\n`);
      continue;
    }
    if (session.instead?.(step)) continue;
    const command = apply(step.command, true);
    const shown = step.shown.map(shownLine).filter(Boolean);
    if (command.trim() === "echo $?") {
      assert.equal(String(last), shown[0], `${step.at}: the exit code shown`);
      continue;
    }
    const r = shell([...exports, command].join("\n"), session.cwd, session.env(step.who));
    last = r.code;
    const context = `${step.at}: ${command.split("\n")[0]}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
    if (command.startsWith("export ")) exports.push(command);
    const tool = command.split(/\s/)[0]!;
    const failure = shown.find((l) => l.startsWith(`${tool}: `) && !l.startsWith("cloister: warning:"));
    if (tool === "cloister" && failure) assert.equal(r.code, 1, context);
    else if (failure) assert.notEqual(r.code, 0, context);
    else assert.equal(r.code, 0, context);
    const word = shown.length === 1 && !/\s/.test(shown[0]!) && !failure ? shown[0]! : undefined;
    if (word !== undefined) {
      const printed = r.stdout.trim().split("\n").at(-1) ?? "";
      assert.match(printed, /^\S+$/, `${context}\n(one word expected, for ${word})`);
      learned.set(word, printed);
    } else {
      const actual = `${r.stdout}\n${r.stderr}`.split("\n").map((l) => foldDigits(l.trim()));
      for (const line of shown) {
        const p = pattern(apply(line, false));
        assert.ok(
          actual.some((a) => p.test(a)),
          `${context}\n(no line of it is the shown "${line}")`,
        );
      }
    }
    session.check?.(step, r);
  }
}

/** A session's steps: the console and `<!-- file: NAME -->` yaml blocks of `file`, of `section` only if given. */
function stepsOf(file: string, section?: string): Step[] {
  return allBlocks
    .filter((b) => b.file === file && (section === undefined || b.section === section))
    .flatMap((b): Step[] => {
      const named = /^<!-- file: (\S+) -->$/.exec(b.before)?.[1];
      if (b.lang === "yaml" && named) return [{ kind: "file", name: named, text: b.text, at: `${b.file}:${b.line}` }];
      return b.lang === "console" ? commandsOf(b) : [];
    });
}

const tmp = mkdtempSync(join(tmpdir(), "cloister-docs-"));
let dev: ChildProcess | undefined;
let devOutput = "";
let devEnv: Record<string, string> = {};
/** This process's environment, without the caller's CAS, LAS or home. */
const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CLOISTER_")));

before(async () => {
  const envFile = join(tmp, "dev.env");
  const child = spawn(process.execPath, [BIN, "--", "dev", "--port", "0", "--las-port", "0", "--env-file", envFile], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  dev = child;
  child.stdout!.on("data", (d: Buffer) => (devOutput += d));
  child.stderr!.on("data", (d: Buffer) => (devOutput += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cloister dev not ready: ${devOutput}`)), 20_000);
    child.on("exit", (code) => reject(new Error(`cloister dev exited ${code}: ${devOutput}`)));
    const poll = setInterval(() => {
      if (!devOutput.includes("Ctrl-C stops")) return;
      clearInterval(poll);
      clearTimeout(timer);
      resolve();
    }, 50);
  });
  devEnv = Object.fromEntries(
    readFileSync(envFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split("=") as [string, string]),
  );
});
after(() => {
  dev?.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
});

describe("sessions in docs/", () => {
  test("docs/quickstart.md runs as written", () => {
    const home = join(tmp, "quickstart-home");
    const steps = stepsOf("docs/quickstart.md");
    assert.ok(steps.length >= 20, `${steps.length}`);
    runSession(steps, {
      cwd: ROOT,
      env: () => ({ ...base, ...devEnv, CLOISTER_HOME: home }),
      // The quickstart writes under /tmp; here, under a directory of this test's own.
      fixed: [["/tmp/", `${tmp}/quickstart/`]],
      instead(step) {
        if (!step.command.startsWith("npm ")) return false;
        // `npm start` is `cloister dev`, started above (on free ports): what it printed is shown.
        assert.equal(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts.start, "bin/cloister dev");
        const printed = devOutput.split("\n").map((l) => foldDigits(l.trim()));
        for (const line of step.shown.map(shownLine).filter(Boolean)) {
          const p = pattern(line);
          assert.ok(
            printed.some((l) => p.test(l)),
            `${step.at}: cloister dev printed no "${line}":\n${devOutput}`,
          );
        }
        return true;
      },
    });
  });

  // The LAS measures the interpreter the policy's `python3` is, found on /bin/sh's default path.
  const python = spawnSync("/bin/sh", ["-c", "command -v python3"], { env: {}, encoding: "utf8" }).stdout.trim();
  const pythonIsUsrBin = python !== "" && realpathSync(python) === realpathSync("/usr/bin/python3");

  test("docs/policy.md's worked example runs as written: the policies made in order, the key flows, then is withdrawn", {
    skip: pythonIsUsrBin ? false : "needs /usr/bin/python3 as /bin/sh's python3",
  }, () => {
    const work = join(tmp, "worked");
    mkdirSync(join(work, "app"), { recursive: true });
    mkdirSync(join(work, "data"));
    // Where the doc's host has the report program and its data, this test has its own.
    const report = join(work, "app", "report.py");
    const dataset = join(work, "data", "dataset.enc");
    writeFileSync(
      report,
      [
        "import base64, os, sys",
        'key = bytes.fromhex(os.environ["DATASET_KEY"])',
        'results = base64.b64decode(os.environ["RESULTS_KEY"])',
        'print(f"report of {sys.argv[2]}: dataset key {len(key)} bytes, results key {len(results)} bytes")',
        "",
      ].join("\n"),
    );
    writeFileSync(dataset, "");
    const steps = stepsOf("docs/policy.md", "A worked example: a data owner and an analytics team");
    const people = new Set(steps.flatMap((s) => (s.kind === "command" ? [s.who] : [])));
    assert.deepEqual([...people].sort(), ["anton", "auditor", "dora"]);
    const runs: string[] = [];
    runSession(steps, {
      cwd: work,
      env: (who) => ({ ...base, ...devEnv, PATH: `${ROOT}/bin:${base.PATH}`, CLOISTER_HOME: join(tmp, `home-${who}`) }),
      fixed: [
        ["/app/report.py", report],
        ["/data/dataset.enc", dataset],
      ],
      check(step, r) {
        if (step.command.startsWith("cloister run ")) runs.push(r.stdout);
      },
    });
    assert.equal(runs.length, 2);
    assert.equal(
      runs[0],
      `report of ${dataset}: dataset key 32 bytes, results key 32 bytes\n`,
      "granted, with the key",
    );
    assert.equal(runs[1], "", "refused once the export is withdrawn: the program never started");
  });
});
