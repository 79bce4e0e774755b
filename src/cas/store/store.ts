/**
 * Persistence for the CAS. A Store holds opaque sealed blobs and plain indexing fields; it
 * never sees a key or a plaintext. Writes that belong together (a policy, its history entry,
 * its secrets and the audit entry recording them) happen in one transaction, and updates are
 * compare-and-swap on the version, so that of concurrent updates exactly one wins.
 */

export interface PolicyRow {
  readonly name: string;
  readonly version: number;
  /** The policy's data key, wrapped by the master key. */
  readonly wrappedKey: Buffer;
  /** The sealed policy record (see records.ts). */
  readonly sealed: Buffer;
}

export interface VersionRow {
  readonly name: string;
  readonly version: number;
  readonly sealed: Buffer;
}

export interface SecretsRow {
  readonly name: string;
  readonly version: number;
  readonly sealed: Buffer;
}

/** One audit entry as stored: its canonical JSON, the chain hash through it, and a MAC over that. */
export interface AuditRow {
  readonly seq: number;
  readonly entry: string;
  readonly chain: string;
  readonly mac: string;
}

export interface CheckpointRow {
  readonly seq: number;
  readonly chain: string;
  readonly time: string;
  readonly signature: string;
}

/** Builds the audit row to append, given the row before it (undefined for the first). */
export type AuditAppender = (previous: AuditRow | undefined) => AuditRow;

export interface PolicyWrite {
  readonly policy: PolicyRow;
  readonly version: VersionRow;
  readonly secrets: SecretsRow;
}

export interface Store {
  readMeta(key: string): Buffer | undefined;
  /** Write a meta value only if none exists; returns the value now stored. */
  initMeta(key: string, value: Buffer): Buffer;
  /** Write (or replace) a meta value. */
  writeMeta(key: string, value: Buffer): void;
  /** Meta values whose key starts with `prefix`, by key. */
  listMeta(prefix: string): { key: string; value: Buffer }[];

  getPolicy(name: string): PolicyRow | undefined;
  listPolicies(): PolicyRow[];
  versions(name: string): VersionRow[];
  secrets(name: string, version: number): SecretsRow | undefined;

  /** Insert a new policy; false when the name is taken. */
  create(write: PolicyWrite, audit: AuditAppender): boolean;
  /** Replace version `expected` by write.policy.version; false when the current version is not `expected`. */
  update(expected: number, write: PolicyWrite, audit: AuditAppender): boolean;
  /** Delete version `expected` with its history and secrets; false when the current version is not `expected`. */
  delete(name: string, expected: number, audit: AuditAppender): boolean;

  /** Append one entry in a transaction of its own: durable when it returns. */
  appendAudit(audit: AuditAppender): AuditRow;
  /**
   * Append one entry by group commit: with the other entries appended in the same event-loop
   * turn, in one transaction. Resolves once the entry is durable; the caller answers only then.
   */
  appendAuditGrouped(audit: AuditAppender): Promise<AuditRow>;
  /** Entries after `sinceSeq`, in order; at most `limit` of them. */
  audit(sinceSeq: number, limit?: number): AuditRow[];
  /** The entry `seq`, if there is one. */
  auditEntry(seq: number): AuditRow | undefined;
  lastAudit(): AuditRow | undefined;
  addCheckpoint(checkpoint: CheckpointRow): void;
  /** Checkpoints after `sinceSeq` and, if given, through `throughSeq`. */
  checkpoints(sinceSeq: number, throughSeq?: number): CheckpointRow[];
  /** The newest checkpoint. */
  lastCheckpoint(): CheckpointRow | undefined;

  /** Resolves once everything the store opened is closed. */
  close(): Promise<void>;
}

/**
 * The store could not make what it wrote durable. After a failed fsync the kernel may already
 * have dropped the unwritten pages and cleared the error, so a later sync that succeeds proves
 * nothing (PostgreSQL's "fsyncgate", 2018): the only safe answer is to stop writing and let a
 * restart rebuild from what is on disk — as PostgreSQL does, by a PANIC.
 */
export class StoreFailedError extends Error {
  override readonly name = "StoreFailedError";
}
