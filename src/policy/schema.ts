/**
 * The policy language (DESIGN.md §4) as zod schemas. These are the source of truth: the
 * TypeScript types below are inferred from them, and the CAS's OpenAPI document is generated
 * from them. Schemas check shape and local syntax and fill defaults; rules that relate one
 * part of a policy to another (references, duplicates, thresholds) live in cross-check.ts.
 */
import { posix } from "node:path";
import { z } from "zod";
import { MAX_DURATION_SECONDS, parseDuration } from "./duration.ts";
import { canonicalIp, expected, isIpLiteral } from "./expect.ts";

// ---------------------------------------------------------------------------------------------
// Names and scalars

const SEGMENT = /^[A-Za-z0-9_.~-]{1,128}$/;
const isSegment = (s: string) => SEGMENT.test(s) && s !== "." && s !== "..";

/** `acme/shop`: segments of [A-Za-z0-9_.~-]{1,128} joined by '/', never "." or "..". */
export const PolicyName = z
  .string(expected("a policy name such as acme/shop"))
  .max(1024, expected("a policy name of at most 1024 characters"))
  .refine(
    (s) => s.split("/").every(isSegment),
    expected("a policy name: segments of [A-Za-z0-9_.~-]{1,128} joined by '/'"),
  );

/** One segment: the name of a service or a volume (it becomes part of a path and a config id). */
export const SegmentName = z
  .string(expected("a name of 1–128 characters from [A-Za-z0-9_.~-]"))
  .refine(isSegment, expected("a name of 1–128 characters from [A-Za-z0-9_.~-]"));

/** Secret names appear inside `$$cloister::NAME:FORMAT$$`, so they exclude ':' and '$'. */
export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;
export const SecretName = z
  .string(expected("a secret name: a letter or '_' then up to 127 of [A-Za-z0-9_.-]"))
  .regex(SECRET_NAME, expected("a secret name: a letter or '_' then up to 127 of [A-Za-z0-9_.-]"));

