/**
 * The authorisation matrix, against a real CAS over mTLS: every identity × every operation ×
 * every kind of access rule, each cell asserted; then multi-party rules with too few, enough,
 * duplicate and forged signatures; then namespaces.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type CasClient, CasRequestError, policyPath } from "../../src/client/cas-client.ts";
import { signPolicy } from "../../src/crypto/signatures.ts";
import { checkPolicyText } from "../../src/policy/check.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

const NAMES = ["C", "R", "U", "S1", "S2", "S3", "O"] as const;
type Who = (typeof NAMES)[number];
type Op = "get" | "history" | "list" | "update" | "delete" | "create-child";
const OPS: Op[] = ["get", "history", "list", "update", "delete", "create-child"];

let cas: TestCas;
const id = {} as Record<Who, TestIdentity>;
const client = {} as Record<Who, CasClient>;

before(async () => {
  cas = await startTestCas();
  for (const n of NAMES) {
    id[n] = await makeIdentity(n);
    client[n] = cas.client(id[n]);
  }
});
after(() => cas.dispose());

/** Access rule templates; `C` is the creator. */
const templates = (): Record<string, string> => ({
  default: "",
  any: "access_policy: {read: [ANY], update: [ANY], create_policies: [ANY]}\n",
  none: "access_policy: {read: [NONE], update: [NONE], create_policies: [NONE]}\n",
  ids: `access_policy: {read: [CREATOR, ${id.R.hash}], update: [${id.U.hash}], create_policies: [${id.U.hash}]}\n`,
  all: `access_policy:\n  read: [ANY]\n  update: [{require_all: [CREATOR, ${id.S1.hash}]}]\n  create_policies: [{require_all: [${id.S1.hash}, ${id.S2.hash}]}]\n`,
  threshold: `access_policy:\n  read: [ANY]\n  update: [{require_at_least: {count: 2, of: [${id.S1.hash}, ${id.S2.hash}, ${id.S3.hash}]}}]\n  create_policies: [NONE]\n`,
});

const ALL = new Set<Who>(NAMES);
/** Who each rule admits when the caller acts alone (no signatures). */
const expected: Record<string, Record<"read" | "write" | "create", Set<Who>>> = {
  default: { read: new Set(["C"]), write: new Set(["C"]), create: new Set(["C"]) },
  any: { read: ALL, write: ALL, create: ALL },
  none: { read: new Set(), write: new Set(), create: new Set() },
  ids: { read: new Set(["C", "R"]), write: new Set(["U"]), create: new Set(["U"]) },
  all: { read: ALL, write: new Set(), create: new Set() },
  threshold: { read: ALL, write: new Set(), create: new Set() },
};
const ruleOf = (op: Op) =>
  op === "get" || op === "history" || op === "list" ? "read" : op === "create-child" ? "create" : "write";

const policyText = (name: string, access: string, extra = "") => `version: "1"\nname: ${name}\n${access}${extra}`;
const hashOf = (text: string) => {
  const r = checkPolicyText(text, "t");
  assert.ok(r.ok);
  return r.hash;
};

async function create(as: Who, text: string, signatures: string[] = []) {
  return client[as].request<{ name: string; hash: string }>("POST", "/v1/policies", { policy: text, signatures });
}

/**
 * Run `op` as `who` on `name`; true when granted, false when refused — 403 to a caller who may
 * read the policy, 404 (the answer a policy that does not exist gets) to one who may not, so that
 * a stranger learns nothing of its existence; anything else fails the test.
 */
async function attempt(
  who: Who,
  op: Op,
  name: string,
  access: string,
  hash: string,
  canRead: boolean,
): Promise<boolean> {
  try {
    switch (op) {
      case "get":
        await client[who].request("GET", policyPath(name));
        return true;
      case "history":
        await client[who].request("GET", policyPath(name, "/history"));
        return true;
      case "list": {
        const r = await client[who].request<{ policies: { name: string }[] }>("GET", "/v1/policies");
        return r.policies.some((p) => p.name === name);
      }
      case "update":
        await client[who].request("PUT", policyPath(name), {
          policy: policyText(name, access, `predecessor: ${hash}\nsecrets: [{name: added, kind: binary}]\n`),
        });
        return true;
      case "delete":
        await client[who].request("DELETE", policyPath(name));
        return true;
      case "create-child":
        await create(who, policyText(`${name}/child`, ""));
        return true;
    }
  } catch (error) {
    if (error instanceof CasRequestError && error.status === (canRead ? 403 : 404)) return false;
    throw error;
  }
}

describe("authorisation matrix: identities × operations × rules", () => {
  for (const template of Object.keys(expected)) {
    test(`rule set "${template}"`, async () => {
      const access = templates()[template]!;
      const cells: string[] = [];
      for (const op of OPS) {
        for (const who of NAMES) {
          const name = `m-${template}-${op}-${who}`.toLowerCase();
          const created = await create("C", policyText(name, access));
          const granted = await attempt(who, op, name, access, created.hash, expected[template]!.read.has(who));
          const want = expected[template]![ruleOf(op)].has(who);
          if (granted !== want)
            cells.push(`${who} ${op}: ${granted ? "granted" : "refused"}, expected ${want ? "granted" : "refused"}`);
        }
      }
      assert.deepEqual(cells, []);
    });
  }
});

