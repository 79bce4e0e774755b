/**
 * The pooled random bytes of the CAS's hot path (src/crypto/random-pool.ts): each call gets fresh
 * bytes of its own, never a view into the pool's block, and never bytes another call got.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { randomBytesPooled } from "../../src/crypto/random-pool.ts";

test("lengths as asked, across block refills and past the pooled size", () => {
  for (const length of [0, 1, 10, 12, 16, 32, 511, 512, 513, 4096, 10_000]) {
    assert.equal(randomBytesPooled(length).length, length);
  }
  assert.throws(() => randomBytesPooled(-1), RangeError);
  assert.throws(() => randomBytesPooled(1.5), RangeError);
});

test("no two outputs overlap: 20,000 draws of 16 bytes (several blocks) are all distinct", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 20_000; i++) seen.add(randomBytesPooled(16).toString("hex"));
  assert.equal(seen.size, 20_000);
});

test("an output is the caller's own memory: no view into the block, nothing else in its buffer", () => {
  for (const length of [1, 16, 32, 600]) {
    const out = randomBytesPooled(length);
    assert.equal(out.byteOffset, 0);
    assert.equal(out.buffer.byteLength, length, `${length} bytes: not in a shared slab or the pool's block`);
  }
  const first = randomBytesPooled(32);
  first.fill(0xaa);
  for (let i = 0; i < 300; i++) assert.ok(!randomBytesPooled(32).equals(Buffer.alloc(32, 0xaa)));
});

test("the bytes look uniform: every byte value appears, none far from 1/256", () => {
  const counts = new Array<number>(256).fill(0);
  const draws = 8192;
  for (let i = 0; i < draws; i++) for (const b of randomBytesPooled(32)) counts[b]!++;
  const expected = (draws * 32) / 256; // 1,024 per value
  // Binomial standard deviation ≈ 32: six of them is a failure once in about 10^7 runs per value.
  for (const [value, n] of counts.entries()) assert.ok(Math.abs(n - expected) < 6 * 32, `byte ${value}: ${n}`);
});
