/**
 * The errors a new user meets first, through the real binary: each is one line that says what
 * to do, and a usage error exits 2.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type CliResult, runCli } from "../helpers/cli.ts";

const home = mkdtempSync(join(tmpdir(), "cloister-first-errors-"));
after(() => rmSync(home, { recursive: true, force: true }));
// Nothing from the caller's shell: no CAS, LAS or pin unless a test gives one.
const env = { CLOISTER_HOME: home, CLOISTER_CAS_ADDR: "", CLOISTER_CAS_KEY: "", CLOISTER_LAS_ADDR: "" };

/** Exit `code` with exactly one line on stderr, matching `message`. */
function oneLine(r: CliResult, code: number, message: RegExp): void {
  assert.equal(r.code, code, r.stderr);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
  assert.match(r.stderr, message);
}

test("cloister run --tee sim without the program after --: a usage error that shows where it goes", async () => {
  const r = await runCli(["run", "--tee", "sim", "--config-id", "x/y"], { env });
  oneLine(
    r,
    2,
    /^cloister: .*give the program after --: cloister run --config-id x\/y --tee sim -- \/usr\/bin\/redis-server/,
  );
});
