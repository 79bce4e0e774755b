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
import { freePort } from "../helpers/net.ts";

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

test("a CAS key cut short: says how many digits it has, from the flag (exit 2) or the environment (exit 2)", async () => {
  const key = "6d123f21";
  for (const args of [
    ["run", "--tee", "sim", "--config-id", "x/y", "--cas-key", key, "--", "/bin/true"],
    ["policy", "list", "--cas-key", key],
    ["audit", "verify", "no-such-export.json", "--cas-key", key],
  ]) {
    oneLine(
      await runCli(args, { env }),
      2,
      /^cloister: --cas-key: a CAS key is 64 hex digits; this one has 8: copy the whole key that cloister dev or cloister cas start printed\n$/,
    );
  }
  for (const args of [
    ["run", "--tee", "sim", "--config-id", "x/y", "--", "/bin/true"],
    ["policy", "list"],
  ]) {
    oneLine(
      await runCli(args, { env: { ...env, CLOISTER_CAS_KEY: key } }),
      2,
      /^cloister: CLOISTER_CAS_KEY: a CAS key is 64 hex digits; this one has 8:/,
    );
  }
  // As the docs abbreviate it: the ellipsis is named.
  oneLine(
    await runCli(["policy", "list"], { env: { ...env, CLOISTER_CAS_KEY: `${key}…` } }),
    2,
    /^cloister: CLOISTER_CAS_KEY: a CAS key is 64 hex digits; this one has 8 and 1 other character \("…"\):/,
  );
});

test("no CAS at the address: the message names what to start (exit 1)", async () => {
  const port = await freePort();
  const at = { ...env, CLOISTER_CAS_ADDR: `https://127.0.0.1:${port}` };
  const created = await runCli(["identity", "create"], { env });
  assert.equal(created.code, 0, created.stderr);
  const message = new RegExp(
    `^cloister: cannot reach the CAS at https://127\\.0\\.0\\.1:${port}: ECONNREFUSED \\(nothing listens there\\): start a CAS with cloister dev \\(development\\) or cloister cas start, or point --cas or CLOISTER_CAS_ADDR at yours\\n$`,
  );
  // Pinned, and not yet pinned (the client asks for the key first), and the runtime.
  oneLine(await runCli(["policy", "list"], { env: { ...at, CLOISTER_CAS_KEY: "ab".repeat(32) } }), 1, message);
  oneLine(await runCli(["policy", "list"], { env: at }), 1, message);
  oneLine(
    await runCli(["run", "--tee", "sim", "--config-id", "x/y", "--", "/bin/true"], {
      env: { ...at, CLOISTER_CAS_KEY: "ab".repeat(32), CLOISTER_LAS_ADDR: "http://127.0.0.1:1" },
    }),
    1,
    message,
  );
});
