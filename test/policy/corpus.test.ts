/**
 * The policy corpus: every valid fixture checks, with exactly the warnings its
 * `# warn: LINE:COL field: fragment` lines name (none if it has none); every invalid one fails
 * with exactly the errors its `# expect: LINE:COL field: fragment` lines name (for JSON, in
 * FILE.expect).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { checkPolicyText, type PolicyError } from "../../src/policy/check.ts";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "policies");
const policyFiles = (dir: string) =>
  readdirSync(join(FIXTURES, dir))
    .filter((f) => f.endsWith(".yaml") || f.endsWith(".json"))
    .sort();

describe("valid policies", () => {
  const files = policyFiles("valid");
  test("the corpus has at least 30 valid policies", () => assert.ok(files.length >= 30, `${files.length}`));
  for (const file of files) {
    test(file, () => {
      const text = readFileSync(join(FIXTURES, "valid", file), "utf8");
      const result = checkPolicyText(text, file);
      assert.ok(
        result.ok,
        result.ok ? "" : result.errors.map((e) => `${e.line}:${e.column} ${e.field}: ${e.message}`).join("\n"),
      );
      assert.match(result.hash, /^[0-9a-f]{64}$/);
      assertExactly("warnings", result.warnings, stated(text, "warn"));
    });
  }
});

interface Expectation {
  line: number;
  column: number;
  field: string;
  fragment: string;
}

function stated(source: string, word: "expect" | "warn"): Expectation[] {
  return [...source.matchAll(new RegExp(`^# ${word}: (\\d+):(\\d+) (\\S+): (.+)$`, "gm"))].map((m) => ({
    line: Number(m[1]),
    column: Number(m[2]),
    field: m[3]!,
    fragment: m[4]!,
  }));
}

function expectations(file: string, text: string): Expectation[] {
  const source = file.endsWith(".json") ? readFileSync(join(FIXTURES, "invalid", `${file}.expect`), "utf8") : text;
  return stated(source, "expect");
}

/** `got` holds one entry per expectation, each at its place with its fragment, and nothing else. */
function assertExactly(what: string, got: readonly PolicyError[], expected: readonly Expectation[]): void {
  const shown = got.map((e) => `${e.line}:${e.column} ${e.field}: ${e.message}`);
  assert.equal(got.length, expected.length, `expected ${expected.length} ${what}, got:\n${shown.join("\n")}`);
  for (const x of expected) {
    const match = got.find(
      (e) => e.line === x.line && e.column === x.column && e.field === x.field && e.message.includes(x.fragment),
    );
    assert.ok(match, `no ${what} ${x.line}:${x.column} ${x.field}: …${x.fragment}… among:\n${shown.join("\n")}`);
  }
}

describe("invalid policies", () => {
  const files = policyFiles("invalid");
  test("the corpus has at least 60 invalid policies", () => assert.ok(files.length >= 60, `${files.length}`));
  for (const file of files) {
    test(file, () => {
      const text = readFileSync(join(FIXTURES, "invalid", file), "utf8");
      const expected = expectations(file, text);
      assert.ok(expected.length > 0, `${file} states no expectation`);
      const result = checkPolicyText(text, file);
      assert.equal(result.ok, false, `${file} was accepted`);
      if (result.ok) return;
      assertExactly("errors", result.errors, expected);
    });
  }
});
