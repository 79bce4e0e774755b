/**
 * Active-active replicas: three real CASes (in this process, each on its own loopback port and
 * data directory, one master key) on one real PostgreSQL database (Debian's, a throwaway
 * cluster). Every replica serves every route, presents the one CAS key, and decides on the state
 * every replica wrote: compare-and-swap holds across them, a challenge issued by one is answered
 * at another and spent once for all, clients given every address move on past a replica that is
 * down, and a write retried after its answer was lost is recognised.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { expectedReportData } from "../../src/attestation/binding.ts";
import { LasProvider } from "../../src/attestation/providers/las.ts";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { type AuditExport, verifyExport } from "../../src/cas/audit.ts";
import { CasClient, type CasRequestError, policyPath } from "../../src/client/cas-client.ts";
import { loadOrCreateNodeKey, startLas } from "../../src/las/server.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { attestAs } from "../helpers/runtime.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-replicas-"));
let pg: TestPostgres;
let replicas: TestCas[];
let owner: TestIdentity;
let las: Awaited<ReturnType<typeof startLas>>;
const program = join(dir, "app.sh");
let digest: string;

const policy = (name: string, extra = "", attempt = "") => `
version: "1"
name: ${name}
${extra}security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${digest}}]
    command: [${program}]
    environment: {ATTEMPT: "${attempt}"}
    volumes: [{name: data, path: /srv/data}]
volumes: [{name: data}]
`;

const client = (i: number) => replicas[i]!.client(owner);
const key = () => replicas[0]!.running.identity.hash;

before(async () => {
  pg = await startPostgres();
  writeFileSync(program, "#!/bin/sh\n", { mode: 0o755 });
  digest = measureFile(readFileSync(program));
  owner = await makeIdentity("owner");
  const masterKeyFile = join(dir, "master.key");
  writeFileSync(masterKeyFile, randomBytes(32).toString("hex"), { mode: 0o600 });
  replicas = [];
  // One after the other: the first makes the schema and the CAS identity, the others find them
  // (their starting at once is the store contract's test).
  for (let i = 0; i < 3; i++)
    replicas.push(
      await startTestCas({ store: pg.url, masterKeyFile, admins: [owner.hash] }, mkdtempSync(join(dir, `r${i}-`))),
    );
  const { key: lasKey } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  las = await startLas({ listen: "127.0.0.1:0", key: lasKey });
  await client(0).request("POST", "/v1/las", { key: las.key });
});

after(async () => {
  await las?.close();
  for (const r of replicas ?? []) await r.stop();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("replicas on one PostgreSQL database", () => {
  test("every replica presents the one CAS key", () => {
    assert.deepEqual(
      replicas.map((r) => r.running.identity.hash),
      [key(), key(), key()],
    );
  });

  test("a policy written at one replica is read at the others; a LAS enrolled at one is trusted by all", async () => {
    const created = await client(0).request<{ hash: string }>("POST", "/v1/policies", { policy: policy("seen") });
    for (const i of [1, 2]) {
      const got = await client(i).request<{ hash: string }>("GET", policyPath("seen"));
      assert.equal(got.hash, created.hash);
    }
    for (const r of replicas) await r.running.service.sync();
    for (const r of replicas) assert.ok(r.running.service.trust.lasKeys().has(las.key));
  });

  test("20 concurrent updates naming one predecessor, spread over three replicas: exactly one wins", async () => {
    const created = await client(0).request<{ hash: string }>("POST", "/v1/policies", { policy: policy("race") });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        client(i % 3).request<{ version: number }>("PUT", policyPath("race"), {
          // Each a different change (the same change, by the same owner, is a retry: see below).
          policy: policy("race", `predecessor: ${created.hash}\n`, String(i)),
        }),
      ),
    );
    const won = outcomes.filter((o) => o.status === "fulfilled");
    assert.equal(won.length, 1, JSON.stringify(outcomes.map((o) => o.status)));
    for (const o of outcomes)
      if (o.status === "rejected") assert.equal((o.reason as CasRequestError).status, 409, String(o.reason));
    const history = await client(2).request<{ versions: unknown[] }>("GET", policyPath("race", "/history"));
    assert.equal(history.versions.length, 2);
  });

  test("a challenge issued by one replica is answered at another; its nonce is spent once across all", async () => {
    await client(0).request("POST", "/v1/policies", { policy: policy("nonce") });
    const at = (i: number) => new CasClient({ url: replicas[i]!.running.url, casKey: key() });
    const { nonce } = await at(0).request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
      config_id: "nonce/app",
    });
    const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ type: "spki", format: "der" });
    const evidence = await new LasProvider(las.url, program).evidence(
      expectedReportData(Buffer.from(nonce, "base64"), spki),
    );
    const request = {
      config_id: "nonce/app",
      nonce,
      evidence: { tee: "sim", quote: evidence.quote.toString("base64") },
      spki: spki.toString("base64"),
    };
    await at(1).request("POST", "/v1/attestation", request);
    for (const i of [2, 0, 1])
      await assert.rejects(at(i).request("POST", "/v1/attestation", request), (e: CasRequestError) => {
        assert.equal(e.status === 403 || e.status === 409, true, `${e.status} ${e.message}`);
        assert.match(e.message, /already used/);
        return true;
      });
  });

  test("two volume commits from one tag at two replicas: exactly one wins; the tag is the same everywhere", async () => {
    await client(0).request("POST", "/v1/policies", { policy: policy("vol") });
    const runtime = await attestAs({ url: replicas[0]!.running.url, casKey: key() }, las.url, program, "vol/app");
    const at = (i: number) =>
      new CasClient({
        url: replicas[i]!.running.url,
        casKey: key(),
        keyPem: runtime.keyPem,
        certificatePem: runtime.certificatePem,
      });
    const [a, b] = ["a", "b"].map((c) => c.repeat(64));
    const outcomes = await Promise.allSettled([
      at(1).request("POST", "/v1/volumes/vol/data/tag", { previous: null, next: a }),
      at(2).request("POST", "/v1/volumes/vol/data/tag", { previous: null, next: b }),
    ]);
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1, JSON.stringify(outcomes));
    const winner = outcomes[0]!.status === "fulfilled" ? a : b;
    // Asked again at a third replica after an answer was lost: recognised, not a conflict.
    await at(0).request("POST", "/v1/volumes/vol/data/tag", { previous: null, next: winner });
    for (const r of replicas) {
      await r.running.service.sync();
      const loaded = (await r.running.service.secretValues("vol"))!;
      assert.equal(r.running.service.volumeTag(loaded.record, "data"), winner);
    }
  });

  test("a create and an update retried after their answers were lost are recognised, not conflicts", async () => {
    const text = policy("retried");
    const first = await client(0).request<{ hash: string; version: number }>("POST", "/v1/policies", { policy: text });
    const again = await client(1).request<{ hash: string; version: number }>("POST", "/v1/policies", { policy: text });
    assert.deepEqual(again, first);
    const update = policy("retried", `predecessor: ${first.hash}\n`, "v2");
    const v2 = await client(1).request<{ hash: string; version: number }>("PUT", policyPath("retried"), {
      policy: update,
    });
    const v2again = await client(2).request<{ hash: string; version: number }>("PUT", policyPath("retried"), {
      policy: update,
    });
    assert.deepEqual(v2again, v2);
    assert.equal(v2.version, 2);
    // Someone else sending the same text is still told of the conflict.
    const other = await makeIdentity("other");
    await assert.rejects(
      replicas[2]!.client(other).request("POST", "/v1/policies", { policy: text }),
      (e: CasRequestError) => e.status === 409 || e.status === 403,
    );
  });

  test("the audit log exported at any replica verifies end to end, one chain", async () => {
    const exports: AuditExport[] = [];
    for (const i of [0, 1, 2]) exports.push(await client(i).request<AuditExport>("GET", "/v1/audit?since=0"));
    for (const e of exports) {
      const verdict = verifyExport(e);
      assert.ok(verdict.entries > 10, JSON.stringify(verdict));
    }
    const chains = exports.map((e) => e.entries.at(-1)?.chain);
    // Each export ends where the log ended when it was read: later ones extend earlier ones.
    const firstChains = exports[0]!.entries.map((e) => e.chain);
    for (const e of exports.slice(1))
      assert.deepEqual(
        e.entries.slice(0, firstChains.length).map((x) => x.chain),
        firstChains,
      );
    assert.equal(chains.length, 3);
  });

  test("a client given every address moves on past a replica that is down, and never on a 4xx", async () => {
    const spare = await startTestCas(
      { store: pg.url, masterKeyFile: join(dir, "master.key"), admins: [owner.hash] },
      mkdtempSync(join(dir, "spare-")),
    );
    const downUrl = spare.running.url;
    await spare.stop();
    const all = new CasClient({
      url: [downUrl, ...replicas.map((r) => r.running.url)].join(","),
      casKey: key(),
      keyPem: owner.keyPem,
      certificatePem: owner.certificatePem,
    });
    const listed = await all.request<{ policies: { name: string }[] }>("GET", "/v1/policies");
    assert.ok(listed.policies.some((p) => p.name === "seen"));
    await assert.rejects(all.request("GET", policyPath("no-such-policy")), (e: CasRequestError) => e.status === 404);
    all.close();
  });
});
