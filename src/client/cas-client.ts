/**
 * A client of the CAS: mutual TLS with the caller's identity, and the CAS pinned by the hash
 * of its key. The pin is checked on every connection before any request byte is sent on it, so
 * a policy (which may hold explicit secret values) never reaches an impostor. A client's
 * connections are kept alive between its requests (a runtime's challenge and attestation share
 * one TLS handshake), unreferenced while idle so that they never keep a process up; close()
 * ends them.
 */
import type { ClientRequestArgs } from "node:http";
import type { Duplex } from "node:stream";
import { connect, type TLSSocket } from "node:tls";
import { spkiHash } from "../crypto/keys.ts";

// Not `import … from "node:http"`: an ES import enumerates the module's exports, and reading
// http's lazy WebSocket getters loads undici — about 25 ms of every `cloister run` start.
const { request: httpRequest, Agent } = process.getBuiltinModule("node:http");

export interface CasClientOptions {
  /**
   * https://host:port, or several, comma-separated: the replicas of one CAS (docs/operations.md).
   * A request that cannot reach one — its connection refused or lost, no answer in time, or a 503
   * — is sent to the next; a 4xx answer is the CAS's, and final.
   */
  readonly url: string;
  /** The expected CAS key hash; undefined: connect only to learn it (see fetchCasKey). */
  readonly casKey: string;
  /** The caller's identity; absent for a runtime, which is known by its evidence instead. */
  readonly keyPem?: string;
  readonly certificatePem?: string;
  readonly timeoutMs?: number;
}

export class CasPinError extends Error {
  readonly actual: string;
  constructor(message: string, actual: string) {
    super(message);
    this.actual = actual;
  }
}

export class CasRequestError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class CasUnreachableError extends Error {
  /** The system's error code when the connection failed (ECONNREFUSED: nothing listens there). */
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

function target(url: string): { host: string; port: number; servername: string | undefined } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new CasUnreachableError(`CAS address ${url} is not a URL such as https://127.0.0.1:8081`);
  }
  if (u.protocol !== "https:") throw new CasUnreachableError(`CAS address ${url} must start with https://`);
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  const isIp = /^[\d.]+$/.test(host) || host.includes(":");
  return { host, port: Number(u.port || 443), servername: isIp ? undefined : host };
}

/** Open a TLS connection and return it with the hash of the server's key. */
function connectTls(options: Omit<CasClientOptions, "casKey">): Promise<{ socket: TLSSocket; key: string }> {
  const { host, port, servername } = target(options.url);
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      ...(servername ? { servername } : {}),
      ...(options.keyPem && options.certificatePem ? { key: options.keyPem, cert: options.certificatePem } : {}),
      minVersion: "TLSv1.3",
      // The CAS's certificate is self-signed: trust comes from the pinned key hash, checked below.
      rejectUnauthorized: false,
      // So no CA is trusted either: without `ca`, Node would load its ~140 bundled root
      // certificates into the connection's context, 2–6 ms of every `cloister run`, for nothing.
      ca: [],
    });
    const timer = setTimeout(
      () =>
        socket.destroy(
          new CasUnreachableError(`no TLS connection to ${options.url} within ${options.timeoutMs ?? 10_000} ms`),
        ),
      options.timeoutMs ?? 10_000,
    );
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const cert = socket.getPeerX509Certificate();
      if (!cert) {
        socket.destroy();
        reject(new CasUnreachableError(`${options.url} presented no certificate`));
        return;
      }
      resolve({ socket, key: spkiHash(cert.publicKey) });
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error instanceof CasUnreachableError
          ? error
          : new CasUnreachableError(
              `cannot reach the CAS at ${options.url}: ${error.code ?? error.message}`,
              error.code,
            ),
      );
    });
  });
}

/** Learn the key hash of the CAS at `url`, as ssh shows a host key, without sending anything. */
export async function fetchCasKey(options: Omit<CasClientOptions, "casKey">): Promise<string> {
  // Of several replicas, the first that answers: every one presents the same key.
  const urls = casAddresses(options.url);
  for (const [i, url] of urls.entries()) {
    try {
      const { socket, key } = await connectTls({ ...options, url });
      socket.destroy();
      return key;
    } catch (error) {
      if (i === urls.length - 1 || !(error instanceof CasUnreachableError)) throw error;
    }
  }
  throw new CasUnreachableError(`no CAS address in "${options.url}"`);
}

/**
 * node:http's connection pool over pinned TLS connections: each connection it asks for is opened
 * and its key checked (connectTls) before the agent may send on it; between requests it is kept
 * alive, unreferenced (the agent's default), and reused.
 */
class PinnedAgent extends Agent {
  readonly #options: CasClientOptions;

  constructor(options: CasClientOptions) {
    super({ keepAlive: true });
    this.#options = options;
  }

