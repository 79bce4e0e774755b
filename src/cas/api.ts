/**
 * The CAS's HTTP API as data: each route's method, path, request and response schemas. The
 * server validates against these, and the OpenAPI document is generated from them. The
 * runtime's routes' schemas (attestation, volume commits) are the protocol's (src/protocol/),
 * shared with the runtime.
 */
import { z } from "zod";
import { Collateral } from "../attestation/dcap/collateral.ts";
import {
  AttestationRequest,
  AttestationResponse,
  ChallengeRequest,
  ChallengeResponse,
} from "../protocol/attestation.ts";
import { VolumeCommitRequest, VolumeCommitResponse, VolumeParams } from "../protocol/volumes.ts";
import { AuditPage } from "./audit.ts";

const Signatures = z
  .array(z.string().max(1024))
  .max(64)
  .describe("detached signatures (cloister policy sign) for multi-party rules")
  .default([]);

export const PolicyWriteRequest = z.strictObject({
  policy: z.string().describe("the policy in YAML or JSON"),
  signatures: Signatures,
});

export const PolicyUpdateRequest = PolicyWriteRequest.extend({
  regenerate_secrets: z
    .boolean()
    .default(false)
    .describe(
      "consent to a change of attestation mode, which makes every generated value anew (409 regenerates_secrets without it)",
    ),
});

export const PolicySummary = z.strictObject({ name: z.string(), hash: z.string(), version: z.int() });

/** A warning about a policy that was stored (src/policy/warnings.ts), positioned as errors are. */
export const PolicyWarning = z.strictObject({
  file: z.string(),
  line: z.int(),
  column: z.int(),
  field: z.string(),
  message: z.string(),
});

/** What create and update answer: `warnings` only when there are some, so older clients see no change. */
export const PolicyWritten = PolicySummary.extend({
  warnings: z
    .array(PolicyWarning)
    .optional()
    .describe("what the policy says that its author probably did not mean; it was stored all the same"),
});

export const PolicyResponse = PolicySummary.extend({
  creator: z.string(),
  created: z.string(),
  updated: z.string(),
  updated_by: z.string(),
  policy: z
    .string()
    .describe("the policy as written, explicit secret values shown as <redacted>, predecessor set to the current hash"),
});

export const PolicyList = z.strictObject({ policies: z.array(PolicySummary) });

export const PolicyHistory = z.strictObject({
  name: z.string(),
  versions: z.array(z.strictObject({ version: z.int(), hash: z.string(), time: z.string(), actor: z.string() })),
});

export const NameParams = z.strictObject({ name: z.string().min(1).max(1024) });
export const DeleteQuery = z.strictObject({ signature: z.union([z.string(), z.array(z.string())]).optional() });
export const AuditQuery = z.strictObject({
  since: z.coerce.number().int().min(0).default(0).describe("entries after this sequence number"),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(10_000)
    .default(1_000)
    .describe("entries in this page, at most; follow `next` for the rest"),
});

export const LasEnrolRequest = z.strictObject({
  key: z.string().describe("the LAS key hash printed by cloister las start"),
});
export const LasList = z.strictObject({ keys: z.array(z.string()) });
export const CollateralImportRequest = z.strictObject({
  dcap: Collateral.optional().describe("PCCS collateral: chains, CRLs, TCB info, QE identity"),
  amd_certificate: z.string().optional().describe("an AMD VCEK or VLEK certificate, PEM"),
});
export const CollateralSummary = z.union([
  z.strictObject({
    kind: z.literal("dcap"),
    tee: z.enum(["SGX", "TDX"]),
    fmspc: z.string(),
    issued: z.string(),
    valid_until: z.string(),
  }),
  z.strictObject({
    kind: z.literal("amd"),
    key_type: z.enum(["VCEK", "VLEK"]),
    product: z.string(),
    chip: z.string().nullable(),
    valid_until: z.string(),
  }),
]);
export const CollateralList = z.strictObject({ collateral: z.array(CollateralSummary) });

export const ErrorResponse = z.strictObject({
  error: z.strictObject({
    code: z.string(),
    message: z.string(),
    details: z.array(z.unknown()).optional(),
  }),
});

export interface RouteSpec {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  readonly url: string;
  readonly summary: string;
  readonly params?: z.ZodType;
  readonly query?: z.ZodType;
  readonly body?: z.ZodType;
  readonly response: z.ZodType | null;
  readonly status: number;
  /** Whether the caller must present an identity (a TLS client certificate). */
  readonly identified: boolean;
  /** Whether the route is rate-limited per source address (the runtime's routes: attestation, volume commits). */
  readonly rateLimited?: boolean;
}

