/**
 * Validation of a parsed policy document. Like a compiler, it reports every problem it can
 * find in one pass: the top level, then each secret, service, measurement and volume on its
 * own (so that one bad item does not hide the others), then the cross-references between
 * the items that passed (crossCheck), without cascades from items that failed.
 */
import type { z } from "zod";
import { crossCheck, type Declared } from "./cross-check.ts";
import { a, describe } from "./expect.ts";
import {
  IDENTIFYING_FIELDS,
  ImportedSecret,
  MEASUREMENT_SCHEMAS,
  type Policy,
  type PolicyMeasurement,
  type PolicySecret,
  type PolicyService,
  PolicyTop,
  type PolicyVolume,
  SECRET_KINDS,
  SECRET_SCHEMAS,
  Service,
  TEES,
  Volume,
} from "./schema.ts";
import { didYouMean } from "./suggest.ts";
import type { FieldPath } from "./yaml-source.ts";

/** One thing wrong with a policy. `at` says which position to report: the value, its key, or the enclosing map. */
export interface PolicyProblem {
  readonly path: FieldPath;
  readonly message: string;
  readonly at: "value" | "key" | "parent";
}

export interface ValidationResult {
  /** The validated policy, defaults filled; present only when there are no problems. */
  readonly policy?: Policy;
  readonly problems: readonly PolicyProblem[];
}

type Issue = z.core.$ZodIssue;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export function validatePolicy(raw: unknown): ValidationResult {
  const problems: PolicyProblem[] = [];
  if (!isRecord(raw)) {
    problems.push({
      path: [],
      at: "value",
      message: `expected a map with version, name, services, secrets…, got ${describe(raw)}`,
    });
    return { problems };
  }
  const top = validateTop(raw, problems);
  const secrets: PolicySecret[] = [];
  const services: PolicyService[] = [];
  const volumes: PolicyVolume[] = [];
  const declared = {
    secrets: new Set<string>(),
    services: new Set<string>(),
    volumes: new Set<string>(),
    incomplete: top.incomplete,
    failedServices: [] as { path: FieldPath; raw: unknown }[],
  } satisfies Declared;
  const items = (key: string): unknown[] => (Array.isArray(raw[key]) ? (raw[key] as unknown[]) : []);

  items("secrets").forEach((item, i) => {
    noteName(item, declared.secrets);
    const secret = validateSecret(item, ["secrets", i], problems);
    if (secret) secrets.push(secret);
  });
  items("services").forEach((item, i) => {
    noteName(item, declared.services);
    const service = validateService(item, ["services", i], problems, declared.incomplete, declared.failedServices);
    if (service) services.push(service);
  });
  items("volumes").forEach((item, i) => {
    noteName(item, declared.volumes);
    if (!isRecord(item)) {
      problems.push({
        path: ["volumes", i],
        at: "value",
        message: `expected a volume {name, update_policy, …}, got ${describe(item)}`,
      });
      return;
    }
    const volume = runSchema(Volume, item, ["volumes", i], problems);
    if (volume) volumes.push(volume);
  });

  const policy: Policy = { ...top.value, services, secrets, volumes };
  problems.push(...crossCheck(policy, declared));
  return problems.length === 0 ? { policy, problems } : { problems };
}

/**
 * The top level field by field, so that a bad `security` does not hide a bad `name`. A field
 * that fails is replaced by its default and named in `incomplete`, and cross-checks that
 * depend on it are skipped rather than reported twice.
 */
function validateTop(raw: Record<string, unknown>, problems: PolicyProblem[]) {
  const incomplete = new Set<string>();
  const shape = PolicyTop.shape;
  const fields: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(shape)) {
    const value = runSchema(schema as z.ZodType, raw[key], [key], problems);
    if (value === undefined && !(raw[key] === undefined && key === "predecessor")) {
      incomplete.add(key);
      const fallback = (schema as z.ZodType).safeParse(undefined);
      fields[key] = fallback.success ? fallback.data : undefined;
    } else {
      fields[key] = value;
    }
  }
  const known = Object.keys(shape);
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) problems.push({ path: [key], at: "key", message: unknownFieldMessage(key, known) });
  }
  return { value: fields as z.output<typeof PolicyTop>, incomplete };
}

function unknownFieldMessage(key: string, known: readonly string[]): string {
  const hint = didYouMean(key, known);
  return hint ? `unknown field${hint}` : `unknown field; expected one of ${known.join(", ") || "no fields"}`;
}

