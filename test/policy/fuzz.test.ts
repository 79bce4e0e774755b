/**
 * The checker never throws: whatever text it gets, it answers with a result ({ok: true}) or
 * positioned problems ({ok: false, errors} each with line, column, field and message; warnings
 * alike). Inputs: mutations of the valid fixtures (leaves and keys replaced with values of
 * random types, field names of the schema, templates, damaged PEM blocks), YAML built from the
 * schema's field names, arbitrary strings and arbitrary bytes. A canary planted in secret values
 * never appears in a message. And what the checker passes, the CAS can store (secretValuesFor
 * does not throw).
 *
 * The seed is fixed and each property bounded in runs and time, so CI takes a few seconds.
 * Explore further with CLOISTER_FUZZ_RUNS=20000 CLOISTER_FUZZ_SEED=N node --test test/policy/fuzz.test.ts.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import fc from "fast-check";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { secretValuesFor } from "../../src/cas/secrets.ts";
import { checkPolicyText, type PolicyCheck } from "../../src/policy/check.ts";
import {
  ATTESTATION_MODES,
  KEY_TYPES,
  MEASUREMENT_SCHEMAS,
  PolicySchema,
  REDACTED,
  SECRET_KINDS,
  TOLERATIONS,
  UPDATE_POLICIES,
} from "../../src/policy/schema.ts";
import { FORMATS } from "../../src/policy/templates.ts";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const SEED = Number(process.env.CLOISTER_FUZZ_SEED ?? 0x17);
const DEEP = Number(process.env.CLOISTER_FUZZ_RUNS ?? 0);
/** Runs and a time bound per property: the time bound keeps a slow machine's CI short. */
const budget = (runs: number, ms: number) =>
  DEEP > 0
    ? { seed: SEED, numRuns: DEEP }
    : { seed: SEED, numRuns: runs, interruptAfterTimeLimit: ms, markInterruptAsFailure: false };

/** A string that must never be echoed: it is only ever placed in secret values. */
const CANARY = "Zk9DYW5hcnk7x";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "policies", "valid");
const fixtures: { file: string; data: Json }[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith(".yaml") || f.endsWith(".json"))
  .sort()
  .map((file) => ({ file, data: parseYaml(readFileSync(join(FIXTURES, file), "utf8"), { version: "1.2" }) as Json }));

/** Every field name the language knows, read from the schemas themselves. */
const FIELD_NAMES = (() => {
  const names = new Set<string>();
  const seen = new Set<unknown>();
  const visit = (s: unknown): void => {
    if (seen.has(s)) return;
    seen.add(s);
    const def = (s as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
    if (!def) return;
    for (const k of ["innerType", "in", "out", "element", "valueType", "keyType"]) if (def[k]) visit(def[k]);
    if (Array.isArray(def.options)) for (const o of def.options) visit(o);
    if (def.shape) {
      for (const [k, v] of Object.entries(def.shape as Record<string, unknown>)) {
        names.add(k);
        visit(v);
      }
    }
  };
  visit(PolicySchema);
  for (const m of Object.values(MEASUREMENT_SCHEMAS)) visit(m);
  return [...names].sort();
})();

/** PEM blocks from the fixtures: material for damaged values. */
const PEM_BLOCKS = (() => {
  const blocks = new Set<string>();
  for (const f of readdirSync(FIXTURES)) {
    const text = readFileSync(join(FIXTURES, f), "utf8").replace(/^ +/gm, "");
    for (const m of text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----\n?/g)) blocks.add(m[0]);
  }
  return [...blocks];
})();
assert.ok(PEM_BLOCKS.length >= 4, "the fixtures hold certificates and keys to damage");

const WORDS = [
  ...SECRET_KINDS,
  ...KEY_TYPES,
  ...FORMATS,
  ...ATTESTATION_MODES,
  ...TOLERATIONS,
  ...UPDATE_POLICIES,
  ...Object.keys(MEASUREMENT_SCHEMAS),
  "CREATOR",
  "ANY",
  "NONE",
  REDACTED,
  "toString",
  "__proto__",
  "constructor",
  "hasOwnProperty",
  "valueOf",
  "",
  "1",
  "0400",
  "90d",
  "127.0.0.1:8080",
  "[::1]:8080",
  "/etc/x",
  "dns:a.example",
  "a".repeat(64),
  "0".repeat(96),
];

