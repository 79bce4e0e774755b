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
export type AuditAppender = (previous: AuditRow | undefined, context: AppendContext) => AuditRow;

/** What the store learned in the transaction, for the appender's decision. */
export interface AppendContext {
  /** With a NonceSpend: true when the nonce was already spent (by this replica or another). */
  readonly nonceSpent: boolean;
}

/**
 * A challenge nonce to record as spent in the transaction of the entry that uses it, so that a
 * nonce is spent once across every replica on the database. Kept until `expiresAt` has passed
 * (and a grace period), then pruned.
 */
export interface NonceSpend {
  readonly nonce: Buffer;
  /** Milliseconds since the epoch. */
  readonly expiresAt: number;
}

/**
 * The owner's view of the log: every committed audit entry, in order, exactly once. Entries
 * other writers (replicas) committed are handed over before each of this store's appends —
 * under the chain head's lock, so the appender decides on the newest state — and at catchUp;
 * the store's own entries once they are committed. A follower that throws (an entry that fails
 * verification) aborts the transaction it was called in.
 */
export type AuditFollower = (rows: readonly AuditRow[]) => void;

export interface PolicyWrite {
  readonly policy: PolicyRow;
  readonly version: VersionRow;
  readonly secrets: SecretsRow;
}

/**
 * Every method is asynchronous, so that a networked engine (PostgreSQL) fits behind it as well
 * as the embedded one (SQLite). Each write is one transaction holding the chain head's lock
 * (appends are serialised in the database, so the chain never forks), with the audit entry that
 * records it.
 */
export interface Store {
  /** Which engine, for messages and /readyz: "sqlite" or "postgres". */
  readonly engine: string;

  readMeta(key: string): Promise<Buffer | undefined>;
  /** Write a meta value only if none exists; returns the value now stored. */
  initMeta(key: string, value: Buffer): Promise<Buffer>;
  /** Write (or replace) a meta value. */
  writeMeta(key: string, value: Buffer): Promise<void>;
  /** Meta values whose key starts with `prefix`, by key. */
  listMeta(prefix: string): Promise<{ key: string; value: Buffer }[]>;

  getPolicy(name: string): Promise<PolicyRow | undefined>;
  listPolicies(): Promise<PolicyRow[]>;
  versions(name: string): Promise<VersionRow[]>;
  secrets(name: string, version: number): Promise<SecretsRow | undefined>;

  /** Insert a new policy; false when the name is taken. */
  create(write: PolicyWrite, audit: AuditAppender): Promise<boolean>;
  /** Replace version `expected` by write.policy.version; false when the current version is not `expected`. */
  update(expected: number, write: PolicyWrite, audit: AuditAppender): Promise<boolean>;
  /** Delete version `expected` with its history and secrets; false when the current version is not `expected`. */
  delete(name: string, expected: number, audit: AuditAppender): Promise<boolean>;

  /** Append one entry in a transaction of its own: durable when it resolves. */
  appendAudit(audit: AuditAppender): Promise<AuditRow>;
  /**
   * Append one entry by group commit: with the other entries appended meanwhile, in one
   * transaction. Resolves once the entry is durable; the caller answers only then. `spend`: a
   * nonce recorded as spent in the same transaction (AppendContext.nonceSpent tells the appender
   * if it already was). Grouped entries must not change what a later appender of the same
   * group decides on: they are handed to the follower only after the group's commit.
   */
  appendAuditGrouped(audit: AuditAppender, spend?: NonceSpend): Promise<AuditRow>;
  /**
   * Start handing committed entries after `afterSeq` to `follower` (see AuditFollower). Called
   * once, by the store's owner, after it has read and applied the log up to `afterSeq`.
   */
  follow(afterSeq: number, follower: AuditFollower): void;
  /**
   * Hand the follower what other writers committed since it last heard: before a decision that
   * depends on the log. Resolves at once where this store is the database's only writer.
   */
  catchUp(): Promise<void>;
  /** Entries after `sinceSeq`, in order; at most `limit` of them. */
  audit(sinceSeq: number, limit?: number): Promise<AuditRow[]>;
  /** The entry `seq`, if there is one. */
  auditEntry(seq: number): Promise<AuditRow | undefined>;
  lastAudit(): Promise<AuditRow | undefined>;
  addCheckpoint(checkpoint: CheckpointRow): Promise<void>;
  /** Checkpoints after `sinceSeq` and, if given, through `throughSeq`. */
  checkpoints(sinceSeq: number, throughSeq?: number): Promise<CheckpointRow[]>;
  /** The newest checkpoint. */
  lastCheckpoint(): Promise<CheckpointRow | undefined>;

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

/**
 * The store cannot reach its database now (PostgreSQL stopped, the network cut): the request
 * may be tried again, at this replica later or at another (503). Unlike StoreFailedError, the
 * store keeps running and recovers by itself when the database is back.
 */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
}

/** How long a spent nonce is kept past its expiry before it is pruned: covers clocks that differ. */
export const SPENT_NONCE_GRACE_MS = 10 * 60_000;
