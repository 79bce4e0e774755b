/**
 * The networked store: PostgreSQL through node-postgres (pure JavaScript), so that several CAS
 * replicas share one database — one policy set, one audit chain, one set of spent nonces.
 *
 * The chain must not fork however many replicas append: every write transaction first locks the
 * one row of `audit_head` (SELECT … FOR UPDATE), so appends are serialised in the database, and
 * the appender decides on the newest entry whoever wrote it. Under that lock the store first
 * hands its owner's follower the entries other replicas committed since it last heard (the
 * follower may refuse one, which aborts the write), then calls the appender with the newest
 * entry as `previous`; its own entries reach the follower only once committed. The store keeps
 * one cursor — the last seq handed on — so the follower gets every entry once, in order, however
 * the entries were written: a commit whose answer was lost with the connection is found in the
 * database by the next write or catchUp, and handed on then like any other replica's.
 *
 * Writes go through one connection of their own, queued here so that this replica's
 * transactions never interleave (the head's lock would serialise them anyway; the queue saves
 * the waiting connections, and keeps the follower's order simple); reads use a small pool.
 * Grouped audit entries that arrive while a transaction runs share the next one: one commit, so
 * one WAL flush in PostgreSQL, for the lot.
 *
 * Durability is the server's: a COMMIT returns once the WAL is flushed (synchronous_commit on,
 * fsync on — PostgreSQL's defaults, which the operator must keep).
 *
 * Availability: a lost connection, a server shutting down or starting up surfaces as
 * StoreUnavailableError (503: try again, here later or at another replica), naming the server
 * but never the URL's password; the store reconnects by itself on the next operation. The
 * password goes to node-postgres, and is kept here only to scrub it from any message.
 */
import { Client, type ClientConfig, Pool, type PoolClient, type QueryConfig, type QueryResultRow } from "pg";
import { auditRow, checkpointRow, policyRow, versionRow } from "./rows.ts";
import {
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
  StoreUnavailableError,
  type VersionRow,
} from "./store.ts";

