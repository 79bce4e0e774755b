/**
 * The policy compiler's front door: text in, either the normalised policy, its hash and any
 * warnings (warnings.ts), or every problem as FILE:LINE:COL: path.to.field: what was expected.
 */
import { policyHash } from "./canonical.ts";
import { type NormalizedPolicy, normalizePolicy } from "./normalize.ts";
import { type PolicyProblem, validatePolicy } from "./validate.ts";
import { policyWarnings } from "./warnings.ts";
import { type FieldPath, parseYamlSource, type YamlSource } from "./yaml-source.ts";

/** Policies are small; a megabyte is a mistake or an attack. */
export const MAX_POLICY_BYTES = 1024 * 1024;

export interface PolicyError {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** The field, as services[0].files[1].mode; "yaml" for a syntax error, "policy" for the whole. */
  readonly field: string;
  readonly message: string;
}

/** A warning is positioned like an error; it does not fail the check. */
export type PolicyWarning = PolicyError;

export type PolicyCheck =
  | {
      readonly ok: true;
      readonly policy: NormalizedPolicy;
      readonly hash: string;
      readonly warnings: readonly PolicyWarning[];
    }
  | { readonly ok: false; readonly errors: readonly PolicyError[] };

export function checkPolicyText(text: string, file: string): PolicyCheck {
  if (Buffer.byteLength(text, "utf8") > MAX_POLICY_BYTES) {
    return {
      ok: false,
      errors: [{ file, line: 1, column: 1, field: "policy", message: `larger than ${MAX_POLICY_BYTES} bytes` }],
    };
  }
  const source = parseYamlSource(text);
  if (source.problems.length > 0) {
    return {
      ok: false,
      errors: source.problems.map((p) => ({ file, line: p.line, column: p.column, field: "yaml", message: p.message })),
    };
  }
  const { policy, problems } = validatePolicy(source.value);
  if (!policy) return { ok: false, errors: positioned(problems, source, file) };
  const normalized = normalizePolicy(policy);
  return {
    ok: true,
    policy: normalized,
    hash: policyHash(normalized),
    warnings: positioned(policyWarnings(policy), source, file),
  };
}

function positioned(problems: readonly PolicyProblem[], source: YamlSource, file: string): PolicyError[] {
  const out = problems.map((p): PolicyError => {
    const at =
      p.at === "key"
        ? source.locateKey(p.path)
        : p.at === "parent"
          ? source.locate(p.path.slice(0, -1))
          : source.locate(p.path);
    return { file, line: at.line, column: at.column, field: formatPath(p.path), message: p.message };
  });
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

export function formatPolicyError(e: PolicyError): string {
  return `${e.file}:${e.line}:${e.column}: ${e.field}: ${e.message}`;
}

export function formatPolicyWarning(w: PolicyWarning): string {
  return `${w.file}:${w.line}:${w.column}: warning: ${w.field}: ${w.message}`;
}

/** services[0].files[1].mode; keys that are not identifiers are quoted: environment["A-B"]. */
export function formatPath(path: FieldPath): string {
  if (path.length === 0) return "policy";
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}
