/**
 * The CAS's HTTPS server: TLS 1.3 only, callers identified by the key of their TLS client
 * certificate, routes from api.ts validated by their zod schemas. Errors are precise 4xx
 * responses; nothing is stored for a request that fails; slow or abandoned connections are
 * cut so that every other client keeps being served.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { z } from "zod";
import { spkiHash } from "../crypto/keys.ts";
import { selfSignedP256 } from "../crypto/self-signed.ts";
import { openApiDocument, ROUTES, type RouteSpec } from "./api.ts";
import { AttestationService } from "./attestation.ts";
import { Metrics } from "./metrics.ts";
import { RateLimiter, sourceOf } from "./rate-limit.ts";
import { CasError, CasService } from "./service.ts";
import type { Envelope } from "./store/envelope.ts";
import { type Store, StoreFailedError, StoreUnavailableError } from "./store/store.ts";

export const CAS_VERSION = "0.1.0";
/** A policy is at most 1 MiB of text; JSON escaping can double it. */
const BODY_LIMIT = 2.5 * 1024 * 1024;

export interface CasIdentity {
  readonly keyPem: string;
  readonly certificatePem: string;
  /** Lowercase hex SHA-256 of the SPKI: what clients pin. */
  readonly hash: string;
  readonly privateKey: KeyObject;
}

/** The CAS's own key, made on first start and kept sealed under the master key in the store. */
export async function loadOrCreateIdentity(store: Store, envelope: Envelope): Promise<CasIdentity> {
  let sealed = await store.readMeta("cas_identity");
  if (!sealed) {
    const made = await selfSignedP256("cloister CAS", 3650);
    // initMeta: of replicas starting at once on an empty database, the first identity stands.
    sealed = await store.initMeta("cas_identity", envelope.sealOwn("cas_identity", Buffer.from(JSON.stringify(made))));
  }
  const { keyPem, certificatePem } = JSON.parse(envelope.openOwn("cas_identity", sealed).toString("utf8")) as {
    keyPem: string;
    certificatePem: string;
  };
  return { keyPem, certificatePem, hash: spkiHash(keyPem), privateKey: createPrivateKey(keyPem) };
}

export interface CasServerOptions {
  readonly identity: CasIdentity;
  readonly service: CasService;
  readonly store: Store;
  /** Log requests (never bodies); off in tests and benchmarks. */
  readonly log?: boolean;
  readonly requestTimeoutMs?: number;
  /** Runtime requests (attestation, volume commits) per second per source address (token bucket, burst twice that). */
  readonly attestationRate?: number;
}

