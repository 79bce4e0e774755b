/**
 * The embedded store: node:sqlite in WAL mode, one file under the data directory, its WAL
 * checkpointed on a thread of its own (wal-checkpointer.ts).
 *
 * Durability: `synchronous = FULL`, so that a commit is on the disk (the WAL synced) before it
 * returns, and nothing the CAS acknowledged — a policy written, a volume's compare-and-swap, a
 * grant — can be lost to a power cut or a VM reset, which host root can cause at will. (NORMAL,
 * SQLite's usual choice for WAL, loses the last commits then.) The sync costs a commit about
 * 0.3 ms of the event loop here (bench/store-commits), so the attestation flow's audit entries
 * are group-committed instead (appendAuditGrouped): the entries of one event-loop turn share one
 * transaction, committed without the sync, and the WAL is then synced on libuv's thread pool —
 * the same fsync of the same file FULL makes at the commit, off the event loop — and each caller
 * answers only once it has completed.
 */
import { chmodSync, closeSync, fchmodSync, fsync, openSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { auditRow, checkpointRow, policyRow, versionRow } from "./rows.ts";
import {
  type AppendContext,
  type AuditAppender,
  type AuditFollower,
  type AuditRow,
  type CheckpointRow,
  type NonceSpend,
  type PolicyRow,
  type PolicyWrite,
  type SecretsRow,
  SPENT_NONCE_GRACE_MS,
  type Store,
  StoreFailedError,
  type VersionRow,
} from "./store.ts";
import { WalCheckpointer } from "./wal-checkpointer.ts";

const BUSY_TIMEOUT_MS = 5000;
/** SQLite's default: a commit that finds the WAL this many pages long checkpoints it itself. */
const INLINE_CHECKPOINT_PAGES = 1000;
/**
 * With the thread: a commit checkpoints only a WAL this long (about 40 MiB). The WAL goes back
 * to its start only when a checkpoint has copied all of it, and a checkpoint on another thread
 * can keep finding a commit or two landed while it ran; this bounds the WAL if it never does.
 */
const SAFETY_NET_CHECKPOINT_PAGES = 10_000;

export interface SqliteStoreOptions {
  /**
   * Where the WAL is checkpointed: "thread" (the default; see wal-checkpointer.ts), or "inline",
   * by the commits themselves as SQLite does by default (what the store falls back to if the
   * thread fails; bench/store-commits compares the two).
   */
  readonly walCheckpoints?: "thread" | "inline";
  /** Tests: a stand-in for the thread (a fake), handed what to call if it fails. */
  readonly walCheckpointer?: (onFailed: (error: Error) => void) => WalCheckpointerHandle;
  /**
   * "full" (the default): a commit is durable when it returns. "normal" loses the last commits
   * on power loss: only for bench/store-commits and bench/cas-policies, to measure what FULL costs.
   */
  readonly synchronous?: "full" | "normal";
  /**
   * Called once if the store cannot make its writes durable (a sync of the WAL failed): the
   * store refuses every write from then on, and its owner stops (start.ts stops the CAS).
   */
  readonly onFailed?: (error: StoreFailedError) => void;
  /** Tests: a stand-in for fsync(2) of the WAL at a group commit (a fake of a failing disk). */
  readonly syncWal?: (fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void;
}

/** What the store needs of its checkpoint thread. */
export type WalCheckpointerHandle = Pick<WalCheckpointer, "running" | "stop">;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS policies (
  name TEXT PRIMARY KEY, version INTEGER NOT NULL, wrapped_key BLOB NOT NULL, sealed BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS policy_versions (
  name TEXT NOT NULL, version INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (name, version)) STRICT;
CREATE TABLE IF NOT EXISTS secrets (
  name TEXT NOT NULL, version INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (name, version)) STRICT;
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, chain TEXT NOT NULL, mac TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints (
  seq INTEGER PRIMARY KEY, chain TEXT NOT NULL, time TEXT NOT NULL, signature TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS spent_nonces (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT;
CREATE INDEX IF NOT EXISTS spent_nonces_expiry ON spent_nonces (expires_at);
`;

/** How often spent nonces past their expiry (and the grace) are deleted, at most. */
const PRUNE_EVERY_MS = 60_000;
const NO_SPEND: AppendContext = { nonceSpent: false };

type Row = Record<string, unknown>;
const buf = (v: unknown) => Buffer.from(v as Uint8Array);
export class SqliteStore implements Store {
  readonly engine = "sqlite";
  readonly #db: DatabaseSync;
  readonly #q: Record<string, StatementSync>;
  readonly #checkpointer: WalCheckpointerHandle | undefined;
  /** Audit entries waiting for the group commit (appendAuditGrouped). */
  #grouped: {
    audit: AuditAppender;
    spend: NonceSpend | undefined;
    resolve: (row: AuditRow) => void;
    reject: (error: Error) => void;
  }[] = [];
  /**
   * The owner's follower. The data directory is locked to one CAS, so this store is the
   * database's only writer: the follower hears of the store's own entries only.
   */
  #follower: AuditFollower | undefined;
  #lastPrune = 0;
  /** The WAL, opened once for the group commits' syncs; undefined before the first. */
  #wal: number | undefined;
  /** Syncs under way: close() waits for them. */
  readonly #syncing = new Set<Promise<void>>();
  readonly #path: string;
  readonly #durable: boolean;
  readonly #onFailed: ((error: StoreFailedError) => void) | undefined;
  readonly #syncWal: NonNullable<SqliteStoreOptions["syncWal"]>;
  /** Set when a sync failed: every write is refused with it. */
  #failed: StoreFailedError | undefined;
  #closed = false;

  constructor(path: string, options: SqliteStoreOptions = {}) {
    ownerOnly(path);
    // The busy timeout first: a connection still closing (a checkpoint thread of the store that
    // had this file before, in this process or the last) may hold a lock for a moment.
    this.#db = new DatabaseSync(path, { timeout: BUSY_TIMEOUT_MS });
    this.#path = path;
    this.#durable = options.synchronous !== "normal";
    this.#onFailed = options.onFailed;
    this.#syncWal = options.syncWal ?? fsync;
    this.#db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${this.#durable ? "FULL" : "NORMAL"};`);
    this.#db.exec(SCHEMA);
    const p = (sql: string) => this.#db.prepare(sql);
    this.#q = {
      readMeta: p("SELECT value FROM meta WHERE key = ?"),
      insertMeta: p("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)"),
      writeMeta: p("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"),
      listMeta: p("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key"),
      getPolicy: p("SELECT * FROM policies WHERE name = ?"),
      listPolicies: p("SELECT * FROM policies ORDER BY name"),
      versions: p("SELECT * FROM policy_versions WHERE name = ? ORDER BY version"),
      secrets: p("SELECT * FROM secrets WHERE name = ? AND version = ?"),
      insertPolicy: p("INSERT OR IGNORE INTO policies (name, version, wrapped_key, sealed) VALUES (?, ?, ?, ?)"),
      updatePolicy: p("UPDATE policies SET version = ?, wrapped_key = ?, sealed = ? WHERE name = ? AND version = ?"),
      deletePolicy: p("DELETE FROM policies WHERE name = ? AND version = ?"),
      deleteVersions: p("DELETE FROM policy_versions WHERE name = ?"),
      deleteSecrets: p("DELETE FROM secrets WHERE name = ?"),
      insertVersion: p("INSERT INTO policy_versions (name, version, sealed) VALUES (?, ?, ?)"),
      insertSecrets: p("INSERT INTO secrets (name, version, sealed) VALUES (?, ?, ?)"),
      lastAudit: p("SELECT * FROM audit ORDER BY seq DESC LIMIT 1"),
      insertAudit: p("INSERT INTO audit (seq, entry, chain, mac) VALUES (?, ?, ?, ?)"),
      audit: p("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"),
      auditEntry: p("SELECT * FROM audit WHERE seq = ?"),
      insertCheckpoint: p("INSERT OR REPLACE INTO checkpoints (seq, chain, time, signature) VALUES (?, ?, ?, ?)"),
      checkpoints: p("SELECT * FROM checkpoints WHERE seq > ? AND seq <= ? ORDER BY seq"),
      lastCheckpoint: p("SELECT * FROM checkpoints ORDER BY seq DESC LIMIT 1"),
      spendNonce: p("INSERT OR IGNORE INTO spent_nonces (nonce, expires_at) VALUES (?, ?)"),
      pruneNonces: p("DELETE FROM spent_nonces WHERE expires_at < ?"),
    };
    // Last: nothing after it can fail and leave the thread holding the database open.
    if (options.walCheckpoints === "inline") this.#checkpointAt(INLINE_CHECKPOINT_PAGES);
    else {
      this.#checkpointAt(SAFETY_NET_CHECKPOINT_PAGES);
      const onFailed = () => {
        if (!this.#closed) this.#checkpointAt(INLINE_CHECKPOINT_PAGES);
      };
      this.#checkpointer =
        options.walCheckpointer?.(onFailed) ?? new WalCheckpointer(path, { busyTimeoutMs: BUSY_TIMEOUT_MS, onFailed });
    }
  }

  async readMeta(key: string): Promise<Buffer | undefined> {
    return this.#readMeta(key);
  }

  #readMeta(key: string): Buffer | undefined {
    const r = this.#q.readMeta!.get(key) as Row | undefined;
    return r ? buf(r.value) : undefined;
  }

  async initMeta(key: string, value: Buffer): Promise<Buffer> {
    this.#writable();
    this.#q.insertMeta!.run(key, value);
    return this.#readMeta(key)!;
  }

  async writeMeta(key: string, value: Buffer): Promise<void> {
    this.#writable();
    this.#q.writeMeta!.run(key, value);
  }

  async listMeta(prefix: string): Promise<{ key: string; value: Buffer }[]> {
    return (this.#q.listMeta!.all(prefix.length, prefix) as Row[]).map((r) => ({
      key: r.key as string,
      value: buf(r.value),
    }));
  }

  async getPolicy(name: string): Promise<PolicyRow | undefined> {
    const r = this.#q.getPolicy!.get(name) as Row | undefined;
    return r ? policyRow(r) : undefined;
  }

  async listPolicies(): Promise<PolicyRow[]> {
    return (this.#q.listPolicies!.all() as Row[]).map(policyRow);
  }

  async versions(name: string): Promise<VersionRow[]> {
    return (this.#q.versions!.all(name) as Row[]).map(versionRow);
  }

  async secrets(name: string, version: number): Promise<SecretsRow | undefined> {
    const r = this.#q.secrets!.get(name, version) as Row | undefined;
    return r ? versionRow(r) : undefined;
  }

  async create(write: PolicyWrite, audit: AuditAppender): Promise<boolean> {
    return this.#written(() => {
      const p = write.policy;
      if (this.#q.insertPolicy!.run(p.name, p.version, p.wrappedKey, p.sealed).changes !== 1) return false;
      this.#writeHistory(write);
      this.#append(audit);
      return true;
    });
  }

  async update(expected: number, write: PolicyWrite, audit: AuditAppender): Promise<boolean> {
    return this.#written(() => {
      const p = write.policy;
      if (this.#q.updatePolicy!.run(p.version, p.wrappedKey, p.sealed, p.name, expected).changes !== 1) return false;
      this.#writeHistory(write);
      this.#append(audit);
      return true;
    });
  }

  async delete(name: string, expected: number, audit: AuditAppender): Promise<boolean> {
    return this.#written(() => {
      if (this.#q.deletePolicy!.run(name, expected).changes !== 1) return false;
      this.#q.deleteVersions!.run(name);
      this.#q.deleteSecrets!.run(name);
      this.#append(audit);
      return true;
    });
  }

  async appendAudit(audit: AuditAppender): Promise<AuditRow> {
    let row: AuditRow | undefined;
    this.#written(() => {
      row = this.#append(audit);
      return true;
    });
    return row!;
  }

  appendAuditGrouped(audit: AuditAppender, spend?: NonceSpend): Promise<AuditRow> {
    const { promise, resolve, reject } = Promise.withResolvers<AuditRow>();
    if (this.#failed) {
      reject(this.#failed);
      return promise;
    }
    this.#grouped.push({ audit, spend, resolve, reject });
    // The first of a turn schedules the commit: after this turn's other appends (I/O callbacks,
    // the crypto thread's answers) have joined it.
    if (this.#grouped.length === 1) setImmediate(() => this.#commitGrouped());
    return promise;
  }

  async audit(sinceSeq: number, limit = -1): Promise<AuditRow[]> {
    return this.#audit(sinceSeq, limit);
  }

  #audit(sinceSeq: number, limit = -1): AuditRow[] {
    // LIMIT -1: no limit, in SQLite.
    return (this.#q.audit!.all(sinceSeq, limit) as Row[]).map(auditRow);
  }

  async auditEntry(seq: number): Promise<AuditRow | undefined> {
    const r = this.#q.auditEntry!.get(seq) as Row | undefined;
    return r ? auditRow(r) : undefined;
  }

  async lastAudit(): Promise<AuditRow | undefined> {
    return this.#lastAudit();
  }

  #lastAudit(): AuditRow | undefined {
    const r = this.#q.lastAudit!.get() as Row | undefined;
    return r ? auditRow(r) : undefined;
  }

  async addCheckpoint(c: CheckpointRow): Promise<void> {
    this.#writable();
    this.#q.insertCheckpoint!.run(c.seq, c.chain, c.time, c.signature);
  }

  async checkpoints(sinceSeq: number, throughSeq = Number.MAX_SAFE_INTEGER): Promise<CheckpointRow[]> {
    return (this.#q.checkpoints!.all(sinceSeq, throughSeq) as Row[]).map(checkpointRow);
  }

  async lastCheckpoint(): Promise<CheckpointRow | undefined> {
    const r = this.#q.lastCheckpoint!.get() as Row | undefined;
    return r ? checkpointRow(r) : undefined;
  }

  follow(afterSeq: number, follower: AuditFollower): void {
    const last = this.#lastAudit()?.seq ?? 0;
    if (afterSeq !== last) throw new Error(`the follower starts after entry ${afterSeq}, but the log ends at ${last}`);
    this.#follower = follower;
  }

  /** Nothing to hear: the locked data directory makes this store the only writer. */
  async catchUp(): Promise<void> {}

  /**
   * Whether the WAL is checkpointed on the thread now, and the WAL length (pages) at which a
   * commit checkpoints it itself. For tests and diagnostics.
   */
  walCheckpointing(): { thread: boolean; inlinePages: number } {
    const row = this.#db.prepare("PRAGMA wal_autocheckpoint").get() as Row;
    return { thread: this.#checkpointer?.running === true, inlinePages: Number(row.wal_autocheckpoint) };
  }

  /** SQLite's synchronous setting on the store's connection (2: FULL). For tests and diagnostics. */
  synchronous(): number {
    return Number((this.#db.prepare("PRAGMA synchronous").get() as Row).synchronous);
  }

  /**
   * Close the store. Resolves once the checkpoint thread has closed its connection too: until
   * then the database is still open (the last connection to close checkpoints and removes the
   * WAL), so whoever opens it next — a CAS started again on the directory — waits for nothing.
   */
  async close(): Promise<void> {
    this.#commitGrouped();
    this.#closed = true;
    await Promise.all(this.#syncing);
    if (this.#wal !== undefined) closeSync(this.#wal);
    this.#db.close();
    await this.#checkpointer?.stop();
  }

  /** One transaction and one sync for every grouped entry; then each caller is answered. */
  #commitGrouped(): void {
    const group = this.#grouped;
    if (group.length === 0) return;
    this.#grouped = [];
    const failed = (error: Error) => {
      for (const g of group) g.reject(error);
    };
    if (this.#closed || this.#failed) {
      failed(this.#failed ?? new Error("the store is closed"));
      return;
    }
    let rows: AuditRow[];
    try {
      // Committed without its sync, which follows on the thread pool (the setting is the
      // connection's, and goes back to FULL at once: every other commit syncs itself).
      if (this.#durable) this.#db.exec("PRAGMA synchronous = NORMAL");
      try {
        rows = this.#transaction(() => {
          this.#pruneNonces();
          return group.map((g) => this.#append(g.audit, g.spend));
        });
      } finally {
        if (this.#durable) this.#db.exec("PRAGMA synchronous = FULL");
      }
    } catch (error) {
      failed(error as Error);
      return;
    }
    // Committed: the follower hears of it now (even if the sync then fails and the store stops,
    // what the owner holds in memory is what the database holds).
    this.#follower?.(rows);
    const answer = () => {
      for (const [i, g] of group.entries()) g.resolve(rows[i]!);
    };
    if (!this.#durable) {
      answer();
      return;
    }
    // The WAL exists now: this transaction was written to it.
    this.#wal ??= openSync(`${this.#path}-wal`, "r");
    const synced = new Promise<void>((resolve) =>
      this.#syncWal(this.#wal!, (error) => {
        this.#syncing.delete(synced);
        if (error) failed(this.#fail(error));
        else answer();
        resolve();
      }),
    );
    this.#syncing.add(synced);
  }

  #checkpointAt(pages: number): void {
    this.#db.exec(`PRAGMA wal_autocheckpoint = ${pages}`);
  }

  #writeHistory(write: PolicyWrite): void {
    this.#q.insertVersion!.run(write.version.name, write.version.version, write.version.sealed);
    this.#q.insertSecrets!.run(write.secrets.name, write.secrets.version, write.secrets.sealed);
  }

  #append(audit: AuditAppender, spend?: NonceSpend): AuditRow {
    const context = spend
      ? { nonceSpent: this.#q.spendNonce!.run(spend.nonce, spend.expiresAt).changes === 0 }
      : NO_SPEND;
    const row = audit(this.#lastAudit(), context);
    this.#q.insertAudit!.run(row.seq, row.entry, row.chain, row.mac);
    return row;
  }

  /** BEGIN IMMEDIATE: the write lock is taken before the first read, so checks and writes are one step. */
  /** The store's writes are refused from now on; its owner hears of it once. */
  #fail(cause: NodeJS.ErrnoException): StoreFailedError {
    if (this.#failed) return this.#failed;
    this.#failed = new StoreFailedError(
      `the store could not make its writes durable (fsync of ${this.#path}-wal: ${cause.code ?? cause.message}); it takes no more writes: stop the CAS, check the disk, and start it again — it rebuilds from what is on disk`,
      { cause },
    );
    this.#onFailed?.(this.#failed);
    return this.#failed;
  }

  #writable(): void {
    if (this.#failed) throw this.#failed;
  }

  /** A transaction appending one entry; the follower hears of what it appended once it is committed. */
  #written(work: () => boolean): boolean {
    const before = this.#lastAudit()?.seq ?? 0;
    const done = this.#transaction(work);
    if (done && this.#follower) this.#follower(this.#audit(before));
    return done;
  }

  /** Spent nonces past their expiry and the grace, deleted at most once a PRUNE_EVERY_MS. */
  #pruneNonces(): void {
    const now = Date.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    this.#q.pruneNonces!.run(now - SPENT_NONCE_GRACE_MS);
  }

  #transaction<T>(work: () => T): T {
    this.#writable();
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = work();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }
}

/**
 * The database file made 0600 before SQLite opens it (an existing one set to 0600): SQLite gives
 * the -wal and -shm files it makes the database file's mode, and all three hold the CAS's
 * sealed state and its audit log.
 */
function ownerOnly(path: string): void {
  const fd = openSync(path, "a", 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  // Left by an older CAS (0644) or a crash: SQLite reuses them as they are.
  for (const suffix of ["-wal", "-shm"]) {
    try {
      chmodSync(`${path}${suffix}`, 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
}