export interface PostgresStoreOptions {
  /** Connections of the read pool (writes have one of their own). Default 4. */
  readonly readConnections?: number;
  /** How long to wait for a connection (or a free one of the pool) before the store is unavailable. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /**
   * How long a write waits for the chain head's lock, held by another replica's write: past it
   * the write is unavailable (503), rather than queue behind a replica that hangs. Default 10 s.
   */
  readonly lockTimeoutMs?: number;
  /** How long one statement may run, on the server (and, a little longer, waiting for its answer here). Default 30 s. */
  readonly statementTimeoutMs?: number;
  /** How long /readyz's health() waits for `SELECT 1`. Default 2 s. */
  readonly healthTimeoutMs?: number;
  /** Tests: the clock that decides which spent nonces are old enough to prune. */
  readonly now?: () => number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS policies (
  name TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL, wrapped_key BYTEA NOT NULL, sealed BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS policy_versions (
  name TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, sealed BYTEA NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS secrets (
  name TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, sealed BYTEA NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS audit (seq BIGINT PRIMARY KEY, entry TEXT NOT NULL, chain TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
  seq BIGINT PRIMARY KEY, chain TEXT NOT NULL, time TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
  one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), seq BIGINT NOT NULL, chain TEXT NOT NULL);
INSERT INTO audit_head (one, seq, chain)
  SELECT TRUE, COALESCE(max(seq), 0), COALESCE((SELECT chain FROM audit ORDER BY seq DESC LIMIT 1), '') FROM audit
  ON CONFLICT (one) DO NOTHING;
CREATE TABLE IF NOT EXISTS spent_nonces (nonce BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS spent_nonces_expires_at ON spent_nonces (expires_at);
`;
// Notes on the schema. COLLATE "C": keys and names sort by their bytes, as in SQLite, whatever
// the database's locale (listMeta and listPolicies answer in that order). audit_head: one row
// (`one` can only be TRUE), the lock every write takes, and the seq and chain of the newest
// entry, kept in the same transaction as the entry; the INSERT starts it at the log's end.
// spent_nonces: one row per challenge nonce used, whichever replica used it, pruned by expiry.

/**
 * The advisory lock under which a store creates the schema: replicas starting together would
 * otherwise race in CREATE TABLE IF NOT EXISTS, which is not safe against itself (two sessions
 * both find the table absent, and one fails on the catalog's unique index). "Cloister" in ASCII.
 */
const SCHEMA_LOCK = BigInt("0x436c6f6973746572").toString();

/** How often (at most) a write transaction also deletes the spent nonces past expiry and grace. */
const PRUNE_EVERY_MS = 60_000;
/**
 * How long a write transaction may sit idle (its replica gone quiet holding the head's lock)
 * before the server ends it. This store's own transactions wait on nothing but the event loop
 * between their statements: generous, so that a busy loop does not lose them.
 */
const IDLE_IN_TRANSACTION_MS = 10_000;
/** Attempts of a transaction that failed on a serialization failure or a deadlock. */
const TRANSACTION_ATTEMPTS = 3;

/**
 * The head, locked. Only the head: a statement that waited for the lock sees the head's new
 * version (READ COMMITTED re-reads the row it locked) but nothing else the other transaction
 * wrote — joined to the audit table, it would find the new head's entry missing. The entries are
 * read by the statements after it, which see everything committed before they start.
 */
const HEAD = "SELECT seq, chain FROM audit_head FOR UPDATE";
const AUDIT_AFTER = "SELECT seq, entry, chain, mac FROM audit WHERE seq > $1 ORDER BY seq";
const AUDIT_ENTRY = "SELECT seq, entry, chain, mac FROM audit WHERE seq = $1";
/** The transaction's new entries and the head that now names the last of them: one round trip. */
const APPEND = `WITH appended AS (
    INSERT INTO audit (seq, entry, chain, mac) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]))
  UPDATE audit_head SET seq = $5, chain = $6`;

type Row = QueryResultRow;
/** An appendAuditGrouped waiting for its group's transaction. */
interface Grouped {
  readonly audit: AuditAppender;
  readonly spend: NonceSpend | undefined;
  readonly resolve: (row: AuditRow) => void;
  readonly reject: (error: Error) => void;
  /** #failedConnects when it was asked for. */
  readonly asked: number;
}

/** What a write transaction hands its work: the connection, and the newest entry, under the head's lock. */
interface Locked {
  readonly client: Client;
  readonly previous: AuditRow | undefined;
}

/** What the work answers: its result, and the entries to append (none: nothing to commit). */
interface Work<T> {
  readonly result: T;
  readonly rows: readonly AuditRow[];
}

export class PostgresStore implements Store {
  readonly engine = "postgres";
  readonly #config: ClientConfig;
  /** host:port (or the socket directory), for messages: never the URL, which may hold a password. */
  readonly #server: string;
  /** Scrubs the password from a message, should a library ever put it in one. */
  readonly #secret: string | undefined;
  readonly #pool: Pool;
  readonly #healthTimeoutMs: number;
  readonly #now: () => number;
  /** The connection of the writes; undefined until the first, and again once it is lost. */
  #writer: Client | undefined;
  /** The write queue's tail: each write (and catchUp) starts once the one before has ended. */
  #tail: Promise<unknown> = Promise.resolve();
  /** Grouped entries not yet taken by a transaction. */
  #grouped: Grouped[] = [];
  /** Whether a group is scheduled to enter the queue. */
  #groupScheduled = false;
  #follower: AuditFollower | undefined;
  /** The last seq handed to the follower (meaningful once there is one). */
  #cursor = 0;
  /** The newest committed entry this store knows of (wrote, or handed on): saves reading it back. */
  #last: AuditRow | undefined;
  #nextPruneAt = 0;
  /** Failed attempts to connect the write connection, and the last one's error. */
  #failedConnects = 0;
  #connectFailure: StoreUnavailableError | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(url: string, options: PostgresStoreOptions) {
    const { server, password } = describeUrl(url);
    this.#server = server;
    this.#secret = password || undefined;
    this.#healthTimeoutMs = options.healthTimeoutMs ?? 2000;
    this.#now = options.now ?? Date.now;
    const statementTimeoutMs = options.statementTimeoutMs ?? 30_000;
    const lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.#config = {
      connectionString: url,
      application_name: "cloister-cas",
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      keepAlive: true,
      // A connection idle this long is probed (TCP keepalive): one the network lost is found
      // before a write needs it, rather than by the write's own timeout.
      keepAliveInitialDelayMillis: 10_000,
      statement_timeout: statementTimeoutMs,
      lock_timeout: lockTimeoutMs,
      // A replica that stops mid-transaction (paused, partitioned) must not hold the chain head's
      // lock for ever: the server ends its session, which rolls the transaction back.
      idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
      // The answer that never comes (a network cut without a reset): give up a little after the
      // server would have cancelled the statement itself.
      query_timeout: statementTimeoutMs + 5000,
    };
    try {
      // The URL parsed now, by a client never connected, rather than at the first write.
      new Client(this.#config);
    } catch {
      // node-postgres' parse errors may quote the URL, password and all.
      throw new Error(`the PostgreSQL URL for ${this.#server} is not valid`);
    }
    this.#pool = new Pool({ ...this.#config, max: options.readConnections ?? 4, idleTimeoutMillis: 30_000 });
    // An idle pooled connection that dies (the server restarted) is dropped by the pool, which
    // then emits this: without a listener, it would end the process.
    this.#pool.on("error", () => {});
  }

