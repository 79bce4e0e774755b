/**
 * The layering of src/ (ARCHITECTURE.md, "Layers"): every directory of src/ has a rank, and a
 * module imports only from directories of a lower rank or from its own. Peers do not import each
 * other — the CAS and the runtime are the two ends of one protocol and share only
 * src/protocol. The import statements are read as text (static, re-exports, side-effect and
 * dynamic imports of relative paths); each offending one is listed as FILE:LINE.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";

const ROOT = resolve(import.meta.dirname, "..");
const SRC = join(ROOT, "src");

/** Lower first: a directory may import from directories of a lower rank, and from itself. */
const RANKS: Readonly<Record<string, number>> = {
  // Primitives: node:crypto and the OS, nothing of Cloister's.
  os: 0,
  crypto: 0,
  // The policy language: the vocabulary that the layers above check against.
  policy: 1,
  // Evidence verified against a policy's measurements; protected trees; identities; the CAS client.
  attestation: 2,
  fs: 2,
  identity: 2,
  client: 2,
  // The wire types shared by the CAS and the runtime; the LAS.
  protocol: 3,
  las: 3,
  // The two ends of the attestation protocol.
  cas: 4,
  runtime: 4,
  // The commands: anything below.
  cli: 5,
};

/**
 * Files held to a stricter rule than their directory's. `cloister run` is the runtime's command:
 * it runs inside the TEE and speaks to the CAS only through the protocol.
 */
const STRICTER: readonly { file: string; mayNotImport: readonly string[] }[] = [
  { file: "src/cli/run.ts", mayNotImport: ["cas"] },
];

/**
 * Imports that break the rule and are allowed for now, as "FILE -> TARGET" with why. Each must
 * still occur: one that no longer does is an error, so that the list shrinks as debts are paid.
 */
const EXCEPTIONS: Readonly<Record<string, string>> = {};

interface Import {
  /** src/…, relative to the repository. */
  readonly file: string;
  readonly line: number;
  /** The imported file, relative to the repository. */
  readonly target: string;
}

const STATIC =
  /^[ \t]*(?:import|export)\s+(?:type\s+)?(?:[\w$]+\s*,?\s*)?(?:\*\s*(?:as\s+[\w$]+)?\s*)?(?:\{[^}]*\}\s*)?from\s*["']([^"']+)["']/gm;
const SIDE_EFFECT = /^[ \t]*import\s*["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The relative imports of one file's text. */
function importsOf(file: string, text: string): Import[] {
  const found: Import[] = [];
  for (const pattern of [STATIC, SIDE_EFFECT, DYNAMIC]) {
    for (const m of text.matchAll(pattern)) {
      const specifier = m[1]!;
      if (!specifier.startsWith(".")) continue;
      const line = text.slice(0, m.index).split("\n").length;
      found.push({ file, line, target: relative(ROOT, resolve(ROOT, dirname(file), specifier)) });
    }
  }
  return found.sort((a, b) => a.line - b.line);
}

/** src/X/… → X; undefined outside src/ or for a file directly in it. */
const layerOf = (path: string): string | undefined => {
  const parts = path.split("/");
  return parts[0] === "src" && parts.length > 2 ? parts[1] : undefined;
};

/** Every import that breaks the layering, as "FILE:LINE imports TARGET (why)". */
function violations(imports: readonly Import[]): { key: string; message: string }[] {
  const out: { key: string; message: string }[] = [];
  for (const { file, line, target } of imports) {
    const from = layerOf(file);
    const to = layerOf(target);
    if (from === undefined || to === undefined || from === to) continue;
    const key = `${file} -> ${target}`;
    const fromRank = RANKS[from];
    const toRank = RANKS[to];
    if (fromRank === undefined || toRank === undefined) {
      const unranked = fromRank === undefined ? from : to;
      out.push({ key, message: `${file}:${line} imports ${target}: src/${unranked} has no rank (add it to RANKS)` });
    } else if (toRank >= fromRank) {
      const how = toRank === fromRank ? "a peer" : "a higher layer";
      out.push({ key, message: `${file}:${line} imports ${target}: src/${from} may not import src/${to} (${how})` });
    } else if (STRICTER.some((s) => s.file === file && s.mayNotImport.includes(to))) {
      out.push({ key, message: `${file}:${line} imports ${target}: ${file} may not import src/${to}` });
    }
  }
  return out;
}

function sourceFiles(): string[] {
  return (readdirSync(SRC, { recursive: true }) as string[])
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join("src", f).split("\\").join("/"))
    .sort();
}

test("src/ imports only from lower layers", () => {
  const imports = sourceFiles().flatMap((file) => importsOf(file, readFileSync(join(ROOT, file), "utf8")));
  assert.ok(imports.length > 100, "the import statements were found");
  const found = violations(imports);
  const offending = found.filter((v) => !(v.key in EXCEPTIONS)).map((v) => v.message);
  assert.deepEqual(offending, [], `imports against the layering:\n  ${offending.join("\n  ")}`);
  const stale = Object.keys(EXCEPTIONS).filter((key) => !found.some((v) => v.key === key));
  assert.deepEqual(stale, [], "exceptions that no longer occur: remove them from EXCEPTIONS");
});

test("every directory of src/ has a rank", () => {
  const dirs = readdirSync(SRC, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
  assert.deepEqual(
    dirs.filter((d) => RANKS[d] === undefined),
    [],
  );
});

test("the reader finds every form of import, and nothing in comments", () => {
  const text = [
    'import { a, type B } from "../cas/a.ts";',
    "import {",
    "  c,",
    '} from "../cas/c.ts";',
    'import type { D } from "../cas/d.ts";',
    'import * as e from "../cas/e.ts";',
    'import f, { g } from "../cas/f.ts";',
    'export { h } from "../cas/h.ts";',
    'export * from "../cas/i.ts";',
    'import "../cas/j.ts";',
    'const k = await import("../cas/k.ts");',
    'import { l } from "node:fs";',
    '// import { m } from "../cas/m.ts";',
    ' * import { n } from "../cas/n.ts";',
    'const o = Buffer.from("../cas/o.ts");',
  ].join("\n");
  const found = importsOf("src/runtime/x.ts", text);
  assert.deepEqual(
    found.map((i) => `${i.line} ${i.target}`),
    [
      "1 src/cas/a.ts",
      "2 src/cas/c.ts",
      "5 src/cas/d.ts",
      "6 src/cas/e.ts",
      "7 src/cas/f.ts",
      "8 src/cas/h.ts",
      "9 src/cas/i.ts",
      "10 src/cas/j.ts",
      "11 src/cas/k.ts",
    ],
  );
  assert.deepEqual(
    violations(found.slice(0, 1)).map((v) => v.message),
    ["src/runtime/x.ts:1 imports src/cas/a.ts: src/runtime may not import src/cas (a peer)"],
  );
  assert.deepEqual(violations(importsOf("src/crypto/x.ts", 'import { y } from "../attestation/y.ts";')), [
    {
      key: "src/crypto/x.ts -> src/attestation/y.ts",
      message:
        "src/crypto/x.ts:1 imports src/attestation/y.ts: src/crypto may not import src/attestation (a higher layer)",
    },
  ]);
  assert.deepEqual(
    violations(importsOf("src/cli/run.ts", 'import { z } from "../cas/z.ts";')).map((v) => v.message),
    ["src/cli/run.ts:1 imports src/cas/z.ts: src/cli/run.ts may not import src/cas"],
  );
});