function noteName(item: unknown, names: Set<string>): void {
  if (isRecord(item) && typeof item.name === "string") names.add(item.name);
}

function validateSecret(item: unknown, path: FieldPath, problems: PolicyProblem[]): PolicySecret | undefined {
  if (!isRecord(item)) {
    problems.push({ path, at: "value", message: `expected a secret {name, kind, …}, got ${describe(item)}` });
    return undefined;
  }
  if ("import" in item) {
    return runSchema(ImportedSecret, item, path, problems, (key) =>
      Object.hasOwn(knownSecretFields, key)
        ? `${key} cannot be combined with import: an imported secret takes its value from the exporter${key === "kind" ? " (declare it as import.kind)" : ""}`
        : undefined,
    );
  }
  const kind = item.kind;
  if (kind === undefined) {
    problems.push({
      path: [...path, "kind"],
      at: "parent",
      message: `missing; expected a kind (${SECRET_KINDS.join(", ")}) or an import`,
    });
    return undefined;
  }
  // Own keys only: `kind: toString` or `kind: __proto__` must not find Object.prototype's members.
  if (typeof kind !== "string" || !Object.hasOwn(SECRET_SCHEMAS, kind)) {
    const hint = typeof kind === "string" ? didYouMean(kind, SECRET_KINDS) : "";
    problems.push({
      path: [...path, "kind"],
      at: "value",
      message: `expected one of ${SECRET_KINDS.join(", ")}, got ${describe(kind)}${hint}`,
    });
    return undefined;
  }
  const schema = SECRET_SCHEMAS[kind as keyof typeof SECRET_SCHEMAS];
  return runSchema(schema, item, path, problems, (key) =>
    Object.hasOwn(knownSecretFields, key) ? `${key} is not a field of ${a(kind)} secret` : undefined,
  ) as PolicySecret | undefined;
}

/** Every field that some kind of secret has: to tell "wrong kind" from "misspelt". */
const knownSecretFields: Record<string, true> = Object.fromEntries(
  [...Object.values(SECRET_SCHEMAS), ImportedSecret].flatMap((s) => Object.keys(s.shape)).map((k) => [k, true]),
);

const knownMeasurementFields = new Map<string, Tee[]>();
type Tee = (typeof TEES)[number];
for (const tee of TEES) {
  for (const key of Object.keys(MEASUREMENT_SCHEMAS[tee].shape)) {
    if (key !== "tee") knownMeasurementFields.set(key, [...(knownMeasurementFields.get(key) ?? []), tee]);
  }
}

/** A service whose own fields pass is cross-checked even if some measurements fail (noted in `incomplete`). */
function validateService(
  item: unknown,
  path: FieldPath,
  problems: PolicyProblem[],
  incomplete: Set<string>,
  failedServices: { path: FieldPath; raw: unknown }[],
): PolicyService | undefined {
  if (!isRecord(item)) {
    problems.push({
      path,
      at: "value",
      message: `expected a service {name, measurements, command, …}, got ${describe(item)}`,
    });
    return undefined;
  }
  const service = runSchema(Service, item, path, problems);
  if (!service) failedServices.push({ path, raw: item });
  const measurements: PolicyMeasurement[] = [];
  const raw = isRecord(item) && Array.isArray(item.measurements) ? (item.measurements as unknown[]) : [];
  raw.forEach((entry, i) => {
    const m = validateMeasurement(entry, [...path, "measurements", i], problems);
    if (m) measurements.push(m);
    else if (service) incomplete.add(`services.${service.name}.measurements`);
  });
  return service ? { ...service, measurements } : undefined;
}