  /**
   * Connect to `url` (postgres://user:password@host:port/database) and create the schema if it
   * is absent. The role needs to be able to create tables in the database's public schema (its
   * owner can); it need not be a superuser.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const store = new PostgresStore(url, options);
    try {
      await store.#createSchema();
    } catch (error) {
      await store.close();
      throw error;
    }
    return store;
  }

  async readMeta(key: string): Promise<Buffer | undefined> {
    const [r] = await this.#read("SELECT value FROM meta WHERE key = $1", [key]);
    return r ? (r.value as Buffer) : undefined;
  }

  async initMeta(key: string, value: Buffer): Promise<Buffer> {
    await this.#read("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", [key, value]);
    // A statement of its own, so that it sees a value another replica committed meanwhile.
    return (await this.readMeta(key))!;
  }

  async writeMeta(key: string, value: Buffer): Promise<void> {
    await this.#read(
      "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
      [key, value],
    );
  }

  async listMeta(prefix: string): Promise<{ key: string; value: Buffer }[]> {
    const rows = await this.#read("SELECT key, value FROM meta WHERE starts_with(key, $1) ORDER BY key", [prefix]);
    return rows.map((r) => ({ key: r.key as string, value: r.value as Buffer }));
  }

  async getPolicy(name: string): Promise<PolicyRow | undefined> {
    const [r] = await this.#read("SELECT * FROM policies WHERE name = $1", [name]);
    return r ? policyRow(r) : undefined;
  }

  async listPolicies(): Promise<PolicyRow[]> {
    return (await this.#read("SELECT * FROM policies ORDER BY name")).map(policyRow);
  }

  async versions(name: string): Promise<VersionRow[]> {
    return (await this.#read("SELECT * FROM policy_versions WHERE name = $1 ORDER BY version", [name])).map(versionRow);
  }

  async secrets(name: string, version: number): Promise<SecretsRow | undefined> {
    const [r] = await this.#read("SELECT * FROM secrets WHERE name = $1 AND version = $2", [name, version]);
    return r ? versionRow(r) : undefined;
  }

  create(write: PolicyWrite, audit: AuditAppender): Promise<boolean> {
    return this.#write(async ({ client, previous }) => {
      const p = write.policy;
      const inserted = await client.query(
        "INSERT INTO policies (name, version, wrapped_key, sealed) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        [p.name, p.version, p.wrappedKey, p.sealed],
      );
      if (inserted.rowCount !== 1) return { result: false, rows: [] };
      await writeHistory(client, write);
      return { result: true, rows: [audit(previous, { nonceSpent: false })] };
    });
  }

  update(expected: number, write: PolicyWrite, audit: AuditAppender): Promise<boolean> {
    return this.#write(async ({ client, previous }) => {
      const p = write.policy;
      const updated = await client.query(
        "UPDATE policies SET version = $1, wrapped_key = $2, sealed = $3 WHERE name = $4 AND version = $5",
        [p.version, p.wrappedKey, p.sealed, p.name, expected],
      );
      if (updated.rowCount !== 1) return { result: false, rows: [] };
      await writeHistory(client, write);
      return { result: true, rows: [audit(previous, { nonceSpent: false })] };
    });
  }

  delete(name: string, expected: number, audit: AuditAppender): Promise<boolean> {
    return this.#write(async ({ client, previous }) => {
      const deleted = await client.query("DELETE FROM policies WHERE name = $1 AND version = $2", [name, expected]);
      if (deleted.rowCount !== 1) return { result: false, rows: [] };
      await client.query(
        "WITH v AS (DELETE FROM policy_versions WHERE name = $1) DELETE FROM secrets WHERE name = $1",
        [name],
      );
      return { result: true, rows: [audit(previous, { nonceSpent: false })] };
    });
  }

  appendAudit(audit: AuditAppender): Promise<AuditRow> {
    return this.#write(async ({ previous }) => {
      const row = audit(previous, { nonceSpent: false });
      return { result: row, rows: [row] };
    });
  }

  appendAuditGrouped(audit: AuditAppender, spend?: NonceSpend): Promise<AuditRow> {
    if (this.#closed) return Promise.reject(closedError());
    const { promise, resolve, reject } = Promise.withResolvers<AuditRow>();
    this.#grouped.push({ audit, spend, resolve, reject, asked: this.#failedConnects });
    if (!this.#groupScheduled) {
      this.#groupScheduled = true;
      // After this turn's other appends have joined; then the group waits in the queue, where
      // whatever arrives meanwhile joins it too (the transaction takes the entries when it starts).
      setImmediate(() => this.#scheduleGroup());
    }
    return promise;
  }

  follow(afterSeq: number, follower: AuditFollower): void {
    if (this.#follower) throw new Error("the store already has a follower");
    this.#follower = follower;
    this.#cursor = afterSeq;
  }

  catchUp(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError());
    // In the queue: between two of this store's writes, never during one, so that nothing is
    // handed on twice or out of order. No lock: committed entries are all it needs.
    return this.#enqueue(async () => {
      if (!this.#follower) return;
      this.#hand((await this.#read(AUDIT_AFTER, [this.#cursor])).map(auditRow));
    });
  }

  async audit(sinceSeq: number, limit?: number): Promise<AuditRow[]> {
    // LIMIT NULL: no limit.
    const rows = await this.#read(`${AUDIT_AFTER} LIMIT $2`, [
      sinceSeq,
      limit === undefined || limit < 0 ? null : limit,
    ]);
    return rows.map(auditRow);
  }

  async auditEntry(seq: number): Promise<AuditRow | undefined> {
    const [r] = await this.#read("SELECT seq, entry, chain, mac FROM audit WHERE seq = $1", [seq]);
    return r ? auditRow(r) : undefined;
  }

  async lastAudit(): Promise<AuditRow | undefined> {
    const [r] = await this.#read("SELECT seq, entry, chain, mac FROM audit ORDER BY seq DESC LIMIT 1");
    return r ? auditRow(r) : undefined;
  }

  async addCheckpoint(c: CheckpointRow): Promise<void> {
    await this.#read(
      `INSERT INTO checkpoints (seq, chain, time, signature) VALUES ($1, $2, $3, $4)
       ON CONFLICT (seq) DO UPDATE SET chain = EXCLUDED.chain, time = EXCLUDED.time, signature = EXCLUDED.signature`,
      [c.seq, c.chain, c.time, c.signature],
    );
  }

  async checkpoints(sinceSeq: number, throughSeq = Number.MAX_SAFE_INTEGER): Promise<CheckpointRow[]> {
    const rows = await this.#read("SELECT * FROM checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq", [
      sinceSeq,
      throughSeq,
    ]);
    return rows.map(checkpointRow);
  }

  async lastCheckpoint(): Promise<CheckpointRow | undefined> {
    const [r] = await this.#read("SELECT * FROM checkpoints ORDER BY seq DESC LIMIT 1");
    return r ? checkpointRow(r) : undefined;
  }

  /** For /readyz: whether the database answers `SELECT 1` within the health timeout, and if not why. */
  async health(): Promise<{ ok: boolean; reason?: string }> {
    if (this.#closed) return { ok: false, reason: "the store is closed" };
    // query_timeout per query: node-postgres reads it (client.js), its types do not have it. It
    // frees the connection of a health check the timer below has given up on.
    const config = { text: "SELECT 1", query_timeout: this.#healthTimeoutMs } as QueryConfig;
    const query = this.#pool.query(config);
    // The pool's wait for a connection has a timeout of its own (connectTimeoutMs), longer.
    query.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${this.#healthTimeoutMs} ms`)),
        this.#healthTimeoutMs,
      );
    });
    try {
      await Promise.race([query, timeout]);
      return { ok: true };
    } catch (error) {
      return { ok: false, reason: this.#unavailable(error).message };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Writes already asked for (grouped entries too) are made first; then every connection is closed. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#scheduleGroup();
      await this.#tail;
      const writer = this.#writer;
      this.#writer = undefined;
      await writer?.end().catch(() => {});
      await this.#pool.end().catch(() => {});
    })();
    return this.#closing;
  }