/** The explicit PEM values of the valid fixtures: each one the checker accepts. */
const PEM_VALUES = (() => {
  const values: string[] = [];
  const walk = (v: Json) => {
    if (typeof v === "string" && v.includes("-----BEGIN")) values.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") Object.values(v).forEach(walk);
  };
  for (const f of fixtures) walk(f.data);
  return values;
})();

/**
 * A PEM value, often valid (a fixture's value, or blocks joined in another order), often with
 * one block damaged — any block, issuers and keys as much as the first: cut short, a base64
 * line dropped, a character flipped, its label changed, the canary inside it. The canary also
 * stands outside the blocks, where it is ignored: values with whole blocks can pass.
 */
const damagedPem: fc.Arbitrary<string> = fc
  .record({
    base: fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...PEM_VALUES) },
      fc.array(fc.constantFrom(...PEM_BLOCKS), { minLength: 1, maxLength: 4 }).map((b) => b.join("")),
    ),
    block: fc.nat(),
    at: fc.nat(),
    damage: fc.constantFrom("none", "reorder", "cut", "dropLine", "flip", "canary", "label"),
    label: fc.constantFrom("X509 CERTIFICATE", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "CRL"),
    crlf: fc.boolean(),
  })
  .map(({ base, block, at, damage, label, crlf }) => {
    const blocks = [...base.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----\n?/g)].map((m) => m[0]);
    const i = block % blocks.length;
    const lines = blocks[i]!.split("\n");
    const inner = 1 + (at % Math.max(1, lines.length - 2)); // a body line
    switch (damage) {
      case "reorder":
        blocks.push(...blocks.splice(0, i));
        break;
      case "cut":
        blocks[i] = blocks[i]!.slice(0, at % blocks[i]!.length);
        break;
      case "dropLine":
        lines.splice(inner, 1);
        blocks[i] = lines.join("\n");
        break;
      case "flip": {
        const j = at % blocks[i]!.length;
        blocks[i] = `${blocks[i]!.slice(0, j)}${blocks[i]![j] === "A" ? "B" : "A"}${blocks[i]!.slice(j + 1)}`;
        break;
      }
      case "canary":
        lines.splice(inner, 0, CANARY);
        blocks[i] = lines.join("\n");
        break;
      case "label":
        blocks[i] = blocks[i]!.replace(/(BEGIN|END) [A-Z ]+-----/, `$1 ${label}-----`);
        break;
    }
    const text = `${CANARY}\n${blocks.join("")}`;
    return crlf ? text.replace(/\n/g, "\r\n") : text;
  });

/** What a secret's value may become: always carrying the canary when it is text. */
const secretValue: fc.Arbitrary<Json> = fc.oneof(
  damagedPem,
  fc.string().map((s) => `${s}${CANARY}${s}`),
  fc.constantFrom(CANARY, `${CANARY}\n`, `-----BEGIN PRIVATE KEY-----\n${CANARY}\n-----END PRIVATE KEY-----\n`),
  fc.stringMatching(/^[0-9a-f]{0,8}$/).map((s) => `${s}${Buffer.from(CANARY).toString("hex")}`),
);

const templateText = fc
  .record({
    name: fc.oneof(fc.constantFrom("api_key", "db_password", "web_cert", "ca", "toString", ""), fc.string()),
    format: fc.option(fc.constantFrom(...FORMATS, "nope", ""), { nil: undefined }),
    wrap: fc.constantFrom("$$", "$", "", "$$$$"),
  })
  .map(({ name, format, wrap }) => `${wrap}cloister::${name}${format === undefined ? "" : `:${format}`}${wrap}`);

const scalar: fc.Arbitrary<Json> = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom(...WORDS),
  fc.constantFrom(...FIELD_NAMES),
  templateText,
  fc.integer(),
  fc.integer({ min: -2, max: 70_000 }),
  fc.double(),
  fc.constantFrom(2 ** 53 + 1, -0, 1e300, 0x7fffffff),
  fc.boolean(),
  fc.constant(null),
);

const anyValue: fc.Arbitrary<Json> = fc.letrec<{ v: Json }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.array(tie("v"), { maxLength: 3 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...FIELD_NAMES, ...WORDS), fc.string({ maxLength: 8 })), tie("v"), {
      maxKeys: 4,
    }),
  ),
})).v;

