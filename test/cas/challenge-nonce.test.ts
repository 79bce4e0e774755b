/**
 * Challenge nonces that carry their own expiry and a MAC for one config id: what is accepted
 * once, and every way one is not — replayed, for another service, from another CAS, altered,
 * expired, malformed — and the bound on what is remembered.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { ChallengeNonces, NONCE_BYTES, NonceError, type NonceProblem } from "../../src/cas/challenge-nonce.ts";

const TTL = 60_000;

function nonces(now: () => number, maxSpent = 1000, key?: Buffer): ChallengeNonces {
  return new ChallengeNonces({ ttlMs: TTL, maxSpent, now, key });
}

function refused(f: () => void, problem: NonceProblem, message: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof NonceError, `a NonceError, not ${e}`);
    assert.equal(e.problem, problem);
    assert.match(e.message, message);
    return true;
  });
}

describe("challenge nonces", () => {
  test("32 bytes, distinct, expiring one lifetime after issue; spent once", () => {
    const now = 1_700_000_000_000;
    const n = nonces(() => now);
    const a = n.issue("shop/web");
    const b = n.issue("shop/web");
    assert.equal(a.nonce.length, NONCE_BYTES);
    assert.equal(a.expires, now + TTL);
    assert.notDeepEqual(a.nonce, b.nonce);
    n.spend(a.nonce.toString("base64"), "shop/web");
    assert.equal(n.spentCount, 1);
    refused(() => n.spend(a.nonce.toString("base64"), "shop/web"), "spent", /already used/);
    n.spend(b.nonce.toString("base64"), "shop/web");
  });

  test("issuing stores nothing: a flood of challenges leaves memory as it was", () => {
    const n = nonces(() => 0);
    for (let i = 0; i < 20_000; i++) n.issue(`p/s${i}`);
    assert.equal(n.spentCount, 0);
  });

  test("a nonce for another service, from another CAS, or made up is not one this CAS issued", () => {
    const n = nonces(() => 0);
    const forShop = n.issue("shop/web").nonce.toString("base64");
    refused(() => n.spend(forShop, "shop/db"), "not-issued", /not issued for shop\/db by this CAS/);
    const other = nonces(() => 0); // another CAS: another master key, another nonce key
    refused(() => other.spend(forShop, "shop/web"), "not-issued", /not issued for shop\/web by this CAS/);
    refused(() => n.spend(randomBytes(32).toString("base64"), "shop/web"), "not-issued", /made up/);
    // Refused without being spent: the rightful runtime can still use it.
    n.spend(forShop, "shop/web");
  });

  test("two instances with one key agree (the MAC, not memory, recognises a nonce)", () => {
    const key = randomBytes(32);
    const issued = nonces(() => 0, 10, key)
      .issue("shop/web")
      .nonce.toString("base64");
    nonces(() => 0, 10, key).spend(issued, "shop/web");
  });

  test("any byte altered — expiry, random part or MAC — and it is refused", () => {
    const n = nonces(() => 0);
    const nonce = n.issue("shop/web").nonce;
    for (let i = 0; i < NONCE_BYTES; i++) {
      const altered = Buffer.from(nonce);
      altered[i]! ^= 0x01;
      refused(() => n.spend(altered.toString("base64"), "shop/web"), "not-issued", /not issued/);
    }
    // In particular, a later expiry cannot be written in: the expiry is under the MAC.
    const extended = Buffer.from(nonce);
    extended.writeUIntBE(nonce.readUIntBE(0, 6) + 3_600_000, 0, 6);
    refused(() => n.spend(extended.toString("base64"), "shop/web"), "not-issued", /not issued/);
  });

  test("expired a millisecond past its lifetime, and then not remembered", () => {
    let now = 5_000;
    const n = nonces(() => now);
    const late = n.issue("shop/web").nonce.toString("base64");
    const used = n.issue("shop/web").nonce.toString("base64");
    n.spend(used, "shop/web");
    now += TTL;
    assert.equal(n.spentCount, 1);
    now += 1;
    refused(() => n.spend(late, "shop/web"), "expired", /expired at 1970-01-01T00:01:05\.000Z/);
    refused(() => n.spend(used, "shop/web"), "expired", /expired/);
    n.spend(n.issue("shop/web").nonce.toString("base64"), "shop/web");
    assert.equal(n.spentCount, 1, "the expired used nonce was forgotten");
  });

  test("malformed: not base64, the wrong length, not canonical", () => {
    const n = nonces(() => 0);
    const good = n.issue("shop/web").nonce;
    for (const bad of [
      "",
      "not base64 at all!",
      good.subarray(0, 31).toString("base64"),
      Buffer.concat([good, Buffer.alloc(1)]).toString("base64"),
      good.toString("base64url"),
      good.toString("base64").replace(/=*$/, ""),
      ` ${good.toString("base64")}`,
      42 as unknown as string,
    ])
      refused(() => n.spend(bad, "shop/web"), "malformed", /32 bytes of base64/);
  });

  test("what is remembered is bounded: past it, busy, and the nonce left unspent", () => {
    let now = 0;
    const n = nonces(() => now, 3);
    for (let i = 0; i < 3; i++) n.spend(n.issue("shop/web").nonce.toString("base64"), "shop/web");
    const fourth = n.issue("shop/web").nonce.toString("base64");
    refused(() => n.spend(fourth, "shop/web"), "busy", /try again/);
    now += 10;
    refused(() => n.spend(fourth, "shop/web"), "busy", /try again/);
    now = TTL + 1;
    const fifth = n.issue("shop/web").nonce.toString("base64");
    n.spend(fifth, "shop/web");
    assert.equal(n.spentCount, 1, "the three expired and were forgotten");
  });

  test("a spend taken back (unbound evidence) can be made again; a refused spend takes nothing back", () => {
    const n = nonces(() => 0, 1);
    const nonce = n.issue("shop/web").nonce.toString("base64");
    n.spend(nonce, "shop/web");
    n.unspend(nonce);
    assert.equal(n.spentCount, 0);
    n.spend(nonce, "shop/web");
    refused(() => n.spend(nonce, "shop/web"), "spent", /already used/);
    assert.equal(n.spentCount, 1);
  });

  test("an expiry further ahead than one lifetime is refused, whatever the MAC says", () => {
    let now = 1_000_000;
    const n = nonces(() => now);
    const issued = n.issue("shop/web").nonce.toString("base64");
    now -= 5_001; // as if the clock had stepped back past a replica's skew — the default clock never does
    refused(() => n.spend(issued, "shop/web"), "not-issued", /later than any this CAS issues/);
  });
});