  override createConnection(_options: ClientRequestArgs, callback?: (error: Error | null, stream: Duplex) => void) {
    // With an error, node:http's agent takes no stream (its typings ask for one regardless).
    const done = callback as ((error: Error | null, stream?: Duplex) => void) | undefined;
    const { url, casKey } = this.#options;
    connectTls(this.#options).then(
      ({ socket, key }) => {
        if (key === casKey.toLowerCase()) return done?.(null, socket);
        socket.destroy();
        done?.(
          new CasPinError(`the CAS at ${url} has key ${key}, not the pinned ${casKey}: refusing to talk to it`, key),
        );
      },
      (error: Error) => done?.(error),
    );
    return undefined;
  }
}

/** The addresses in a CLOISTER_CAS_ADDR or --cas value: one, or several comma-separated. */
export function casAddresses(value: string): string[] {
  const urls = value
    .split(",")
    .map((u) => u.trim())
    .filter((u) => u !== "");
  if (urls.length === 0) throw new CasUnreachableError(`no CAS address in "${value}"`);
  return urls;
}

/** Whether another replica may answer where this one did not (never for an answer of the CAS's own). */
const tryElsewhere = (error: unknown): boolean =>
  error instanceof CasUnreachableError || (error instanceof CasRequestError && error.status === 503);

export class CasClient {
  readonly #options: CasClientOptions;
  /** One pinned client per address (replica), in the order given. */
  readonly #replicas: ReplicaClient[];
  /** The replica that answered last: where the next request goes first. */
  #current = 0;

  constructor(options: CasClientOptions) {
    this.#options = options;
    this.#replicas = casAddresses(options.url).map((url) => new ReplicaClient({ ...options, url }));
  }

  /** Close the connections kept for later requests (a later request opens a new one). */
  close(): void {
    for (const replica of this.#replicas) replica.close();
  }

  /**
   * One request on a pinned connection. Returns the parsed JSON body (undefined for 204). With
   * several addresses, each is tried once at most, starting with the one that answered last.
   * Every replica must present the pinned key: a pin error is final, not a reason to move on.
   */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), "utf8");
    const count = this.#replicas.length;
    let last: unknown;
    for (let attempt = 0; attempt < count; attempt++) {
      const index = (this.#current + attempt) % count;
      try {
        const answer = await this.#replicas[index]!.request<T>(method, path, payload);
        this.#current = index;
        return answer;
      } catch (error) {
        if (!tryElsewhere(error) || count === 1) throw error;
        last = error;
      }
    }
    throw last instanceof CasUnreachableError && count > 1
      ? new CasUnreachableError(`no replica of the CAS answered (${this.#options.url}): ${last.message}`, last.code)
      : last;
  }
}

/** A client of one address. */
class ReplicaClient {
  readonly #options: CasClientOptions;
  readonly #agent: PinnedAgent;

  constructor(options: CasClientOptions) {
    this.#options = options;
    this.#agent = new PinnedAgent(options);
  }

  close(): void {
    this.#agent.destroy();
  }

  request<T>(method: string, path: string, payload: Buffer | undefined): Promise<T> {
    return this.#send<T>(method, path, payload, false);
  }

  #send<T>(method: string, path: string, payload: Buffer | undefined, retried: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      // Plain http over the verified TLS connections of the agent.
      const req = httpRequest(
        {
          agent: this.#agent,
          method,
          path,
          host: target(this.#options.url).host,
          headers: {
            accept: "application/json",
            ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
          },
          timeout: this.#options.timeoutMs ?? 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              reject(
                new CasRequestError(status, "bad_response", `the CAS answered ${status} with a body that is not JSON`),
              );
              return;
            }
            if (status >= 200 && status < 300) resolve(json as T);
            else {
              const e = (json as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
              reject(
                new CasRequestError(status, e?.code ?? "error", e?.message ?? `the CAS answered ${status}`, e?.details),
              );
            }
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () =>
        req.destroy(
          new CasUnreachableError(
            `the CAS at ${this.#options.url} did not answer within ${this.#options.timeoutMs ?? 30_000} ms`,
          ),
        ),
      );
      req.on("error", (error: NodeJS.ErrnoException) => {
        // A kept connection the CAS closed while it was idle, found closed only as this request
        // went out on it (no answer came): the CAS never read the request. Once more, on a new
        // connection (pinned like every other) — node:http's documented way (`reusedSocket`).
        if (!retried && req.reusedSocket && (error.code === "ECONNRESET" || error.code === "EPIPE")) {
          resolve(this.#send<T>(method, path, payload, true));
          return;
        }
        reject(
          error instanceof CasPinError || error instanceof CasUnreachableError || error instanceof CasRequestError
            ? error
            : new CasUnreachableError(
                `lost the connection to the CAS at ${this.#options.url}: ${error.code ?? error.message}`,
              ),
        );
      });
      req.end(payload);
    });
  }
}

/** URL path of a policy: its name as one encoded segment (acme/shop → acme%2Fshop). */
export const policyPath = (name: string, suffix = "") => `/v1/policies/${encodeURIComponent(name)}${suffix}`;