/** Lower-case hex of exactly `bytes` bytes; upper case is accepted and normalised. */
export const hex = (bytes: number, what = `${bytes * 2} hex digits (${bytes} bytes)`) =>
  z
    .string(expected(what))
    .regex(new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`), expected(what))
    .transform((s) => s.toLowerCase());

export const Sha256Hex = hex(32, "a SHA-256 hash: 64 hex digits");
/** An identity: the lowercase hex SHA-256 of a P-256 public key's SubjectPublicKeyInfo. */
export const IdentityHash = hex(32, "an identity hash: 64 hex digits");

/** A duration such as 90d, 12h or 1d12h, normalised to seconds. */
export const Duration = z.string(expected("a duration such as 90d, 12h, 30m or 45s")).transform((s, ctx) => {
  const seconds = parseDuration(s);
  if (seconds === undefined || seconds === 0 || seconds > MAX_DURATION_SECONDS) {
    ctx.addIssue({
      code: "custom",
      message: `expected a duration such as 90d, 12h, 30m or 45s (between 1s and 36500d), got ${JSON.stringify(s)}`,
    });
    return z.NEVER;
  }
  return seconds;
});

/** An absolute path, normalised ("/a//b/" → "/a/b"); ".." is refused rather than resolved. */
export const AbsolutePath = z
  .string(expected("an absolute path"))
  .max(4096, expected("a path of at most 4096 characters"))
  .refine((p) => p.startsWith("/"), expected("an absolute path (starting with /)"))
  .refine((p) => !p.includes("\0"), expected("a path without NUL characters"))
  .refine((p) => !p.split("/").includes(".."), expected("a path without '..' segments"))
  .transform((p) => {
    const n = posix.normalize(p);
    return n.length > 1 && n.endsWith("/") ? n.slice(0, -1) : n;
  });

/**
 * A file mode in octal, at most 0777 (no setuid, setgid or sticky bits). "0400" and "400" are
 * accepted; so is an unquoted 400 or 0400, which YAML 1.2 reads as the number 400 — its digits
 * are the octal digits the author typed, as for chmod.
 */
export const FileMode = z
  .union([z.string(), z.number()], expected('an octal mode such as "0400"'))
  .transform((v, ctx) => {
    const digits = typeof v === "number" ? (Number.isInteger(v) && v >= 0 ? String(v) : "x") : v.replace(/^0o/, "");
    const m = /^0?([0-7]{3})$/.exec(digits) ?? /^([0-7]{1,2})$/.exec(digits);
    if (!m) {
      ctx.addIssue({
        code: "custom",
        message: `expected an octal mode from 0000 to 0777 such as "0400", got ${JSON.stringify(v)}`,
      });
      return z.NEVER;
    }
    return `0${m[1]!.padStart(3, "0")}`;
  });

const hostPort = (what: string, ipOnly: boolean) =>
  z.string(expected(what)).transform((s, ctx) => {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
    const port = m ? Number(m[2]) : 0;
    const host = m?.[1] ?? "";
    const hostOk =
      isIpLiteral(host) || (!ipOnly && !host.startsWith("[") && /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(host));
    if (!m || port < 1 || port > 65535 || !hostOk) {
      ctx.addIssue({ code: "custom", message: `expected ${what}, got ${JSON.stringify(s)}` });
      return z.NEVER;
    }
    const canonical = isIpLiteral(host) ? canonicalIp(host) : host.toLowerCase();
    return `${canonical.includes(":") ? `[${canonical}]` : canonical}:${port}`;
  });

/** host:port where host is an IP literal (IPv6 in brackets): what a listener binds. */
export const ListenAddress = hostPort("an address such as 127.0.0.1:8080 or [::1]:8080", true);
/**
 * A listen address on loopback (127.0.0.0/8 or ::1): the plaintext side of the TLS shield — where
 * it forwards to, and where a program hands it plaintext to send — stays on this machine, inside
 * the TEE; on any other address plaintext would cross the host's network.
 */
export const LoopbackAddress = ListenAddress.refine((a) => a.startsWith("127.") || a.startsWith("[::1]:"), {
  message:
    "expected a loopback address such as 127.0.0.1:8080 or [::1]:8080: the TLS shield's plaintext side stays on this machine",
});
/** host:port where host may also be a DNS name: what a client connects to. */
export const ConnectAddress = hostPort("an address such as db.internal:6380 or 10.0.0.5:6380", false);

// ---------------------------------------------------------------------------------------------
// access_policy

const RULE_WORDS = ["CREATOR", "ANY", "NONE"] as const;
const RULE_HELP =
  "CREATOR, ANY, NONE, an identity hash (64 hex digits), {require_all: [...]} or {require_at_least: {count: N, of: [...]}}";

/** Who may sign in a multi-party rule: the creator or an identity. */
export const Signer = z.union(
  [z.literal("CREATOR"), IdentityHash],
  expected("CREATOR or an identity hash (64 hex digits)"),
);

export const RequireAll = z.strictObject({
  require_all: z
    .array(Signer, expected("a list of signers (CREATOR or identity hashes)"))
    .min(1, expected("at least one signer")),
});

export const RequireAtLeast = z.strictObject({
  require_at_least: z.strictObject(
    {
      count: z.int(expected("a whole number of signatures")).min(1, expected("a count of at least 1")),
      of: z
        .array(Signer, expected("a list of signers (CREATOR or identity hashes)"))
        .min(1, expected("at least one signer")),
    },
    expected("{count: N, of: [signers]}"),
  ),
});

/** One alternative of an access rule list: any one alternative suffices. */
export const AccessRule = z.union(
  [z.enum(RULE_WORDS, expected(RULE_HELP)), IdentityHash, RequireAll, RequireAtLeast],
  expected(RULE_HELP),
);

const ruleList = z
  .array(AccessRule, expected(`a list of rules: ${RULE_HELP}`))
  .min(1, expected("at least one rule (write [NONE] to admit nobody)"))
  .default(["CREATOR"]);

export const AccessPolicy = z
  .strictObject(
    {
      read: ruleList,
      update: ruleList,
      create_policies: ruleList,
    },
    expected("a map with read, update and create_policies"),
  )
  .default({ read: ["CREATOR"], update: ["CREATOR"], create_policies: ["CREATOR"] });

// ---------------------------------------------------------------------------------------------
// security

export const ATTESTATION_MODES = ["hardware", "simulation", "none"] as const;
export const TOLERATIONS = ["debug-mode", "outdated-tcb", "configuration-needed", "sw-hardening-needed"] as const;

export const Attestation = z
  .strictObject(
    {
      mode: z.enum(ATTESTATION_MODES, expected("hardware, simulation or none")).default("hardware"),
      tolerate: z
        .array(z.enum(TOLERATIONS, expected(TOLERATIONS.join(", "))), expected(`a list of: ${TOLERATIONS.join(", ")}`))
        .default([]),
      ignore_advisories: z
        .array(
          z
            .string(expected("an advisory id such as INTEL-SA-00615"))
            .regex(/^[A-Za-z][A-Za-z0-9]*-[A-Za-z]+-\d{1,8}$/, expected("an advisory id such as INTEL-SA-00615"))
            .transform((s) => s.toUpperCase()),
          expected("a list of advisory ids such as INTEL-SA-00615"),
        )
        .default([]),
    },
    expected("a map with mode, tolerate and ignore_advisories"),
  )
  .default({ mode: "hardware", tolerate: [], ignore_advisories: [] });

export const Security = z
  .strictObject(
    {
      attestation: Attestation,
      /** The x509-ca that signs service certificates; null: the CAS's built-in CA for this policy. */
      service_ca: SecretName.nullable().default(null),
    },
    expected("a map with attestation and service_ca"),
  )
  .default({ attestation: { mode: "hardware", tolerate: [], ignore_advisories: [] }, service_ca: null });

// ---------------------------------------------------------------------------------------------
// Measurements: one schema per TEE; an entry matches when all of its fields match.

const U16 = (what: string) =>
  z
    .int(expected(`${what}: a whole number from 0 to 65535`))
    .min(0, expected(`${what} ≥ 0`))
    .max(65535, expected(`${what} ≤ 65535`));

export const SgxMeasurement = z.strictObject(
  {
    tee: z.literal("sgx"),
    mrenclave: hex(32).optional(),
    mrsigner: hex(32).optional(),
    isvprodid: U16("isvprodid").optional(),
    isvsvn_min: U16("isvsvn_min").optional(),
  },
  expected("an sgx measurement"),
);

export const TdxMeasurement = z.strictObject(
  {
    tee: z.literal("tdx"),
    mrtd: hex(48).optional(),
    rtmr0: hex(48).optional(),
    rtmr1: hex(48).optional(),
    rtmr2: hex(48).optional(),
    rtmr3: hex(48).optional(),
    mrconfigid: hex(48).optional(),
    mrowner: hex(48).optional(),
    mrownerconfig: hex(48).optional(),
  },
  expected("a tdx measurement"),
);

export const SnpMeasurement = z.strictObject(
  {
    tee: z.literal("snp"),
    measurement: hex(48).optional(),
    host_data: hex(32).optional(),
    id_key_digest: hex(48).optional(),
    author_key_digest: hex(48).optional(),
    guest_svn_min: z.int(expected("a whole number from 0 to 4294967295")).min(0).max(0xffffffff).optional(),
    vmpl: z
      .int(expected("a VMPL from 0 to 3"))
      .min(0, expected("a VMPL from 0 to 3"))
      .max(3, expected("a VMPL from 0 to 3"))
      .optional(),
  },
  expected("an snp measurement"),
);

export const SimMeasurement = z.strictObject(
  {
    tee: z.literal("sim"),
    /** SHA-256 of the program file, as printed by `cloister measure --tee sim PROGRAM`. */
    digest: hex(32, "a SHA-256 digest: 64 hex digits (see cloister measure --tee sim)"),
  },
  expected("a sim measurement"),
);

export const MEASUREMENT_SCHEMAS = {
  sgx: SgxMeasurement,
  tdx: TdxMeasurement,
  snp: SnpMeasurement,
  sim: SimMeasurement,
} as const;
export type Tee = keyof typeof MEASUREMENT_SCHEMAS;
export const TEES = Object.keys(MEASUREMENT_SCHEMAS) as Tee[];

/** At least one of these fields identifies the code; an entry without one would match anything. */
export const IDENTIFYING_FIELDS: Record<Tee, readonly string[]> = {
  sgx: ["mrenclave", "mrsigner"],
  tdx: ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"],
  snp: ["measurement", "id_key_digest"],
  sim: ["digest"],
};

export const Measurement = z.discriminatedUnion("tee", [
  SgxMeasurement,
  TdxMeasurement,
  SnpMeasurement,
  SimMeasurement,
]);

// ---------------------------------------------------------------------------------------------
// Services

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const ServiceFile = z.strictObject(
  {
    path: AbsolutePath,
    content: z.string(expected("the file's content (a string; templates allowed)")),
    mode: FileMode.prefault("0400"),
  },
  expected("a file {path, content, mode}"),
);

export const ServiceVolume = z.strictObject(
  {
    name: SegmentName,
    path: AbsolutePath,
  },
  expected("a volume mount {name, path}"),
);

export const TlsInbound = z.strictObject(
  {
    listen: ListenAddress,
    forward: LoopbackAddress,
    /** An x509 secret; null: the service certificate that CAS issues at attestation. */
    certificate: SecretName.nullable().default(null),
    /** An x509-ca secret that client certificates must chain to; null: no client certificate. */
    client_ca: SecretName.nullable().default(null),
  },
  expected("an inbound listener {listen, forward, certificate, client_ca}"),
);

export const TlsOutbound = z.strictObject(
  {
    listen: LoopbackAddress,
    connect: ConnectAddress,
    /** The x509-ca secret the remote's certificate must chain to. */
    ca: z
      .string(expected("the x509-ca secret that the remote's certificate must chain to"))
      .regex(SECRET_NAME, expected("the name of an x509-ca secret")),
    /** The client certificate (an x509 secret); null: the service certificate. */
    certificate: SecretName.nullable().default(null),
    /** The name to verify in the remote's certificate; null: the host of `connect`. */
    server_name: z
      .string(expected("a DNS name or IP address"))
      .regex(/^[A-Za-z0-9.:-]{1,253}$/, expected("a DNS name or IP address"))
      .transform((s) => s.toLowerCase())
      .nullable()
      .default(null),
  },
  expected("an outbound connection {listen, connect, ca, certificate, server_name}"),
);

export const Tls = z
  .strictObject(
    {
      inbound: z.array(TlsInbound, expected("a list of inbound TLS listeners")).default([]),
      outbound: z.array(TlsOutbound, expected("a list of outbound TLS connections")).default([]),
    },
    expected("a map with inbound and outbound"),
  )
  .default({ inbound: [], outbound: [] });

export const Service = z.strictObject(
  {
    name: SegmentName,
    measurements: z.array(z.unknown(), expected("a list of measurements")).default([]),
    command: z
      .array(z.string(expected("an argument (a string)")), expected("the program's argv as a list of strings"))
      .min(1, expected("at least the program to run")),
    environment: z
      .record(
        z.string().regex(ENV_NAME, expected("an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")),
        z.string(expected("a string (quote numbers and booleans)")),
        expected("a map of environment variables to strings"),
      )
      .default({}),
    pwd: AbsolutePath.prefault("/"),
    files: z.array(ServiceFile, expected("a list of files")).default([]),
    volumes: z.array(ServiceVolume, expected("a list of {name, path}")).default([]),
    tls: Tls,
  },
  expected("a service {name, measurements, command, …}"),
);

// ---------------------------------------------------------------------------------------------
// Secrets: one schema per kind, plus imports.

/**
 * How a policy read back from the CAS shows an explicit secret value. Sent back in an update,
 * it means "keep the stored value"; the CAS substitutes it before hashing.
 */
export const REDACTED = "<redacted>";
const redacted = z.literal(REDACTED);

export const KEY_TYPES = ["P-256", "P-384", "Ed25519", "RSA-2048", "RSA-3072"] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export const SECRET_KINDS = ["ascii", "binary", "private-key", "x509-ca", "x509"] as const;
export type SecretKind = (typeof SECRET_KINDS)[number];

export const Export = z.strictObject(
  {
    policy: PolicyName,
    /** Pin the importer's exact policy version; null: whatever version is current. */
    policy_hash: Sha256Hex.nullable().default(null),
  },
  expected("an export {policy, policy_hash}"),
);

const exports = z.array(Export, expected("a list of {policy, policy_hash}")).default([]);
const size = (max: number) =>
  z
    .int(expected(`a size from 1 to ${max}`))
    .min(1, expected(`a size from 1 to ${max}`))
    .max(max, expected(`a size from 1 to ${max}`));
const keyType = z.enum(KEY_TYPES, expected(KEY_TYPES.join(", ")));
const PEM = /-----BEGIN [A-Z0-9 ]+-----[\s\S]+?-----END [A-Z0-9 ]+-----/;
const pemValue = (what: string) => {
  // The inner error too: zod reports the one branch that took a string, and the default
  // message would quote the pattern instead of saying what was expected.
  const error = () => `expected ${what}`;
  return z.union([redacted, z.string().regex(PEM, { error })], { error });
};

export const AsciiSecret = z.strictObject(
  {
    name: SecretName,
    kind: z.literal("ascii"),
    /** Characters; with `value`, must equal its length. */
    size: size(65536).optional(),
    value: z
      .string(expected("printable ASCII text", { secret: true }))
      .regex(/^[\x20-\x7e]*$/, { error: () => "expected printable ASCII characters only (0x20–0x7e)" })
      .min(1, { error: () => "expected a non-empty value" })
      .max(65536, { error: () => "expected at most 65536 characters" })
      .optional(),
    export: exports,
  },
  expected("an ascii secret"),
);

export const BinarySecret = z.strictObject(
  {
    name: SecretName,
    kind: z.literal("binary"),
    /** Bytes; with `value`, must equal its decoded length. */
    size: size(65536).optional(),
    value: z
      .union(
        [
          redacted,
          z
            .string()
            .regex(/^(?:[0-9a-fA-F]{2}){1,65536}$/)
            .transform((s) => s.toLowerCase()),
        ],
        { error: () => "expected hex-encoded bytes (an even number of hex digits)" },
      )
      .optional(),
    export: exports,
  },
  expected("a binary secret"),
);

export const PrivateKeySecret = z.strictObject(
  {
    name: SecretName,
    kind: z.literal("private-key"),
    key_type: keyType.default("P-256"),
    /** Keep the key across policy updates (otherwise an update generates a new one). */
    migrate: z.boolean(expected("true or false")).default(false),
    value: pemValue("a PEM private key").optional(),
    export: exports,
  },
  expected("a private-key secret"),
);

export const X509CaSecret = z.strictObject(
  {
    name: SecretName,
    kind: z.literal("x509-ca"),
    /** Default: the secret's name. */
    common_name: z
      .string(expected("a common name"))
      .min(1)
      .max(64, expected("a common name of at most 64 characters"))
      .optional(),
    /** Default P-256. */
    key_type: keyType.optional(),
    /** Default 3650d. */
    valid_for: Duration.optional(),
    /** Another x509-ca of this policy that signs this one (an intermediate CA); null or absent: self-signed. */
    issuer: SecretName.nullable().optional(),
    value: pemValue("PEM text holding the CA certificate and its private key").optional(),
    export: exports,
  },
  expected("an x509-ca secret"),
);

export const SAN = z
  .string(
    expected("a subject alternative name such as dns:shop.example, ip:127.0.0.1, email:a@b.example or uri:spiffe://x"),
  )
  .transform((s, ctx) => {
    const m = /^(dns|ip|email|uri):(.+)$/i.exec(s);
    const type = m?.[1]?.toLowerCase();
    const v = m?.[2] ?? "";
    const ok =
      (type === "dns" && /^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(v) && v.length <= 253) ||
      (type === "ip" && isIpLiteral(v)) ||
      (type === "email" && /^[^@\s]+@[^@\s]+$/.test(v)) ||
      (type === "uri" && URL.canParse(v));
    if (!ok) {
      ctx.addIssue({
        code: "custom",
        message: `expected a subject alternative name such as dns:shop.example, ip:127.0.0.1, email:a@b.example or uri:spiffe://x, got ${JSON.stringify(s)}`,
      });
      return z.NEVER;
    }
    // urn:cloister:… names a service in the certificates the CAS issues at attestation, and
    // those alone may commit a volume's state: a policy's own certificates cannot claim it.
    if (type === "uri" && /^urn:cloister:/i.test(v)) {
      ctx.addIssue({
        code: "custom",
        message: `uri:urn:cloister:… is reserved for the service certificates the CAS issues at attestation, got ${JSON.stringify(s)}`,
      });
      return z.NEVER;
    }
    if (type === "dns") return `dns:${v.toLowerCase()}`;
    if (type === "ip") return `ip:${canonicalIp(v)}`;
    return `${type}:${v}`;
  });

