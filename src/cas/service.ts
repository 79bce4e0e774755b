/**
 * The CAS's policy service: create, update, read, list, delete and history of policies, with
 * authorisation per access_policy, secrets generated and migrated, envelope encryption, and
 * an audit entry for every decision. HTTP lives in server.ts; this file knows nothing of it.
 */
import { hkdfSync, type KeyObject } from "node:crypto";
import type { Collateral } from "../attestation/dcap/collateral.ts";
import { SignatureError, type SignedAction, verifyPolicySignature } from "../crypto/signatures.ts";
import { policyHash } from "../policy/canonical.ts";
import { checkPolicyText, formatPolicyError, type PolicyError, type PolicyWarning } from "../policy/check.ts";
import type { NormalizedPolicy } from "../policy/normalize.ts";
import { type AccessRuleT, isImport, REDACTED } from "../policy/schema.ts";
import { AUDIT_GENESIS, type AuditEntry, AuditLog, type AuditPage, entryDigest } from "./audit.ts";
import { admits, type Requester } from "./authorization.ts";
import { ImportError, type PolicyValues, resolveSecret } from "./imports.ts";
import { hasRedacted, keepRedactedValues, presentForEdit } from "./redact.ts";
import { type Refusal, RefusalTally } from "./refusal-tally.ts";
import { keptAcrossModeChange, type StoredSecret, secretValuesFor } from "./secrets.ts";
import { Envelope, TamperError } from "./store/envelope.ts";
import type { AuditRow, NonceSpend, PolicyRow, Store } from "./store/store.ts";
import { type AmdKeySummary, CollateralError, type DcapCollateralSummary, TrustStore } from "./trust-store.ts";

/** Audit entries in one page of an export, at most (GET /v1/audit's `limit`). */
export const AUDIT_PAGE_MAX = 10_000;

export class CasError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: readonly PolicyError[] | undefined;
  constructor(status: number, code: string, message: string, details?: readonly PolicyError[]) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The sealed content of a policy's current row. */
export interface PolicyRecord {
  readonly name: string;
  readonly version: number;
  readonly hash: string;
  readonly creator: string;
  readonly created: string;
  readonly updated: string;
  readonly updated_by: string;
  /** The policy as its author wrote it (explicit values included: the record is sealed). */
  readonly text: string;
  readonly policy: NormalizedPolicy;
  /**
   * Since when each unpinned export has been granted without a break, by `SECRET\0IMPORTER`: an
   * export holds only for an importer made before that (src/cas/imports.ts). Carried forward by
   * updates that keep the grant; an update does not confirm a new holder of the name.
   */
  readonly grants?: Readonly<Record<string, string>>;
}

/** The unpinned exports of `policy`, each with since when it has been granted (see PolicyRecord). */
export function grantTimes(policy: NormalizedPolicy, now: string, previous?: PolicyRecord): Record<string, string> {
  const times: Record<string, string> = {};
  for (const secret of policy.secrets) {
    for (const grant of secret.export) {
      if (grant.policy_hash !== null) continue;
      const key = `${secret.name}\0${grant.policy}`;
      times[key] = previous?.grants?.[key] ?? now;
    }
  }
  return times;
}

export interface VersionRecord {
  readonly version: number;
  readonly hash: string;
  readonly time: string;
  readonly actor: string;
}

interface SecretsRecord {
  readonly values: Record<string, StoredSecret>;
}

export interface CasOptions {
  /**
   * Who may create top-level policies, besides the administrators: these identities, or "any"
   * identity at all. Default: the administrators only — an open CAS lets anyone with a
   * self-made certificate grow its store, so opening it is the operator's explicit choice.
   */
  readonly createTopLevel?: readonly string[] | "any" | undefined;
  /** Identities allowed to enrol LAS keys and import collateral; "any" in dev mode; default nobody. */
  readonly admins?: readonly string[] | "any" | undefined;
  /** Audit checkpoints are signed every this many entries (and at every export). */
  readonly checkpointEvery?: number;
  readonly now?: () => Date;
}

export interface PolicySummary {
  readonly name: string;
  readonly hash: string;
  readonly version: number;
}

/** What create and update return: the summary, and the check's warnings when there are any. */
export type PolicyWritten = PolicySummary & { readonly warnings?: readonly PolicyWarning[] };

const withWarnings = (summary: PolicySummary, warnings: readonly PolicyWarning[]): PolicyWritten =>
  warnings.length > 0 ? { ...summary, warnings } : summary;

export class CasService {
  readonly #store: Store;
  readonly #envelope: Envelope;
  readonly #audit: AuditLog;
  readonly #options: CasOptions;
  /** Policy name → current hash, rebuilt from the verified audit log: catches a restored record. */
  readonly #index: Map<string, string>;
  /**
   * How many times each policy was created, updated or deleted since this CAS started: what an
   * attestation compares before its grant (a hash alone would not tell a policy deleted and
   * created again with the same text from the one it read).
   */
  readonly #generations = new Map<string, number>();
  /**
   * Volume tags by "policy\0volume", rebuilt from the verified audit log like the index: the
   * log's volume.commit entries are where the tags live.
   */
  readonly #volumes: Map<string, VolumeState>;
  /** Enrolled LAS keys and imported collateral. */
  readonly trust: TrustStore;
  /**
   * The key challenge nonces are authenticated with (challenge-nonce.ts): the CAS's, derived from
   * its master key, so that every replica accepts the nonces any of them issued.
   */
  readonly challengeKey: Buffer;
  /**
   * Identities the CAS has granted something (from the verified log, then as it grants), and its
   * administrators: their refusals are audited one by one. Anyone else's are tallied (#tally).
   */
  readonly #known: Set<string>;
  /** Strangers' refusals, counted rather than each written (refusal-tally.ts). */
  readonly #tally: RefusalTally;
  /** Decrypted current records, valid while the stored row is byte-for-byte the one we opened. */
  readonly #cache = new Map<string, { sealed: Buffer; record: PolicyRecord }>();
  /**
   * Opened secrets of each policy's current version, valid while the stored row is byte-for-byte
   * the one opened: each attestation would otherwise decrypt and parse them again (and re-read
   * a CA's key). Plaintext in the CAS's memory, as the master key that opens them already is.
   */
  readonly #openedSecrets = new Map<
    string,
    { version: number; sealed: Buffer; values: Record<string, StoredSecret> }
  >();
  /** What `get` shows of a version (redacted, predecessor current): YAML work done once per version. */
  readonly #presented = new Map<string, { hash: string; text: string }>();