export const ROUTES = {
  createPolicy: {
    method: "POST",
    url: "/v1/policies",
    summary: "create a policy",
    body: PolicyWriteRequest,
    response: PolicyWritten,
    status: 201,
    identified: true,
  },
  updatePolicy: {
    method: "PUT",
    url: "/v1/policies/:name",
    summary: "update a policy (its predecessor must be the current hash)",
    params: NameParams,
    body: PolicyUpdateRequest,
    response: PolicyWritten,
    status: 200,
    identified: true,
  },
  getPolicy: {
    method: "GET",
    url: "/v1/policies/:name",
    summary: "read a policy (secret values redacted)",
    params: NameParams,
    response: PolicyResponse,
    status: 200,
    identified: true,
  },
  listPolicies: {
    method: "GET",
    url: "/v1/policies",
    summary: "the policies the caller may read",
    response: PolicyList,
    status: 200,
    identified: true,
  },
  deletePolicy: {
    method: "DELETE",
    url: "/v1/policies/:name",
    summary: "delete a policy",
    params: NameParams,
    query: DeleteQuery,
    response: null,
    status: 204,
    identified: true,
  },
  policyHistory: {
    method: "GET",
    url: "/v1/policies/:name/history",
    summary: "hash, time and actor of every version",
    params: NameParams,
    response: PolicyHistory,
    status: 200,
    identified: true,
  },
  challenge: {
    method: "POST",
    url: "/v1/attestation/challenge",
    summary: "a single-use nonce for attesting a service",
    body: ChallengeRequest,
    response: ChallengeResponse,
    status: 200,
    identified: false,
    rateLimited: true,
  },
  attest: {
    method: "POST",
    url: "/v1/attestation",
    summary: "evidence in, the service's configuration (a JWE to K) out",
    body: AttestationRequest,
    response: AttestationResponse,
    status: 200,
    identified: false,
    rateLimited: true,
  },
  commitVolume: {
    method: "POST",
    url: "/v1/volumes/:policy/:volume/tag",
    summary: "compare-and-swap a volume's tag (a runtime, with its service certificate)",
    params: VolumeParams,
    body: VolumeCommitRequest,
    response: VolumeCommitResponse,
    status: 200,
    identified: true,
    // A policy in mode none hands service certificates to anyone: its commits are a stranger's.
    rateLimited: true,
  },
  enrolLas: {
    method: "POST",
    url: "/v1/las",
    summary: "enrol a LAS key (simulation mode; administrators)",
    body: LasEnrolRequest,
    response: LasList,
    status: 200,
    identified: true,
  },
  listLas: {
    method: "GET",
    url: "/v1/las",
    summary: "the enrolled LAS keys",
    response: LasList,
    status: 200,
    identified: true,
  },
  importCollateral: {
    method: "POST",
    url: "/v1/collateral",
    summary: "import PCCS collateral or an AMD VCEK/VLEK (administrators)",
    body: CollateralImportRequest,
    response: CollateralSummary,
    status: 200,
    identified: true,
  },
  listCollateral: {
    method: "GET",
    url: "/v1/collateral",
    summary: "the imported collateral",
    response: CollateralList,
    status: 200,
    identified: true,
  },
  auditExport: {
    method: "GET",
    url: "/v1/audit",
    summary: "a page of the audit log with its signed checkpoints (entries of unreadable policies as digests)",
    query: AuditQuery,
    response: AuditPage,
    status: 200,
    identified: true,
  },
} as const satisfies Record<string, RouteSpec>;

/** OpenAPI 3.1, generated from the route table: the schemas are the source of truth. */
export function openApiDocument(version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [id, route] of Object.entries(ROUTES) as [string, RouteSpec][]) {
    const path = route.url.replace(/:(\w+)/g, "{$1}");
    const parameters: unknown[] = [];
    if (route.params) {
      for (const name of Object.keys((route.params as z.ZodObject).shape)) {
        parameters.push({
          name,
          in: "path",
          required: true,
          schema: { type: "string" },
          description: "URL-encoded: acme%2Fshop",
        });
      }
    }
    if (route.query) {
      const schema = z.toJSONSchema(route.query, { io: "input" }) as { properties?: Record<string, unknown> };
      for (const [name, s] of Object.entries(schema.properties ?? {}))
        parameters.push({ name, in: "query", required: false, schema: s });
    }
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = {
      operationId: id,
      summary: route.summary,
      ...(parameters.length ? { parameters } : {}),
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: { "application/json": { schema: z.toJSONSchema(route.body, { io: "input" }) } },
            },
          }
        : {}),
      responses: {
        [route.status]: route.response
          ? { description: "ok", content: { "application/json": { schema: z.toJSONSchema(route.response) } } }
          : { description: "done" },
        default: {
          description: "an error",
          content: { "application/json": { schema: z.toJSONSchema(ErrorResponse) } },
        },
      },
      security: route.identified ? [{ mutualTLS: [] }] : [],
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Cloister CAS",
      version,
      description:
        "Configuration and attestation service. Clients authenticate with a TLS client certificate; CAS matches its key hash.",
    },
    components: { securitySchemes: { mutualTLS: { type: "mutualTLS" } } },
    paths,
  };
}
