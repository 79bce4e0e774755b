/** Small pieces of the policy compiler, each on its own. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { canonicalJson, canonicalPolicy, policyHash, valueCommitment } from "../../src/policy/canonical.ts";
import { checkPolicyText } from "../../src/policy/check.ts";
import { formatDuration, parseDuration } from "../../src/policy/duration.ts";
import { closest, editDistance } from "../../src/policy/suggest.ts";
import { parseYamlSource } from "../../src/policy/yaml-source.ts";

describe("durations", () => {
  for (const [text, seconds] of [
    ["90d", 7_776_000],
    ["12h", 43_200],
    ["30m", 1_800],
    ["45s", 45],
    ["1d12h", 129_600],
    ["2d3h4m5s", 183_845],
  ] as const) {
    test(`${text} = ${seconds}s`, () => {
      assert.equal(parseDuration(text), seconds);
      assert.equal(parseDuration(formatDuration(seconds)), seconds);
    });
  }
  for (const bad of ["", "90", "d", "90days", "1h1d", "-1d", "1.5h", "1 d", "90D"]) {
    test(`refuses ${JSON.stringify(bad)}`, () => assert.equal(parseDuration(bad), undefined));
  }
  test("formats the shortest spelling", () => {
    assert.equal(formatDuration(7_776_000), "90d");
    assert.equal(formatDuration(129_600), "1d12h");
    assert.equal(formatDuration(0), "0s");
  });
});

describe("suggestions", () => {
  test("edit distance counts a swap as one", () => {
    assert.equal(editDistance("secrets", "secrest"), 1);
    assert.equal(editDistance("kitten", "sitting"), 3);
    assert.equal(editDistance("", "abc"), 3);
  });
  test("closest finds near misses and ignores far ones", () => {
    assert.equal(closest("comand", ["command", "environment"]), "command");
    assert.equal(closest("secret", ["secrets", "services"]), "secrets");
    assert.equal(closest("zzzz", ["command", "environment"]), undefined);
  });
});

describe("canonical JSON (RFC 8785)", () => {
  test("sorts keys by UTF-16 code units, no whitespace", () => {
    assert.equal(
      canonicalJson({ b: 1, a: [true, null, "x"], "€": 0, "\u0080": 1 }),
      '{"a":[true,null,"x"],"b":1,"\u0080":1,"€":0}',
    );
  });
  test("escapes as ECMAScript JSON does", () => {
    assert.equal(canonicalJson('\u2028\n"\\\u0001'), JSON.stringify('\u2028\n"\\\u0001'));
  });
  test("omits undefined members and refuses what policies never hold", () => {
    assert.equal(canonicalJson({ a: undefined, b: 2 }), '{"b":2}');
    assert.throws(() => canonicalJson(1.5), /safe integers/);
    assert.throws(() => canonicalJson(2 ** 60), /safe integers/);
    assert.throws(() => canonicalJson(() => 0), /cannot encode/);
  });
});

describe("explicit secret values and the hash", () => {
  const withValue = (value: string, name = "acme/db") =>
    `version: "1"\nname: ${name}\nsecrets:\n  - {name: pw, kind: ascii, value: ${JSON.stringify(value)}}\n`;

  const hashOf = (text: string) => {
    const r = checkPolicyText(text, "p.yaml");
    assert.ok(r.ok);
    return r;
  };

  test("the hash covers a slow, salted commitment to the value, never the value", () => {
    const r = hashOf(withValue("canary-value-1234"));
    const hashed = canonicalPolicy(r.policy);
    assert.ok(!hashed.includes("canary-value-1234"), hashed);
    assert.ok(hashed.includes(`"value_commitment":"${valueCommitment("acme/db", "pw", "canary-value-1234")}"`));
    assert.equal(r.hash, policyHash(r.policy));
    assert.notEqual(hashOf(withValue("canary-value-1235")).hash, r.hash, "the value still counts");
    const start = performance.now();
    valueCommitment("acme/db", "pw", "guess");
    assert.ok(
      performance.now() - start > 5,
      "a commitment takes deliberate work: no fast guessing from a published hash",
    );
    // Salted by policy and secret name: one password in two places looks unrelated.
    assert.notEqual(valueCommitment("acme/db", "pw", "hunter2"), valueCommitment("acme/other", "pw", "hunter2"));
    assert.notEqual(valueCommitment("acme/db", "pw", "hunter2"), valueCommitment("acme/db", "pw2", "hunter2"));
  });

  test("errors about an explicit value never echo it", () => {
    const secret = "s3cr3t-ünïcode";
    const r = checkPolicyText(withValue(secret), "p.yaml");
    assert.equal(r.ok, false);
    if (!r.ok) for (const e of r.errors) assert.ok(!e.message.includes("s3cr3t"), e.message);
    const r2 = checkPolicyText(
      `version: "1"\nname: a\nsecrets:\n  - {name: k, kind: ascii, value: 12345678}\n`,
      "p.yaml",
    );
    assert.equal(r2.ok, false);
    if (!r2.ok) for (const e of r2.errors) assert.ok(!e.message.includes("12345678"), e.message);
  });
});

describe("YAML positions", () => {
  const text = "a: 1\nb:\n  - x: 1\n    y: [1, 2]\n  - {z: q}\n";
  const src = parseYamlSource(text);
  test("values, keys and missing fields", () => {
    assert.deepEqual(src.problems, []);
    assert.deepEqual(src.locate(["a"]), { line: 1, column: 4 });
    assert.deepEqual(src.locate(["b", 0, "y", 1]), { line: 4, column: 12 });
    assert.deepEqual(src.locateKey(["b", 0, "y"]), { line: 4, column: 5 });
    assert.deepEqual(src.locate(["b", 1, "z"]), { line: 5, column: 9 });
    // A missing field is reported at its nearest existing ancestor.
    assert.deepEqual(src.locate(["b", 1, "missing"]), { line: 5, column: 5 });
  });
  test("hex and file modes keep their digits", () => {
    const v = parseYamlSource("a: 0400\nb: 000000000000000000000000\nc: 12e4567890123456789\nd: 400\ne: 10\n").value;
    assert.deepEqual(v, { a: "0400", b: "000000000000000000000000", c: "12e4567890123456789", d: 400, e: 10 });
  });
  test("syntax problems carry positions", () => {
    const bad = parseYamlSource("a: [1, 2\n");
    assert.equal(bad.problems.length, 1);
    assert.equal(bad.problems[0]!.line, 2);
  });
  test("aliases are bounded (billion laughs)", () => {
    const laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++)
      laughs.push(
        `${"abcdefghij"[i]}: &${"abcdefghij"[i]} [${Array(10)
          .fill(`*${"abcdefghij"[i - 1]}`)
          .join(", ")}]`,
      );
    const src = parseYamlSource(laughs.join("\n"));
    assert.ok(src.problems.length > 0, "expansion must be refused");
  });
});