type Mutation =
  | { op: "set"; at: number; value: Json }
  | { op: "delete"; at: number }
  | { op: "addKey"; at: number; key: string; value: Json }
  | { op: "renameKey"; at: number; key: string }
  | { op: "duplicate"; at: number }
  | { op: "secretValue"; at: number; value: Json };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: anyValue }),
  fc.record({ op: fc.constant("delete" as const), at: fc.nat() }),
  fc.record({
    op: fc.constant("addKey" as const),
    at: fc.nat(),
    key: fc.oneof(fc.constantFrom(...FIELD_NAMES, "__proto__", "toString"), fc.string({ maxLength: 8 })),
    value: anyValue,
  }),
  fc.record({
    op: fc.constant("renameKey" as const),
    at: fc.nat(),
    key: fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.string({ maxLength: 8 })),
  }),
  fc.record({ op: fc.constant("duplicate" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("secretValue" as const), at: fc.nat(), value: secretValue }),
);

type Slot = { parent: Json[] | { [k: string]: Json }; key: string | number };

/** Every place in the document that holds a value, parents before children. */
function slots(root: Json): Slot[] {
  const out: Slot[] = [];
  const walk = (v: Json) => {
    if (Array.isArray(v))
      v.forEach((x, i) => {
        out.push({ parent: v, key: i });
        walk(x);
      });
    else if (v !== null && typeof v === "object")
      for (const [k, x] of Object.entries(v)) {
        out.push({ parent: v, key: k });
        walk(x);
      }
  };
  walk(root);
  return out;
}

/** The secrets of a document, as maps: where a secret value goes. */
const secretMaps = (root: Json): { [k: string]: Json }[] => {
  const secrets = root !== null && typeof root === "object" && !Array.isArray(root) ? root.secrets : undefined;
  return Array.isArray(secrets)
    ? secrets.filter((s): s is { [k: string]: Json } => s !== null && typeof s === "object" && !Array.isArray(s))
    : [];
};