  /** Put the waiting grouped entries in the queue, as one transaction (taken when it starts). */
  #scheduleGroup(): void {
    if (!this.#groupScheduled) return;
    this.#groupScheduled = false;
    void this.#enqueue(async () => {
      const group = this.#grouped;
      this.#grouped = [];
      if (group.length > 0) await this.#commitGroup(group);
    });
  }

  /**
   * One transaction for the group: its nonces recorded as spent in one statement, then each
   * entry built on the one before it (the group's own entries are not handed to the follower
   * before the commit: they must not change what a later appender of the group decides on).
   * As in SQLite, an entry that cannot be made fails the group's every entry.
   */
  async #commitGroup(group: readonly Grouped[]): Promise<void> {
    try {
      const rows = await this.#transaction(group[0]!.asked, async ({ client, previous }) => {
        const spends = group.flatMap((g) => (g.spend ? [g.spend] : []));
        // The nonces this transaction recorded: any other was spent already, by this replica or
        // another. A nonce twice in the group is recorded once (ON CONFLICT DO NOTHING holds
        // within one statement too), and spent by its first entry.
        const recorded = new Set<string>();
        if (spends.length > 0) {
          const result = await client.query(
            `INSERT INTO spent_nonces (nonce, expires_at)
             SELECT decode(n, 'hex'), e FROM unnest($1::text[], $2::bigint[]) AS s(n, e)
             ON CONFLICT (nonce) DO NOTHING RETURNING encode(nonce, 'hex') AS nonce`,
            [spends.map((s) => s.nonce.toString("hex")), spends.map((s) => s.expiresAt)],
          );
          for (const r of result.rows) recorded.add(r.nonce as string);
        }
        const rows: AuditRow[] = [];
        let last = previous;
        for (const g of group) {
          let nonceSpent = false;
          if (g.spend) {
            const nonce = g.spend.nonce.toString("hex");
            nonceSpent = !recorded.delete(nonce);
          }
          last = g.audit(last, { nonceSpent });
          rows.push(last);
        }
        return { result: rows, rows };
      });
      for (const [i, g] of group.entries()) g.resolve(rows[i]!);
    } catch (error) {
      for (const g of group) g.reject(error as Error);
    }
  }

  #write<T>(work: (locked: Locked) => Promise<Work<T>>): Promise<T> {
    if (this.#closed) return Promise.reject(closedError());
    const asked = this.#failedConnects;
    return this.#enqueue(() => this.#transaction(asked, work));
  }

  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(job);
    this.#tail = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  /**
   * One write transaction on the write connection, holding the chain head's lock: the follower
   * first hears what other replicas committed, then `work` runs on the newest entry, then its
   * entries are appended and the head moved to the last of them, and after the COMMIT they are
   * handed to the follower. Run from the queue only. `asked`: #failedConnects when the write
   * was asked for.
   */
  async #transaction<T>(asked: number, work: (locked: Locked) => Promise<Work<T>>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const reused = this.#writer !== undefined;
      const client = await this.#connection(asked);
      let committing = false;
      let outcome: Work<T>;
      try {
        await client.query("BEGIN");
        const [head] = (await client.query({ name: "cloister-head", text: HEAD })).rows;
        if (!head) throw new Error("the audit_head table has no row: the schema was altered");
        const previous = await this.#newest(client, Number(head.seq), head.chain as string);
        const pruned = await this.#pruneIfDue(client);
        outcome = await work({ client, previous });
        const rows = outcome.rows;
        const last = rows.at(-1);
        if (last) {
          await client.query({ name: "cloister-append", text: APPEND }, [
            rows.map((r) => r.seq),
            rows.map((r) => r.entry),
            rows.map((r) => r.chain),
            rows.map((r) => r.mac),
            last.seq,
            last.chain,
          ]);
        }
        if (last || pruned) {
          committing = true;
          await client.query("COMMIT");
        } else {
          // Nothing written (a compare-and-swap that lost): nothing to flush either.
          await client.query("ROLLBACK");
        }
      } catch (error) {
        if (isConnectionLost(error)) {
          this.#drop(client);
          // A connection that had sat idle may have died unnoticed (the server restarted since):
          // before the COMMIT nothing was made, so one try on a new connection is safe.
          if (reused && !committing && attempt === 1 && isStaleConnection(error)) continue;
          throw this.#unavailable(
            error,
            committing ? " (the connection was lost at the commit: the write may or may not have been made)" : "",
          );
        }
        if (!committing) await this.#rollback(client);
        if (isRetryable(error) && attempt < TRANSACTION_ATTEMPTS) continue;
        throw this.#translate(error);
      }
      // After the commit: the follower hears the store's own entries now, in order. (Should it
      // refuse one, the caller hears of it; the entry stays committed, and the follower is
      // handed it again at the next write, so it is not lost from its view.)
      this.#handOwn(outcome.rows);
      return outcome.result;
    }
  }

  /**
   * Under the head's lock: hand the follower what other writers committed since it last heard
   * (it throws if it refuses an entry: the write is then rolled back), and answer the newest
   * entry — the one the head names — for the appender to build on.
   */
  async #newest(client: Client, seq: number, chain: string): Promise<AuditRow | undefined> {
    if (this.#follower) {
      if (seq < this.#cursor)
        throw new Error(
          `the database's audit log ends at entry ${seq}, before entry ${this.#cursor} this store has seen: was it restored from an older copy?`,
        );
      if (seq > this.#cursor)
        this.#hand(
          (await client.query({ name: "cloister-after", text: AUDIT_AFTER }, [this.#cursor])).rows.map(auditRow),
        );
    }
    if (seq === 0) return undefined;
    // Where this store wrote (or was handed) the newest entry itself, it has it already.
    let newest = this.#last?.seq === seq ? this.#last : undefined;
    if (!newest) {
      const [r] = (await client.query({ name: "cloister-entry", text: AUDIT_ENTRY }, [seq])).rows;
      if (!r) throw new Error(`audit_head names entry ${seq}, which the audit table does not hold`);
      newest = auditRow(r);
    }
    if (newest.chain !== chain)
      throw new Error(`audit_head and audit entry ${seq} disagree on the chain: the database was altered`);
    this.#last = newest;
    return newest;
  }

  /** The write connection, connected if there is none (the first write, or the last one lost). */
  async #connection(asked: number): Promise<Client> {
    if (this.#writer) return this.#writer;
    // A connection attempt failed while this write waited in the queue: it fails alike, at once.
    // Were the database unreachable (a timeout rather than a refusal), each write queued behind
    // the first would otherwise wait out a timeout of its own, one after another.
    if (this.#failedConnects > asked && this.#connectFailure) throw this.#connectFailure;
    const client = new Client(this.#config);
    // A connection that dies while idle (the server shut down) emits an error: dropped here,
    // and the next write connects again. Without a listener it would end the process.
    client.on("error", () => this.#drop(client));
    client.on("end", () => {
      if (this.#writer === client) this.#writer = undefined;
    });
    try {
      await client.connect();
    } catch (error) {
      client.end().catch(() => {});
      this.#failedConnects++;
      this.#connectFailure = this.#unavailable(error);
      throw this.#connectFailure;
    }
    this.#writer = client;
    return client;
  }

  #drop(client: Client): void {
    if (this.#writer === client) this.#writer = undefined;
    client.end().catch(() => {});
  }

  async #rollback(client: Client): Promise<void> {
    try {
      await client.query("ROLLBACK");
    } catch {
      // The connection's state is unknown now: the next write uses a new one.
      this.#drop(client);
    }
  }

  /** Delete the spent nonces past their expiry and the grace period, now and then. True if it ran. */
  async #pruneIfDue(client: Client): Promise<boolean> {
    const now = this.#now();
    if (now < this.#nextPruneAt) return false;
    this.#nextPruneAt = now + PRUNE_EVERY_MS;
    await client.query("DELETE FROM spent_nonces WHERE expires_at < $1", [now - SPENT_NONCE_GRACE_MS]);
    return true;
  }

  /** Hand entries to the follower; the cursor moves only if it took them. */
  #hand(rows: readonly AuditRow[]): void {
    const last = rows.at(-1);
    if (!this.#follower || !last) return;
    this.#follower(rows);
    this.#cursor = last.seq;
    if (!this.#last || last.seq > this.#last.seq) this.#last = last;
  }

  /**
   * The store's own committed entries, if they follow on from the cursor. They would not if the
   * appender skipped a seq, or follow() came mid-transaction: then the next write or catchUp
   * reads them from the database, in order.
   */
  #handOwn(rows: readonly AuditRow[]): void {
    const last = rows.at(-1);
    if (last) this.#last = last;
    if (this.#follower && rows[0]?.seq === this.#cursor + 1) this.#hand(rows);
  }

  /** A read, or a write of its own that needs no lock (meta, checkpoints), on the pool. */
  async #read(text: string, values: unknown[] = []): Promise<Row[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.#pool.query(text, values)).rows;
      } catch (error) {
        // A pooled connection found dead: the pool has dropped it, and another is tried once.
        // (The statements here may be repeated: reads, and upserts of a value.)
        if (isStaleConnection(error) && attempt === 1) continue;
        throw this.#translate(error);
      }
    }
  }

  async #createSchema(): Promise<void> {
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#translate(error);
    }
    try {
      await client.query("BEGIN");
      // Held to the transaction's end: the replicas create the schema one at a time.
      await client.query("SELECT pg_advisory_xact_lock($1)", [SCHEMA_LOCK]);
      await client.query(SCHEMA);
      await client.query("COMMIT");
      client.release();
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      client.release(true);
      throw this.#translate(error);
    }
  }

  #translate(error: unknown): Error {
    if (isConnectionLost(error) || isBusy(error)) return this.#unavailable(error);
    if (error instanceof Error && /pool after calling end/.test(error.message)) return closedError();
    return error as Error;
  }

  /** StoreUnavailableError naming the server (and why), never the password. */
  #unavailable(error: unknown, note = ""): StoreUnavailableError {
    if (error instanceof StoreUnavailableError) return error;
    const e = error as { code?: unknown; message?: unknown };
    const message = typeof e.message === "string" ? e.message : String(error);
    const code = typeof e.code === "string" && !message.includes(e.code) ? `${e.code}: ` : "";
    const why = this.#scrub(`${code}${message}`);
    // The cause is a copy: node-postgres may hang the client (and its configuration, password
    // and all) on its errors, where a log that prints causes would find it.
    const cause = Object.assign(new Error(why), typeof e.code === "string" ? { code: e.code } : {});
    return new StoreUnavailableError(`PostgreSQL at ${this.#server} is unavailable${note}: ${why}`, { cause });
  }

  #scrub(text: string): string {
    if (!this.#secret) return text;
    let scrubbed = text;
    for (const form of new Set([this.#secret, encodeURIComponent(this.#secret)]))
      scrubbed = scrubbed.split(form).join("***");
    return scrubbed;
  }
}

async function writeHistory(client: Client, write: PolicyWrite): Promise<void> {
  await client.query(
    `WITH v AS (INSERT INTO policy_versions (name, version, sealed) VALUES ($1, $2, $3))
     INSERT INTO secrets (name, version, sealed) VALUES ($4, $5, $6)`,
    [
      write.version.name,
      write.version.version,
      write.version.sealed,
      write.secrets.name,
      write.secrets.version,
      write.secrets.sealed,
    ],
  );
}

/** The server (host:port, or the socket directory) and the password of a PostgreSQL URL. */
function describeUrl(url: string): { server: string; password: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not the URL itself in the message: it may hold a password.
    throw new Error("the PostgreSQL URL is not a valid URL (postgres://user:password@host:port/database)");
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:")
    throw new Error(`the PostgreSQL URL must start postgres:// or postgresql://, not ${parsed.protocol}//`);
  const host = parsed.hostname || parsed.searchParams.get("host") || "localhost";
  const port = parsed.port || parsed.searchParams.get("port") || "5432";
  let password = parsed.password;
  try {
    password = decodeURIComponent(password);
  } catch {}
  return { server: host.startsWith("/") ? host : `${host}:${port}`, password };
}

const closedError = () => new Error("the store is closed");

/**
 * Errors of reaching the database rather than of the statement: the connection refused, reset,
 * timed out or ended, or the server shutting down, crashing or starting up (SQLSTATE 57P01-57P03,
 * class 08). The connection is no use after one.
 */
function isConnectionLost(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  if (
    [
      "ECONNREFUSED",
      "ECONNRESET",
      "ECONNABORTED",
      "EPIPE",
      "ETIMEDOUT",
      "EHOSTUNREACH",
      "ENETUNREACH",
      "EHOSTDOWN",
      "ENOTFOUND",
      "EAI_AGAIN",
      "57P01",
      "57P02",
      "57P03",
    ].includes(code) ||
    code.startsWith("08")
  )
    return true;
  const message = typeof e.message === "string" ? e.message : "";
  return /Connection terminated|connection timeout|timeout expired|timeout exceeded when trying to connect|Query read timeout|not queryable/.test(
    message,
  );
}

/**
 * The database is there but cannot serve now: out of connections (53300), a lock or a statement
 * that waited too long (55P03, 57014: a replica that hangs holding the head, a server overloaded).
 * Worth a retry later, too.
 */
function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === "53300" || code === "55P03" || code === "57014";
}

/** A connection that was open and is found dead: worth one more try on a new one. */
function isStaleConnection(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  const message = typeof e.message === "string" ? e.message : "";
  return (
    ["ECONNRESET", "EPIPE", "57P01", "57P02"].includes(code) ||
    /Connection terminated unexpectedly|not queryable/.test(message)
  );
}

/** A serialization failure or a deadlock: the transaction may simply be run again. */
function isRetryable(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === "40001" || code === "40P01";
}