function validateMeasurement(
  entry: unknown,
  path: FieldPath,
  problems: PolicyProblem[],
): PolicyMeasurement | undefined {
  if (!isRecord(entry)) {
    problems.push({
      path,
      at: "value",
      message: `expected a measurement such as {tee: sgx, mrenclave: …}, got ${describe(entry)}`,
    });
    return undefined;
  }
  const tee = entry.tee;
  if (typeof tee !== "string" || !(TEES as string[]).includes(tee)) {
    const hint = typeof tee === "string" ? didYouMean(tee, TEES) : "";
    problems.push({
      path: [...path, "tee"],
      at: tee === undefined ? "parent" : "value",
      message: `${tee === undefined ? "missing; expected" : "expected"} one of ${TEES.join(", ")}${tee === undefined ? "" : `, got ${describe(tee)}`}${hint}`,
    });
    return undefined;
  }
  const schema = MEASUREMENT_SCHEMAS[tee as Tee];
  const m = runSchema(schema, entry, path, problems, (key) => {
    const owners = knownMeasurementFields.get(key);
    return owners ? `${key} is not a field of ${a(tee)} measurement (it belongs to ${owners.join(", ")})` : undefined;
  }) as PolicyMeasurement | undefined;
  if (!m) return undefined;
  const identifying = IDENTIFYING_FIELDS[tee as Tee];
  if (!identifying.some((f) => (m as Record<string, unknown>)[f] !== undefined)) {
    problems.push({
      path,
      at: "value",
      message: `${a(tee)} measurement must name the code: expected at least one of ${identifying.join(", ")}`,
    });
    return undefined;
  }
  if (m.tee === "sgx" && m.mrsigner !== undefined && m.isvprodid === undefined) {
    problems.push({
      path: [...path, "isvprodid"],
      at: "parent",
      message: "missing; mrsigner alone admits every enclave of that signer: expected isvprodid with it",
    });
    return undefined;
  }
  return m;
}

/**
 * Run a schema on `value` and turn its issues into problems under `path`. `unknownKey` may
 * explain an unknown field better than a spelling suggestion can.
 */
function runSchema<S extends z.ZodType>(
  schema: S,
  value: unknown,
  path: FieldPath,
  problems: PolicyProblem[],
  unknownKey?: (key: string) => string | undefined,
): z.output<S> | undefined {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    problems.push(...toProblems(issue, schema, path, unknownKey));
  }
  return undefined;
}

function toProblems(
  issue: Issue,
  root: z.ZodType,
  base: FieldPath,
  unknownKey?: (key: string) => string | undefined,
  within: readonly (string | number)[] = [],
): PolicyProblem[] {
  // `within` is the path of an enclosing union inside `root`: issue paths are relative to it.
  const rel = [...within, ...(issue.path as (string | number)[])];
  const path = [...base, ...rel];
  switch (issue.code) {
    case "unrecognized_keys": {
      const known = keysAt(root, rel);
      return issue.keys.map((key): PolicyProblem => {
        const special = rel.length === 0 ? unknownKey?.(key) : undefined;
        return { path: [...path, key], at: "key", message: special ?? unknownFieldMessage(key, known) };
      });
    }
    case "invalid_union": {
      // Report the alternative that got furthest: the deepest issue, then the fewest issues.
      const branches = issue.errors.filter((b) => b.length > 0);
      const depth = (b: Issue[]) => Math.max(...b.map((i) => i.path.length));
      const best = branches.sort((a, b) => depth(b) - depth(a) || a.length - b.length)[0];
      if (!best || depth(best) === 0) {
        return [{ path, at: issue.input === undefined ? "parent" : "value", message: issue.message }];
      }
      return best.flatMap((i) => toProblems(i, root, base, undefined, rel));
    }
    case "invalid_key":
      // A map key that fails its own schema (an environment variable name): point at the key.
      return [{ path, at: "key", message: issue.issues[0]?.message ?? issue.message }];
    default: {
      const missing = issue.input === undefined && issue.code === "invalid_type";
      return [{ path, at: missing ? "parent" : "value", message: issue.message }];
    }
  }
}

/** The field names of the object schema at `path` inside `schema` (through lists, defaults, unions). */
function keysAt(schema: z.ZodType, path: readonly (string | number)[]): string[] {
  const keys = new Set<string>();
  const visit = (s: unknown, rest: readonly (string | number)[]): void => {
    const def = (s as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
    if (!def) return;
    const type = def.type as string;
    if (WRAPPERS.has(type)) visit(def.innerType, rest);
    else if (type === "pipe") visit(def.in, rest);
    else if (type === "union") for (const o of def.options as unknown[]) visit(o, rest);
    else if (type === "array" && rest.length > 0) visit(def.element, rest.slice(1));
    else if (type === "record" && rest.length > 0) visit(def.valueType, rest.slice(1));
    else if (type === "object") {
      const shape = def.shape as Record<string, unknown>;
      if (rest.length === 0) for (const k of Object.keys(shape)) keys.add(k);
      else if (shape[String(rest[0])]) visit(shape[String(rest[0])], rest.slice(1));
    }
  };
  visit(schema, path);
  return [...keys];
}

const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "readonly", "nonoptional"]);