  /** The last audit entry applied (#follow): where the next one must continue the chain. */
  #lastApplied: AuditRow | undefined;
  /** Set when an enrolment or import was applied: the trust store is read again at #sync. */
  #trustStale = false;
  /** Audit writes under way that no caller waits for (#background): flushRefusals waits for them. */
  readonly #tallying = new Set<Promise<void>>();

  private constructor(
    store: Store,
    envelope: Envelope,
    audit: AuditLog,
    options: CasOptions,
    trust: TrustStore,
    challengeKey: Buffer,
  ) {
    this.challengeKey = challengeKey;
    this.#known = new Set();
    if (Array.isArray(options.admins)) for (const admin of options.admins) this.#known.add(admin);
    this.#tally = new RefusalTally((r) => this.#tallied(r), {
      now: () => this.#now(),
    });
    this.#store = store;
    this.#envelope = envelope;
    this.#audit = audit;
    this.#options = options;
    this.#index = new Map();
    this.#volumes = new Map();
    this.trust = trust;
  }

  /**
   * Open the service on a store: verify the whole audit log and rebuild the index from it, then
   * follow the log — what this service and any other replica on the database appends.
   */
  static async open(
    store: Store,
    masterKey: Buffer,
    signingKey: KeyObject,
    options: CasOptions = {},
  ): Promise<CasService> {
    const envelope = new Envelope(masterKey);
    const audit = new AuditLog(masterKey, signingKey);
    const challengeKey = Buffer.from(
      hkdfSync("sha256", masterKey, Buffer.alloc(0), "cloister challenge nonces v1", 32),
    );
    const trust = await TrustStore.load(store, envelope);
    const service = new CasService(store, envelope, audit, options, trust, challengeKey);
    const rows = await store.audit(0);
    service.#follow(rows);
    store.follow(service.#lastApplied?.seq ?? 0, (more) => service.#follow(more));
    return service;
  }

  /**
   * Apply committed audit entries, in order: the index, the generations, the volume tags, who is
   * known, and whether the trust store must be read again all follow from the log. The entries
   * must continue the chain from the last one applied, each with its MAC: a replica never acts
   * on an entry that fails verification (nor on any after it).
   */
  #follow(rows: readonly AuditRow[]): void {
    if (rows.length === 0) return;
    const problem = this.#audit.verifyRows(rows, this.#lastApplied);
    if (problem) throw new TamperError(`the audit log fails verification: ${problem}`);
    for (const row of rows) this.#apply(JSON.parse(row.entry) as AuditEntry);
    this.#lastApplied = rows.at(-1);
  }

  #apply(e: AuditEntry): void {
    if (e.outcome !== "granted") return;
    this.#known.add(e.actor);
    switch (e.action) {
      case "policy.create":
      case "policy.update":
        if (e.policy_hash) this.#indexed(e.target, e.policy_hash);
        break;
      case "policy.delete":
        this.#indexed(e.target, undefined);
        for (const key of this.#volumes.keys()) if (key.startsWith(`${e.target}\0`)) this.#volumes.delete(key);
        this.#cache.delete(e.target);
        this.#openedSecrets.delete(e.target);
        this.#presented.delete(e.target);
        this.#envelope.forget(e.target);
        break;
      case "volume.commit": {
        const commit = parseVolumeCommit(e);
        if (commit) this.#volumes.set(commit.key, commit.state);
        break;
      }
      case "las.enrol":
      case "collateral.import":
        this.#trustStale = true;
        break;
    }
  }

  /**
   * Before a decision that depends on the log: apply what other replicas appended since this one
   * last looked (nothing, on the embedded store), and read the trust store again if it changed.
   */
  async sync(): Promise<void> {
    await this.#store.catchUp();
    if (this.#trustStale) {
      this.#trustStale = false;
      await this.trust.reload();
    }
  }

  #now(): Date {
    return this.#options.now?.() ?? new Date();
  }

  // -------------------------------------------------------------------------------------------
  // Operations

  async create(actor: string, text: string, signatures: readonly string[]): Promise<PolicyWritten> {
    const checked = this.#check(text);
    const { policy, hash } = checked;
    if (policy.predecessor !== undefined) {
      throw new CasError(400, "predecessor_on_create", "a new policy has no predecessor: remove the predecessor field");
    }
    if (hasRedacted(policy)) throw new CasError(400, "redacted_value", `a new policy cannot keep a ${REDACTED} value`);
    // Authorised first: only who may create the name learns that it is taken (names are unique,
    // so they may). The index (from the audit log) knows every policy; a concurrent create is
    // caught by the store.
    await this.sync();
    await this.#authorizeCreate(actor, policy.name, hash, signatures);
    if (this.#index.has(policy.name)) {
      // Asked again after the answer was lost (a replica died after the commit): done already.
      const current = await this.#load(policy.name);
      if (current?.record.hash === hash && current.record.creator === actor && current.record.version === 1)
        return withWarnings({ name: policy.name, hash, version: 1 }, checked.warnings);
      await this.#refuse(actor, "policy.create", policy.name, hash, "a policy of that name exists");
      throw new CasError(409, "exists", `policy ${policy.name} already exists; update it instead`);
    }
    const values = await secretValuesFor(policy, new Map());
    const now = this.#now().toISOString();
    const record: PolicyRecord = {
      name: policy.name,
      version: 1,
      hash,
      creator: actor,
      created: now,
      updated: now,
      updated_by: actor,
      grants: grantTimes(policy, now),
      text,
      policy,
    };
    const dek = this.#envelope.newDataKey(policy.name);
    // The follower applies the entry (the index, the generation) once it is committed.
    const ok = await this.#store.create(this.#write(dek.key, dek.wrapped, record, values), (prev) =>
      this.#auditRow(prev, actor, "policy.create", policy.name, hash, "granted", "created"),
    );
    if (!ok) {
      await this.#refuse(actor, "policy.create", policy.name, hash, "a policy of that name was created concurrently");
      throw new CasError(409, "exists", `policy ${policy.name} already exists; update it instead`);
    }
    await this.#declareVolumes(actor, policy.name, policy, hash);
    await this.#checkpointIfDue();
    return withWarnings({ name: policy.name, hash, version: 1 }, checked.warnings);
  }

  /**
   * Update a policy; `expectedName`, if given, is the name the request was addressed to.
   * `regenerateSecrets`: the owner's consent to a change of attestation mode that discards the
   * generated values (see #modeChange).
   */
  async update(
    actor: string,
    text: string,
    signatures: readonly string[],
    expectedName?: string,
    options: { readonly regenerateSecrets?: boolean } = {},
  ): Promise<PolicyWritten> {
    const checked = this.#check(text);
    const name = checked.policy.name;
    if (expectedName !== undefined && expectedName !== name) {
      throw new CasError(400, "name_mismatch", `the policy is named ${name}, but the request is for ${expectedName}`);
    }
    await this.sync();
    const current = await this.#load(name);
    if (!current) throw await this.#unseen(actor, "policy.update", name);
    const { row, record } = current;
    const previousValues = await this.#secrets(name, row.version, row.wrappedKey);
    // Nothing about the stored policy shapes the answer before the caller is authorised: the
    // values a <redacted> would keep are looked up here, but a missing one is told only below.
    const { policy, unkept } = keepRedactedValues(checked.policy, record.policy, previousValues);
    const hash = policy === checked.policy ? checked.hash : policyHash(policy);
    // Authorise before comparing versions, so that the current hash is told only to those who may update.
    await this.#authorize(
      actor,
      "write",
      "policy.update",
      name,
      hash,
      record,
      record.policy.access_policy.update,
      signatures,
    );
    if (unkept.length > 0) {
      throw new CasError(
        400,
        "redacted_value",
        unkept
          .map((s) => `secret ${s.name} says ${REDACTED} but has no stored explicit value of kind ${s.kind} to keep`)
          .join("; "),
      );
    }
    if (policy.predecessor === undefined) {
      throw new CasError(400, "no_predecessor", `an update names its predecessor: add predecessor: ${record.hash}`);
    }
    if (policy.predecessor !== record.hash) {
      // Asked again after the answer was lost: this very update is the current version.
      if (
        record.hash === hash &&
        record.updated_by === actor &&
        (await this.#previousHash(name, row)) === policy.predecessor
      )
        return withWarnings({ name, hash, version: record.version }, checked.warnings);
      await this.#refuse(
        actor,
        "policy.update",
        name,
        hash,
        `predecessor ${policy.predecessor} is not the current version`,
      );
      throw new CasError(
        409,
        "conflict",
        `predecessor ${policy.predecessor} is not the current version of ${name} (${record.hash}); fetch it and apply your change again`,
      );
    }
    const previous = new Map(Object.entries(previousValues));
    const carried = await this.#modeChange(actor, record, policy, hash, previous, options.regenerateSecrets === true);
    const values = await secretValuesFor(policy, carried);
    const now = this.#now().toISOString();
    const next: PolicyRecord = {
      ...record,
      version: record.version + 1,
      hash,
      updated: now,
      updated_by: actor,
      grants: grantTimes(policy, now, record),
      text,
      policy,
    };
    const dek = this.#envelope.dataKey(name, row.wrappedKey);
    const reason = `version ${next.version}${carried === previous ? "" : `; attestation mode ${record.policy.security.attestation.mode} -> ${policy.security.attestation.mode}: generated values made anew`}`;
    const ok = await this.#store.update(row.version, this.#write(dek, row.wrappedKey, next, values), (prev) =>
      this.#auditRow(prev, actor, "policy.update", name, hash, "granted", reason),
    );
    if (!ok) {
      await this.#refuse(actor, "policy.update", name, hash, "lost a concurrent update");
      throw new CasError(409, "conflict", `${name} was updated concurrently; fetch it and apply your change again`);
    }
    await this.#declareVolumes(actor, name, policy, hash);
    await this.#checkpointIfDue();
    return withWarnings({ name, hash, version: next.version }, checked.warnings);
  }

  /** The hash of the version before the current one, from the policy's history. */
  async #previousHash(name: string, row: PolicyRow): Promise<string | undefined> {
    if (row.version < 2) return undefined;
    const versions = await this.#store.versions(name);
    const before = versions.find((v) => v.version === row.version - 1);
    if (!before) return undefined;
    const dek = this.#envelope.dataKey(name, row.wrappedKey);
    return this.#open<VersionRecord>(dek, "version", name, before.version, before.sealed).hash;
  }

  /**
   * The values an update carries over. A generated value lives in the attestation mode it was
   * made in: in mode `none` whoever asks receives the configuration, with no evidence, so a value
   * made under `simulation` or `hardware` must never reach that mode, and one made under `none`
   * (anyone may know it) must never become an attested service's secret; nor may one pass
   * between simulation (any host with an enrolled LAS) and hardware. So a change of mode makes
   * every generated value anew — keys, CAs, certificates, volume keys — and keeps only explicit
   * values, which their owner gave. Where that discards values an update in the same mode would
   * have kept, the owner must say so (`regenerate_secrets`, `policy update --regenerate-secrets`):
   * a volume's content under its old key is lost with it.
   */
  async #modeChange(
    actor: string,
    record: PolicyRecord,
    policy: NormalizedPolicy,
    hash: string,
    previous: Map<string, StoredSecret>,
    consented: boolean,
  ): Promise<Map<string, StoredSecret>> {
    const from = record.policy.security.attestation.mode;
    const to = policy.security.attestation.mode;
    if (from === to) return previous;
    const lost = await keptAcrossModeChange(policy, previous);
    if (lost.length > 0 && !consented) {
      const reason = `changing attestation mode ${from} -> ${to} makes every generated value anew, discarding ${lost.join(", ")}`;
      await this.#refuse(actor, "policy.update", record.name, hash, `${reason}; not confirmed`);
      throw new CasError(
        409,
        "regenerates_secrets",
        `${reason}${lost.some((l) => l.startsWith("the key of volume")) ? " (a volume's content sealed under its old key is lost)" : ""}: confirm with cloister policy update --regenerate-secrets, or keep mode ${from}`,
      );
    }
    return new Map([...previous].filter(([, v]) => v.spec === "explicit"));
  }

  async get(actor: string, name: string): Promise<PolicyRecord & { redacted: string }> {
    await this.sync();
    const { record } = await this.#readable(actor, name, "policy.get");
    let shown = this.#presented.get(name);
    if (shown?.hash !== record.hash) {
      shown = { hash: record.hash, text: presentForEdit(record.text, record.hash) };
      this.#presented.set(name, shown);
    }
    return { ...record, redacted: shown.text };
  }

  async list(actor: string): Promise<PolicySummary[]> {
    await this.sync();
    const out: PolicySummary[] = [];
    for (const row of await this.#store.listPolicies()) {
      let loaded: { record: PolicyRecord } | undefined;
      try {
        loaded = await this.#load(row.name, row);
      } catch (error) {
        if (error instanceof CasError) continue; // tampered: refused and audited by #load
        throw error;
      }
      if (loaded && admits(loaded.record.policy.access_policy.read, loaded.record.creator, alone(actor))) {
        out.push({ name: row.name, hash: loaded.record.hash, version: loaded.record.version });
      }
    }
    return out;
  }

  async history(actor: string, name: string): Promise<VersionRecord[]> {
    await this.sync();
    const { row } = await this.#readable(actor, name, "policy.history");
    const dek = this.#envelope.dataKey(name, row.wrappedKey);
    return (await this.#store.versions(name)).map((v) =>
      this.#open<VersionRecord>(dek, "version", name, v.version, v.sealed),
    );
  }

  async delete(actor: string, name: string, signatures: readonly string[]): Promise<void> {
    await this.sync();
    const current = await this.#load(name);
    if (!current) throw await this.#unseen(actor, "policy.delete", name);
    const { row, record } = current;
    await this.#authorize(
      actor,
      "delete",
      "policy.delete",
      name,
      record.hash,
      record,
      record.policy.access_policy.update,
      signatures,
    );
    const ok = await this.#store.delete(name, row.version, (prev) =>
      this.#auditRow(
        prev,
        actor,
        "policy.delete",
        name,
        record.hash,
        "granted",
        `deleted at version ${record.version}`,
      ),
    );
    if (!ok) throw new CasError(409, "conflict", `${name} changed while it was being deleted; try again`);
  }

  /** The hash the next signature of `action` on `name` must cover (for `cloister policy sign`). */
  async currentHash(actor: string, name: string): Promise<string> {
    await this.sync();
    return (await this.#readable(actor, name, "policy.get")).record.hash;
  }

  /**
   * A page of the audit log: at most `limit` entries after `since`, those about policies the
   * caller may read in full, the others as digests only (so that the chain still verifies), with
   * the signed checkpoints among them, and `next` — where the following page starts — or null at
   * the end. The last page ends at a checkpoint: one is signed over the last entry if none is
   * yet (so a reader's exports add at most one checkpoint per entry written meanwhile).
   */
  async exportAudit(actor: string, since: number, limit = AUDIT_PAGE_MAX): Promise<AuditPage> {
    await this.sync();
    const rows = await this.#store.audit(since, limit + 1);
    const more = rows.length > limit;
    if (more) rows.length = limit;
    const end = rows.at(-1)?.seq ?? since;
    if (!more && rows.length > 0 && ((await this.#store.lastCheckpoint())?.seq ?? 0) < end)
      await this.#store.addCheckpoint(this.#audit.checkpoint(rows.at(-1)!, this.#now()));
    const readable = new Map<string, boolean>();
    const policies = new Set<string>();
    for (const row of rows) policies.add(auditedPolicy(JSON.parse(row.entry) as AuditEntry));
    for (const policy of policies) {
      if (policy === "") continue;
      let ok: boolean;
      try {
        const loaded = await this.#load(policy);
        ok =
          loaded !== undefined && admits(loaded.record.policy.access_policy.read, loaded.record.creator, alone(actor));
      } catch {
        ok = false;
      }
      readable.set(policy, ok);
    }
    const entries = rows.map((row) => {
      const entry = JSON.parse(row.entry) as AuditEntry;
      const policy = auditedPolicy(entry);
      const visible = entry.actor === actor || (policy !== "" && readable.get(policy) === true);
      return visible
        ? { seq: row.seq, entry, chain: row.chain }
        : { seq: row.seq, redacted: true as const, digest: entryDigest(row.entry), chain: row.chain };
    });
    return {
      format: "cloister-audit-v1",
      cas_key: "", // filled in by the server, which holds the public key
      // The chain hash through entry `since`: where the exported part of the chain starts.
      previous_chain: since > 0 ? ((await this.#store.auditEntry(since))?.chain ?? AUDIT_GENESIS) : AUDIT_GENESIS,
      entries,
      checkpoints: await this.#store.checkpoints(since, end),
      next: more ? end : null,
    };
  }

  /** Enrol a LAS key (simulation mode): administrators only. */
  async enrolLas(actor: string, key: string): Promise<void> {
    await this.#requireAdmin(actor, "las.enrol", key);
    try {
      await this.trust.enrolLas(key);
    } catch (error) {
      if (error instanceof CollateralError) throw new CasError(400, "bad_request", error.message);
      throw error;
    }
    await this.#store.appendAudit((prev) =>
      this.#auditRow(prev, actor, "las.enrol", "", null, "granted", `LAS key ${key}`),
    );
  }

  /** Import PCCS collateral or an AMD VCEK/VLEK certificate: administrators only. */
  async importCollateral(
    actor: string,
    item: { dcap?: Collateral | undefined; amd_certificate?: string | undefined },
  ): Promise<DcapCollateralSummary | AmdKeySummary> {
    await this.#requireAdmin(actor, "collateral.import", "");
    await this.sync();
    try {
      const result = item.dcap
        ? await this.trust.importDcap(item.dcap)
        : item.amd_certificate
          ? await this.trust.importAmdKey(item.amd_certificate)
          : undefined;
      if (!result) throw new CollateralError("expected dcap (PCCS collateral) or amd_certificate");
      const what =
        result.kind === "dcap"
          ? `${result.tee} collateral for FMSPC ${result.fmspc}`
          : `${result.key_type} for ${result.product}`;
      await this.#store.appendAudit((prev) =>
        this.#auditRow(prev, actor, "collateral.import", "", null, "granted", what),
      );
      return result;
    } catch (error) {
      if (error instanceof CollateralError) {
        await this.#refuse(actor, "collateral.import", "", null, error.message);
        throw new CasError(400, "bad_collateral", error.message);
      }
      throw error;
    }
  }

  async #requireAdmin(actor: string, action: string, target: string): Promise<void> {
    const admins = this.#options.admins;
    if (admins === "any" || admins?.includes(actor)) return;
    await this.#refuse(actor, action, target, null, "not an administrator");
    throw new CasError(403, "forbidden", "only the CAS's administrators (cas start --admin) may do this");
  }

  /**
   * The state a volume must be in: the last committed tag, unless the policy has since declared
   * another initial tag (an owner shipping a new tree), which then wins; null for a fresh volume.
   */
  volumeTag(record: PolicyRecord, volume: string): string | null {
    const declared = record.policy.volumes.find((v) => v.name === volume)?.tag ?? null;
    const committed = this.#volumes.get(`${record.name}\0${volume}`);
    // A newly declared tag is recorded as the volume's state when the policy is stored
    // (#declareVolumes); a declaration removed later leaves the state as it is.
    return committed && (committed.declared === declared || declared === null) ? committed.tag : declared;
  }

  /**
   * Compare-and-swap a volume's tag: `previous` must be the current one. The caller (a runtime
   * with a service certificate of the policy) was authenticated by the route. The audit entry
   * is the record: every replica rebuilds tags from the log. The comparison is made as the entry
   * is appended — under the chain head's lock, after every entry committed before it, by any
   * replica — so that of two commits from one tag exactly one wins.
   */
  async commitVolume(
    actor: string,
    policy: string,
    volume: string,
    previous: string | null,
    next: string,
  ): Promise<void> {
    const target = `${policy}/${volume}`;
    await this.sync();
    const loaded = await this.#load(policy);
    if (!loaded) throw new CasError(404, "not_found", `no policy ${policy}`);
    const { record } = loaded;
    const declaration = record.policy.volumes.find((v) => v.name === volume);
    if (!declaration) throw new CasError(404, "not_found", `policy ${policy} has no volume ${volume}`);
    if (declaration.update_policy !== "rollback-protected") {
      await this.#refuseNow(actor, "volume.commit", target, record.hash, `the volume is ${declaration.update_policy}`);
      throw new CasError(
        409,
        "not_rollback_protected",
        `volume ${volume} is ${declaration.update_policy}: the CAS keeps no tag for it`,
      );
    }
    const declared = declaration.tag;
    let refused: CasError | undefined;
    try {
      const row = await this.#store.appendAudit((prev) => {
        refused = undefined;
        if (this.#index.get(policy) !== record.hash) {
          const reason = `policy ${policy} changed while the commit was being made; commit again`;
          refused = new CasError(409, "policy_changed", reason);
          return this.#auditRow(prev, actor, "volume.commit", target, record.hash, "refused", reason);
        }
        const current = this.volumeTag(record, volume);
        // Asked again after an answer was lost: already done, nothing to append.
        if (current === next && previous !== next) throw ALREADY_DONE;
        if (current !== previous) {
          const reason = `the volume is at ${current ?? "its fresh state"}, not ${previous ?? "its fresh state"}: another runtime committed first (a fork), or an older state`;
          refused = new CasError(409, "conflict", `volume ${volume} of ${policy}: ${reason}`);
          return this.#auditRow(prev, actor, "volume.commit", target, record.hash, "refused", reason);
        }
        return this.#auditRow(
          prev,
          actor,
          "volume.commit",
          target,
          record.hash,
          "granted",
          volumeCommitReason(previous, next, declared),
        );
      });
      await this.#checkpointIfDue(row);
    } catch (error) {
      if (error === ALREADY_DONE) return;
      throw error;
    }
    if (refused) throw refused;
  }

  /**
   * A volume's newly declared tag (an owner shipping a tree) becomes its state, recorded like a
   * commit: so that removing the declaration later keeps that state rather than an older one.
   */
  async #declareVolumes(actor: string, name: string, policy: NormalizedPolicy, hash: string): Promise<void> {
    for (const volume of policy.volumes) {
      if (volume.tag === null || volume.update_policy !== "rollback-protected") continue;
      const key = `${name}\0${volume.name}`;
      const committed = this.#volumes.get(key);
      if (committed?.declared === volume.tag) continue;
      await this.#store.appendAudit((prev) =>
        this.#auditRow(
          prev,
          actor,
          "volume.commit",
          `${name}/${volume.name}`,
          hash,
          "granted",
          volumeCommitReason(this.#volumes.get(key)?.tag ?? null, volume.tag!, volume.tag),
        ),
      );
    }
  }

  /**
   * Record a grant decided outside this service (the attestation flow), group-committed: resolves
   * once the entry is durable, and the caller answers only then. `stands` is asked as the entry
   * is written, after every change committed before it: a reason it gives is recorded as a
   * refusal instead, and returned, so that no grant is recorded after a change that withdrew it.
   */
  async grant(
    actor: string,
    action: string,
    target: string,
    hash: string | null,
    reason: string,
    stands: () => string | undefined = () => undefined,
    spend?: NonceSpend,
  ): Promise<{ refused?: string }> {
    let refused: string | undefined;
    const row = await this.#store.appendAuditGrouped((prev, context) => {
      refused = context.nonceSpent
        ? "the nonce was already used (replayed, perhaps at another replica): ask for a new challenge"
        : stands();
      return refused === undefined
        ? this.#auditRow(prev, actor, action, target, hash, "granted", reason)
        : this.#auditRow(prev, actor, action, target, hash, "refused", refused);
    }, spend);
    await this.#checkpointIfDue(row);
    return refused === undefined ? {} : { refused };
  }

  /**
   * Record a refusal that happened outside this service (the attestation flow, a volume commit's
   * certificate). `stranger`: the caller proved nothing — no nonce spent on evidence bound to
   * it, no certificate of the policy — and the refusal is tallied by its source (an address, or
   * the caller's identity) and `code` rather than written on its own (refusal-tally.ts).
   */
  async refuse(
    actor: string,
    action: string,
    target: string,
    reason: string,
    stranger?: { readonly source: string; readonly code: string },
  ): Promise<void> {
    if (stranger) this.#tally.refuse(stranger.source, stranger.code, { actor, action, target, hash: null, reason });
    else await this.#refuseNow(actor, action, target, null, reason);
  }

  /**
   * A configuration handed to whoever asked, for a policy in mode none: no evidence, so a
   * stranger's decision, tallied by `source` like a refusal (each would otherwise be a row).
   */
  grantUnattested(source: string, target: string, hash: string, reason: string): void {
    this.#tally.refuse(source, "unattested", {
      actor: "runtime",
      action: "attestation",
      target,
      hash,
      reason,
      outcome: "granted",
    });
  }

  /**
   * The tally's entries are written in the background (the tally is a timer's work, no caller
   * waits for it); flushRefusals waits for them. One that cannot be written — the database is
   * away — is lost: a tally is at most one interval's counts.
   */
  #tallied(r: Refusal): void {
    this.#background(
      (async () => {
        if (r.outcome === "granted")
          await this.#checkpointIfDue(
            await this.#store.appendAudit((prev) =>
              this.#auditRow(prev, r.actor, r.action, r.target, r.hash, "granted", r.reason),
            ),
          );
        else await this.#refuseNow(r.actor, r.action, r.target, r.hash, r.reason);
      })(),
    );
  }

  /** Write the strangers' tally now (the CAS is stopping, or a test reads the log). */
  async flushRefusals(): Promise<void> {
    this.#tally.flush();
    await Promise.all(this.#tallying);
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  #check(text: string): { policy: NormalizedPolicy; hash: string; warnings: readonly PolicyWarning[] } {
    const result = checkPolicyText(text, "policy");
    if (!result.ok) {
      throw new CasError(400, "invalid_policy", result.errors.map(formatPolicyError).join("\n"), result.errors);
    }
    return result;
  }

  #mayCreateTopLevel(actor: string): boolean {
    const { createTopLevel, admins } = this.#options;
    if (createTopLevel === "any" || admins === "any") return true;
    return Boolean(createTopLevel?.includes(actor) || admins?.includes(actor));
  }

  async #authorizeCreate(actor: string, name: string, hash: string, signatures: readonly string[]): Promise<void> {
    const slash = name.lastIndexOf("/");
    if (slash < 0) {
      if (!this.#mayCreateTopLevel(actor)) {
        await this.#refuse(actor, "policy.create", name, hash, "not allowed to create top-level policies");
        throw new CasError(
          403,
          "forbidden",
          `not allowed to create the top-level policy ${name}: the CAS's operator names who may (cloister cas start --create-top-level ID, or --admin ID); or create it under a policy whose create_policies admits you`,
        );
      }
      return;
    }
    const parentName = name.slice(0, slash);
    const parent = await this.#load(parentName);
    if (!parent) throw await this.#unseen(actor, "policy.create", name, parentName);
    await this.#authorize(
      actor,
      "write",
      "policy.create",
      name,
      hash,
      parent.record,
      parent.record.policy.access_policy.create_policies,
      signatures,
      parentName,
    );
  }

  async #authorize(
    actor: string,
    action: SignedAction,
    auditAction: string,
    name: string,
    hash: string,
    governing: PolicyRecord,
    rules: readonly AccessRuleT[],
    signatures: readonly string[],
    governingName = name,
  ): Promise<void> {
    // A caller who may not read the governing policy is told nothing more than that it is not
    // there for them — the answer, and the audit entry, a policy that does not exist gets.
    const refused = async (error: CasError, reason: string): Promise<never> => {
      if (!admits(governing.policy.access_policy.read, governing.creator, alone(actor)))
        throw await this.#unseen(actor, auditAction, name, governingName === name ? undefined : governingName);
      await this.#refuse(actor, auditAction, name, hash, reason);
      throw error;
    };
    const signers = new Set<string>();
    for (const [i, s] of signatures.entries()) {
      let signer: string;
      try {
        signer = verifyPolicySignature(s, action, name, hash);
      } catch (error) {
        if (!(error instanceof SignatureError)) throw error;
        const reason = `signature ${i + 1} is not valid: ${error.message}`;
        return refused(new CasError(403, "bad_signature", reason), reason);
      }
      signers.add(signer);
    }
    const requester: Requester = { identity: actor, signers };
    if (!admits(rules, governing.creator, requester)) {
      const what = governingName !== name ? `create_policies of ${governingName}` : `update of ${name}`;
      const reason = `${what} does not admit the caller${signers.size > 0 ? ` with ${signers.size} valid signature${signers.size === 1 ? "" : "s"}` : ""}`;
      return refused(new CasError(403, "forbidden", `not allowed: ${reason}`), reason);
    }
  }

  async #readable(actor: string, name: string, action: string): Promise<{ row: PolicyRow; record: PolicyRecord }> {
    const loaded = await this.#load(name);
    if (!loaded || !admits(loaded.record.policy.access_policy.read, loaded.record.creator, alone(actor)))
      throw await this.#unseen(actor, action, name);
    return loaded;
  }

  /**
   * The refusal of a request about a policy the caller may not read, or that does not exist:
   * the same answer and the same audit entry either way, so that neither the answer nor the
   * caller's own entries in an export (nor their digests) tell the two apart. `governing`: the
   * parent whose create_policies a child's creation needed.
   */
  async #unseen(actor: string, action: string, name: string, governing?: string): Promise<CasError> {
    const hidden = governing ?? name;
    await this.#refuse(actor, action, name, null, `no policy ${hidden} that the caller may read (or none at all)`);
    return unseen(hidden, governing === undefined ? undefined : name);
  }

  /** The current record of `name`, checked against the data key, its place, and the audit index. */
  async #load(name: string, known?: PolicyRow): Promise<{ row: PolicyRow; record: PolicyRecord } | undefined> {
    const row = known ?? (await this.#store.getPolicy(name));
    if (!row) {
      if (this.#index.has(name))
        throw await this.#tampered(name, "the policy was removed from the store behind the CAS's back");
      return undefined;
    }
    const cached = this.#cache.get(name);
    if (cached?.sealed.equals(row.sealed)) return { row, record: cached.record };
    let record: PolicyRecord;
    try {
      const dek = this.#envelope.dataKey(name, row.wrappedKey);
      record = this.#open<PolicyRecord>(dek, "policy", name, row.version, row.sealed);
    } catch (error) {
      if (error instanceof TamperError) throw await this.#tampered(name, error.message);
      throw error;
    }
    if (record.name !== name || record.version !== row.version)
      throw await this.#tampered(name, "the record belongs elsewhere");
    const expected = this.#index.get(name);
    if (expected !== record.hash) {
      throw await this.#tampered(
        name,
        expected
          ? `the stored version ${record.hash.slice(0, 12)}… is not the current ${expected.slice(0, 12)}… (restored from an older copy?)`
          : "the policy is not in the audit log",
      );
    }
    this.#cache.set(name, { sealed: row.sealed, record });
    return { row, record };
  }

  /** Record a verification failure of `name`'s stored state; the error to throw. */
  async #tampered(name: string, reason: string): Promise<CasError> {
    await this.#refuse("cas", "store.tamper", name, null, reason);
    return new CasError(
      500,
      "store_tampered",
      `the stored state of policy ${name} failed verification and is refused: ${reason}`,
    );
  }

  #open<T>(dek: Buffer, kind: "policy" | "version" | "secrets", name: string, version: number, sealed: Buffer): T {
    return this.#envelope.openRecord<T>(dek, kind, name, version, sealed);
  }

  async #secrets(name: string, version: number, wrapped: Buffer): Promise<Record<string, StoredSecret>> {
    const row = await this.#store.secrets(name, version);
    if (!row) throw await this.#tampered(name, `the secrets of version ${version} are missing`);
    const cached = this.#openedSecrets.get(name);
    if (cached?.version === version && cached.sealed.equals(row.sealed)) return cached.values;
    try {
      const values = this.#open<SecretsRecord>(
        this.#envelope.dataKey(name, wrapped),
        "secrets",
        name,
        version,
        row.sealed,
      ).values;
      this.#openedSecrets.set(name, { version, sealed: row.sealed, values });
      return values;
    } catch (error) {
      if (error instanceof TamperError) throw await this.#tampered(name, error.message);
      throw error;
    }
  }

  /**
   * The current values of `policy` and of every policy its imports reach, transitively: what
   * resolveSecret needs, read before it (it is called while a configuration is rendered).
   */
  async importClosure(policy: string): Promise<Map<string, PolicyValues | undefined>> {
    const memo = new Map<string, PolicyValues | undefined>();
    const pending = [policy];
    for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
      if (memo.has(name)) continue;
      const loaded = await this.secretValues(name);
      memo.set(name, loaded);
      for (const s of loaded?.record.policy.secrets ?? []) if (isImport(s)) pending.push(s.import.policy);
    }
    return memo;
  }

  /**
   * The value of a secret as `policy` sees it, imports resolved against the exporters' current
   * policies as `memo` (importClosure) holds them: for the attestation flow, never for owners.
   * Refusals are audited.
   */
  resolveSecret(policy: string, secret: string, memo: ReadonlyMap<string, PolicyValues | undefined>): StoredSecret {
    const load = (name: string) => memo.get(name);
    try {
      return resolveSecret(load, policy, secret);
    } catch (error) {
      if (error instanceof ImportError) {
        // Into a policy in mode none the request had no evidence: whoever asked may ask again.
        if (load(policy)?.record.policy.security.attestation.mode === "none")
          this.#tally.refuse(`policy ${policy}`, "import_refused", {
            actor: "cas",
            action: "secret.import",
            target: policy,
            hash: null,
            reason: error.message,
          });
        // Not awaited (the caller renders synchronously): appended before the attestation's own
        // refusal, which the caller records next and awaits.
        else this.#background(this.#refuse("cas", "secret.import", policy, null, error.message));
        throw new CasError(409, "import_refused", error.message);
      }
      throw error;
    }
  }

  /** An audit write no caller waits for (a tally, a refusal inside a render): flushRefusals waits for it. */
  #background(work: Promise<void>): void {
    const tracked = work.catch(() => {});
    this.#tallying.add(tracked);
    void tracked.finally(() => this.#tallying.delete(tracked));
  }

  /** A number that changes whenever `name` is created, updated or deleted (see #generations). */
  policyGeneration(name: string): number {
    return this.#generations.get(name) ?? 0;
  }

  /** A policy written (its new hash) or deleted (undefined): the index and its generation move together. */
  #indexed(name: string, hash: string | undefined): void {
    if (hash === undefined) this.#index.delete(name);
    else this.#index.set(name, hash);
    this.#generations.set(name, this.policyGeneration(name) + 1);
  }

  /** The secret values of a policy's current version: for the attestation flow, never for owners. */
  async secretValues(
    name: string,
  ): Promise<{ record: PolicyRecord; values: Record<string, StoredSecret> } | undefined> {
    const loaded = await this.#load(name);
    if (!loaded) return undefined;
    return { record: loaded.record, values: await this.#secrets(name, loaded.row.version, loaded.row.wrappedKey) };
  }

  #write(dek: Buffer, wrapped: Buffer, record: PolicyRecord, values: Map<string, StoredSecret>) {
    const version: VersionRecord = {
      version: record.version,
      hash: record.hash,
      time: record.updated,
      actor: record.updated_by,
    };
    const secrets: SecretsRecord = { values: Object.fromEntries(values) };
    return {
      policy: {
        name: record.name,
        version: record.version,
        wrappedKey: wrapped,
        sealed: this.#envelope.sealRecord(dek, "policy", record.name, record.version, record),
      },
      version: {
        name: record.name,
        version: record.version,
        sealed: this.#envelope.sealRecord(dek, "version", record.name, record.version, version),
      },
      secrets: {
        name: record.name,
        version: record.version,
        sealed: this.#envelope.sealRecord(dek, "secrets", record.name, record.version, secrets),
      },
    };
  }

  #auditRow(
    previous: AuditRow | undefined,
    actor: string,
    action: string,
    target: string,
    hash: string | null,
    outcome: "granted" | "refused",
    reason: string,
  ): AuditRow {
    return this.#audit.row(previous, {
      time: this.#now().toISOString(),
      actor,
      action,
      target,
      policy_hash: hash,
      outcome,
      reason,
    });
  }

  /**
   * A refusal by this service: written on its own if the caller is known (#known), tallied by
   * its identity and action if not — anyone can make an identity, and repeat the request.
   */
  async #refuse(actor: string, action: string, target: string, hash: string | null, reason: string): Promise<void> {
    if (actor === "cas" || this.#known.has(actor)) await this.#refuseNow(actor, action, target, hash, reason);
    else this.#tally.refuse(actor, "", { actor, action, target, hash, reason });
  }

  async #refuseNow(actor: string, action: string, target: string, hash: string | null, reason: string): Promise<void> {
    await this.#checkpointIfDue(
      await this.#store.appendAudit((prev) => this.#auditRow(prev, actor, action, target, hash, "refused", reason)),
    );
  }

  /** `appended`: the row just written, when the caller has it (saves reading it back). */
  async #checkpointIfDue(appended?: AuditRow): Promise<void> {
    const every = this.#options.checkpointEvery ?? 100;
    const last = appended ?? (await this.#store.lastAudit());
    if (last && last.seq % every === 0) await this.#store.addCheckpoint(this.#audit.checkpoint(last, this.#now()));
  }
}

