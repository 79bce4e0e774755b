/**
 * The policy side of attestation, the same for every TEE: does a verdict satisfy a service's
 * measurements and the policy's security.attestation settings, and is the evidence bound to
 * the expected report_data? Returns the reasons it is refused, or nothing.
 */
import { timingSafeEqual } from "node:crypto";
import type { PolicyMeasurement } from "../policy/schema.ts";
import type { TcbStatus, Verdict } from "./verdict.ts";

export interface AttestationSettings {
  readonly mode: "hardware" | "simulation" | "none";
  readonly tolerate: readonly string[];
  readonly ignore_advisories: readonly string[];
}

/** What each TCB status needs to be accepted. Revoked is never accepted. */
const NEEDS: Record<TcbStatus, readonly string[] | null> = {
  UpToDate: [],
  Unevaluated: [],
  SWHardeningNeeded: ["sw-hardening-needed"],
  ConfigurationNeeded: ["configuration-needed"],
  ConfigurationAndSWHardeningNeeded: ["configuration-needed", "sw-hardening-needed"],
  OutOfDate: ["outdated-tcb"],
  OutOfDateConfigurationNeeded: ["outdated-tcb", "configuration-needed"],
  Revoked: null,
};

/**
 * Why `verdict` is refused under `settings`, ignoring measurements: simulation, debug, TCB.
 * sw-hardening-needed is also granted when every advisory is in ignore_advisories.
 */
export function settingsProblems(verdict: Verdict, settings: AttestationSettings): string[] {
  const problems: string[] = [];
  if (verdict.simulated && settings.mode !== "simulation") {
    problems.push(`simulated evidence, but the policy's attestation mode is ${settings.mode}`);
  }
  if (verdict.debug && !settings.tolerate.includes("debug-mode")) {
    problems.push(
      `the ${verdict.tee} ${verdict.tee === "sgx" ? "enclave" : verdict.tee === "tdx" ? "TD" : "guest"} runs in debug mode, which the policy does not tolerate`,
    );
  }
  const needs = NEEDS[verdict.status];
  if (needs === null) problems.push(`TCB status ${verdict.status} is never accepted`);
  else {
    const ignoredAll =
      verdict.advisories.length > 0 && verdict.advisories.every((a) => settings.ignore_advisories.includes(a));
    const missing = needs.filter((n) => !settings.tolerate.includes(n) && !(n === "sw-hardening-needed" && ignoredAll));
    if (missing.length > 0) {
      problems.push(
        `TCB status ${verdict.status}${verdict.advisories.length ? ` (${verdict.advisories.join(", ")})` : ""} needs tolerate: [${missing.join(", ")}]`,
      );
    }
  }
  return problems;
}

/** Whether one measurement entry matches the verdict: every field it names. */
export function entryMismatches(verdict: Verdict, entry: PolicyMeasurement): string[] {
  if (entry.tee !== verdict.tee) return [`tee ${verdict.tee} is not ${entry.tee}`];
  const out: string[] = [];
  for (const [field, wanted] of Object.entries(entry)) {
    if (field === "tee" || wanted === undefined) continue;
    if (field.endsWith("_min")) {
      const name = field.slice(0, -4);
      const actual = verdict.measurements[name];
      if (typeof actual !== "number" || actual < (wanted as number)) out.push(`${name} ${actual} < ${wanted}`);
      continue;
    }
    const actual = verdict.measurements[field];
    if (actual === undefined || String(actual).toLowerCase() !== String(wanted).toLowerCase()) {
      out.push(`${field} ${String(actual ?? "absent").slice(0, 16)}… is not ${String(wanted).slice(0, 16)}…`);
    }
  }
  return out;
}

/** The measurement entries: any one must match. Returns why none does, or nothing. */
export function measurementProblems(verdict: Verdict, entries: readonly PolicyMeasurement[]): string[] {
  const candidates = entries.filter((e) => e.tee === verdict.tee);
  if (candidates.length === 0) return [`no ${verdict.tee} measurement in the policy`];
  const reasons = candidates.map((e) => entryMismatches(verdict, e));
  if (reasons.some((r) => r.length === 0)) return [];
  return [`no measurement matches: ${reasons.map((r) => r.join(", ")).join("; ")}`];
}

/** The evidence is bound to this exchange: report_data equals what the verifier expects. */
export function reportDataMatches(verdict: Verdict, expected: Uint8Array): boolean {
  const actual = Buffer.from(verdict.report_data, "hex");
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
