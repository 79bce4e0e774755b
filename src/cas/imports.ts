/**
 * Secret resolution at use: a service's secret is its policy's own value, or an import that
 * the exporter's *current* policy still exports to the importer (and, if the export is pinned,
 * to the importer's current version; if not pinned, to a policy that existed when the export
 * was stored). Imports may be exported again, so chains are followed;
 * cycles and dangling imports are errors that name the chain. Checked every time a value is
 * used, never only when a policy is stored: an exporter can withdraw at any moment.
 */
import { isImport } from "../policy/schema.ts";
import type { StoredSecret } from "./secrets.ts";
import type { PolicyRecord } from "./service.ts";

export interface PolicyValues {
  readonly record: PolicyRecord;
  readonly values: Readonly<Record<string, StoredSecret>>;
}

export type PolicyLoader = (name: string) => PolicyValues | undefined;

export class ImportError extends Error {
  /** The chain followed, as policy:secret steps. */
  readonly chain: readonly string[];
  constructor(message: string, chain: readonly string[]) {
    super(message);
    this.chain = chain;
  }
}

/** The value of `secret` as `policy` sees it. Throws ImportError when it cannot be had. */
export function resolveSecret(load: PolicyLoader, policy: string, secret: string): StoredSecret {
  const chain: string[] = [];
  let current = load(policy);
  let name = secret;
  if (!current) throw new ImportError(`no policy ${policy}`, chain);
  const receiver = current;
  for (;;) {
    const step = `${current.record.name}:${name}`;
    if (chain.includes(step)) throw new ImportError(`import cycle: ${[...chain, step].join(" → ")}`, [...chain, step]);
    chain.push(step);
    const declared = current.record.policy.secrets.find((s) => s.name === name);
    if (!declared) throw new ImportError(`${current.record.name} has no secret ${name} (${chain.join(" → ")})`, chain);
    if (!isImport(declared)) {
      const value = current.values[name];
      if (!value) throw new ImportError(`the value of ${step} is missing`, chain);
      // A generated value lives in the attestation mode it was made in (docs/policy.md,
      // "Attestation mode changes"): one an exporter in mode none hands to anyone must not become
      // an attested service's secret, nor may one pass between simulation and hardware. An
      // explicit value is its owner's to give. Checked at every use, so an exporter that changes
      // mode later stops the flow at once.
      const mode = receiver.record.policy.security.attestation.mode;
      const holderMode = current.record.policy.security.attestation.mode;
      if (value.spec !== "explicit" && holderMode !== mode)
        throw new ImportError(
          `${step} was generated in attestation mode ${holderMode}, not ${receiver.record.name}'s ${mode}: a generated value crosses no change of mode`,
          chain,
        );
      return value;
    }
    const { policy: exporterName, secret: exported, kind } = declared.import;
    // Whoever holds a policy in mode none gets its configuration without any evidence: an import
    // there would hand another owner's secret to a human.
    if (receiver.record.policy.security.attestation.mode === "none")
      throw new ImportError(
        `${receiver.record.name} has attestation mode none: nothing attests who would receive ${exporterName}:${exported}, so no import reaches it`,
        chain,
      );
    const exporter = load(exporterName);
    if (!exporter)
      throw new ImportError(`dangling import: ${step} imports from ${exporterName}, which does not exist`, chain);
    const source = exporter.record.policy.secrets.find((s) => s.name === exported);
    if (!source) {
      throw new ImportError(
        `dangling import: ${step} imports ${exporterName}:${exported}, which does not exist`,
        chain,
      );
    }
    const grant = source.export.find((e) => e.policy === current!.record.name);
    if (!grant) {
      throw new ImportError(`${exporterName} does not export ${exported} to ${current.record.name}`, chain);
    }
    // An export names a policy, and a name can change hands: taken by someone else before its
    // intended holder made it, or deleted and made again. Unpinned, an export holds only for a
    // policy that existed when the export was granted — kept across the exporter's later updates,
    // so that none of them confirms a new holder of the name by the way; withdrawing the export
    // and granting it again does.
    const since = exporter.record.grants?.[`${exported}\0${current.record.name}`] ?? exporter.record.updated;
    if (grant.policy_hash === null && current.record.created >= since) {
      throw new ImportError(
        `${exporterName} exports ${exported} to ${current.record.name}, but the policy now named ${current.record.name} was made (${current.record.created}) after that export was granted (${since}): the owner of ${exporterName} confirms a new holder of the name by withdrawing the export and granting it again (or by pinning it to a policy hash)`,
        chain,
      );
    }
    if (grant.policy_hash !== null && grant.policy_hash !== current.record.hash) {
      throw new ImportError(
        `${exporterName} exports ${exported} only to ${current.record.name} at ${grant.policy_hash.slice(0, 12)}…, not at its current ${current.record.hash.slice(0, 12)}…`,
        chain,
      );
    }
    const actualKind = isImport(source) ? null : source.kind;
    if (kind !== null && actualKind !== null && kind !== actualKind) {
      throw new ImportError(`${step} declares kind ${kind}, but ${exporterName}:${exported} is ${actualKind}`, chain);
    }
    current = exporter;
    name = exported;
  }
}
