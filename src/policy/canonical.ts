/**
 * The canonical encoding of a normalised policy and its hash. The encoding is the JSON
 * Canonicalization Scheme (RFC 8785): keys sorted by UTF-16 code units, no whitespace,
 * ECMAScript number and string serialisation. Policies hold only strings, integers,
 * booleans, null, lists and maps, for which JCS is exactly JSON.stringify with sorted keys.
 */
import { createHash, scryptSync } from "node:crypto";
import type { NormalizedPolicy } from "./normalize.ts";

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "string" || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`canonical JSON holds only safe integers, got ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  throw new Error(`canonical JSON cannot encode ${typeof value}`);
}

/** Domain separation: a policy hash can never collide with a hash of anything else we sign. */
const POLICY_HASH_PREFIX = "cloister-policy-v1\0";

/**
 * The policy hash: lowercase hex SHA-256 of the canonical encoding. Explicit secret values are
 * hashed as a slow commitment (valueCommitment), never as themselves: the policy hash is shown
 * to every reader and written to the audit log, and a fast hash over a short password would
 * let anyone who sees it test guesses at full speed.
 */
export function policyHash(policy: NormalizedPolicy): string {
  return createHash("sha256").update(POLICY_HASH_PREFIX).update(canonicalPolicy(policy)).digest("hex");
}

/** The exact text the policy hash covers: the canonical JSON with explicit values committed. */
export function canonicalPolicy(policy: NormalizedPolicy): string {
  const committed = {
    ...policy,
    secrets: policy.secrets.map((s) =>
      "value" in s && typeof s.value === "string"
        ? { ...s, value: undefined, value_commitment: valueCommitment(policy.name, s.name, s.value) }
        : s,
    ),
  };
  return canonicalJson(committed);
}

/** scrypt parameters for value commitments: 16 MiB and about 30 ms per value. */
const SCRYPT = { N: 2 ** 14, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;

/**
 * A deterministic, deliberately slow commitment to an explicit secret value, salted with the
 * policy and secret names so that one value used in two places gives unrelated commitments.
 */
export function valueCommitment(policyName: string, secretName: string, value: string): string {
  const salt = `cloister-policy-value-v1\0${policyName}\0${secretName}`;
  return scryptSync(value, salt, 32, SCRYPT).toString("hex");
}
