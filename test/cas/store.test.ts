/**
 * The CAS's store: concurrent updates, restarts, tampering with the database, and canary
 * secrets that must appear nowhere on disk or in logs.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, describe, test } from "node:test";
import { chainHash, entryDigest } from "../../src/cas/audit.ts";
import { type CasRequestError, policyPath } from "../../src/client/cas-client.ts";
import { makeIdentity, startCasProcess, startTestCas, type TestCas } from "../helpers/cas.ts";

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function fresh(): Promise<TestCas> {
  const cas = await startTestCas();
  cleanups.push(() => cas.dispose());
  return cas;
}

const text = (name: string, extra = "") => `version: "1"\nname: ${name}\n${extra}`;

describe("concurrency", () => {
  test("50 concurrent updates naming the same predecessor: exactly one wins", async () => {
    const cas = await fresh();
    const alice = await makeIdentity("alice");
    const c = cas.client(alice);
    const v1 = await c.request<{ hash: string }>("POST", "/v1/policies", { policy: text("race") });
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        c.request("PUT", policyPath("race"), {
          policy: text("race", `predecessor: ${v1.hash}\nsecrets: [{name: s, kind: binary, size: ${i + 1}}]\n`),
        }),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r) => r.status === "rejected");
    assert.equal(won.length, 1);
    assert.equal(lost.length, 49);
    for (const l of lost) assert.equal(((l as PromiseRejectedResult).reason as CasRequestError).status, 409);
    const history = await c.request<{ versions: unknown[] }>("GET", policyPath("race", "/history"));
    assert.equal(history.versions.length, 2);
  });
});

describe("restart", () => {
  test("policies, history, secret values and the CAS key survive a restart", async () => {
    let cas = await fresh();
    const alice = await makeIdentity("alice");
    const casKey = cas.running.identity.hash;
    const v1 = await cas.client(alice).request<{ hash: string }>("POST", "/v1/policies", {
      policy: text("keep", "secrets:\n  - {name: k, kind: binary}\n  - {name: ca, kind: x509-ca}\n"),
    });
    const v2 = await cas.client(alice).request<{ hash: string }>("PUT", policyPath("keep"), {
      policy: text(
        "keep",
        `predecessor: ${v1.hash}\nsecrets:\n  - {name: k, kind: binary}\n  - {name: ca, kind: x509-ca}\n  - {name: more, kind: ascii}\n`,
      ),
    });
    const before = (await cas.running.service.secretValues("keep"))!.values;
    cas = await cas.restart();
    const restarted = cas;
    cleanups.push(() => restarted.stop());
    assert.equal(cas.running.identity.hash, casKey, "the CAS key is kept");
    const got = await cas.client(alice).request<{ hash: string; version: number }>("GET", policyPath("keep"));
    assert.equal(got.hash, v2.hash);
    assert.equal(got.version, 2);
    const history = await cas
      .client(alice)
      .request<{ versions: { hash: string }[] }>("GET", policyPath("keep", "/history"));
    assert.deepEqual(
      history.versions.map((v) => v.hash),
      [v1.hash, v2.hash],
    );
    const afterRestart = (await cas.running.service.secretValues("keep"))!.values;
    assert.deepEqual(afterRestart, before);
    // Generated values were kept across the update too (DESIGN.md §4).
    assert.ok(afterRestart.k && afterRestart.ca && afterRestart.more);
  });
});

describe("tampering with the database", () => {
  async function withTwoPolicies() {
    const cas = await fresh();
    const alice = await makeIdentity("alice");
    await cas
      .client(alice)
      .request("POST", "/v1/policies", { policy: text("a", "secrets: [{name: k, kind: binary}]\n") });
    await cas
      .client(alice)
      .request("POST", "/v1/policies", { policy: text("b", "secrets: [{name: k, kind: binary}]\n") });
    return { cas, alice };
  }
  const db = (cas: TestCas) => new DatabaseSync(join(cas.dataDir, "cas.db"));
  const refused = async (cas: TestCas, who: Awaited<ReturnType<typeof makeIdentity>>, name: string) => {
    await assert.rejects(cas.client(who).request("GET", policyPath(name)), (e: CasRequestError) => {
      assert.equal(e.status, 500);
      assert.equal(e.code, "store_tampered");
      return true;
    });
  };
  const tamperAudited = (cas: TestCas, name: string) => {
    const d = db(cas);
    const rows = d.prepare("SELECT entry FROM audit").all() as { entry: string }[];
    d.close();
    return rows
      .map((r) => JSON.parse(r.entry))
      .some((e) => e.action === "store.tamper" && e.target === name && e.outcome === "refused");
  };

  test("a flipped byte in a sealed policy is detected, refused and audited; the other policy still serves", async () => {
    const { cas, alice } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    const row = d.prepare("SELECT sealed FROM policies WHERE name = 'a'").get() as { sealed: Uint8Array };
    const sealed = Buffer.from(row.sealed);
    sealed[sealed.length >> 1]! ^= 0x01;
    d.prepare("UPDATE policies SET sealed = ? WHERE name = 'a'").run(sealed);
    d.close();
    const again = await cas.restart();
    cleanups.push(() => again.stop());
    await refused(again, alice, "a");
    await again.client(alice).request("GET", policyPath("b"));
    const list = await again.client(alice).request<{ policies: { name: string }[] }>("GET", "/v1/policies");
    assert.deepEqual(
      list.policies.map((p) => p.name),
      ["b"],
    );
    await again.stop();
    assert.ok(tamperAudited(again, "a"));
  });

  test("secrets kept open in memory follow updates, and do not hide a row altered under a running CAS", async () => {
    const cas = await fresh();
    const alice = await makeIdentity("alice");
    const c = cas.client(alice);
    const v1 = await c.request<{ hash: string }>("POST", "/v1/policies", {
      policy: text("live", "secrets: [{name: pw, kind: ascii, value: first-value}]\n"),
    });
    const value = async () => ((await cas.running.service.secretValues("live"))!.values.pw as { value: string }).value;
    assert.equal(await value(), "first-value");
    await c.request("PUT", policyPath("live"), {
      policy: text("live", `predecessor: ${v1.hash}\nsecrets: [{name: pw, kind: ascii, value: second-value}]\n`),
    });
    assert.equal(await value(), "second-value", "the new version's secrets, not the ones opened before");
    // A byte flipped in the current secrets row while the CAS runs (and holds them open).
    const d = db(cas);
    const row = d.prepare("SELECT sealed FROM secrets WHERE name = 'live' AND version = 2").get() as {
      sealed: Uint8Array;
    };
    const sealed = Buffer.from(row.sealed);
    sealed[sealed.length >> 1]! ^= 0x01;
    d.prepare("UPDATE secrets SET sealed = ? WHERE name = 'live' AND version = 2").run(sealed);
    d.close();
    await assert.rejects(
      () => value(),
      (e: CasRequestError) => e.code === "store_tampered",
    );
    assert.ok(tamperAudited(cas, "live"));
  });

  test("a flipped byte in a wrapped data key is detected", async () => {
    const { cas, alice } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    const row = d.prepare("SELECT wrapped_key FROM policies WHERE name = 'b'").get() as { wrapped_key: Uint8Array };
    const wrapped = Buffer.from(row.wrapped_key);
    wrapped[3]! ^= 0x80;
    d.prepare("UPDATE policies SET wrapped_key = ? WHERE name = 'b'").run(wrapped);
    d.close();
    const again = await cas.restart();
    cleanups.push(() => again.stop());
    await refused(again, alice, "b");
  });

  test("two records swapped between policies are detected", async () => {
    const { cas, alice } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    const a = d.prepare("SELECT version, wrapped_key, sealed FROM policies WHERE name = 'a'").get() as Record<
      string,
      Uint8Array
    >;
    const b = d.prepare("SELECT version, wrapped_key, sealed FROM policies WHERE name = 'b'").get() as Record<
      string,
      Uint8Array
    >;
    const set = d.prepare("UPDATE policies SET wrapped_key = ?, sealed = ? WHERE name = ?");
    set.run(b.wrapped_key!, b.sealed!, "a");
    set.run(a.wrapped_key!, a.sealed!, "b");
    d.close();
    const again = await cas.restart();
    cleanups.push(() => again.stop());
    await refused(again, alice, "a");
    await refused(again, alice, "b");
  });

  test("a policy record restored from an older copy of the database is detected", async () => {
    const cas = await fresh();
    const alice = await makeIdentity("alice");
    const c = cas.client(alice);
    const v1 = await c.request<{ hash: string }>("POST", "/v1/policies", {
      policy: text("old", "access_policy: {read: [ANY]}\n"),
    });
    await cas.stop();
    const copy = mkdtempSync(join(tmpdir(), "cloister-old-copy-"));
    cleanups.push(() => rmSync(copy, { recursive: true, force: true }));
    for (const f of readdirSync(cas.dataDir)) copyFileSync(join(cas.dataDir, f), join(copy, f));
    const running = await cas.restart();
    // v2 tightens who may read; restoring v1 would silently reopen it.
    await running.client(alice).request("PUT", policyPath("old"), { policy: text("old", `predecessor: ${v1.hash}\n`) });
    await running.stop();
    const oldDb = new DatabaseSync(join(copy, "cas.db"));
    const oldRow = oldDb
      .prepare("SELECT version, wrapped_key, sealed FROM policies WHERE name = 'old'")
      .get() as Record<string, unknown>;
    const oldSecrets = oldDb.prepare("SELECT version, sealed FROM secrets WHERE name = 'old'").get() as Record<
      string,
      unknown
    >;
    oldDb.close();
    const d = db(cas);
    d.prepare("UPDATE policies SET version = ?, wrapped_key = ?, sealed = ? WHERE name = 'old'").run(
      oldRow.version as number,
      oldRow.wrapped_key as Uint8Array,
      oldRow.sealed as Uint8Array,
    );
    d.prepare("INSERT OR REPLACE INTO secrets (name, version, sealed) VALUES ('old', ?, ?)").run(
      oldSecrets.version as number,
      oldSecrets.sealed as Uint8Array,
    );
    d.close();
    const again = await cas.restart();
    cleanups.push(() => again.stop());
    await refused(again, alice, "old");
    await again.stop();
    assert.ok(tamperAudited(again, "old"));
  });

  test("a policy deleted behind the CAS's back is detected", async () => {
    const { cas, alice } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    d.prepare("DELETE FROM policies WHERE name = 'a'").run();
    d.close();
    const again = await cas.restart();
    cleanups.push(() => again.stop());
    await refused(again, alice, "a");
  });

  test("an altered audit entry stops the CAS from starting", async () => {
    const { cas } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    d.prepare("UPDATE audit SET entry = replace(entry, '\"created\"', '\"created!\"') WHERE seq = 1").run();
    d.close();
    await assert.rejects(cas.restart(), /audit log fails verification: audit entry 1 was altered/);
  });

  test("a deleted audit entry stops the CAS from starting", async () => {
    const { cas } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    d.prepare("DELETE FROM audit WHERE seq = 1").run();
    d.close();
    await assert.rejects(cas.restart(), /audit entry 1 is missing/);
  });

  test("an appended audit entry with a correct chain hash but no MAC key is refused", async () => {
    const { cas } = await withTwoPolicies();
    await cas.stop();
    const d = db(cas);
    const last = d.prepare("SELECT seq, chain FROM audit ORDER BY seq DESC LIMIT 1").get() as {
      seq: number;
      chain: string;
    };
    const entry = JSON.stringify({
      action: "policy.delete",
      actor: "x",
      outcome: "granted",
      policy_hash: null,
      reason: "",
      seq: last.seq + 1,
      target: "a",
      time: "t",
    });
    const chain = chainHash(last.chain, entryDigest(entry));
    d.prepare("INSERT INTO audit (seq, entry, chain, mac) VALUES (?, ?, ?, ?)").run(
      last.seq + 1,
      entry,
      chain,
      "00".repeat(32),
    );
    d.close();
    await assert.rejects(cas.restart(), /audit entry 3 was not written by this CAS/);
  });
});

describe("canary secrets", () => {
  test("explicit values appear nowhere in the database, the WAL, the logs or the audit log", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cloister-canary-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const asciiCanary = "CanaryAscii-7d1f0c2e9b";
    const binaryCanary = Buffer.from("c0ffee00deadbeef1337cafe42424242", "hex");
    // A real CAS process with request logging on, so that its logs can be searched too.
    const alice = await makeIdentity("alice");
    const started = await startCasProcess([
      "--data-dir",
      dir,
      "--listen",
      "127.0.0.1:0",
      "--log",
      "--create-top-level",
      alice.hash,
    ]);
    const child = started.child;
    const { CasClient } = await import("../../src/client/cas-client.ts");
    const c = new CasClient({
      url: started.url,
      casKey: started.key,
      keyPem: alice.keyPem,
      certificatePem: alice.certificatePem,
    });
    const policy = (extra: string) =>
      text(
        "canary",
        `${extra}secrets:\n  - {name: pw, kind: ascii, value: "${asciiCanary}"}\n  - {name: bin, kind: binary, value: ${binaryCanary.toString("hex")}}\n`,
      );
    const v1 = await c.request<{ hash: string }>("POST", "/v1/policies", { policy: policy("") });
    await c.request("PUT", policyPath("canary"), { policy: policy(`predecessor: ${v1.hash}\n`) });
    // Failed requests carrying the canary must not leak it either.
    await assert.rejects(c.request("POST", "/v1/policies", { policy: policy("") }), { status: 409 });
    await assert.rejects(c.request("POST", "/v1/policies", { policy: `${policy("")}bogus: 1\n` }), { status: 400 });
    const got = await c.request<{ policy: string }>("GET", policyPath("canary"));
    const audit = JSON.stringify(await c.request("GET", "/v1/audit"));
    // Read the files while the CAS runs (the WAL holds the latest writes) and again after it stops.
    const whileRunning = Object.fromEntries(
      readdirSync(dir).map((f) => [`${f} (while running)`, readFileSync(join(dir, f))]),
    );
    assert.ok(
      Object.keys(whileRunning).some((f) => f.startsWith("cas.db-wal")),
      "the WAL was searched",
    );
    child.kill("SIGTERM");
    await new Promise((r) => child.on("exit", r));

    const forms = (bytes: Buffer): string[] => {
      const out = [bytes.toString("hex"), bytes.toString("hex").toUpperCase()];
      // base64 of the value at each of the three alignments it can take inside a longer blob.
      for (let pad = 0; pad < 3; pad++) {
        const b64 = Buffer.concat([Buffer.alloc(pad), bytes]).toString("base64");
        out.push(b64.slice(Math.ceil((pad * 4) / 3) + 1, -3));
        const b64url = Buffer.concat([Buffer.alloc(pad), bytes]).toString("base64url");
        out.push(b64url.slice(Math.ceil((pad * 4) / 3) + 1, -3));
      }
      return out;
    };
    const needles = [asciiCanary, ...forms(Buffer.from(asciiCanary)), ...forms(binaryCanary)];
    const haystacks: Record<string, Buffer> = {
      ...whileRunning,
      logs: Buffer.from(started.output()),
      "policy get": Buffer.from(got.policy),
      "audit export": Buffer.from(audit),
    };
    for (const f of readdirSync(dir)) haystacks[f] = readFileSync(join(dir, f));
    assert.ok(Object.keys(haystacks).includes("cas.db"), "the database file was searched");
    for (const [where, hay] of Object.entries(haystacks)) {
      const asText = hay.toString("latin1");
      for (const n of needles) assert.ok(!asText.includes(n), `canary form ${n} found in ${where}`);
      assert.ok(!hay.includes(binaryCanary), `raw binary canary found in ${where}`);
    }
    assert.match(got.policy, /value: "<redacted>"/);
    assert.match(started.output(), /"url":"\/v1\/policies"/, "the CAS logged requests");
  });
});
