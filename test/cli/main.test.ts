/**
 * The top-level command: --version answers without loading any command group (it took half a
 * second when it loaded them all), --help lists every command.
 */
import assert from "node:assert/strict";
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
