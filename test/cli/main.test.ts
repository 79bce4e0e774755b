/**
 * The top-level command: --version answers without loading any command group (it took half a
 * second when it loaded them all), --help lists every command.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { type Io, processIo } from "../../src/cli/io.ts";
import { buildProgram, VERSION } from "../../src/cli/main.ts";
import { runCli } from "../helpers/cli.ts";

const quiet: Io = { ...processIo, stdout: () => {}, stderr: () => {} };

test("--version and -V print the version, exit 0", async () => {
  for (const flag of ["--version", "-V"]) {
    const r = await runCli([flag]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${VERSION}\n`);
  }
});

test("--version registers no command; --help, a bare call and a command load what they need", async () => {
  assert.deepEqual((await buildProgram(quiet, ["--version"])).commands, []);
  const all = (await buildProgram(quiet, ["--help"])).commands.map((c) => c.name());
  for (const name of ["identity", "policy", "cas", "dev", "las", "audit", "attest", "run", "fs"])
    assert.ok(all.includes(name), `--help lists ${name}: ${all.join(" ")}`);
  assert.deepEqual(
    (await buildProgram(quiet, [])).commands.map((c) => c.name()),
    all,
  );
  assert.deepEqual(
    (await buildProgram(quiet, ["run", "--version"])).commands.map((c) => c.name()),
    ["run"],
  );
});

test("commander's usage errors take the CLI's own prefix, at every level, and exit 2", async () => {
  for (const argv of [
    ["nosuch"],
    ["run", "--bogus"],
    ["run", "--config-id", "a/b", "--tee", "bogus"],
    ["policy", "check"],
  ]) {
    const r = await runCli(argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.stderr, /^cloister: \S/, `${argv.join(" ")}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /^error: /m, argv.join(" "));
    assert.match(r.stderr, /\(run with --help for usage\)/);
  }
});

test("bin/cloister finds its code however it is started: by path, relative, through absolute and relative links", () => {
  const bin = join(import.meta.dirname, "..", "..", "bin");
  const links = mkdtempSync(join(tmpdir(), "cloister-wrapper-"));
  try {
    symlinkSync(join(bin, "cloister"), join(links, "absolute"));
    symlinkSync(relative(links, join(bin, "cloister")), join(links, "relative"));
    const ways: [string, string[], string?][] = [
      [join(bin, "cloister"), []],
      ["./cloister", [], bin],
      ["/bin/sh", ["cloister"], bin],
      [join(links, "absolute"), []],
      [join(links, "relative"), []],
      ["./relative", [], links],
    ];
    for (const [file, args, cwd] of ways) {
      const r = spawnSync(file, [...args, "--version"], { cwd, encoding: "utf8" });
      assert.equal(r.status, 0, `${file} ${args.join(" ")} in ${cwd ?? "."}: ${r.stderr}`);
      assert.equal(r.stdout, `${VERSION}\n`);
    }
  } finally {
    rmSync(links, { recursive: true, force: true });
  }
});