describe("multi-party rules", () => {
  const sig = (who: Who, action: "write" | "delete", name: string, hash: string) =>
    signPolicy(id[who].keyPem, action, name, hash);

  test("require_all: too few refused, enough granted, any submitter", async () => {
    const name = "mp-all";
    const v1 = await create("C", policyText(name, templates().all!));
    const next = policyText(name, templates().all!, `predecessor: ${v1.hash}\n`);
    const h = hashOf(next);
    await assert.rejects(client.C.request("PUT", policyPath(name), { policy: next }), { status: 403 });
    await assert.rejects(client.S1.request("PUT", policyPath(name), { policy: next }), { status: 403 });
    const ok = await client.O.request<{ hash: string }>("PUT", policyPath(name), {
      policy: next,
      signatures: [sig("C", "write", name, h), sig("S1", "write", name, h)],
    });
    assert.equal(ok.hash, h);
  });

  test("require_at_least 2 of 3: one, a duplicate, a stranger and forgeries are refused; two distinct suffice", async () => {
    const name = "mp-threshold";
    const v1 = await create("C", policyText(name, templates().threshold!));
    const next = policyText(name, templates().threshold!, `predecessor: ${v1.hash}\n`);
    const h = hashOf(next);
    const put = (as: Who, signatures: string[]) =>
      client[as].request<{ hash: string }>("PUT", policyPath(name), { policy: next, signatures });
    await assert.rejects(put("S1", []), { status: 403, code: "forbidden" }, "one signer");
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), sig("S1", "write", name, h)]),
      { status: 403 },
      "duplicate",
    );
    await assert.rejects(
      put("S1", [sig("S1", "write", name, h)]),
      { status: 403 },
      "caller and own signature count once",
    );
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), sig("O", "write", name, h)]),
      { status: 403 },
      "unlisted signer",
    );
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), sig("S2", "write", name, "ab".repeat(32))]),
      { status: 403, code: "bad_signature" },
      "other hash",
    );
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), sig("S2", "delete", name, h)]),
      { status: 403, code: "bad_signature" },
      "other action",
    );
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), sig("S2", "write", "elsewhere", h)]),
      { status: 403, code: "bad_signature" },
      "other policy",
    );
    const good = sig("S2", "write", name, h);
    const flipped = `${good.slice(0, -4)}${good.slice(-4) === "AAAA" ? "BBBB" : "AAAA"}`;
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), flipped]),
      { status: 403, code: "bad_signature" },
      "altered bytes",
    );
    const [, spki] = sig("S3", "write", name, h).split(".");
    const [p, , s2] = good.split(".");
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), `${p}.${spki}.${s2}`]),
      { status: 403, code: "bad_signature" },
      "key swapped",
    );
    await assert.rejects(
      put("O", [sig("S1", "write", name, h), "not-a-signature"]),
      { status: 403, code: "bad_signature" },
      "garbage",
    );
    // Nothing was stored by the refusals: the version is still 1.
    const history = await client.O.request<{ versions: unknown[] }>("GET", policyPath(name, "/history"));
    assert.equal(history.versions.length, 1);
    const ok = await put("S1", [sig("S2", "write", name, h)]);
    assert.equal(ok.hash, h);
  });

  test("delete needs delete signatures, not write signatures over the same hash", async () => {
    const name = "mp-delete";
    const v1 = await create("C", policyText(name, templates().threshold!));
    const del = (signatures: string[]) =>
      client.O.request(
        "DELETE",
        `${policyPath(name)}?${signatures.map((s) => `signature=${encodeURIComponent(s)}`).join("&")}`,
      );
    await assert.rejects(del([sig("S1", "write", name, v1.hash), sig("S2", "write", name, v1.hash)]), { status: 403 });
    await del([sig("S1", "delete", name, v1.hash), sig("S3", "delete", name, v1.hash)]);
    await assert.rejects(client.O.request("GET", policyPath(name)), { status: 404 });
  });

  test("create_policies with require_all takes signatures over the child's hash", async () => {
    const parent = "mp-parent";
    await create("C", policyText(parent, templates().all!));
    const child = policyText(`${parent}/kid`, "");
    const h = hashOf(child);
    await assert.rejects(create("S1", child), { status: 403 });
    const made = await create("S1", child, [sig("S2", "write", `${parent}/kid`, h)]);
    assert.equal(made.hash, h);
  });
});

describe("namespaces", () => {
  test("a child needs an existing parent", async () => {
    await assert.rejects(create("C", policyText("nobody/child", "")), {
      status: 404,
      code: "not_found",
      message: "creating nobody/child needs create_policies on nobody: no policy nobody that you may read",
    });
  });

  test("--create-top-level limits who may create top-level policies", async () => {
    const restricted = await startTestCas({ createTopLevel: [id.C.hash] });
    try {
      await assert.rejects(
        restricted.client(id.O).request("POST", "/v1/policies", { policy: policyText("top-o", "") }),
        {
          status: 403,
        },
      );
      await restricted.client(id.C).request("POST", "/v1/policies", { policy: policyText("top-c", "") });
      // Children are governed by the parent's create_policies, not by the top-level list.
      await restricted.client(id.C).request("POST", "/v1/policies", { policy: policyText("top-c/child", "") });
    } finally {
      await restricted.dispose();
    }
  });
});
