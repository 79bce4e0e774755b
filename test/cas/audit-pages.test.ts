/**
 * GET /v1/audit in pages (`since`, `limit`, `next`), and `cloister audit export` following them:
 * one export that verifies, however the log is cut; reading it adds no checkpoint when nothing
 * was written meanwhile.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type AuditPage, verifyExport } from "../../src/cas/audit.ts";
import { exportPages } from "../../src/cli/audit.ts";
import type { CasClient } from "../../src/client/cas-client.ts";
import { makeIdentity, startTestCas, type TestCas } from "../helpers/cas.ts";

let cas: TestCas;
let alice: CasClient;

before(async () => {
  cas = await startTestCas({ checkpointEvery: 10 });
  alice = cas.client(await makeIdentity("alice"));
  for (let i = 0; i < 25; i++) await alice.request("POST", "/v1/policies", { policy: `version: "1"\nname: p${i}\n` });
});
after(() => cas.dispose());

const page = (since: number, limit: number) =>
  alice.request<AuditPage>("GET", `/v1/audit?since=${since}&limit=${limit}`);

describe("audit pages", () => {
  test("each page holds at most `limit` entries after `since`, its checkpoints, and where the next starts", async () => {
    const first = await page(0, 7);
    assert.deepEqual(
      first.entries.map((e) => e.seq),
      [1, 2, 3, 4, 5, 6, 7],
    );
    assert.equal(first.next, 7);
    assert.ok(first.checkpoints.every((c) => c.seq <= 7));
    const second = await page(7, 7);
    assert.equal(second.entries[0]!.seq, 8);
    assert.equal(second.previous_chain, first.entries.at(-1)!.chain);
    assert.deepEqual(
      second.checkpoints.map((c) => c.seq),
      [10],
    );
    const last = await page(21, 1000);
    assert.equal(last.next, null);
    assert.equal(last.checkpoints.at(-1)!.seq, last.entries.at(-1)!.seq, "the last page ends at a checkpoint");
  });

  test("the pages followed make one export that verifies, whatever the page size", async () => {
    for (const limit of [1, 3, 10, 1000]) {
      const doc = await exportPages(0, (since) => alice.request("GET", `/v1/audit?since=${since}&limit=${limit}`));
      assert.equal(verifyExport(doc).entries, doc.entries.length);
      assert.ok(doc.entries.length >= 25);
      const from = await exportPages(12, (since) => alice.request("GET", `/v1/audit?since=${since}&limit=${limit}`));
      assert.equal(from.entries[0]!.seq, 13);
      verifyExport(from);
    }
  });

  test("reading the log again adds no checkpoint when nothing was written meanwhile", async () => {
    const before = (await page(0, 10_000)).checkpoints.length;
    for (let i = 0; i < 5; i++) await page(0, 10_000);
    assert.equal((await page(0, 10_000)).checkpoints.length, before);
  });

  test("a limit out of range is a 400", async () => {
    await assert.rejects(page(0, 0), { status: 400 });
    await assert.rejects(page(0, 10_001), { status: 400 });
  });
});

describe("exportPages", () => {
  test("refuses a page that is not one, a CAS key that changes, and a next that does not move on", async () => {
    const good = await page(0, 1000);
    await assert.rejects(
      exportPages(0, async () => ({ nope: true })),
      /not one/,
    );
    let calls = 0;
    await assert.rejects(
      exportPages(0, async () => (calls++ === 0 ? { ...good, next: 5 } : { ...good, cas_key: "other", next: null })),
      /key changed/,
    );
    await assert.rejects(
      exportPages(5, async () => ({ ...good, next: 5 })),
      /points back/,
    );
  });
});
