/**
 * Exports and imports are checked at use: a value flows only while the exporter's current
 * policy exports it to the importer (at its current version, when pinned).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type CasClient, policyPath } from "../../src/client/cas-client.ts";
import { makeIdentity, startTestCas, type TestCas } from "../helpers/cas.ts";

let cas: TestCas;
let dora: CasClient;
let anton: CasClient;
before(async () => {
  cas = await startTestCas();
  dora = cas.client(await makeIdentity("dora"));
  anton = cas.client(await makeIdentity("anton"));
});
after(() => cas.dispose());

const put = async (c: CasClient, text: string, extra: Record<string, unknown> = {}) => {
  const name = /^name: (\S+)$/m.exec(text)![1]!;
  try {
    const current = await c.request<{ hash: string }>("GET", policyPath(name));
    return c.request<{ hash: string }>("PUT", policyPath(name), {
      policy: `${text}predecessor: ${current.hash}\n`,
      ...extra,
    });
  } catch {
    return c.request<{ hash: string }>("POST", "/v1/policies", { policy: text });
  }
};
const resolve = async (policy: string, secret: string) =>
  cas.running.service.resolveSecret(policy, secret, await cas.running.service.importClosure(policy));
const refused = (policy: string, secret: string, message: RegExp) =>
  assert.rejects(
    () => resolve(policy, secret),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, "import_refused");
      assert.match(e.message, message);
      return true;
    },
  );

const owner = (exportTo: string) =>
  `version: "1"\nname: dataowner\nsecrets:\n  - {name: dataset_key, kind: binary, export: [${exportTo}]}\n`;
const analytics = (kind = "binary") =>
  `version: "1"\nname: analytics\nsecrets:\n  - {name: dataset_key, import: {policy: dataowner, secret: dataset_key, kind: ${kind}}}\n`;

describe("imports resolved at use", () => {
  test("an exported secret reaches the importer, with the exporter's value", async () => {
    // The importer first: an export confirms a policy that exists (see the next tests).
    await put(anton, analytics());
    await put(dora, owner("{policy: analytics}"));
    const got = await resolve("analytics", "dataset_key");
    assert.deepEqual(got, await resolve("dataowner", "dataset_key"));
    assert.equal(got.kind, "binary");
  });

  test("withdrawing the export stops it at the next use, and the refusal is audited", async () => {
    await put(dora, owner(""));
    await refused("analytics", "dataset_key", /dataowner does not export dataset_key to analytics/);
    const audit = await anton.request<{ entries: { entry?: { action: string; reason: string } }[] }>(
      "GET",
      "/v1/audit",
    );
    assert.ok(audit.entries.some((e) => e.entry?.action === "secret.import" && /does not export/.test(e.entry.reason)));
  });

  test("an export pinned to the importer's hash holds only for that version", async () => {
    const current = await anton.request<{ hash: string }>("GET", policyPath("analytics"));
    await put(dora, owner(`{policy: analytics, policy_hash: ${current.hash}}`));
    assert.equal((await resolve("analytics", "dataset_key")).kind, "binary");
    await put(anton, analytics()); // a new version of the importer: the pin no longer matches
    await refused(
      "analytics",
      "dataset_key",
      /exports dataset_key only to analytics at [0-9a-f]{12}…, not at its current/,
    );
  });

  test("a declared kind must match the exporter's", async () => {
    await put(dora, owner("{policy: analytics}"));
    await put(anton, analytics("ascii"));
    await refused("analytics", "dataset_key", /declares kind ascii, but dataowner:dataset_key is binary/);
    await put(anton, analytics());
  });

  test("dangling imports name what is missing", async () => {
    await put(
      anton,
      `version: "1"\nname: orphan\nsecrets:\n  - {name: k, import: {policy: nobody, secret: k}}\n  - {name: j, import: {policy: dataowner, secret: nothing}}\n`,
    );
    await refused("orphan", "k", /dangling import: orphan:k imports from nobody, which does not exist/);
    await refused("orphan", "j", /dangling import: orphan:j imports dataowner:nothing, which does not exist/);
  });

  test("chains are followed and cycles refused", async () => {
    const ringA = (exports: string) =>
      `version: "1"\nname: ring-a\naccess_policy: {read: [ANY]}\nsecrets:\n  - {name: x, import: {policy: ring-b, secret: y}, export: [${exports}]}\n`;
    // Each export granted after its importer exists (see the next describe).
    await put(dora, ringA(""));
    await put(
      dora,
      `version: "1"\nname: ring-b\nsecrets:\n  - {name: y, import: {policy: ring-a, secret: x}, export: [{policy: ring-a}]}\n`,
    );
    await put(dora, ringA("{policy: ring-b}, {policy: ring-c}"));
    await refused("ring-a", "x", /import cycle: ring-a:x → ring-b:y → ring-a:x/);
    // A chain that ends in a value resolves.
    await put(dora, `version: "1"\nname: ring-b\nsecrets:\n  - {name: y, kind: ascii, export: [{policy: ring-a}]}\n`);
    await put(anton, `version: "1"\nname: ring-c\nsecrets:\n  - {name: z, import: {policy: ring-a, secret: x}}\n`);
    await refused("ring-c", "z", /made .* after that export was granted/);
    await put(dora, ringA("{policy: ring-b}"));
    await put(dora, ringA("{policy: ring-b}, {policy: ring-c}"));
    assert.deepEqual(await resolve("ring-c", "z"), await resolve("ring-b", "y"));
  });
});

describe("a name that changes hands does not take an export with it", () => {
  const importer = (name: string, mode: string) =>
    `version: "1"\nname: ${name}\nsecurity: {attestation: {mode: ${mode}}}\nsecrets:\n  - {name: k, import: {policy: dora-data, secret: k}}\n`;
  const exporter = (to: string) =>
    `version: "1"\nname: dora-data\nsecrets:\n  - {name: k, kind: ascii, export: [${to}]}\n`;

  test("an export to a policy not made yet holds only once the exporter confirms whoever made it", async () => {
    const mallory = cas.client(await makeIdentity("mallory"));
    await put(dora, exporter("{policy: partner}"));
    // Someone else takes the name before the intended partner does.
    await put(mallory, importer("partner", "hardware"));
    refused(
      "partner",
      "k",
      /the policy now named partner was made .* after that export was granted .*: the owner of dora-data confirms a new holder of the name by withdrawing the export and granting it again/,
    );
    // An update of Dora's that keeps the export confirms nothing.
    await put(dora, `${exporter("{policy: partner}")}  - {name: unrelated, kind: ascii}\n`);
    await refused("partner", "k", /made .* after that export was granted/);
    // Dora looks at who holds the name now, and confirms: the export withdrawn, then granted again.
    await put(dora, exporter(""));
    await put(dora, exporter("{policy: partner}"));
    assert.equal((await resolve("partner", "k")).kind, "ascii");
    // Deleted and made again — by anyone — it needs confirming again.
    await mallory.request("DELETE", policyPath("partner"));
    await put(mallory, importer("partner", "hardware"));
    await refused("partner", "k", /made .* after that export was granted/);
  });

  test("a pinned export needs no confirming: the hash names the policy, not its name", async () => {
    await put(anton, importer("pinned-partner", "hardware"));
    const { hash } = await anton.request<{ hash: string }>("GET", policyPath("pinned-partner"));
    await anton.request("DELETE", policyPath("pinned-partner"));
    await put(dora, exporter(`{policy: pinned-partner, policy_hash: ${hash}}`));
    await put(anton, importer("pinned-partner", "hardware"));
    assert.equal((await resolve("pinned-partner", "k")).kind, "ascii");
  });

  test("no generated value crosses attestation modes by an import: none → simulation, hardware → simulation, an exporter that changes mode later; an explicit value may", async () => {
    const modal = (mode: string) =>
      `version: "1"\nname: dora-data\nsecurity: {attestation: {mode: ${mode}}}\nsecrets:\n  - {name: k, kind: ascii, export: [{policy: crossing}]}\n`;
    await put(anton, importer("crossing", "simulation"));
    await put(dora, modal("simulation"), { regenerate_secrets: true });
    assert.equal((await resolve("crossing", "k")).kind, "ascii");
    for (const mode of ["none", "hardware"]) {
      await put(dora, modal(mode), { regenerate_secrets: true });
      refused(
        "crossing",
        "k",
        new RegExp(`dora-data:k was generated in attestation mode ${mode}, not crossing's simulation`),
      );
    }
    await put(
      dora,
      `version: "1"\nname: dora-data\nsecrets:\n  - {name: k, kind: ascii, value: "given by Dora", export: [{policy: crossing}]}\n`,
    );
    assert.equal((await resolve("crossing", "k")).kind, "ascii");
  });

  test("no import reaches a policy in attestation mode none: nothing attests who receives it", async () => {
    await put(anton, importer("unattested", "none"));
    await put(dora, exporter("{policy: unattested}"));
    await refused(
      "unattested",
      "k",
      /unattested has attestation mode none: nothing attests who would receive dora-data:k/,
    );
  });
});
