/**
 * The CAS from the command line, as a user drives it: `cloister cas start` in its own process,
 * `cloister policy …` and `cloister audit …` against it, pinning like ssh.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startCasProcess } from "../helpers/cas.ts";
import { runCli } from "../helpers/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-cli-cas-"));
const dataDir = join(dir, "data");
const envFile = join(dir, "cas.env");
let cas: ChildProcess;
let env: Record<string, string>;
let output = "";

let alice = "";
before(async () => {
  // Alice exists first: she is the CAS's administrator.
  const created = await runCli(["identity", "create", "-o", "json"], {
    env: { CLOISTER_HOME: join(dir, "home-alice") },
  });
  assert.equal(created.code, 0, created.stderr);
  alice = JSON.parse(created.stdout).identity;
  const started = await startCasProcess([
    "--data-dir",
    dataDir,
    "--listen",
    "127.0.0.1:0",
    "--env-file",
    envFile,
    "--admin",
    alice,
  ]);
  cas = started.child;
  output = started.output();
  env = { CLOISTER_HOME: join(dir, "home-alice"), CLOISTER_CAS_ADDR: started.url, CLOISTER_CAS_KEY: started.key };
});

describe("administration", () => {
  test("--admin: the administrator enrols a LAS key, another identity is refused", async () => {
    const key = "cd".repeat(32);
    const ok = await runCli(["cas", "las", "enrol", key], { env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match((await runCli(["cas", "las", "list"], { env })).stdout, new RegExp(key));
    const bobEnv = { ...env, CLOISTER_HOME: join(dir, "home-bob-admin") };
    await runCli(["identity", "create"], { env: bobEnv });
    const refused = await runCli(["cas", "las", "enrol", "ef".repeat(32)], { env: bobEnv });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /403 forbidden.*administrators/);
  });

  test("top-level policies: the administrator creates one, an identity nobody named is refused and told who decides", async () => {
    const bobEnv = { ...env, CLOISTER_HOME: join(dir, "home-bob-admin") };
    const policy = write("top-level.yaml", 'version: "1"\nname: strangers-own\n');
    const refused = await runCli(["policy", "create", policy], { env: bobEnv });
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /^cloister: CAS refused \(403 forbidden\): not allowed to create the top-level policy strangers-own: the CAS's operator names who may \(cloister cas start --create-top-level ID, or --admin ID\)/,
    );
    const created = await runCli(["policy", "create", policy], { env });
    assert.equal(created.code, 0, created.stderr);
  });

  test("--create-top-level any stands alone; a CAS that names no creator says so at start", async () => {
    const mixed = await runCli([
      "cas",
      "start",
      "--data-dir",
      join(dir, "mixed"),
      "--listen",
      "127.0.0.1:0",
      "--create-top-level",
      "any",
      alice,
    ]);
    assert.equal(mixed.code, 1);
    assert.equal(mixed.stderr, "cloister: --create-top-level any admits every identity: name no others beside it\n");
    const closed = await startCasProcess(["--data-dir", join(dir, "closed"), "--listen", "127.0.0.1:0"]);
    closed.child.kill("SIGTERM");
    assert.match(closed.output(), /no identity may create top-level policies: name them with --create-top-level ID/);
  });
});
after(() => {
  cas.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

const write = (name: string, content: string) => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};

describe("cloister cas start", () => {
  test("prints its address and key; writes the env file; creates the master key 0600", () => {
    assert.match(output, /CAS listening on https:\/\/127\.0\.0\.1:\d+\nCAS key [0-9a-f]{64}\n/);
    assert.equal(
      readFileSync(envFile, "utf8"),
      `CLOISTER_CAS_ADDR=${env.CLOISTER_CAS_ADDR}\nCLOISTER_CAS_KEY=${env.CLOISTER_CAS_KEY}\n`,
    );
    assert.equal(statSync(join(dataDir, "master.key")).mode & 0o777, 0o600);
    assert.match(readFileSync(join(dataDir, "master.key"), "utf8"), /^[0-9a-f]{64}\n$/);
  });

  test("refuses a master key file that others can read, and a bad --listen", async () => {
    const other = join(dir, "other");
    const keyFile = join(dir, "loose.key");
    writeFileSync(keyFile, `${"ab".repeat(32)}\n`, { mode: 0o644 });
    const loose = await runCli([
      "cas",
      "start",
      "--data-dir",
      other,
      "--listen",
      "127.0.0.1:0",
      "--master-key-file",
      keyFile,
    ]);
    assert.equal(loose.code, 1);
    assert.match(loose.stderr, /readable by others.*chmod 600/);
    const listen = await runCli(["cas", "start", "--data-dir", other, "--listen", "nowhere"]);
    assert.equal(listen.code, 1);
    assert.match(listen.stderr, /--listen nowhere: expected HOST:PORT/);
  });

  test("a second CAS on a data directory in use: one line saying so, exit 1", async () => {
    const second = await runCli(["cas", "start", "--data-dir", dataDir, "--listen", "127.0.0.1:0"]);
    assert.equal(second.code, 1);
    assert.equal(second.stderr, `cloister: ${dataDir} is in use by another CAS; one CAS per data directory\n`);
  });
});

describe("pinning the CAS", () => {
  test("without a pin: prints the CAS key and how to pin it, then refuses", async () => {
    const r = await runCli(["policy", "list"], { env: { ...env, CLOISTER_CAS_KEY: "" } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`not pinned\\. Its key is\\n  ${env.CLOISTER_CAS_KEY}`));
    assert.match(r.stderr, /export CLOISTER_CAS_KEY=/);
  });

  test("a wrong pin refuses before sending anything", async () => {
    const policy = write("pinned.yaml", 'version: "1"\nname: never-sent\n');
    const r = await runCli(["policy", "create", policy, "--cas-key", "ab".repeat(32)], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has key [0-9a-f]{64}, not the pinned abab/);
    const list = await runCli(["policy", "list"], { env });
    assert.doesNotMatch(list.stdout, /never-sent/);
  });
});

describe("cloister policy against the CAS", () => {
  test("create, get, list, update (predecessor filled in), history, delete", async () => {
    const v1 = write(
      "shop.yaml",
      'version: "1"\nname: shop\nsecrets:\n  - {name: pw, kind: ascii, value: "s3cret-value"}\n',
    );
    const created = await runCli(["policy", "create", v1, "-o", "json"], { env });
    assert.equal(created.code, 0, created.stderr);
    const { name, hash, warnings } = JSON.parse(created.stdout) as {
      name: string;
      hash: string;
      warnings?: { field: string }[];
    };
    assert.equal(name, "shop");
    // No service uses pw: the CAS's answer carries the warning, and the CLI passes it on.
    assert.deepEqual(
      warnings?.map((w) => w.field),
      ["secrets[0].name"],
    );
    const checked = await runCli(["policy", "check", v1]);
    assert.equal(checked.stdout.trim(), hash, "the CAS hash is the offline hash");

    const got = await runCli(["policy", "get", "shop"], { env });
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /value: "<redacted>"/);
    assert.doesNotMatch(got.stdout, /s3cret-value/);
    assert.match(got.stdout, new RegExp(`predecessor: ${hash}`));

    const list = await runCli(["policy", "list"], { env });
    assert.match(list.stdout, new RegExp(`^shop\\t${hash}\\tv1$`, "m"));

    // Update from a file without a predecessor: the CLI fills it in.
    const v2 = write(
      "shop2.yaml",
      'version: "1"\nname: shop\nsecrets:\n  - {name: pw, kind: ascii, value: "s3cret-value"}\n  - {name: more, kind: binary}\n',
    );
    const updated = await runCli(["policy", "update", v2], { env });
    assert.equal(updated.code, 0, updated.stderr);

    // Edit what get printed (values redacted, predecessor current) and send it back: the value is kept.
    const fetched = await runCli(["policy", "get", "shop"], { env });
    const edited = write(
      "shop3.yaml",
      fetched.stdout.replace("{ name: more, kind: binary }", "{ name: more, kind: binary, size: 16 }"),
    );
    const third = await runCli(["policy", "update", edited], { env });
    assert.equal(third.code, 0, third.stderr);
    // Sending the same edit again (its answer lost, say) is recognised as done: the same version.
    const retried = await runCli(["policy", "update", edited], { env });
    assert.equal(retried.code, 0, retried.stderr);
    assert.equal(retried.stdout, third.stdout);
    // Another edit from the same, no longer current, predecessor is a conflict.
    const otherEdit = write(
      "shop4.yaml",
      fetched.stdout.replace("{ name: more, kind: binary }", "{ name: more, kind: binary, size: 24 }"),
    );
    const stale = await runCli(["policy", "update", otherEdit], { env });
    assert.equal(stale.code, 1);
    assert.match(stale.stderr, /409 conflict.*is not the current version/);

    const history = await runCli(["policy", "history", "shop", "-o", "json"], { env });
    const versions = (JSON.parse(history.stdout) as { versions: { version: number; hash: string }[] }).versions;
    assert.deepEqual(
      versions.map((v) => v.version),
      [1, 2, 3],
    );
    assert.equal(versions[0]!.hash, hash);

    const deleted = await runCli(["policy", "delete", "shop"], { env });
    assert.equal(deleted.code, 0, deleted.stderr);
    const gone = await runCli(["policy", "get", "shop"], { env });
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /404 not_found/);
  });

  test("invalid files are reported with the user's file name before anything is sent", async () => {
    const bad = write("bad.yaml", 'version: "1"\nname: bad\nsecrets: [{name: k, kind: asci}]\n');
    const r = await runCli(["policy", "create", bad], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^${bad}:3:27: secrets\\[0\\]\\.kind: `));
  });

  test("a change of attestation mode asks for --regenerate-secrets, and goes through with it", async () => {
    const text = (mode: string) =>
      `version: "1"\nname: modes\nsecurity: {attestation: {mode: ${mode}}}\nsecrets: [{name: k, kind: ascii}]\n`;
    assert.equal((await runCli(["policy", "create", write("modes.yaml", text("simulation"))], { env })).code, 0);
    const toNone = write("modes2.yaml", text("none"));
    const refused = await runCli(["policy", "update", toNone], { env });
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /CAS refused \(409 regenerates_secrets\): changing attestation mode simulation -> none .*discarding k: confirm with cloister policy update --regenerate-secrets/,
    );
    const consented = await runCli(["policy", "update", toNone, "--regenerate-secrets"], { env });
    assert.equal(consented.code, 0, consented.stderr);
  });

  test("multi-party update with signatures made by `cloister policy sign`", async () => {
    const bobEnv = { ...env, CLOISTER_HOME: join(dir, "home-bob") };
    await runCli(["identity", "create"], { env: bobEnv });
    const alice = (await runCli(["identity", "show"], { env })).stdout.trim();
    const bob = (await runCli(["identity", "show"], { env: bobEnv })).stdout.trim();
    const access = `access_policy:\n  read: [ANY]\n  update: [{require_all: [${alice}, ${bob}]}]\n`;
    const v1 = write("dual.yaml", `version: "1"\nname: dual\n${access}`);
    assert.equal((await runCli(["policy", "create", v1], { env })).code, 0);
    const v2 = write("dual2.yaml", `version: "1"\nname: dual\n${access}secrets: [{name: k, kind: binary}]\n`);
    const alone = await runCli(["policy", "update", v2], { env });
    assert.equal(alone.code, 1);
    assert.match(alone.stderr, /403/);
    const signature = await runCli(["policy", "sign", v2], { env: bobEnv });
    assert.equal(signature.code, 0, signature.stderr);
    assert.match(signature.stdout, /^cloister-sig-v1\./);
    const together = await runCli(["policy", "update", v2, "--signature", signature.stdout.trim()], { env });
    assert.equal(together.code, 0, together.stderr);
  });
});

describe("cloister audit", () => {
  test("export verifies; every kind of tampering with the export is refused", async () => {
    const file = join(dir, "audit.json");
    const exported = await runCli(["audit", "export", "--out", file], { env });
    assert.equal(exported.code, 0, exported.stderr);
    const ok = await runCli(["audit", "verify", file], { env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^ok: \d+ entries, \d+ checkpoints?, signed through entry \d+ by CAS key [0-9a-f]{64}/);

    type Doc = { entries: Record<string, unknown>[]; checkpoints: Record<string, unknown>[] };
    const doc = JSON.parse(readFileSync(file, "utf8")) as Doc;
    assert.ok(doc.entries.length >= 5);
    const variants: Record<string, (d: Doc) => void> = {
      modified: (d) => {
        const e = d.entries.find((x) => "entry" in x) as { entry: { reason: string } };
        e.entry.reason += " (edited)";
      },
      reordered: (d) => {
        [d.entries[1], d.entries[2]] = [d.entries[2]!, d.entries[1]!];
      },
      inserted: (d) => {
        d.entries.splice(2, 0, { ...d.entries[1]! });
      },
      deleted: (d) => {
        d.entries.splice(2, 1);
      },
      "truncated after a signed checkpoint": (d) => {
        d.entries.pop();
      },
      "checkpoint signature": (d) => {
        const c = d.checkpoints[d.checkpoints.length - 1]!;
        c.time = "2000-01-01T00:00:00.000Z";
      },
    };
    for (const [what, tamper] of Object.entries(variants)) {
      const copy = JSON.parse(JSON.stringify(doc)) as Doc;
      tamper(copy);
      const path = join(dir, `audit-${what.replaceAll(" ", "-")}.json`);
      writeFileSync(path, JSON.stringify(copy));
      const r = await runCli(["audit", "verify", path], { env });
      assert.equal(r.code, 1, `${what}: ${r.stdout}`);
      assert.match(r.stderr, /^cloister: .*audit-/, what);
    }
    // --since exports the tail, anchored to the chain hash before it: it verifies on its own.
    const tail = join(dir, "audit-tail.json");
    assert.equal((await runCli(["audit", "export", "--since", "3", "--out", tail], { env })).code, 0);
    const tailDoc = JSON.parse(readFileSync(tail, "utf8")) as { entries: { seq: number }[] };
    assert.equal(tailDoc.entries[0]!.seq, 4);
    const tailOk = await runCli(["audit", "verify", tail], { env });
    assert.equal(tailOk.code, 0, tailOk.stderr);

    const wrongPin = await runCli(["audit", "verify", file, "--cas-key", "cd".repeat(32)], { env });
    assert.equal(wrongPin.code, 1);
    assert.match(wrongPin.stderr, /not the pinned/);
  });

  test("another identity sees the entries of policies it cannot read only as digests", async () => {
    const carolEnv = { ...env, CLOISTER_HOME: join(dir, "home-carol") };
    await runCli(["identity", "create"], { env: carolEnv });
    const r = await runCli(["audit", "export"], { env: carolEnv });
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { entries: { redacted?: boolean; entry?: { target: string } }[] };
    // "shop" (readable by its creator only, now deleted) appears as digests; "dual" (read: ANY) in full.
    assert.ok(doc.entries.some((e) => e.redacted === true));
    assert.ok(!doc.entries.some((e) => e.entry?.target === "shop"));
    assert.ok(doc.entries.some((e) => e.entry?.target === "dual"));
    const file = join(dir, "carol-audit.json");
    writeFileSync(file, r.stdout);
    const verified = await runCli(["audit", "verify", file], { env: carolEnv });
    assert.equal(verified.code, 0, verified.stderr);
  });
});
