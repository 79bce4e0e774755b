/** Starting a CAS: data directory, master key, store, identity, service and server. */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { lockDataDirectory } from "./data-dir-lock.ts";
import { loadOrCreateMasterKey } from "./master-key.ts";
import { buildCasServer, type CasIdentity, CasService, loadOrCreateIdentity } from "./server.ts";
import { Envelope, TamperError } from "./store/envelope.ts";
import { SqliteStore, type SqliteStoreOptions } from "./store/sqlite.ts";
import type { Store, StoreFailedError } from "./store/store.ts";

export interface CasStartOptions {
  readonly dataDir: string;
  /**
   * Where the CAS's state lives: undefined or "sqlite" for the embedded store in the data
   * directory; a postgres:// URL for PostgreSQL, which several replicas may share (each with
   * its own data directory, all with the same master key).
   */
  readonly store?: string;
  /** host:port; port 0 picks a free one. */
  readonly listen: string;
  readonly masterKeyFile?: string;
  /** Who may create top-level policies besides the administrators (CasOptions.createTopLevel). */
  readonly createTopLevel?: readonly string[] | "any";
  readonly admins?: readonly string[] | "any";
  readonly log?: boolean;
  readonly checkpointEvery?: number;
  /** Cut requests that take longer (slowloris); default 10 s. */
  readonly requestTimeoutMs?: number;
  /** Attestation and volume-commit requests per second per source address; default 5,000. */
  readonly attestationRate?: number;
  /** The embedded store's options: benchmarks only (no command-line flag reaches them). */
  readonly storeOptions?: SqliteStoreOptions;
}

export interface RunningCas {
  readonly app: FastifyInstance;
  readonly identity: CasIdentity;
  readonly service: CasService;
  /** https://host:port */
  readonly url: string;
  readonly masterKeyCreated: boolean;
  /**
   * Settles if the store fails (it could not make a write durable): the CAS has then stopped
   * by itself, and this gives the reason. It never settles otherwise.
   */
  readonly failed: Promise<StoreFailedError>;
  close(): Promise<void>;
}

export class ListenError extends Error {}

export class StoreOptionError extends Error {}

/** The store `options.store` names: the embedded one in the data directory, or PostgreSQL. */
async function openStore(options: CasStartOptions, onFailed: (error: StoreFailedError) => void): Promise<Store> {
  const where = options.store ?? "sqlite";
  if (where === "sqlite")
    return new SqliteStore(join(options.dataDir, "cas.db"), {
      ...options.storeOptions,
      onFailed: (error) => {
        options.storeOptions?.onFailed?.(error);
        onFailed(error);
      },
    });
  if (/^postgres(ql)?:\/\//.test(where)) {
    // Loaded only here: a CAS on the embedded store never loads the PostgreSQL driver.
    const { PostgresStore } = await import("./store/postgres.ts");
    return PostgresStore.open(where);
  }
  throw new StoreOptionError(
    `--store ${where.replace(/\/\/[^@/]*@/, "//…@")}: expected sqlite (the default) or a URL such as postgres://cloister@db.example:5432/cloister?sslmode=verify-full`,
  );
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new ListenError(`--listen ${listen}: expected HOST:PORT such as 127.0.0.1:8081`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port };
}

export async function startCas(options: CasStartOptions): Promise<RunningCas> {
  const { host, port } = parseListen(options.listen);
  await fs.mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  // Before anything is read: what a CAS rebuilds from the store must not go stale under it.
  const unlock = lockDataDirectory(options.dataDir);
  let opened: Store | undefined;
  try {
    const master = await loadOrCreateMasterKey(options.masterKeyFile ?? join(options.dataDir, "master.key"));
    const failed = Promise.withResolvers<StoreFailedError>();
    let stop: (() => Promise<void>) | undefined;
    const store = await openStore(options, (error) => {
      // A write that could not be made durable: stop answering at once (close), rather than
      // answer from memory what the disk may not hold. The owner learns why from `failed`.
      void (stop?.() ?? Promise.resolve()).catch(() => {}).finally(() => failed.resolve(error));
    });
    opened = store;
    const envelope = new Envelope(master.key);
    const identity = await loadOrCreateIdentity(store, envelope).catch((error: unknown) => {
      // Every replica on a database shares its master key: another one cannot open its identity.
      if (error instanceof TamperError)
        throw new TamperError(
          `the master key does not open the CAS identity in this ${store.engine} store: every replica of a CAS needs the same master key (${error.message})`,
        );
      throw error;
    });
    const service = await CasService.open(store, master.key, identity.privateKey, {
      createTopLevel: options.createTopLevel,
      admins: options.admins,
      checkpointEvery: options.checkpointEvery,
    });
    const app = await buildCasServer({
      identity,
      service,
      store,
      log: options.log,
      requestTimeoutMs: options.requestTimeoutMs,
      attestationRate: options.attestationRate,
    });
    await app.listen({ host, port });
    const address = app.server.address();
    const actualPort = typeof address === "object" && address ? address.port : port;
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        try {
          await app.close();
          // What strangers were refused since the tally's last entry, before the store closes
          // (lost if the store has failed: a tally is at most one interval's counts).
          await service.flushRefusals();
        } finally {
          await store.close();
          unlock();
        }
      })());
    stop = close;
    const shownHost = host.includes(":") ? `[${host}]` : host;
    return {
      app,
      identity,
      service,
      url: `https://${shownHost}:${actualPort}`,
      masterKeyCreated: master.created,
      failed: failed.promise,
      close,
    };
  } catch (error) {
    await opened?.close();
    unlock();
    throw error;
  }
}
