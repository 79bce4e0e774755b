/**
 * The Store contract (store.ts), one suite run against both engines: SQLite, and PostgreSQL on
 * a real throwaway server (test/helpers/postgres.ts). Where PostgreSQL has replicas — several
 * stores on one database — the suite checks what they share: one chain that never forks, the
 * follower's view of the others' entries, compare-and-swap and spent nonces across them. Then,
 * for PostgreSQL alone: the server stopped and started again under a store that stays open.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "pg";
import { PostgresStore } from "../../src/cas/store/postgres.ts";
import { SqliteStore } from "../../src/cas/store/sqlite.ts";
import {
  type AppendContext,
  type AuditAppender,
  type AuditFollower,
  type AuditRow,
  type NonceSpend,
  type PolicyWrite,
  SPENT_NONCE_GRACE_MS,
  type Store,
  StoreUnavailableError,
} from "../../src/cas/store/store.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";

/** One database of an engine, for one test. */
interface Opened {
  readonly store: Store;
  /** The same database opened again: after store.close(), a restart. */
  reopen?(): Promise<Store>;
  /** Another store on the same database at the same time: a replica (engines that have them). */
  replica?(): Promise<Store>;
  /** Close every store still open and remove the database. */
  cleanup(): Promise<void>;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * An appender that chains as the CAS's does: seq and chain from `previous`. A row built on a
 * stale predecessor shows in the chain (or as a duplicate seq, which the database refuses).
 */
const chained =
  (entry: string, seen?: (previous: AuditRow | undefined, context: AppendContext) => void): AuditAppender =>
  (previous, context) => {
    seen?.(previous, context);
    return {
      seq: (previous?.seq ?? 0) + 1,
      entry,
      chain: sha256(`${previous?.chain ?? ""}${entry}`),
      mac: `mac ${entry}`,
    };
  };

/** The log is one chain: seqs 1..n without a gap, each row built on the one before it. */
function assertChain(rows: readonly AuditRow[]): void {
  let previous: AuditRow | undefined;
  for (const [i, row] of rows.entries()) {
    assert.equal(row.seq, i + 1, "seqs without gaps or duplicates");
    assert.equal(row.chain, sha256(`${previous?.chain ?? ""}${row.entry}`), `entry ${row.seq} chains onto ${i}`);
    previous = row;
  }
}

const policyWrite = (name: string, version: number, tag = ""): PolicyWrite => ({
  policy: {
    name,
    version,
    wrappedKey: Buffer.from(`key of ${name}`),
    sealed: Buffer.from(`policy ${name} v${version}${tag}`),
  },
  version: { name, version, sealed: Buffer.from(`history ${name} v${version}${tag}`) },
  secrets: { name, version, sealed: Buffer.from(`secrets ${name} v${version}${tag}`) },
});

/** A follower that records what it is handed, and each handing's seqs. */
function recorder() {
  const rows: AuditRow[] = [];
  const calls: number[][] = [];
  const follower: AuditFollower = (handed) => {
    calls.push(handed.map((r) => r.seq));
    rows.push(...handed);
  };
  return { rows, calls, follower, seqs: () => rows.map((r) => r.seq) };
}

/**
 * A TCP relay to the server that can go silent: cut() ends the connections through it and leaves
 * new ones accepted but never answered (a network that drops everything), heal() relays again.
 */
async function blackHoleProxy(target: number) {
  let silent = false;
  let unanswered = 0;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  };
  const relay = createServer((client) => {
    track(client);
    if (silent) {
      unanswered++;
      return;
    }
    const upstream = connect(target, "127.0.0.1");
    track(upstream);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const end = () => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    port: (relay.address() as AddressInfo).port,
    unanswered: () => unanswered,
    cut() {
      silent = true;
      end();
    },
    heal() {
      silent = false;
      end();
    },
    close: () => {
      end();
      return new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}

const spend = (nonce: Buffer): NonceSpend => ({ nonce, expiresAt: Date.now() + 60_000 });
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** `test`, each on a fresh database from `open`, cleaned up however it ends. */
function onFresh<T extends Opened>(open: () => Promise<T>) {
  return (title: string, body: (db: T) => Promise<void>) =>
    test(title, async () => {
      const db = await open();
      try {
        await body(db);
      } finally {
        await db.cleanup();
      }
    });
}

export function storeContract(name: string, open: () => Promise<Opened>): void {
  const withStore = onFresh(open);

  describe(`store contract: ${name}`, () => {
    withStore(
      "meta: init keeps the first value, write replaces it, list by prefix in byte order",
      async ({ store }) => {
        assert.equal(store.engine, name);
        assert.equal(await store.readMeta("k/1"), undefined);
        assert.deepEqual(await store.initMeta("k/1", Buffer.from("one")), Buffer.from("one"));
        assert.deepEqual(await store.initMeta("k/1", Buffer.from("two")), Buffer.from("one"), "the first value stays");
        await store.writeMeta("k/1", Buffer.from([0, 255, 1]));
        assert.deepEqual(await store.readMeta("k/1"), Buffer.from([0, 255, 1]));
        for (const key of ["k/a", "k/B", "k/10", "k/0", "k_x", "kz", "other"])
          await store.writeMeta(key, Buffer.from(key));
        assert.deepEqual(
          (await store.listMeta("k/")).map((m) => m.key),
          ["k/0", "k/1", "k/10", "k/B", "k/a"],
        );
        assert.deepEqual(
          (await store.listMeta("k_")).map((m) => m.key),
          ["k_x"],
          "the prefix is literal: _ is no wildcard",
        );
        assert.deepEqual((await store.listMeta("k/a"))[0]?.value, Buffer.from("k/a"));
        assert.equal((await store.listMeta("")).length, 8);
        assert.deepEqual(await store.listMeta("none"), []);
      },
    );

    withStore(
      "create: a new name is written with its history, secrets and audit entry; a taken one is refused",
      async ({ store }) => {
        assert.equal(await store.create(policyWrite("web", 1), chained("create web")), true);
        assert.equal(await store.create(policyWrite("api", 1), chained("create api")), true);
        let ran = false;
        assert.equal(
          await store.create(
            policyWrite("web", 7),
            chained("again", () => {
              ran = true;
            }),
          ),
          false,
        );
        assert.equal(ran, false, "no audit entry for a refused create");
        assert.deepEqual(await store.getPolicy("web"), policyWrite("web", 1).policy);
        assert.equal(await store.getPolicy("nope"), undefined);
        assert.deepEqual(
          (await store.listPolicies()).map((p) => p.name),
          ["api", "web"],
        );
        assert.deepEqual(await store.versions("web"), [policyWrite("web", 1).version]);
        assert.deepEqual(await store.secrets("web", 1), policyWrite("web", 1).secrets);
        assert.equal(await store.secrets("web", 2), undefined);
        const log = await store.audit(0);
        assert.deepEqual(
          log.map((r) => r.entry),
          ["create web", "create api"],
        );
        assertChain(log);
      },
    );

    withStore("update: compare-and-swap on the version; a wrong one writes nothing", async ({ store }) => {
      await store.create(policyWrite("web", 1), chained("create"));
      assert.equal(await store.update(3, policyWrite("web", 4), chained("stale")), false);
      assert.equal(await store.update(1, policyWrite("nope", 2), chained("absent")), false);
      assert.deepEqual(await store.getPolicy("web"), policyWrite("web", 1).policy);
      assert.deepEqual(await store.versions("web"), [policyWrite("web", 1).version]);
      assert.equal((await store.audit(0)).length, 1, "no audit entry for a lost compare-and-swap");
      assert.equal(await store.update(1, policyWrite("web", 2), chained("update")), true);
      assert.deepEqual(await store.getPolicy("web"), policyWrite("web", 2).policy);
      assert.deepEqual(await store.versions("web"), [policyWrite("web", 1).version, policyWrite("web", 2).version]);
      assert.deepEqual(await store.secrets("web", 2), policyWrite("web", 2).secrets);
      assert.deepEqual(await store.secrets("web", 1), policyWrite("web", 1).secrets, "older secrets are kept");
      assert.equal(await store.update(1, policyWrite("web", 3), chained("stale again")), false);
      assertChain(await store.audit(0));
    });

    withStore(
      "delete: compare-and-swap on the version; the history and secrets go with the policy",
      async ({ store }) => {
        await store.create(policyWrite("web", 1), chained("create"));
        await store.update(1, policyWrite("web", 2), chained("update"));
        await store.create(policyWrite("api", 1), chained("create api"));
        assert.equal(await store.delete("web", 1, chained("stale")), false);
        assert.equal(await store.delete("nope", 1, chained("absent")), false);
        assert.equal((await store.versions("web")).length, 2);
        assert.equal(await store.delete("web", 2, chained("delete")), true);
        assert.equal(await store.getPolicy("web"), undefined);
        assert.deepEqual(await store.versions("web"), []);
        assert.equal(await store.secrets("web", 1), undefined);
        assert.equal(await store.secrets("web", 2), undefined);
        assert.deepEqual(await store.versions("api"), [policyWrite("api", 1).version], "other policies are untouched");
        const log = await store.audit(0);
        assert.deepEqual(
          log.map((r) => r.entry),
          ["create", "update", "create api", "delete"],
        );
        assertChain(log);
      },
    );

    withStore(
      "the audit entry is in the change's transaction: an appender that throws leaves no change",
      async ({ store }) => {
        const refuse: AuditAppender = () => {
          throw new Error("cannot make the entry");
        };
        await assert.rejects(store.create(policyWrite("web", 1), refuse), /cannot make the entry/);
        assert.equal(await store.getPolicy("web"), undefined);
        assert.deepEqual(await store.versions("web"), []);
        assert.equal(await store.secrets("web", 1), undefined);
        await store.create(policyWrite("web", 1), chained("create"));
        await assert.rejects(store.update(1, policyWrite("web", 2), refuse), /cannot make the entry/);
        await assert.rejects(store.delete("web", 1, refuse), /cannot make the entry/);
        await assert.rejects(store.appendAudit(refuse), /cannot make the entry/);
        assert.deepEqual(await store.getPolicy("web"), policyWrite("web", 1).policy);
        assert.deepEqual(await store.versions("web"), [policyWrite("web", 1).version]);
        assert.equal(await store.secrets("web", 2), undefined);
        assert.deepEqual(
          (await store.audit(0)).map((r) => r.entry),
          ["create"],
        );
        assert.equal(await store.update(1, policyWrite("web", 2), chained("update")), true, "the store goes on");
      },
    );

    withStore(
      "appendAudit and appendAuditGrouped: one chain; each grouped entry resolves to its row",
      async ({ store }) => {
        assert.equal(await store.lastAudit(), undefined);
        assert.deepEqual(await store.audit(0), []);
        const first = await store.appendAudit(chained("a"));
        assert.equal(first.seq, 1);
        const pending = [
          store.appendAuditGrouped(chained("g1")),
          store.appendAudit(chained("b")),
          store.appendAuditGrouped(chained("g2")),
          store.appendAuditGrouped(chained("g3")),
        ];
        const answered = await Promise.all(pending);
        const log = await store.audit(0);
        assert.equal(log.length, 5);
        assertChain(log);
        for (const row of answered) assert.deepEqual(log[row.seq - 1], row, "each caller has its own row");
        const grouped = log.filter((r) => r.entry.startsWith("g")).map((r) => r.entry);
        assert.deepEqual(grouped, ["g1", "g2", "g3"], "grouped entries keep their order");
        assert.deepEqual(
          (await store.audit(1, 2)).map((r) => r.seq),
          [2, 3],
        );
        assert.deepEqual(
          (await store.audit(3)).map((r) => r.seq),
          [4, 5],
        );
        assert.deepEqual(await store.audit(5), []);
        assert.deepEqual(await store.auditEntry(3), log[2]);
        assert.equal(await store.auditEntry(99), undefined);
        assert.deepEqual(await store.lastAudit(), log[4]);
      },
    );

    withStore("a grouped entry that cannot be made fails its whole group; nothing of it is kept", async ({ store }) => {
      const ok = store.appendAuditGrouped(chained("x"));
      const bad = store.appendAuditGrouped(() => {
        throw new Error("cannot make the entry");
      });
      await assert.rejects(ok, /cannot make the entry/);
      await assert.rejects(bad, /cannot make the entry/);
      assert.equal(await store.lastAudit(), undefined);
      assert.equal((await store.appendAuditGrouped(chained("y"))).seq, 1, "the next group is made");
    });

    withStore("nonces: spent once; a second use, in the group or later, is told it was spent", async ({ store }) => {
      const [n1, n2, n3] = [randomBytes(32), randomBytes(32), randomBytes(32)];
      const told = new Map<string, boolean>();
      const use = (entry: string, nonce?: Buffer) =>
        store.appendAuditGrouped(
          chained(entry, (_, context) => told.set(entry, context.nonceSpent)),
          nonce && spend(nonce),
        );
      await Promise.all([use("n1 first", n1), use("n1 again", n1), use("n2 first", n2), use("no nonce")]);
      assert.deepEqual(Object.fromEntries(told), {
        "n1 first": false,
        "n1 again": true,
        "n2 first": false,
        "no nonce": false,
      });
      await use("n2 later", n2);
      await use("n3 first", n3);
      assert.equal(told.get("n2 later"), true);
      assert.equal(told.get("n3 first"), false);
      assert.equal((await store.audit(0)).length, 6, "a spent nonce's entry is still appended (the appender decides)");
    });

    withStore(
      "follower: the store's own entries, each once and in order, handed after their commit",
      async ({ store }) => {
        const seen = recorder();
        store.follow(0, seen.follower);
        // The appender runs before the commit: the entry it builds is not handed on yet.
        const notYet = (previous: AuditRow | undefined) =>
          assert.ok(!seen.seqs().includes((previous?.seq ?? 0) + 1), "handed on before its commit");
        const a = await store.appendAudit(chained("a", notYet));
        assert.deepEqual(seen.seqs(), [1], "handed on by the time the append resolves");
        const grouped = await Promise.all([
          store.appendAuditGrouped(chained("g1", notYet)),
          store.appendAuditGrouped(chained("g2", notYet)),
        ]);
        assert.deepEqual(seen.seqs(), [1, 2, 3]);
        await store.create(policyWrite("web", 1), chained("create", notYet));
        await store.update(1, policyWrite("web", 2), chained("update", notYet));
        await store.update(1, policyWrite("web", 3), chained("stale"));
        await store.delete("web", 2, chained("delete", notYet));
        await store.catchUp();
        const log = await store.audit(0);
        assert.deepEqual(seen.rows, log);
        assert.deepEqual(seen.seqs(), range(6));
        assert.deepEqual(seen.rows[0], a);
        assert.deepEqual(seen.rows.slice(1, 3), grouped);
        await store.catchUp();
        assert.equal(seen.rows.length, 6, "catchUp hands nothing twice");
      },
    );

    withStore("checkpoints: replaced by seq; ranges after and through a seq", async ({ store }) => {
      assert.equal(await store.lastCheckpoint(), undefined);
      const cp = (seq: number, tag = "") => ({ seq, chain: `c${seq}`, time: `t${seq}`, signature: `s${seq}${tag}` });
      for (const seq of [5, 1, 3]) await store.addCheckpoint(cp(seq));
      await store.addCheckpoint(cp(3, " again"));
      assert.deepEqual(await store.checkpoints(0), [cp(1), cp(3, " again"), cp(5)]);
      assert.deepEqual(await store.checkpoints(1, 3), [cp(3, " again")]);
      assert.deepEqual(await store.checkpoints(1, 4), [cp(3, " again")]);
      assert.deepEqual(await store.checkpoints(3), [cp(5)]);
      assert.deepEqual(await store.checkpoints(5), []);
      assert.deepEqual(await store.lastCheckpoint(), cp(5));
    });

    withStore("close: grouped entries still waiting are written first; reopened, everything is there", async (db) => {
      const { store } = db;
      await store.writeMeta("m", Buffer.from("v"));
      await store.create(policyWrite("web", 1), chained("create"));
      await store.addCheckpoint({ seq: 1, chain: "c", time: "t", signature: "s" });
      const pending = store.appendAuditGrouped(chained("last"));
      await store.close();
      assert.equal((await pending).seq, 2);
      await assert.rejects(store.appendAudit(chained("after close")));
      if (!db.reopen) return;
      const again = await db.reopen();
      assert.deepEqual(await again.readMeta("m"), Buffer.from("v"));
      assert.deepEqual(await again.getPolicy("web"), policyWrite("web", 1).policy);
      assert.equal((await again.lastCheckpoint())?.seq, 1);
      const log = await again.audit(0);
      assertChain(log);
      assert.equal(log.at(-1)?.entry, "last");
      const seen = recorder();
      again.follow(2, seen.follower);
      let previous: AuditRow | undefined;
      await again.appendAudit(
        chained("reopened", (p) => {
          previous = p;
        }),
      );
      assert.deepEqual(previous, log.at(-1), "the appender builds on the last entry written before the restart");
      assert.deepEqual(seen.seqs(), [3], "the follower hears only what comes after afterSeq");
    });
  });
}

/** The contract's part for engines whose database takes several stores at once. */
export function replicaContract(name: string, open: () => Promise<Opened & { replica(): Promise<Store> }>): void {
  const withReplicas = onFresh(open);

  describe(`store contract: ${name} replicas`, () => {
    withReplicas(
      "another replica's entries reach the follower before this store's appender, which builds on them",
      async (db) => {
        const a = db.store;
        const b = await db.replica();
        const seen = recorder();
        b.follow(0, seen.follower);
        await a.appendAudit(chained("A1"));
        const a2 = await a.appendAuditGrouped(chained("A2"));
        let previous: AuditRow | undefined;
        let handedBefore: number[] = [];
        const b1 = await b.appendAudit(
          chained("B1", (p) => {
            previous = p;
            handedBefore = seen.seqs();
          }),
        );
        assert.deepEqual(previous, a2, "the appender's previous is the other replica's entry");
        assert.deepEqual(handedBefore, [1, 2], "handed on before the appender ran");
        assert.equal(b1.seq, 3);
        assert.deepEqual(seen.seqs(), [1, 2, 3]);
        // Writes that are not bare appends hand them on too.
        await a.appendAudit(chained("A3"));
        assert.equal(await b.create(policyWrite("web", 1), chained("B create")), true);
        assert.deepEqual(seen.seqs(), [1, 2, 3, 4, 5]);
        const log = await a.audit(0);
        assertChain(log);
        assert.deepEqual(seen.rows, log);
      },
    );

    withReplicas("catchUp hands on the other replicas' entries, each once", async (db) => {
      const a = db.store;
      const b = await db.replica();
      const seen = recorder();
      b.follow(0, seen.follower);
      await b.catchUp();
      assert.deepEqual(seen.calls, [], "nothing to hand on: the follower is not called");
      await a.appendAudit(chained("A1"));
      await a.create(policyWrite("web", 1), chained("A create"));
      await b.catchUp();
      assert.deepEqual(seen.calls, [[1, 2]]);
      await b.catchUp();
      assert.deepEqual(seen.calls, [[1, 2]], "nothing twice");
      await a.appendAuditGrouped(chained("A2"));
      await Promise.all([b.catchUp(), b.catchUp()]);
      assert.deepEqual(seen.seqs(), [1, 2, 3]);
      assert.deepEqual(seen.rows, await a.audit(0));
    });

    withReplicas(
      "20 concurrent appends over 3 replicas make one chain, 1..20, each on its true predecessor",
      async (db) => {
        const stores = [db.store, await db.replica(), await db.replica()];
        const seen = stores.map((s) => {
          const r = recorder();
          s.follow(0, r.follower);
          return r;
        });
        const answered = await Promise.all(
          range(20).map((i) => {
            const store = stores[i % 3]!;
            return i % 2 === 0 ? store.appendAudit(chained(`e${i}`)) : store.appendAuditGrouped(chained(`e${i}`));
          }),
        );
        const log = await db.store.audit(0);
        assert.equal(log.length, 20);
        assertChain(log);
        assert.deepEqual(
          answered.map((r) => r.seq).sort((x, y) => x - y),
          range(20),
        );
        for (const row of answered) assert.deepEqual(log[row.seq - 1], row);
        for (const [i, store] of stores.entries()) {
          await store.catchUp();
          assert.deepEqual(seen[i]!.rows, log, `replica ${i}'s follower: every entry once, in order`);
        }
      },
    );

    withReplicas("20 concurrent updates naming version 1, over 3 replicas: exactly one wins", async (db) => {
      const stores = [db.store, await db.replica(), await db.replica()];
      await db.store.create(policyWrite("race", 1), chained("create"));
      const results = await Promise.all(
        range(20).map((i) => stores[i % 3]!.update(1, policyWrite("race", 2, ` #${i}`), chained(`update #${i}`))),
      );
      assert.equal(results.filter(Boolean).length, 1);
      const winner = results.indexOf(true) + 1;
      assert.deepEqual(await stores[1]!.getPolicy("race"), policyWrite("race", 2, ` #${winner}`).policy);
      assert.equal((await db.store.versions("race")).length, 2);
      const log = await db.store.audit(0);
      assert.deepEqual(
        log.map((r) => r.entry),
        ["create", `update #${winner}`],
      );
    });

    withReplicas("a nonce spent at one replica is spent at the others", async (db) => {
      const a = db.store;
      const b = await db.replica();
      const nonce = randomBytes(32);
      const told: boolean[] = [];
      const use = (store: Store) =>
        store.appendAuditGrouped(
          chained("use", (_, c) => told.push(c.nonceSpent)),
          spend(nonce),
        );
      await use(a);
      await use(b);
      await Promise.all([use(a), use(b)]);
      assert.deepEqual(told, [false, true, true, true]);
    });

    withReplicas(
      "a follower that refuses an entry aborts the write: nothing is written, the appender never runs",
      async (db) => {
        const a = db.store;
        const b = await db.replica();
        let refuse = true;
        const accepted: AuditRow[] = [];
        b.follow(0, (rows) => {
          if (refuse) throw new Error("the entry fails verification");
          accepted.push(...rows);
        });
        const a1 = await a.appendAudit(chained("A1"));
        let ran = false;
        const mark = chained("B", () => {
          ran = true;
        });
        await assert.rejects(b.appendAudit(mark), /fails verification/);
        await assert.rejects(b.appendAuditGrouped(mark), /fails verification/);
        await assert.rejects(b.create(policyWrite("web", 1), mark), /fails verification/);
        await assert.rejects(b.catchUp(), /fails verification/);
        assert.equal(ran, false);
        assert.deepEqual(await b.lastAudit(), a1);
        assert.equal(await a.getPolicy("web"), undefined);
        refuse = false;
        await b.appendAudit(chained("B1"));
        assert.deepEqual(
          accepted.map((r) => r.seq),
          [1, 2],
          "refused entries are handed on again, then the store's own",
        );
        assertChain(await a.audit(0));
      },
    );
  });
}

/** Stores opened by `openStore` on one database, each closed at cleanup unless the test closed it. */
async function opened(openStore: () => Promise<Store>) {
  const open = new Set<Store>();
  const track = async () => {
    const store = await openStore();
    open.add(store);
    // A store the test closed itself is not closed again (SQLite's close would throw).
    const close = store.close.bind(store);
    store.close = () => {
      open.delete(store);
      return close();
    };
    return store;
  };
  const store = await track();
  return {
    store,
    reopen: track,
    replica: track,
    async cleanup() {
      for (const s of open) await s.close();
    },
  };
}

describe("postgres", { timeout: 120_000 }, () => {
  let server: TestPostgres;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await server?.stop();
  });

  const openPostgres = async () => {
    const url = await server.createDatabase();
    return opened(() => PostgresStore.open(url));
  };
  storeContract("postgres", openPostgres);
  replicaContract("postgres", openPostgres);

  describe("postgres alone", () => {
    test("replicas opening one new database together all find the schema", async () => {
      const url = await server.createDatabase();
      const stores = await Promise.all(range(5).map(() => PostgresStore.open(url)));
      try {
        await Promise.all(stores.map((s, i) => s.appendAudit(chained(`r${i}`))));
        assertChain(await stores[0]!.audit(0));
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    });

    test("the role is not a superuser, and the store needs none", async () => {
      const [role] = await server.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'cloister'");
      assert.equal(role?.rolsuper, false);
    });

    test("health: ok while the server answers", async () => {
      const store = await PostgresStore.open(await server.createDatabase());
      try {
        assert.deepEqual(await store.health(), { ok: true });
      } finally {
        await store.close();
      }
      assert.equal((await store.health()).ok, false, "a closed store is not healthy");
    });

    test("a connection the server ends is replaced without the caller noticing", async () => {
      const url = await server.createDatabase();
      const database = new URL(url).pathname.slice(1);
      const store = await PostgresStore.open(url);
      try {
        await store.appendAudit(chained("a"));
        await store.readMeta("m");
        const ended = await server.sql(
          "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
          [database],
        );
        assert.ok(ended.length >= 2, "the write connection and a pooled one were ended");
        assert.equal((await store.appendAudit(chained("b"))).seq, 2);
        assert.equal(await store.readMeta("m"), undefined);
        assertChain(await store.audit(0));
      } finally {
        await store.close();
      }
    });

    test("spent nonces are pruned once past their expiry and the grace period", async () => {
      const url = await server.createDatabase();
      const database = new URL(url).pathname.slice(1);
      let now = 1_000_000_000_000;
      const store = await PostgresStore.open(url, { now: () => now });
      const count = async () =>
        Number((await server.sql("SELECT count(*) AS n FROM spent_nonces", [], database))[0]?.n);
      try {
        const [old, young] = [randomBytes(32), randomBytes(32)];
        const told: boolean[] = [];
        const use = (nonce: Buffer, expiresAt: number) =>
          store.appendAuditGrouped(
            chained("use", (_, c) => told.push(c.nonceSpent)),
            { nonce, expiresAt },
          );
        await use(old, now + 1000);
        await use(young, now + 120_000);
        assert.equal(await count(), 2);
        // Past the old nonce's expiry and grace, not the young one's; and past the prune interval.
        now += 1000 + SPENT_NONCE_GRACE_MS + 60_001;
        await store.appendAudit(chained("any write prunes"));
        assert.equal(await count(), 1);
        await use(young, now + 120_000);
        await use(old, now + 1000);
        assert.deepEqual(told, [false, false, true, false], "the young nonce is still spent; the old one was pruned");
      } finally {
        await store.close();
      }
    });

    for (const mode of ["fast", "immediate"] as const) {
      test(`server stopped (${mode}): every operation is StoreUnavailableError naming the server, never the password; started again, the same store works`, async () => {
        const password = `canary-${randomBytes(8).toString("hex")}`;
        const url = new URL(await server.createDatabase());
        // Trust authentication ignores it: it is here to be kept out of every message.
        url.password = password;
        const store = await PostgresStore.open(url.href);
        const seen = recorder();
        store.follow(0, seen.follower);
        try {
          await store.appendAudit(chained("before"));
          await store.create(policyWrite("web", 1), chained("create"));
          await store.readMeta("m");
          const unavailable = (error: unknown) => {
            assert.ok(error instanceof StoreUnavailableError, `StoreUnavailableError, not ${String(error)}`);
            assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${server.port}`));
            for (const text of [
              error.message,
              String(error.stack),
              String((error.cause as Error | undefined)?.message),
            ])
              assert.ok(!text.includes(password), "the password appears nowhere");
            return true;
          };
          await server.whilePaused(async () => {
            await assert.rejects(store.appendAudit(chained("during")), unavailable);
            await assert.rejects(store.appendAuditGrouped(chained("during"), spend(randomBytes(32))), unavailable);
            await assert.rejects(store.create(policyWrite("api", 1), chained("during")), unavailable);
            await assert.rejects(store.update(1, policyWrite("web", 2), chained("during")), unavailable);
            await assert.rejects(store.delete("web", 1, chained("during")), unavailable);
            await assert.rejects(store.catchUp(), unavailable);
            await assert.rejects(store.readMeta("m"), unavailable);
            await assert.rejects(store.initMeta("m", Buffer.from("v")), unavailable);
            await assert.rejects(store.writeMeta("m", Buffer.from("v")), unavailable);
            await assert.rejects(store.listMeta(""), unavailable);
            await assert.rejects(store.getPolicy("web"), unavailable);
            await assert.rejects(store.audit(0), unavailable);
            await assert.rejects(store.lastAudit(), unavailable);
            await assert.rejects(store.addCheckpoint({ seq: 1, chain: "c", time: "t", signature: "s" }), unavailable);
            const health = await store.health();
            assert.equal(health.ok, false);
            assert.ok(!String(health.reason).includes(password));
            assert.match(String(health.reason), new RegExp(`127\\.0\\.0\\.1:${server.port}`));
          }, mode);
          assert.equal((await store.appendAudit(chained("after"))).seq, 3);
          assert.equal(await store.update(1, policyWrite("web", 2), chained("update")), true);
          assert.deepEqual(await store.health(), { ok: true });
          const log = await store.audit(0);
          assert.deepEqual(
            log.map((r) => r.entry),
            ["before", "create", "after", "update"],
            "nothing of the refused writes was made",
          );
          assert.deepEqual(seen.rows, log);
        } finally {
          await store.close();
        }
      });
    }

    test("a replica holding the chain head too long: the write is StoreUnavailableError, and the next one goes through", async () => {
      const url = await server.createDatabase();
      const store = await PostgresStore.open(url, { lockTimeoutMs: 300 });
      const holder = new Client({ connectionString: url });
      try {
        await store.appendAudit(chained("a"));
        await holder.connect();
        await holder.query("BEGIN");
        await holder.query("SELECT seq FROM audit_head FOR UPDATE");
        await assert.rejects(store.appendAudit(chained("waits")), (error: unknown) => {
          assert.ok(error instanceof StoreUnavailableError);
          assert.match(error.message, /lock/);
          return true;
        });
        await holder.query("ROLLBACK");
        assert.equal((await store.appendAudit(chained("b"))).seq, 2);
      } finally {
        await holder.end();
        await store.close();
      }
    });

    test("a database that stops answering: the writes queued meanwhile fail together, not one timeout each", async () => {
      const gate = await blackHoleProxy(server.port);
      const url = new URL(await server.createDatabase());
      url.port = String(gate.port);
      const store = await PostgresStore.open(url.href, { connectTimeoutMs: 300 });
      try {
        await store.appendAudit(chained("a"));
        gate.cut();
        const results = await Promise.allSettled(range(5).map((i) => store.appendAudit(chained(`cut ${i}`))));
        for (const r of results) {
          assert.equal(r.status, "rejected");
          assert.ok((r as PromiseRejectedResult).reason instanceof StoreUnavailableError);
        }
        assert.equal(gate.unanswered(), 1, "one connection attempt for the five writes");
        gate.heal();
        assert.equal((await store.appendAudit(chained("b"))).seq, 2);
        assert.equal((await store.audit(0)).length, 2);
      } finally {
        await store.close();
        await gate.close();
      }
    });

    test("a server that is not there: open is StoreUnavailableError", async () => {
      const url = new URL(server.url);
      url.port = "1";
      url.password = "canary-never-shown";
      await assert.rejects(PostgresStore.open(url.href, { connectTimeoutMs: 2000 }), (error: unknown) => {
        assert.ok(error instanceof StoreUnavailableError);
        assert.match(error.message, /127\.0\.0\.1:1\b/);
        assert.ok(!error.message.includes("canary-never-shown"));
        return true;
      });
    });
  });
});

describe("sqlite", () => {
  const dir = mkdtempSync(join(tmpdir(), "cloister-store-contract-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let databases = 0;
  storeContract("sqlite", async () => {
    const path = join(dir, `${++databases}.db`);
    return opened(async () => new SqliteStore(path));
  });
});