/**
 * The one answer about a policy the caller may not read, whether it exists or not: 404, its
 * name, nothing else (docs/cas.md, "Who may do what"). `creating`: the child whose creation
 * needed it.
 */
function unseen(name: string, creating?: string): CasError {
  return new CasError(
    404,
    "not_found",
    creating === undefined
      ? `no policy ${name} that you may read`
      : `creating ${creating} needs create_policies on ${name}: no policy ${name} that you may read`,
  );
}

/** A requester with no signatures: for reads. */
const alone = (identity: string): Requester => ({ identity, signers: new Set() });

interface VolumeState {
  readonly tag: string;
  /** The policy's declared initial tag when this tag was committed. */
  readonly declared: string | null;
}

/** Thrown by a volume commit's appender when the commit is already the volume's state. */
const ALREADY_DONE = new Error("already committed");

/** The policy an audit entry is about: attestation and volume entries name "policy/…". */
function auditedPolicy(entry: AuditEntry): string {
  return entry.action === "attestation" || entry.action === "volume.commit"
    ? entry.target.slice(0, Math.max(0, entry.target.lastIndexOf("/")))
    : entry.target;
}

const volumeCommitReason = (previous: string | null, next: string, declared: string | null) =>
  `tag ${previous ?? "none"} -> ${next} (declared ${declared ?? "none"})`;

const VOLUME_COMMIT = /^tag (none|[0-9a-f]{64}) -> ([0-9a-f]{64}) \(declared (none|[0-9a-f]{64})\)$/;

function parseVolumeCommit(e: AuditEntry): { key: string; state: VolumeState } | undefined {
  const m = VOLUME_COMMIT.exec(e.reason);
  const slash = e.target.lastIndexOf("/");
  if (!m || slash <= 0) return undefined;
  return {
    key: `${e.target.slice(0, slash)}\0${e.target.slice(slash + 1)}`,
    state: { tag: m[2]!, declared: m[3] === "none" ? null : m[3]! },
  };
}