export async function buildCasServer(options: CasServerOptions): Promise<FastifyInstance> {
  const { identity, service, store } = options;
  const metrics = new Metrics();
  const app = Fastify({
    https: {
      key: identity.keyPem,
      cert: identity.certificatePem,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      // Ask for a client certificate but accept any: the key, not a CA, is the identity.
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: 5_000,
    },
    bodyLimit: BODY_LIMIT,
    connectionTimeout: 30_000,
    requestTimeout: options.requestTimeoutMs ?? 10_000,
    keepAliveTimeout: 30_000,
    logger: options.log ? { level: "info" } : false,
    // Policy names are path parameters, URL-encoded (acme%2Fshop).
    routerOptions: { maxParamLength: 1024 },
  });

  // A client that sends headers or a body slowly holds a connection: cut it after the request
  // timeout. (Node's own requestTimeout is not enforced while a handler waits for the body.)
  const requestTimeout = options.requestTimeoutMs ?? 10_000;
  app.server.headersTimeout = requestTimeout;
  app.addHook("onRequest", async (request) => {
    if (request.raw.complete) return;
    const timer = setTimeout(() => {
      if (!request.raw.complete) request.raw.socket.destroy();
    }, requestTimeout);
    timer.unref();
    const clear = () => clearTimeout(timer);
    request.raw.once("end", clear);
    request.raw.once("close", clear);
  });

  // Requests are JSON; refuse other bodies with 415 rather than guess.
  app.removeContentTypeParser("text/plain");

  app.addHook("onResponse", async (request, reply) => {
    metrics.request(request.routeOptions.url ?? "unknown", request.method, reply.statusCode, reply.elapsedTime);
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (error instanceof CasError) {
      return reply.status(error.status).send({
        error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) },
      });
    }
    if (error instanceof StoreFailedError) {
      return reply.status(503).send({ error: { code: "store_failed", message: error.message } });
    }
    // The database is away (PostgreSQL stopped, the network cut): try again, here or at another
    // replica. The message names the database's address, never its credentials.
    if (error instanceof StoreUnavailableError) {
      return reply.status(503).send({ error: { code: "store_unavailable", message: error.message } });
    }
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    if (status === 500) app.log.error({ err: error }, "internal error");
    return reply.status(status).send({
      error: {
        code: status === 500 ? "internal" : String(error.code ?? "bad_request").toLowerCase(),
        message: status === 500 ? "internal error" : error.message,
      },
    });
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .status(404)
      .send({ error: { code: "no_route", message: `no route ${request.method} ${request.url.split("?")[0]}` } }),
  );

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    // For load balancers: ready while the store answers (a replica whose database is away
    // says so, and why, and is taken out of rotation until it is back).
    try {
      await store.lastAudit();
      return { status: "ready", store: store.engine };
    } catch (error) {
      const reason =
        error instanceof StoreUnavailableError || error instanceof StoreFailedError
          ? error.message
          : "store unavailable";
      return reply.status(503).send({ status: "store unavailable", store: store.engine, reason });
    }
  });
  app.get("/metrics", async (_request, reply) =>
    reply
      .type("text/plain; version=0.0.4")
      .send(metrics.render({ cloister_cas_policies: (await store.listPolicies()).length })),
  );
  const openapi = openApiDocument(CAS_VERSION);
  app.get("/v1/openapi.json", async () => openapi);

  const attestation = new AttestationService(service);
  app.addHook("onClose", () => attestation.close());
  const limiter = new RateLimiter(options.attestationRate ?? 5_000);
  const handlers: { [K in keyof typeof ROUTES]: (ctx: Ctx<(typeof ROUTES)[K]>) => unknown } = {
    createPolicy: ({ actor, body }) => service.create(actor, body.policy, body.signatures),
    updatePolicy: ({ actor, body, params }) =>
      service.update(actor, body.policy, body.signatures, params.name, { regenerateSecrets: body.regenerate_secrets }),
    getPolicy: async ({ actor, params }) => {
      const r = await service.get(actor, params.name);
      return {
        name: r.name,
        hash: r.hash,
        version: r.version,
        creator: r.creator,
        created: r.created,
        updated: r.updated,
        updated_by: r.updated_by,
        policy: r.redacted,
      };
    },
    listPolicies: async ({ actor }) => ({ policies: await service.list(actor) }),
    deletePolicy: async ({ actor, params, query }) => {
      const signatures =
        query.signature === undefined ? [] : Array.isArray(query.signature) ? query.signature : [query.signature];
      await service.delete(actor, params.name, signatures);
      return null;
    },
    policyHistory: async ({ actor, params }) => ({
      name: params.name,
      versions: await service.history(actor, params.name),
    }),
    challenge: ({ body }) => attestation.challenge(body.config_id),
    attest: ({ body, source }) => attestation.attest(body, source),
    commitVolume: async ({ actor, params, body, peer }) => {
      await attestation.authorizeVolumeCommit(peer(), params.policy, params.volume);
      await service.commitVolume(actor, params.policy, params.volume, body.previous, body.next);
      return { policy: params.policy, volume: params.volume, tag: body.next };
    },
    enrolLas: async ({ actor, body }) => {
      await service.enrolLas(actor, body.key);
      return { keys: [...service.trust.lasKeys()].sort() };
    },
    listLas: async () => {
      await service.sync();
      return { keys: [...service.trust.lasKeys()].sort() };
    },
    importCollateral: ({ actor, body }) => service.importCollateral(actor, body),
    listCollateral: async () => {
      await service.sync();
      return { collateral: service.trust.list() };
    },
    auditExport: async ({ actor, query }) => ({
      ...(await service.exportAudit(actor, query.since, query.limit)),
      cas_key: Buffer.from(
        new X509Certificate(identity.certificatePem).publicKey.export({ type: "spki", format: "der" }),
      ).toString("base64"),
    }),
  };

  for (const [id, route] of Object.entries(ROUTES) as [keyof typeof ROUTES, RouteSpec][]) {
    app.route({
      method: route.method,
      url: route.url,
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const source = sourceOf(request.ip);
        if (route.rateLimited && !limiter.take(source)) {
          throw new CasError(
            429,
            "rate_limited",
            "too many attestation and volume-commit requests from this address; slow down",
          );
        }
        const actor = route.identified ? callerIdentity(request) : "";
        if (route.identified && !actor) {
          throw new CasError(
            401,
            "no_identity",
            "a TLS client certificate is required: create an identity with cloister identity create",
          );
        }
        const ctx = {
          actor,
          source,
          peer: () => (request.raw.socket as TLSSocket).getPeerX509Certificate?.(),
          params: parse(route.params, request.params, "path"),
          query: parse(route.query, request.query, "query"),
          body: parse(route.body, request.body, "body"),
        };
        const result = await (handlers[id] as (c: typeof ctx) => unknown)(ctx);
        if (route.status === 204) return reply.status(204).send();
        return reply.status(route.status).send(result);
      },
    });
  }
  return app;
}

type Ctx<R extends RouteSpec> = {
  actor: string;
  /** The request's source address (an IPv6 address's /64): rate-limit.ts's sourceOf. */
  source: string;
  /** The caller's TLS client certificate, if any. */
  peer: () => X509Certificate | undefined;
  params: R["params"] extends z.ZodType ? z.output<R["params"]> : undefined;
  query: R["query"] extends z.ZodType ? z.output<R["query"]> : undefined;
  body: R["body"] extends z.ZodType ? z.output<R["body"]> : undefined;
};

function parse(schema: z.ZodType | undefined, value: unknown, where: string): never | unknown {
  if (!schema) return undefined;
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => `${[where, ...i.path].join(".")}: ${i.message}`);
  throw new CasError(400, "bad_request", issues.join("; "));
}

const identities = new WeakMap<object, string>();

/** The SHA-256 of the client certificate's key, once per connection. */
function callerIdentity(request: FastifyRequest): string {
  const socket = request.raw.socket as TLSSocket;
  const known = identities.get(socket);
  if (known !== undefined) return known;
  const cert = socket.getPeerX509Certificate?.();
  const identity = cert ? spkiHash(cert.publicKey) : "";
  identities.set(socket, identity);
  return identity;
}

export { CasService };
