/** The checker's warnings in the CAS's answer to create and update (api.ts's PolicyWritten). */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { policyPath } from "../../src/client/cas-client.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

let cas: TestCas;
let alice: TestIdentity;
before(async () => {
  cas = await startTestCas();
  alice = await makeIdentity("alice");
});
after(() => cas.dispose());

type Written = { name: string; hash: string; version: number; warnings?: { line: number; field: string }[] };

test("create and update answer with the warnings, positioned; without any, the answer is unchanged", async () => {
  const client = cas.client(alice);
  const clean = await client.request<Written>("POST", "/v1/policies", { policy: 'version: "1"\nname: clean\n' });
  assert.deepEqual(Object.keys(clean).sort(), ["hash", "name", "version"]);

  const v1 = 'version: "1"\nname: warned\nsecrets:\n  - {name: spare, kind: binary}\n';
  const created = await client.request<Written>("POST", "/v1/policies", { policy: v1 });
  assert.equal(created.version, 1);
  assert.deepEqual(created.warnings, [
    {
      file: "policy",
      line: 4,
      column: 12,
      field: "secrets[0].name",
      message:
        'secret "spare" is used by nothing: no template, TLS setting, volume key, service_ca or issuer names it, and it is not exported',
    },
  ]);

  const v2 = `${v1}  - {name: other, kind: ascii}\npredecessor: ${created.hash}\n`;
  const updated = await client.request<Written>("PUT", policyPath("warned"), { policy: v2 });
  assert.equal(updated.version, 2);
  assert.deepEqual(
    updated.warnings?.map((w) => [w.line, w.field]),
    [
      [4, "secrets[0].name"],
      [5, "secrets[1].name"],
    ],
  );
});

test("the OpenAPI document describes the optional warnings of create and update", async () => {
  const doc = (await cas.client(alice).request("GET", "/v1/openapi.json")) as {
    paths: Record<
      string,
      Record<string, { responses: Record<string, { content: Record<string, { schema: unknown }> }> }>
    >;
  };
  for (const [path, method, status] of [
    ["/v1/policies", "post", "201"],
    ["/v1/policies/{name}", "put", "200"],
  ] as const) {
    const schema = doc.paths[path]![method]!.responses[status]!.content["application/json"]!.schema as {
      properties: Record<string, unknown>;
      required: string[];
    };
    assert.ok("warnings" in schema.properties, `${method} ${path}`);
    assert.ok(!schema.required.includes("warnings"));
  }
});
