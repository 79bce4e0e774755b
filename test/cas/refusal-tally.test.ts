/** The strangers' refusal tally: the first of each kind written, the rest counted, bounded in kinds. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_KINDS, type Refusal, RefusalTally } from "../../src/cas/refusal-tally.ts";

function tally(maxKinds = 1000) {
  const written: Refusal[] = [];
  let now = Date.parse("2026-12-07T12:00:00Z");
  const t = new RefusalTally((r) => written.push(r), {
    now: () => new Date(now),
    intervalMs: 3_600_000, // never fires during a test: flush() is called
    maxKinds,
  });
  return { t, written, tick: (ms: number) => (now += ms) };
}
const refusal = (target = "shop/web", reason = "evidence refused: bad signature"): Refusal => ({
  actor: "runtime",
  action: "attestation",
  target,
  hash: null,
  reason,
});

describe("a stranger's refusals", () => {
  test("the first of a kind is written at once, the others counted into one entry at the interval's end", () => {
    const { t, written, tick } = tally();
    for (let i = 0; i < 10_000; i++) t.refuse("203.0.113.9", "evidence_refused", refusal(`shop/web${i % 3}`));
    assert.equal(written.length, 1);
    assert.deepEqual(written[0], refusal("shop/web0"));
    tick(30_000);
    t.flush();
    assert.equal(written.length, 2);
    assert.equal(written[1]!.target, "", "counted for three targets: charged to none");
    assert.equal(
      written[1]!.reason,
      "refused 9999 more times like this from 203.0.113.9 between 2026-12-07T12:00:00.000Z and 2026-12-07T12:00:30.000Z, to 3 targets; the first: evidence refused: bad signature",
    );
    assert.equal(t.size, 0, "a new interval starts empty");
    t.flush();
    assert.equal(written.length, 2, "nothing more to write");
  });

  test("kinds are told apart by source, action and code", () => {
    const { t, written } = tally();
    t.refuse("a", "bad_nonce", refusal());
    t.refuse("b", "bad_nonce", refusal());
    t.refuse("a", "evidence_refused", refusal());
    t.refuse("a", "bad_nonce", { ...refusal(), action: "volume.commit" });
    t.refuse("a", "bad_nonce", refusal());
    assert.equal(written.length, 4);
    t.flush();
    assert.equal(written.length, 5);
    assert.match(written[4]!.reason, /^refused 1 more time like this from a /);
  });

  test("as shipped: strangers from 20,000 addresses add at most 202 rows an interval", () => {
    const written: Refusal[] = [];
    const t = new RefusalTally((r) => written.push(r), { intervalMs: 3_600_000 });
    for (let i = 0; i < 20_000; i++)
      t.refuse(`2001:db8:${i.toString(16)}::/64`, i % 2 ? "bad_nonce" : "evidence_refused", refusal(`p${i}/s`));
    t.flush();
    assert.equal(MAX_KINDS, 100);
    assert.ok(written.length <= 2 * (MAX_KINDS + 1), `${written.length} rows`);
    assert.equal(written.length, 2 * (MAX_KINDS + 1) - MAX_KINDS, "each address tried once: only the overflow repeats");
  });

  test("past the bound on kinds, further kinds are counted together: rows and memory stay bounded", () => {
    const { t, written } = tally(10);
    for (let i = 0; i < 5_000; i++) t.refuse(`198.51.100.${i}`, "bad_nonce", refusal());
    assert.equal(t.size, 11);
    assert.equal(written.length, 11);
    assert.match(written[10]!.reason, /more kinds of refusal than the tally keeps/);
    assert.deepEqual(
      [written[10]!.actor, written[10]!.action, written[10]!.target],
      ["", "refusals", ""],
      "charged to no caller",
    );
    t.flush();
    assert.equal(written.length, 12);
    assert.match(written[11]!.reason, /^refused 4989 more times like this from other sources /);
  });
});
