/** `cloister dev`, `cloister las start`, `cloister cas las` and `cloister collateral` as a user runs them. */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { BIN, runCli } from "../helpers/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-dev-test-"));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});
const VECTORS = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors");

/** Run a long-lived cloister command until `ready` matches its output. */
function spawnUntil(args: string[], ready: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(process.execPath, [BIN, "--", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  child.stderr!.on("data", (d: Buffer) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${out}`)), 20_000);
    child.on("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
    const poll = setInterval(() => {
      if (ready.test(out)) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve({ child, out: () => out });
      }
    }, 50);
  });
}

describe("cloister dev", () => {
  test("starts a CAS and an enrolled LAS, prints the exports, writes the env file, cleans up", async () => {
    const envFile = join(dir, "dev.env");
    const dev = await spawnUntil(["dev", "--port", "0", "--las-port", "0", "--env-file", envFile], /Ctrl-C stops/);
    const out = dev.out();
    assert.match(out, /NOT for production/);
    const store = /are in\n {2}(\S+) \(removed on exit\)/.exec(out)![1]!;
    const env = Object.fromEntries(
      readFileSync(envFile, "utf8")
        .trim()
        .split("\n")
        .map((l) => l.split("=") as [string, string]),
    );
    assert.deepEqual(Object.keys(env), ["CLOISTER_CAS_ADDR", "CLOISTER_CAS_KEY", "CLOISTER_LAS_ADDR"]);
    assert.ok(out.includes(`export CLOISTER_LAS_ADDR=${env.CLOISTER_LAS_ADDR}`));
    const userEnv = { ...env, CLOISTER_HOME: join(dir, "home") };
    assert.equal((await runCli(["identity", "create"], { env: userEnv })).code, 0);
    const las = await runCli(["cas", "las", "list"], { env: userEnv });
    assert.match(las.stdout, /^[0-9a-f]{64}\n$/, las.stderr);
    const imported = await runCli(
      [
        "collateral",
        "import",
        join(VECTORS, "intel-dcap", "sgx_quote_collateral.json"),
        join(VECTORS, "amd-snp", "vcek_milan.der"),
      ],
      { env: userEnv },
    );
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /^dcap SGX FMSPC 00A067110000 .*\namd VCEK Milan chip /);
    const bad = await runCli(["collateral", "import", join(VECTORS, "amd-snp", "report_milan.hex")], { env: userEnv });
    assert.equal(bad.code, 1);
    dev.child.kill("SIGINT");
    await new Promise((r) => dev.child.on("exit", r));
    assert.equal(existsSync(store), false, "the throw-away store is removed");
  });
});

describe("cloister las start", () => {
  test("makes a node key 0600 and prints its hash", async () => {
    const keyFile = join(dir, "las", "node-key.pem");
    const las = await spawnUntil(
      ["las", "start", "--listen", "127.0.0.1:0", "--key-file", keyFile],
      /LAS key [0-9a-f]{64}/,
    );
    assert.match(las.out(), /SIMULATION: no hardware protection/);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    las.child.kill("SIGTERM");
  });
});