function define(target: { [k: string]: Json }, key: string, value: Json) {
  // __proto__ must become a key of its own, as the YAML parser makes it, not the prototype.
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function mutate(doc: Json, mutations: readonly Mutation[]): Json {
  const root = structuredClone(doc);
  // Secret values last: a later rename must not move the canary into a field that may be echoed.
  const ordered = [
    ...mutations.filter((m) => m.op !== "secretValue"),
    ...mutations.filter((m) => m.op === "secretValue"),
  ];
  for (const m of ordered) {
    if (m.op === "secretValue") {
      const secrets = secretMaps(root);
      if (secrets.length > 0) define(secrets[m.at % secrets.length]!, "value", m.value);
      continue;
    }
    const all = slots(root);
    if (all.length === 0) continue;
    const { parent, key } = all[m.at % all.length]!;
    const obj = parent as { [k: string]: Json };
    switch (m.op) {
      case "set":
        define(obj, String(key), m.value);
        if (Array.isArray(parent)) parent[key as number] = m.value;
        break;
      case "delete":
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete obj[key as string];
        break;
      case "addKey": {
        const target = obj[key as string] as Json;
        if (target !== null && typeof target === "object" && !Array.isArray(target)) define(target, m.key, m.value);
        else if (Array.isArray(target)) target.push(m.value);
        break;
      }
      case "renameKey":
        if (!Array.isArray(parent)) {
          const v = obj[key as string]!;
          delete obj[key as string];
          define(obj, m.key, v);
        }
        break;
      case "duplicate":
        if (Array.isArray(parent)) parent.push(structuredClone(parent[key as number]!));
        break;
    }
  }
  return root;
}

/** The property every input must have: a result, or problems with positions. Never a throw. */
function assertWellFormed(r: PolicyCheck, text: string): void {
  if (r.ok) assert.match(r.hash, /^[0-9a-f]{64}$/);
  else assert.ok(r.errors.length > 0, "a failed check has at least one problem");
  const lines = text.split(/\r\n|\r|\n/).length;
  // Warnings are positioned like errors, and never echo a secret value either.
  for (const e of r.ok ? r.warnings : r.errors) {
    assert.ok(Number.isInteger(e.line) && e.line >= 1 && e.line <= lines + 1, `line ${e.line} of ${lines}`);
    assert.ok(Number.isInteger(e.column) && e.column >= 1, `column ${e.column}`);
    assert.equal(typeof e.field, "string");
    assert.ok(e.field.length > 0);
    assert.equal(typeof e.message, "string");
    assert.ok(e.message.length > 0);
    assert.ok(!e.message.includes(CANARY), `a message echoes a secret value: ${e.field}: ${e.message}`);
  }
}

function check(text: string): PolicyCheck {
  const r = checkPolicyText(text, "fuzz.yaml");
  assertWellFormed(r, text);
  return r;
}

const toYaml = (doc: Json, flow: boolean) =>
  stringifyYaml(doc, { lineWidth: 0, aliasDuplicateObjects: false, ...(flow ? { collectionStyle: "flow" } : {}) });

describe("the checker never throws", () => {
  test("mutations of the valid fixtures", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: fixtures.length - 1 }),
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        (i, mutations, flow) => {
          check(toYaml(mutate(fixtures[i]!.data, mutations), flow));
        },
      ),
      budget(400, 1_500),
    );
  });

  test("damaged explicit values: what the checker passes, the CAS stores", async () => {
    // One given secret per policy (each value that passes costs a 30 ms scrypt commitment), and
    // a certificate the CAS issues under it when it is a CA: issuing must not fail either.
    let stored = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ weight: 4, arbitrary: damagedPem }, secretValue),
        fc.constantFrom("x509", "x509-ca", "private-key"),
        fc.nat(3),
        async (value, other, pick) => {
          // Mostly the kind the value's first block suggests, so that values can pass.
          const first = typeof value === "string" ? /-----BEGIN ([A-Z ]+)-----/.exec(value)?.[1] : undefined;
          const fits = first === "CERTIFICATE" ? (pick % 2 === 0 ? "x509" : "x509-ca") : "private-key";
          const kind = pick === 3 ? other : fits;
          const secrets: Json[] = [{ name: "given", kind, value }];
          if (kind === "x509-ca") secrets.push({ name: "issued", kind: "x509", issuer: "given" });
          const r = check(toYaml({ version: "1", name: "fuzz/given", secrets }, false));
          if (r.ok) {
            await secretValuesFor(r.policy, new Map());
            stored++;
          }
        },
      ),
      {
        ...budget(300, 1_500),
        // A value the checker passes, the canary outside its blocks: the property is never vacuous.
        examples: [[`${CANARY}\n${PEM_VALUES.find((v) => v.startsWith("-----BEGIN CERTIFICATE"))}`, "x509-ca", 3]],
      },
    );
    assert.ok(stored > 0, "some values passed the checker and were stored");
  });

  test("YAML built from the schema's field names", () => {
    const doc = fc.dictionary(fc.constantFrom(...FIELD_NAMES, "version", "name"), anyValue, { maxKeys: 8 });
    fc.assert(
      fc.property(doc, fc.boolean(), (d, flow) => {
        check(toYaml({ version: "1", name: "fuzz/p", ...d } as Json, flow));
      }),
      budget(300, 700),
    );
  });

  test("arbitrary strings", () => {
    // Any code points, lone surrogates included (fast-check's own "binary" unit takes a second to set up).
    const codePoints = fc
      .array(fc.integer({ min: 0, max: 0x10ffff }), { maxLength: 200 })
      .map((cps) => String.fromCodePoint(...cps));
    const yamlish = fc
      .array(
        fc.oneof(
          fc.constantFrom(
            ...FIELD_NAMES,
            ":",
            "- ",
            "\n",
            "  ",
            "{",
            "}",
            "[",
            "]",
            ",",
            "&a",
            "*a",
            "!!",
            "? ",
            "|",
            ">",
            "#",
            "'",
            '"',
            "%YAML 1.1\n",
            "---\n",
            "$$",
          ),
          fc.string({ maxLength: 6 }),
        ),
        { maxLength: 40 },
      )
      .map((parts) => parts.join(""));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), codePoints, yamlish), (s) => {
        check(s);
      }),
      budget(500, 700),
    );
  });

  test("arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, latin1) => {
        check(Buffer.from(bytes).toString(latin1 ? "latin1" : "utf8"));
      }),
      budget(300, 400),
    );
  });
});
