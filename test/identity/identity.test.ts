/** `cloister identity create|show`: keys, certificates, file permissions, refusals. */
import assert from "node:assert/strict";
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { runCli } from "../helpers/cli.ts";

const homes: string[] = [];
const freshHome = () => {
  const home = mkdtempSync(join(tmpdir(), "cloister-home-"));
  homes.push(home);
  return home;
};
after(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});

describe("identity", () => {
  test("create makes a P-256 key (0600) and a matching self-signed certificate (0600) in a 0700 directory", async () => {
    const home = freshHome();
    const r = await runCli(["identity", "create", "--output", "json"], { env: { CLOISTER_HOME: home } });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { identity: string; name: string; certificate: string };
    assert.equal(out.name, "default");
    assert.equal(out.certificate, join(home, "identities", "default", "certificate.pem"));
    const keyPath = join(home, "identities", "default", "key.pem");
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.equal(statSync(out.certificate).mode & 0o777, 0o600);
    assert.equal(statSync(join(home, "identities", "default")).mode & 0o777, 0o700);
    const key = createPrivateKey(readFileSync(keyPath));
    assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    const cert = new X509Certificate(readFileSync(out.certificate));
    assert.ok(cert.checkPrivateKey(key));
    assert.ok(cert.verify(cert.publicKey), "self-signed");
    // The identity is the SHA-256 of the SPKI DER, in lowercase hex.
    const spki = createPublicKey(key).export({ type: "spki", format: "der" });
    assert.equal(out.identity, createHash("sha256").update(spki).digest("hex"));
    assert.match(out.identity, /^[0-9a-f]{64}$/);
  });

  test("show prints the same hash; JSON has identity, name and certificate", async () => {
    const home = freshHome();
    const created = await runCli(["identity", "create", "--name", "alice", "-o", "json"], {
      env: { CLOISTER_HOME: home },
    });
    const shown = await runCli(["identity", "show", "--name", "alice"], { env: { CLOISTER_HOME: home } });
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(shown.stdout.trim(), JSON.parse(created.stdout).identity);
    const json = await runCli(["identity", "show", "--name", "alice", "--output", "json"], {
      env: { CLOISTER_HOME: home },
    });
    assert.deepEqual(Object.keys(JSON.parse(json.stdout)).sort(), ["certificate", "identity", "name"]);
    assert.deepEqual(JSON.parse(json.stdout), JSON.parse(created.stdout));
  });

  test("create refuses to overwrite without --force, and --force makes a new key", async () => {
    const home = freshHome();
    const env = { CLOISTER_HOME: home };
    const first = JSON.parse((await runCli(["identity", "create", "-o", "json"], { env })).stdout).identity;
    const again = await runCli(["identity", "create"], { env });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists.*--force/);
    assert.equal((await runCli(["identity", "show"], { env })).stdout.trim(), first, "the old key is untouched");
    const forced = await runCli(["identity", "create", "--force", "-o", "json"], { env });
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(JSON.parse(forced.stdout).identity, first);
    assert.equal(statSync(join(home, "identities", "default", "key.pem")).mode & 0o777, 0o600);
  });

  test("show without an identity says how to create one", async () => {
    const r = await runCli(["identity", "show", "--name", "bob"], { env: { CLOISTER_HOME: freshHome() } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no identity "bob".*cloister identity create --name bob/);
  });

  test("a key readable by others is refused", async () => {
    const home = freshHome();
    await runCli(["identity", "create"], { env: { CLOISTER_HOME: home } });
    chmodSync(join(home, "identities", "default", "key.pem"), 0o644);
    const r = await runCli(["identity", "show"], { env: { CLOISTER_HOME: home } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /readable by others.*chmod 600/);
  });

  test("bad names are refused, naming the rule", async () => {
    for (const name of ["../escape", ".hidden", "a/b", ""]) {
      const r = await runCli(["identity", "create", "--name", name], { env: { CLOISTER_HOME: freshHome() } });
      assert.equal(r.code, 1, name);
      assert.match(r.stderr, /identity name .* is not valid/, name);
    }
  });

  test("CLOISTER_HOME defaults to ~/.cloister", async () => {
    const home = freshHome();
    const r = await runCli(["identity", "create", "-o", "json"], { env: { CLOISTER_HOME: "", HOME: home } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).certificate, join(home, ".cloister", "identities", "default", "certificate.pem"));
  });
});
