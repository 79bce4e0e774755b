/** The complete policies shown in docs/policy.md check, so that the docs match the code. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { checkPolicyText } from "../../src/policy/check.ts";

const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "policy.md"), "utf8");
const examples = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)]
  .map((m) => m[1]!)
  .filter((y) => y.startsWith('version: "1"') && !y.includes("…")); // "…" marks a sketch, not a policy

test("docs/policy.md has complete examples", () => assert.ok(examples.length >= 2));

for (const [i, text] of examples.entries()) {
  const name = /^name: (.+)$/m.exec(text)?.[1] ?? `#${i}`;
  test(`docs example ${name} is a valid policy`, () => {
    const r = checkPolicyText(text, `docs/policy.md example ${name}`);
    assert.ok(r.ok, r.ok ? "" : r.errors.map((e) => `${e.line}:${e.column} ${e.field}: ${e.message}`).join("\n"));
  });
}
