/**
 * Normalisation: one representation per meaning. Defaults are filled in, sets (secrets,
 * services, measurements, rules, SANs…) are sorted and de-duplicated, key material in PEM is
 * re-encoded, durations are seconds. Two policies that mean the same normalise to the same
 * value, and so hash the same (canonical.ts).
 */
import { canonicalJson } from "./canonical.ts";
import { readCertificateValue, readPrivateKeyValue } from "./pem.ts";
import {
  type AccessRuleT,
  isImport,
  type Policy,
  type PolicyMeasurement,
  type PolicySecret,
  type PolicyService,
  REDACTED,
} from "./schema.ts";

export type NormalizedPolicy = Policy & { readonly __normalized: true };

const DEFAULT_VALIDITY = { x509: 90 * 86_400, "x509-ca": 3650 * 86_400 } as const;

export function normalizePolicy(policy: Policy): NormalizedPolicy {
  const out = {
    version: policy.version,
    name: policy.name,
    ...(policy.predecessor === undefined ? {} : { predecessor: policy.predecessor }),
    access_policy: {
      read: normalizeRules(policy.access_policy.read),
      update: normalizeRules(policy.access_policy.update),
      create_policies: normalizeRules(policy.access_policy.create_policies),
    },
    security: {
      attestation: {
        mode: policy.security.attestation.mode,
        tolerate: sortedSet(policy.security.attestation.tolerate),
        ignore_advisories: sortedSet(policy.security.attestation.ignore_advisories),
      },
      service_ca: policy.security.service_ca,
    },
    services: byKey(policy.services.map(normalizeService), (s) => s.name),
    secrets: byKey(policy.secrets.map(normalizeSecret), (s) => s.name),
    volumes: byKey(
      policy.volumes.map((v) => ({ ...v })),
      (v) => v.name,
    ),
  };
  return out as NormalizedPolicy;
}

function normalizeRules(rules: readonly AccessRuleT[]): AccessRuleT[] {
  const normalized = rules.map((r): AccessRuleT => {
    if (typeof r === "string") return r;
    if ("require_all" in r) return { require_all: sortedSet(r.require_all) };
    return { require_at_least: { count: r.require_at_least.count, of: sortedSet(r.require_at_least.of) } };
  });
  return uniqueBy(normalized, canonicalJson);
}

function normalizeService(s: PolicyService): PolicyService {
  return {
    name: s.name,
    measurements: uniqueBy(s.measurements.map(normalizeMeasurement), canonicalJson),
    command: [...s.command],
    environment: { ...s.environment },
    pwd: s.pwd,
    files: byKey(
      s.files.map((f) => ({ ...f })),
      (f) => f.path,
    ),
    volumes: byKey(
      s.volumes.map((v) => ({ ...v })),
      (v) => v.name,
    ),
    tls: {
      inbound: byKey(
        s.tls.inbound.map((t) => ({ ...t })),
        (t) => t.listen,
      ),
      outbound: byKey(
        s.tls.outbound.map((t) => ({ ...t })),
        (t) => t.listen,
      ),
    },
  };
}

/** A minimum of 0 admits every version: it means the same as no minimum. */
function normalizeMeasurement(m: PolicyMeasurement): PolicyMeasurement {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if ((k === "isvsvn_min" || k === "guest_svn_min") && v === 0) continue;
    out[k] = v;
  }
  return out as PolicyMeasurement;
}

function normalizeSecret(s: PolicySecret): PolicySecret {
  const exports = byKey(
    s.export.map((e) => ({ ...e })),
    (e) => e.policy,
  );
  if (isImport(s)) return { name: s.name, import: { ...s.import }, export: exports };
  switch (s.kind) {
    case "ascii":
      return s.value === undefined
        ? { name: s.name, kind: s.kind, size: s.size ?? 32, export: exports }
        : {
            name: s.name,
            kind: s.kind,
            size: s.value === REDACTED ? s.size : s.value.length,
            value: s.value,
            export: exports,
          };
    case "binary":
      return s.value === undefined
        ? { name: s.name, kind: s.kind, size: s.size ?? 32, export: exports }
        : {
            name: s.name,
            kind: s.kind,
            size: s.value === REDACTED ? s.size : s.value.length / 2,
            value: s.value,
            export: exports,
          };
    case "private-key":
      return {
        name: s.name,
        kind: s.kind,
        key_type: s.key_type,
        migrate: s.migrate,
        ...(s.value === undefined ? {} : { value: pkcs8(s.value) }),
        export: exports,
      };
    case "x509-ca":
      if (s.value !== undefined)
        return { name: s.name, kind: s.kind, value: certificateAndKey(s.value), export: exports };
      return {
        name: s.name,
        kind: s.kind,
        common_name: s.common_name ?? s.name,
        key_type: s.key_type ?? "P-256",
        valid_for: s.valid_for ?? DEFAULT_VALIDITY["x509-ca"],
        issuer: s.issuer ?? null,
        export: exports,
      };
    case "x509":
      if (s.value !== undefined)
        return { name: s.name, kind: s.kind, value: certificateAndKey(s.value), export: exports };
      return {
        name: s.name,
        kind: s.kind,
        issuer: s.issuer ?? null,
        common_name: s.common_name ?? s.name,
        san: sortedSet(s.san ?? []),
        valid_for: s.valid_for ?? DEFAULT_VALIDITY.x509,
        key_type: s.key_type ?? "P-256",
        usage: sortedSet(s.usage ?? ["server", "client"]),
        export: exports,
      };
  }
}

/**
 * PEM as written may differ in line endings, wrapping or key format; re-encode as PKCS#8. The
 * checker has read the value (pem.ts) and refused it if it could not be read: this cannot fail.
 */
function pkcs8(pem: string): string {
  if (pem === REDACTED) return pem;
  const read = readPrivateKeyValue(pem);
  if ("problem" in read) throw new Error(`unchecked private key value: ${read.problem}`);
  return read.key.export({ type: "pkcs8", format: "pem" }).toString();
}

/** Certificates in order, then the key, each re-encoded. */
function certificateAndKey(pem: string): string {
  if (pem === REDACTED) return pem;
  const read = readCertificateValue(pem);
  if ("problem" in read) throw new Error(`unchecked certificate value: ${read.problem}`);
  const { certificates, key } = read.value;
  return [...certificates.map((c) => c.toString()), key.export({ type: "pkcs8", format: "pem" }).toString()].join("");
}

function sortedSet<T extends string>(items: readonly T[]): T[] {
  return [...new Set(items)].sort();
}

function byKey<T>(items: readonly T[], key: (item: T) => string): T[] {
  return [...items].sort((a, b) => compare(key(a), key(b)));
}

function uniqueBy<T>(items: readonly T[], key: (item: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) seen.set(key(item), item);
  return [...seen.entries()].sort(([a], [b]) => compare(a, b)).map(([, v]) => v);
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
