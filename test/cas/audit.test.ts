/**
 * The audit entry's canonical JSON, written out by hand for speed (entryJson), is the text the
 * general encoder (canonicalJson, RFC 8785) gives — for any strings at all: an export is
 * verified with canonicalJson, so the two must never differ.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type AuditEntry, entryJson } from "../../src/cas/audit.ts";
import { canonicalJson } from "../../src/policy/canonical.ts";

const text = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.string({ unit: "binary" }));

test("entryJson is canonicalJson for any entry", () => {
  fc.assert(
    fc.property(
      fc.record({
        seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        time: text,
        actor: text,
        action: text,
        target: text,
        policy_hash: fc.option(text, { nil: null }),
        outcome: fc.constantFrom("granted" as const, "refused" as const),
        reason: text,
      }),
      (entry: AuditEntry) => {
        assert.equal(entryJson(entry), canonicalJson(entry));
      },
    ),
    { numRuns: 2000 },
  );
});

test("lone surrogates, controls and quotes are escaped alike", () => {
  const entry: AuditEntry = {
    seq: 7,
    time: "2026-11-23T00:00:00.000Z",
    actor: "\ud800",
    action: "a\u0000b\u001f",
    target: 'x"y\\z',
    policy_hash: null,
    outcome: "refused",
    reason: "line\nbreak \u2028 \udfff",
  };
  assert.equal(entryJson(entry), canonicalJson(entry));
  assert.match(entryJson(entry), /^\{"action":.*"time":"2026-11-23T00:00:00.000Z"\}$/s);
});
