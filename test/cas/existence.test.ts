/**
 * A caller who may not read a policy learns nothing of it: not whether it exists, nor which
 * secrets it holds (issue 17, item 4; docs/cas.md, "Who may do what"). Each request a stranger
 * can make is sent twice — about a policy (or secret) that exists and about one that does not —
 * and the two answers must be the same, but for the name asked about.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type CasClient, CasRequestError, CasClient as Client, policyPath } from "../../src/client/cas-client.ts";
import { selfSignedP256 } from "../../src/crypto/self-signed.ts";
import { signPolicy } from "../../src/crypto/signatures.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

let cas: TestCas;
let alice: CasClient;
let mallory: CasClient;
let malloryId: TestIdentity;
let hiddenHash = "";

const HIDDEN = "hidden-shop";
const ABSENT = "absent-shop";

before(async () => {
  cas = await startTestCas();
  const a = await makeIdentity("alice");
  malloryId = await makeIdentity("mallory");
  alice = cas.client(a);
  mallory = cas.client(malloryId);
  const created = await alice.request<{ hash: string }>("POST", "/v1/policies", {
    policy: `version: "1"
name: ${HIDDEN}
security: {attestation: {mode: none}}
services: [{name: web, command: [web], volumes: [{name: data, path: /data}]}]
volumes: [{name: data}]
secrets:
  - {name: db_password, kind: ascii, value: "explicit and stored"}
  - {name: signing, kind: private-key}
`,
  });
  hiddenHash = created.hash;
});
after(() => cas.dispose());

/** The answer to a request, as a stranger sees it: status, code and message, the name masked. */
async function answer(request: () => Promise<unknown>, name: string): Promise<string> {
  try {
    await request();
    return "granted";
  } catch (error) {
    if (!(error instanceof CasRequestError)) throw error;
    return `${error.status} ${error.code} ${error.message.replaceAll(name, "NAME")}`;
  }
}

/** Asked about the hidden policy and about one that does not exist: the same answer, a 404. */
async function same(request: (name: string) => Promise<unknown>): Promise<string> {
  const hidden = await answer(() => request(HIDDEN), HIDDEN);
  const absent = await answer(() => request(ABSENT), ABSENT);
  assert.equal(hidden, absent);
  assert.match(hidden, /^404 not_found /);
  return hidden;
}

const update = (name: string, secrets: string, signatures: string[] = []) =>
  mallory.request("PUT", policyPath(name), {
    policy: `version: "1"\nname: ${name}\npredecessor: ${"0".repeat(64)}\nsecrets:\n${secrets}`,
    signatures,
  });

describe("a stranger's requests", () => {
  test("get, history and delete of a policy it may not read: the answer a missing policy gets", async () => {
    assert.equal(
      await same((n) => mallory.request("GET", policyPath(n))),
      "404 not_found no policy NAME that you may read",
    );
    await same((n) => mallory.request("GET", policyPath(n, "/history")));
    await same((n) => mallory.request("DELETE", policyPath(n)));
  });

  test("an update keeping a <redacted> value tells nothing of the stored secret's name or kind", async () => {
    const kept = (name: string, kind: string) => `  - {name: ${name}, kind: ${kind}, value: "<redacted>"}\n`;
    const answers = new Set<string>();
    // The stored explicit secret, with its kind and another; a generated one; one that is not there.
    for (const secret of [
      kept("db_password", "ascii"),
      kept("db_password", "binary"),
      kept("signing", "private-key"),
      kept("nothing", "ascii"),
    ]) {
      answers.add(await answer(() => update(HIDDEN, secret), HIDDEN));
      answers.add(await answer(() => update(ABSENT, secret), ABSENT));
    }
    assert.deepEqual([...answers], ["404 not_found no policy NAME that you may read"]);
  });

  test("an update with signatures, valid or not, tells nothing either", async () => {
    const own = signPolicy(malloryId.keyPem, "write", HIDDEN, hiddenHash);
    await same((n) => update(n, "  - {name: s, kind: ascii}\n", [own]));
    await same((n) => update(n, "  - {name: s, kind: ascii}\n", ["not a signature"]));
  });

  test("creating a child under a policy it may not read, or one that does not exist", async () => {
    const answerOf = (parent: string) =>
      answer(
        () => mallory.request("POST", "/v1/policies", { policy: `version: "1"\nname: ${parent}/child\n` }),
        parent,
      );
    const hidden = await answerOf(HIDDEN);
    assert.equal(hidden, await answerOf(ABSENT));
    assert.equal(
      hidden,
      "404 not_found creating NAME/child needs create_policies on NAME: no policy NAME that you may read",
    );
  });

  test("committing a volume with a certificate of its own: one answer whether the policy exists or not", async () => {
    const id = await selfSignedP256("mallory's runtime", 1);
    const runtime = new Client({ url: cas.running.url, casKey: cas.running.identity.hash, ...id });
    const commit = (name: string) =>
      answer(
        () =>
          runtime.request("POST", `/v1/volumes/${encodeURIComponent(name)}/data/tag`, {
            previous: null,
            next: "a".repeat(64),
          }),
        name,
      );
    const hidden = await commit(HIDDEN);
    assert.equal(hidden, await commit(ABSENT));
    assert.match(hidden, /^403 forbidden the client certificate is not a current service certificate of NAME$/);
  });

  test("the audit log tells the stranger nothing either: the same entries, as it sees them, for a hidden and a missing policy", async () => {
    const seen = async (name: string) => {
      const id = await makeIdentity(`prober of ${name}`);
      const before = (await cas.running.service.exportAudit(id.hash, 0)).entries.length;
      await answer(() => cas.client(id).request("GET", policyPath(name)), name);
      await answer(() => cas.client(id).request("DELETE", policyPath(name)), name);
      const entries = (await cas.running.service.exportAudit(id.hash, 0)).entries;
      const own = entries.flatMap((e) => ("entry" in e && e.entry.actor === id.hash ? [e.entry] : []));
      return {
        added: entries.length - before,
        own: own.map((e) => `${e.action} ${e.outcome} ${e.policy_hash} ${e.reason.replaceAll(name, "NAME")}`),
      };
    };
    const hidden = await seen(HIDDEN);
    assert.deepEqual(hidden, await seen(ABSENT));
    assert.equal(hidden.added, 2, "each refusal is audited");
  });
});

describe("a reader who may not update", () => {
  test("is told why: 403, since it knows the policy exists", async () => {
    const reader = await makeIdentity("reader");
    await alice.request("POST", "/v1/policies", {
      policy: `version: "1"\nname: readable\naccess_policy: {read: [CREATOR, ${reader.hash}]}\n`,
    });
    const hash = (await alice.request<{ hash: string }>("GET", policyPath("readable"))).hash;
    await assert.rejects(
      cas.client(reader).request("PUT", policyPath("readable"), {
        policy: `version: "1"\nname: readable\npredecessor: ${hash}\n`,
      }),
      { status: 403, code: "forbidden" },
    );
  });
});
