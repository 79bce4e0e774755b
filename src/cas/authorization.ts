/**
 * Authorisation exactly per a policy's access_policy (DESIGN.md §4). A rule list admits an
 * action when any one rule does. Multi-party rules count distinct identities that signed the
 * policy hash in question; the caller, authenticated by its TLS client certificate, counts as
 * having signed its own request.
 */
import type { AccessRuleT } from "../policy/schema.ts";

export interface Requester {
  /** The caller's identity hash. */
  readonly identity: string;
  /** Identities whose valid detached signatures came with the request (see signatures.ts). */
  readonly signers: ReadonlySet<string>;
}

/** Whether `rules` admit `requester` for a policy created by `creator`. */
export function admits(rules: readonly AccessRuleT[], creator: string, requester: Requester): boolean {
  return rules.some((rule) => ruleAdmits(rule, creator, requester));
}

function ruleAdmits(rule: AccessRuleT, creator: string, requester: Requester): boolean {
  const resolve = (signer: string) => (signer === "CREATOR" ? creator : signer);
  const signed = (identity: string) => identity === requester.identity || requester.signers.has(identity);
  if (rule === "ANY") return true;
  if (rule === "NONE") return false;
  if (typeof rule === "string") return resolve(rule) === requester.identity;
  if ("require_all" in rule) return rule.require_all.every((s) => signed(resolve(s)));
  // Distinct identities: CREATOR and the creator's own hash in one list are one signer.
  const distinct = new Set(rule.require_at_least.of.map(resolve));
  let count = 0;
  for (const identity of distinct) if (signed(identity)) count++;
  return count >= rule.require_at_least.count;
}

/** Whether a rule list can ever need signatures beyond the caller's own. */
export function needsSignatures(rules: readonly AccessRuleT[]): boolean {
  return rules.some((r) => typeof r !== "string");
}
