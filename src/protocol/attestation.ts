/**
 * The attestation protocol's wire types (DESIGN.md §5), shared by its two ends: the runtime
 * (src/runtime/attest-client.ts), which sends the requests and checks each answer on receipt,
 * and the CAS (src/cas/attestation.ts, its routes in src/cas/api.ts), which checks each request
 * and builds the answers. The zod schemas are the source of truth; the types are inferred from
 * them.
 *
 *   POST /v1/attestation/challenge  ChallengeRequest   → ChallengeResponse
 *   POST /v1/attestation            AttestationRequest → AttestationResponse, whose
 *                                   `configuration` is a JWE to K of a Configuration's JSON
 */
import { z } from "zod";
import { TlsInbound, TlsOutbound, UPDATE_POLICIES } from "../policy/schema.ts";

const ConfigId = z.string().min(3).max(1100);

export const Tee = z.enum(["sgx", "tdx", "snp", "sim"]);

export const ChallengeRequest = z.strictObject({ config_id: ConfigId });
export type ChallengeRequest = z.output<typeof ChallengeRequest>;

export const ChallengeResponse = z.strictObject({ nonce: z.string(), expires_at: z.string() });
export type ChallengeResponse = z.output<typeof ChallengeResponse>;

/** The runtime's evidence as it presents it to the CAS. */
export const Evidence = z.strictObject({
  tee: Tee,
  quote: z
    .string()
    .max(64 * 1024)
    .describe("the quote, report or simulated evidence, base64"),
  aux: z
    .string()
    .max(64 * 1024)
    .optional()
    .describe("SEV-SNP: the VCEK or VLEK, PEM or base64 DER"),
});
export type Evidence = z.output<typeof Evidence>;

export const AttestationRequest = z.strictObject({
  config_id: ConfigId,
  nonce: z.string().max(64),
  evidence: Evidence,
  spki: z.string().max(1024).describe("the runtime's ephemeral P-256 key K, SubjectPublicKeyInfo, base64 DER"),
  csr: z.string().max(8192).optional().describe("ignored: K is bound by the evidence's report_data"),
});
export type AttestationRequest = z.output<typeof AttestationRequest>;

export const AttestationResponse = z.strictObject({
  configuration: z.string().describe("JWE (ECDH-ES+A256KW, A256GCM) to K: argv, environment, files, certificates…"),
});
export type AttestationResponse = z.output<typeof AttestationResponse>;

const LowerHex64 = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");

/** A volume of the service: where, with which key, in which state (DESIGN.md §5, §7). */
export const ConfiguredVolume = z.strictObject({
  name: z.string().min(1),
  path: z.string().min(1),
  /** The tree key, hex. */
  key: LowerHex64,
  /** The state the tree must be in; null for a fresh volume (or one without rollback protection). */
  tag: LowerHex64.nullable(),
  update_policy: z.enum(UPDATE_POLICIES),
  /** Seconds between commits while the program runs; null: on exit only. */
  checkpoint_interval: z.int().positive().nullable(),
});
export type ConfiguredVolume = z.output<typeof ConfiguredVolume>;

/**
 * What the CAS releases to an attested runtime, sealed to its key K. Strict: a runtime does not
 * run a configuration with parts it does not know, since what it would leave out may be what
 * protects the service.
 */
export const Configuration = z.strictObject({
  config_id: ConfigId,
  policy_hash: LowerHex64,
  command: z.array(z.string()).min(1),
  environment: z.record(z.string(), z.string()),
  pwd: z.string(),
  files: z.array(
    z.strictObject({
      path: z.string(),
      mode: z.string().regex(/^0[0-7]{3}$/, 'an octal mode such as "0400"'),
      content: z.base64(),
    }),
  ),
  volumes: z.array(ConfiguredVolume),
  /** The service's TLS shield, as its normalised policy says (policy/schema.ts): every field present. */
  tls: z.strictObject({ inbound: z.array(TlsInbound.required()), outbound: z.array(TlsOutbound.required()) }),
  /** The service certificate for K and its issuers, PEM. */
  certificate_chain: z.string(),
  /** The CA that issued it, PEM: peers of this policy trust it. */
  ca_bundle: z.string(),
  /** Certificates and keys the TLS shield names (by secret name), PEM. */
  tls_material: z.record(
    z.string(),
    z.strictObject({ certificate: z.string(), key: z.string().optional(), chain: z.string() }),
  ),
  /** What the CAS concluded of the evidence (attestation/verdict.ts, in part). */
  verdict: z.strictObject({
    tee: Tee,
    status: z.string(),
    simulated: z.boolean(),
    debug: z.boolean(),
    measurements: z.record(z.string(), z.union([z.string(), z.number()])),
  }),
});
export type Configuration = z.output<typeof Configuration>;
