/**
 * Policies in mode none answer anyone: a stranger asking for their configuration again and again
 * adds a few tallied rows, not one a request — granted ones, and refused imports alike (found by
 * the security review of issue 17's fixes).
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, test } from "node:test";
import { CasClient, CasRequestError } from "../../src/client/cas-client.ts";
import { makeIdentity, startTestCas, type TestCas } from "../helpers/cas.ts";

let cas: TestCas;
let ownerHash = "";
before(async () => {
  cas = await startTestCas();
  const identity = await makeIdentity("owner");
  ownerHash = identity.hash;
  const owner = cas.client(identity);
  const service = (extra: string) =>
    `services:\n  - {name: web, command: [web], environment: {K: "$$cloister::k$$"}}\nsecrets:\n  - ${extra}\n`;
  await owner.request("POST", "/v1/policies", {
    policy: `version: "1"\nname: open\nsecurity: {attestation: {mode: none}}\n${service("{name: k, kind: ascii}")}`,
  });
  await owner.request("POST", "/v1/policies", {
    policy: `version: "1"\nname: importing\nsecurity: {attestation: {mode: none}}\n${service("{name: k, import: {policy: open, secret: k}}")}`,
  });
});
after(() => cas.dispose());

async function ask(configId: string): Promise<number> {
  const runtime = new CasClient({ url: cas.running.url, casKey: cas.running.identity.hash });
  const { nonce } = await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
    config_id: configId,
  });
  try {
    await runtime.request("POST", "/v1/attestation", {
      config_id: configId,
      nonce,
      evidence: { tee: "sim", quote: "AA==" },
      spki: generateKeyPairSync("ec", { namedCurve: "P-256" })
        .publicKey.export({ type: "spki", format: "der" })
        .toString("base64"),
    });
    return 200;
  } catch (error) {
    if (error instanceof CasRequestError) return error.status;
    throw error;
  }
}

const rows = async () => (await cas.running.service.exportAudit(ownerHash, 0)).entries.length;

test("200 configurations handed out, and 200 refused imports, add a handful of rows, every one counted", async () => {
  const before = await rows();
  for (let i = 0; i < 200; i++) assert.equal(await ask("open/web"), 200);
  for (let i = 0; i < 200; i++) assert.equal(await ask("importing/web"), 409);
  const early = (await rows()) - before;
  assert.ok(early <= 4, `${early} rows`);
  await cas.running.service.flushRefusals();
  const added = (await rows()) - before;
  assert.ok(added <= 8, `${added} rows after the tally's entries`);
  const reasons = (await cas.running.service.exportAudit(ownerHash, 0)).entries
    .flatMap((e) => ("entry" in e ? [e.entry] : []))
    .filter((e) => e.target === "open/web" || e.target === "importing/web" || e.target === "importing");
  assert.ok(reasons.some((e) => e.outcome === "granted" && /^granted 199 more times like this/.test(e.reason)));
});
