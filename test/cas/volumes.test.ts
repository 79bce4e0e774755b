/**
 * Volume tags in the CAS: the configuration carries each volume's key and expected tag; only a
 * runtime holding a service certificate of a service that mounts the volume may commit, by
 * compare-and-swap; tags survive a restart (they are rebuilt from the audit log); a newly
 * declared tag in the policy starts the volume over.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { type CasClient, policyPath } from "../../src/client/cas-client.ts";
import { loadOrCreateNodeKey, type RunningLas, startLas } from "../../src/las/server.ts";
import { makeIdentity, refusedWith, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";
import { attestAs } from "../helpers/runtime.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-cas-volumes-"));
const program = join(dir, "app.sh");
let cas: TestCas;
let las: RunningLas;
let owner: TestIdentity;
const T = (c: string) => c.repeat(64);

const policy = (name: string, declaredTag = "") => `version: "1"
name: ${name}
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${measureFile(Buffer.from("#!/bin/sh\n"))}}]
    command: [${program}]
    volumes: [{name: data, path: /srv/data}, {name: scratch, path: /srv/scratch}, {name: shipped, path: /srv/shipped}]
  - name: other
    measurements: [{tee: sim, digest: ${measureFile(Buffer.from("#!/bin/sh\n"))}}]
    command: [${program}]
volumes:
  - {name: data}
  - {name: scratch, update_policy: ephemeral}
  - {name: shipped, key: shipped_key${declaredTag ? `, tag: ${declaredTag}` : ""}}
secrets:
  - {name: shipped_key, kind: binary, value: ${"ab".repeat(32)}}
`;

before(async () => {
  writeFileSync(program, "#!/bin/sh\n", { mode: 0o755 });
  owner = await makeIdentity("owner");
  cas = await startTestCas({ admins: [owner.hash] });
  const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  las = await startLas({ listen: "127.0.0.1:0", key });
  await cas.client(owner).request("POST", "/v1/las", { key: las.key });
  await cas.client(owner).request("POST", "/v1/policies", { policy: policy("vols") });
  await cas.client(owner).request("POST", "/v1/policies", { policy: policy("elsewhere") });
});
after(async () => {
  await las.close();
  await cas.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const attest = (configId: string) =>
  attestAs({ url: cas.running.url, casKey: cas.running.identity.hash }, las.url, program, configId);

const commit = (client: CasClient, policyName: string, volume: string, previous: string | null, next: string) =>
  client.request("POST", `/v1/volumes/${encodeURIComponent(policyName)}/${volume}/tag`, { previous, next });

const refused = refusedWith;

describe("volumes in the configuration", () => {
  test("each mounted volume with its key, expected tag and update policy; a generated key stays the same", async () => {
    const { config } = await attest("vols/app");
    const byName = Object.fromEntries(config.volumes.map((v) => [v.name, v]));
    assert.deepEqual(Object.keys(byName).sort(), ["data", "scratch", "shipped"]);
    assert.match(byName.data!.key, /^[0-9a-f]{64}$/);
    assert.equal(byName.data!.tag, null, "a fresh volume");
    assert.equal(byName.data!.path, "/srv/data");
    assert.equal(byName.scratch!.update_policy, "ephemeral");
    assert.equal(byName.shipped!.key, "ab".repeat(32), "the key the policy names");
    const again = await attest("vols/app");
    assert.equal(again.config.volumes.find((v) => v.name === "data")!.key, byName.data!.key);
    assert.deepEqual((await attest("vols/other")).config.volumes, [], "a service sees only its own mounts");
  });
});

describe("commits", () => {
  test("compare-and-swap: a fork's second commit is refused; the tag survives a restart", async () => {
    const first = await attest("vols/app");
    const second = await attest("vols/app");
    await commit(first.client, "vols", "data", null, T("1"));
    await refused(
      commit(second.client, "vols", "data", null, T("2")),
      409,
      /another runtime committed first \(a fork\)/,
    );
    await commit(second.client, "vols", "data", T("1"), T("2"));
    assert.equal((await attest("vols/app")).config.volumes.find((v) => v.name === "data")!.tag, T("2"));
    cas = await cas.restart();
    const after = await attest("vols/app");
    assert.equal(after.config.volumes.find((v) => v.name === "data")!.tag, T("2"), "rebuilt from the audit log");
    await refused(commit(after.client, "vols", "data", T("1"), T("3")), 409, /is at 2{64}, not 1{64}/);
  });

  test("who may commit: the service certificate of a service that mounts the volume, nothing else", async () => {
    const other = await attest("vols/other");
    await refused(
      commit(other.client, "vols", "data", null, T("4")),
      403,
      /no service of vols named by the certificate mounts volume data/,
    );
    const foreign = await attest("elsewhere/app");
    await refused(
      commit(foreign.client, "vols", "data", null, T("4")),
      403,
      /not a current service certificate of vols/,
    );
    await refused(
      commit(cas.client(owner), "vols", "data", null, T("4")),
      403,
      /not a current service certificate of vols/,
    );
    const app = await attest("vols/app");
    await refused(commit(app.client, "vols", "scratch", null, T("4")), 409, /scratch is ephemeral/);
    await refused(commit(app.client, "vols", "nothing", null, T("4")), 403, /mounts volume nothing/);
    await refused(commit(app.client, "vols", "data", null, "not-a-tag"), 400, /body\.next: a tag/);
  });

  test("a shipped tree's declared tag is the first state; declaring a new one starts over", async () => {
    await cas.client(owner).request("PUT", policyPath("vols"), {
      policy: `${policy("vols", T("a"))}predecessor: ${(await cas.client(owner).request<{ hash: string }>("GET", policyPath("vols"))).hash}\n`,
    });
    const app = await attest("vols/app");
    assert.equal(app.config.volumes.find((v) => v.name === "shipped")!.tag, T("a"));
    await commit(app.client, "vols", "shipped", T("a"), T("b"));
    assert.equal((await attest("vols/app")).config.volumes.find((v) => v.name === "shipped")!.tag, T("b"));
    const current = await cas.client(owner).request<{ hash: string }>("GET", policyPath("vols"));
    await cas
      .client(owner)
      .request("PUT", policyPath("vols"), { policy: `${policy("vols", T("c"))}predecessor: ${current.hash}\n` });
    assert.equal((await attest("vols/app")).config.volumes.find((v) => v.name === "shipped")!.tag, T("c"));
  });
});

describe("what a review asked for", () => {
  test("a commit asked again after its answer was lost succeeds, and only that one", async () => {
    const app = await attest("vols/app");
    const current = app.config.volumes.find((v) => v.name === "data")!.tag;
    await commit(app.client, "vols", "data", current, T("d"));
    await commit(app.client, "vols", "data", current, T("d"));
    await refused(commit(app.client, "vols", "data", current, T("e")), 409, /a fork/);
  });

  test("a policy's own certificates cannot claim a service's name", async () => {
    await refused(
      cas.client(owner).request("POST", "/v1/policies", {
        policy: `version: "1"\nname: impostor\nsecrets:\n  - {name: ca, kind: x509-ca}\n  - {name: fake, kind: x509, issuer: ca, san: ["uri:urn:cloister:vols/app"]}\n`,
      }),
      400,
      /uri:urn:cloister:… is reserved for the service certificates the CAS issues/,
    );
  });

  test("removing a declared tag from the policy does not make the volume fresh", async () => {
    const before = (await attest("vols/app")).config.volumes.find((v) => v.name === "shipped")!.tag;
    assert.notEqual(before, null);
    const current = await cas.client(owner).request<{ hash: string }>("GET", policyPath("vols"));
    await cas
      .client(owner)
      .request("PUT", policyPath("vols"), { policy: `${policy("vols")}predecessor: ${current.hash}\n` });
    assert.equal((await attest("vols/app")).config.volumes.find((v) => v.name === "shipped")!.tag, before);
  });
});

describe("a stranger's commits", () => {
  test("volume commits share the runtime routes' rate limit per source: a burst past it is answered 429", async () => {
    // A policy in mode none hands a service certificate to anyone, so its commits are a
    // stranger's: without the limit, each one is an audit row, as fast as they can be sent.
    const limited = await startTestCas({ admins: [owner.hash], attestationRate: 3 });
    try {
      await limited.client(owner).request("POST", "/v1/las", { key: las.key });
      await limited.client(owner).request("POST", "/v1/policies", { policy: policy("vols") });
      const app = await attestAs(
        { url: limited.running.url, casKey: limited.running.identity.hash },
        las.url,
        program,
        "vols/app",
      );
      let previous: string | null = null;
      let committed = 0;
      let answer429: unknown;
      for (let i = 0; i < 12 && answer429 === undefined; i++) {
        const next = (i + 1).toString(16).padStart(64, "0");
        await commit(app.client, "vols", "data", previous, next).then(
          () => {
            committed++;
            previous = next;
          },
          (error: unknown) => (answer429 = error),
        );
      }
      // The burst is 6; attesting spent 2 of it.
      assert.ok(committed < 12, `${committed} commits went through`);
      assert.match(String((answer429 as Error).message), /too many attestation and volume-commit requests/);
      assert.equal((answer429 as { status: number }).status, 429);
    } finally {
      await limited.dispose();
    }
  });
});