export const CERT_USAGES = ["server", "client"] as const;

export const X509Secret = z.strictObject(
  {
    name: SecretName,
    kind: z.literal("x509"),
    /** The x509-ca of this policy that signs it; null or absent: self-signed. */
    issuer: SecretName.nullable().optional(),
    /** Default: the secret's name. */
    common_name: z
      .string(expected("a common name"))
      .min(1)
      .max(64, expected("a common name of at most 64 characters"))
      .optional(),
    san: z.array(SAN, expected("a list of subject alternative names")).optional(),
    /** Default 90d. */
    valid_for: Duration.optional(),
    /** Default P-256. */
    key_type: keyType.optional(),
    usage: z
      .array(z.enum(CERT_USAGES, expected("server or client")), expected("a list of: server, client"))
      .min(1, expected("at least one usage"))
      .optional(),
    value: pemValue("PEM text holding the certificate (and chain) and its private key").optional(),
    export: exports,
  },
  expected("an x509 secret"),
);

export const SECRET_SCHEMAS = {
  ascii: AsciiSecret,
  binary: BinarySecret,
  "private-key": PrivateKeySecret,
  "x509-ca": X509CaSecret,
  x509: X509Secret,
} as const;

export const ImportedSecret = z.strictObject(
  {
    name: SecretName,
    import: z.strictObject(
      {
        policy: PolicyName,
        secret: SecretName,
        /** Declaring the kind allows kind-specific template formats and references offline. */
        kind: z
          .enum(SECRET_KINDS, expected(SECRET_KINDS.join(", ")))
          .nullable()
          .default(null),
      },
      expected("{policy, secret, kind?}"),
    ),
    export: exports,
  },
  expected("an imported secret {name, import, export}"),
);

