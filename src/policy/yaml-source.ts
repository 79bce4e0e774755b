/**
 * YAML parsing that remembers where every value came from, so that a policy error can name
 * the file, line and column of the offending value (or of the map that lacks a field).
 */
import { type Document, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from "yaml";

/** A path into the parsed document: map keys and sequence indices. */
export type FieldPath = readonly (string | number)[];

export interface Position {
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;
}

export interface SyntaxProblem extends Position {
  readonly message: string;
}

export interface YamlSource {
  /** The document as plain data: maps become objects, sequences arrays. */
  readonly value: unknown;
  /** YAML syntax problems; when non-empty, `value` must not be trusted. */
  readonly problems: readonly SyntaxProblem[];
  /** The position of the value at `path`, or of its nearest existing ancestor. */
  locate(path: FieldPath): Position;
  /** The position of the key (not the value) at `path`, for unknown-field errors. */
  locateKey(path: FieldPath): Position;
}

const START: Position = { line: 1, column: 1 };
const KEEP_AS_TEXT = /^(?:[0-9a-fA-F]{16,}|0[0-9]+)$/;

/** Parse one YAML document. Multi-document streams, unknown tags and duplicate keys are problems. */
export function parseYamlSource(text: string): YamlSource {
  const lines = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    version: "1.2",
    schema: "core",
  });
  const toPosition = (offset: number): Position => {
    const p = lines.linePos(offset);
    return { line: p.line, column: p.col };
  };
  const nodeStart = (node: Node | null | undefined): Position | undefined =>
    node?.range ? toPosition(node.range[0]) : undefined;
  const problems: SyntaxProblem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    const lp = e.linePos?.[0];
    const at = lp ? { line: lp.line, column: lp.col } : toPosition(e.pos[0]);
    const message = e.code === "MULTIPLE_DOCS" ? "a policy file holds exactly one YAML document" : firstLine(e.message);
    problems.push({ ...at, message });
  }
  if (doc.directives?.yaml.explicit && doc.directives.yaml.version !== "1.2") {
    // YAML 1.1 reads 0400 as octal and "yes" as true: one file, two meanings. Refuse it.
    const at = toPosition(Math.max(0, text.search(/^%YAML/m)));
    problems.push({ ...at, message: `YAML ${doc.directives.yaml.version} is not accepted; policies are YAML 1.2` });
  }
  // Hex values and file modes are text, even when YAML 1.2 would read them as numbers: an
  // all-zero rtmr3 or 00112233 would lose its digits, 12e45… would become a float. So a plain
  // scalar of 16 or more hex digits, or of digits with a leading zero, keeps its text. No
  // policy number is that long or written with a leading zero.
  visit(doc, {
    // A map or list as a key has no place in a policy, and toJS would stringify it (with a
    // process warning on stderr): say where it is instead.
    Pair(_key, pair) {
      if (isMap(pair.key) || isSeq(pair.key)) {
        const at = nodeStart(pair.key as Node) ?? START;
        problems.push({ ...at, message: "a key must be a plain name, not a map or a list" });
      }
    },
    Scalar(_key, node) {
      if (node.type === "PLAIN" && typeof node.source === "string" && KEEP_AS_TEXT.test(node.source)) {
        node.value = node.source;
      }
    },
  });
  let value: unknown;
  if (problems.length === 0) {
    try {
      // Aliases are legitimate YAML, but a policy never needs many: bound their expansion.
      value = doc.toJS({ maxAliasCount: 64 });
    } catch (error) {
      problems.push({ ...START, message: error instanceof Error ? error.message : String(error) });
    }
  }
  return {
    value,
    problems,
    locate(path) {
      const trail = walk(doc, path);
      for (let i = trail.length - 1; i >= 0; i--) {
        const at = nodeStart(trail[i]?.value) ?? nodeStart(trail[i]?.key);
        if (at) return at;
      }
      return nodeStart(doc.contents) ?? START;
    },
    locateKey(path) {
      const trail = walk(doc, path);
      const last = trail[trail.length - 1];
      if (trail.length === path.length + 1 && last?.key) {
        const at = nodeStart(last.key);
        if (at) return at;
      }
      return this.locate(path);
    },
  };
}

interface Step {
  readonly key: Node | undefined;
  readonly value: Node | undefined;
}

/** Follow `path` from the root; the result has one step per segment reached, plus the root. */
function walk(doc: Document, path: FieldPath): Step[] {
  const trail: Step[] = [{ key: undefined, value: (doc.contents ?? undefined) as Node | undefined }];
  let node: unknown = doc.contents;
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) break;
      trail.push({ key: pair.key as Node, value: (pair.value ?? undefined) as Node | undefined });
      node = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      const item = node.items[segment];
      if (item === undefined) break;
      trail.push({ key: undefined, value: item as Node });
      node = item;
    } else {
      break;
    }
  }
  return trail;
}

function firstLine(message: string): string {
  const line = message.split("\n")[0] ?? message;
  // The yaml library appends " at line L, column C:"; we print the position ourselves.
  return line.replace(/ at line \d+, column \d+:?$/, "");
}