export const Secret = z.union([
  z.discriminatedUnion("kind", [AsciiSecret, BinarySecret, PrivateKeySecret, X509CaSecret, X509Secret]),
  ImportedSecret,
]);

// ---------------------------------------------------------------------------------------------
// Volumes

export const UPDATE_POLICIES = ["rollback-protected", "ephemeral", "no-rollback-protection"] as const;

export const Volume = z.strictObject(
  {
    name: SegmentName,
    update_policy: z.enum(UPDATE_POLICIES, expected(UPDATE_POLICIES.join(", "))).default("rollback-protected"),
    /** A binary secret of 32 bytes holding the tree key; null: CAS generates one for a fresh volume. */
    key: SecretName.nullable().default(null),
    /** The tag of the protected tree shipped with the policy; null: a fresh, empty volume. */
    tag: Sha256Hex.nullable().default(null),
    /** How often the runtime commits changes while the program runs; null: only on exit. */
    checkpoint_interval: Duration.nullable().default(null),
  },
  expected("a volume {name, update_policy, key, tag, checkpoint_interval}"),
);

// ---------------------------------------------------------------------------------------------
// The policy

export const POLICY_VERSION = "1";

/** The top level, with the lists of services, secrets and volumes left for item-wise checks. */
export const PolicyTop = z.strictObject(
  {
    version: z
      .union([z.literal("1"), z.literal(1)], expected('the language version "1"'))
      .transform(() => POLICY_VERSION),
    name: PolicyName,
    predecessor: Sha256Hex.optional(),
    access_policy: AccessPolicy,
    security: Security,
    services: z.array(z.unknown(), expected("a list of services")).default([]),
    secrets: z.array(z.unknown(), expected("a list of secrets")).default([]),
    volumes: z.array(z.unknown(), expected("a list of volumes")).default([]),
  },
  expected("a policy"),
);

/** The whole policy in one schema: for types and the OpenAPI document. */
export const PolicySchema = PolicyTop.extend({
  services: z.array(Service.extend({ measurements: z.array(Measurement) })),
  secrets: z.array(Secret),
  volumes: z.array(Volume),
});

export type Policy = z.output<typeof PolicySchema>;
export type PolicyService = Policy["services"][number];
export type PolicySecret = Policy["secrets"][number];
export type GeneratedSecret = Exclude<PolicySecret, { import: unknown }>;
export type ImportSecret = z.output<typeof ImportedSecret>;
export type PolicyVolume = Policy["volumes"][number];
export type PolicyMeasurement = z.output<typeof Measurement>;
export type AccessRuleT = z.output<typeof AccessRule>;

export const isImport = (s: PolicySecret): s is ImportSecret => "import" in s;
