/**
 * Simulated evidence: a report signed by a LAS's P-256 node key. It proves nothing about
 * hardware — only that an enrolled LAS measured a program file and signed this report_data —
 * and every verdict made from it says `simulated`. Policies accept it only with
 * `security.attestation.mode: simulation`.
 */
import { createHash, createPublicKey, type KeyObject, sign } from "node:crypto";
import { z } from "zod";
import { spkiHash } from "../../crypto/keys.ts";
import { type PendingSignature, settledNow } from "../pending-signature.ts";
import { type Verdict, VerificationError } from "../verdict.ts";

export const SIM_FORMAT = "cloister-sim-v1";

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`));

export const SimReport = z.strictObject({
  format: z.literal(SIM_FORMAT),
  /** SHA-256 of the program file, read by the LAS itself. */
  measurement: hex(32),
  report_data: hex(64),
  /** SHA-256 of the LAS key's SPKI: what a CAS enrols. */
  las_key: hex(32),
  time: z.iso.datetime(),
});
export type SimReport = z.output<typeof SimReport>;

export const SimEvidence = z.strictObject({
  report: SimReport,
  /** The LAS's public key, SPKI DER in base64: its hash must be the report's las_key. */
  las_spki: z.string(),
  /** ECDSA P-256 over the canonical JSON of the report (DER, base64). */
  signature: z.string(),
});
export type SimEvidence = z.output<typeof SimEvidence>;

/**
 * A report's canonical JSON (RFC 8785, what canonicalJson writes), by JSON.stringify of an object
 * whose keys are put in their sorted order: a report is five strings, so this is the same text
 * (test/attestation/sim-evidence.test.ts holds the two together) at a fraction of canonicalJson's
 * cost — every simulated attestation signs one at the LAS and checks one at the CAS.
 */
export function reportJson(report: SimReport): string {
  return JSON.stringify({
    format: report.format,
    las_key: report.las_key,
    measurement: report.measurement,
    report_data: report.report_data,
    time: report.time,
  });
}

const signed = (report: SimReport) => Buffer.from(`${SIM_FORMAT}\0${reportJson(report)}`, "utf8");

/** What a LAS does: measure, bind, sign. */
export function signSimReport(key: KeyObject, measurement: string, reportData: Buffer, time = new Date()): SimEvidence {
  const las = lasIdentity(key);
  const report: SimReport = {
    format: SIM_FORMAT,
    measurement,
    report_data: reportData.toString("hex"),
    las_key: las.hash,
    time: time.toISOString(),
  };
  return {
    report,
    las_spki: las.spki,
    signature: sign("sha256", signed(report), key).toString("base64"),
  };
}

/** A LAS key's public half, as evidence names it: exported once per key, not at every report. */
const lasIdentities = new WeakMap<KeyObject, { hash: string; spki: string }>();
function lasIdentity(key: KeyObject): { hash: string; spki: string } {
  let identity = lasIdentities.get(key);
  if (!identity) {
    const publicKey = createPublicKey(key);
    identity = {
      hash: spkiHash(publicKey),
      spki: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
    };
    lasIdentities.set(key, identity);
  }
  return identity;
}

export const measureFile = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

export interface SimVerifyOptions {
  /** Hashes of the LAS keys this verifier trusts (enrolled in the CAS). */
  readonly trustedKeys: ReadonlySet<string>;
  readonly at?: Date;
  /** How old a report may be; default 5 minutes. */
  readonly maxAgeSeconds?: number;
}

/**
 * Parsed LAS keys by their SPKI: a CAS sees the same few keys in every report. Bounded, and
 * holding public keys only; whether a key is trusted is decided at each use, never cached.
 */
const lasKeys = new Map<string, { key: KeyObject; hash: string }>();
const LAS_KEYS_KEPT = 64;

function lasKey(spkiBase64: string): { key: KeyObject; hash: string } {
  let known = lasKeys.get(spkiBase64);
  if (!known) {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: Buffer.from(spkiBase64, "base64"), format: "der", type: "spki" });
    } catch {
      throw new VerificationError("chain", "the LAS key cannot be parsed");
    }
    known = { key, hash: spkiHash(key) };
    if (lasKeys.size >= LAS_KEYS_KEPT) lasKeys.delete(lasKeys.keys().next().value!);
    lasKeys.set(spkiBase64, known);
  }
  return known;
}

export function verifySimEvidence(bytes: Uint8Array, options: SimVerifyOptions): SimEvidence {
  return settledNow(prepareSimEvidence(bytes, options));
}

/**
 * verifySimEvidence up to the report's signature, which the caller checks where it likes (see
 * pending-signature.ts); the report's age is checked after it.
 */
export function prepareSimEvidence(bytes: Uint8Array, options: SimVerifyOptions): PendingSignature<SimEvidence> {
  let evidence: SimEvidence;
  try {
    evidence = SimEvidence.parse(JSON.parse(Buffer.from(bytes).toString("utf8")));
  } catch {
    throw new VerificationError("format", "not simulated evidence from a LAS");
  }
  const las = lasKey(evidence.las_spki);
  if (las.hash !== evidence.report.las_key)
    throw new VerificationError("chain", "the LAS key is not the one the report names");
  if (!options.trustedKeys.has(evidence.report.las_key)) {
    throw new VerificationError(
      "chain",
      `LAS key ${evidence.report.las_key.slice(0, 16)}… is not enrolled in this CAS`,
    );
  }
  return {
    check: {
      algorithm: "sha256",
      data: signed(evidence.report),
      key: las.key,
      signature: Buffer.from(evidence.signature, "base64"),
      dsaEncoding: "der",
    },
    failure: "the simulated report's signature does not verify",
    afterwards: () => {
      const at = options.at ?? new Date();
      const age = (at.getTime() - new Date(evidence.report.time).getTime()) / 1000;
      const maxAge = options.maxAgeSeconds ?? 300;
      if (age > maxAge || age < -60)
        throw new VerificationError(
          "expired",
          `the simulated report is ${Math.round(age)} s old (at most ${maxAge} s)`,
        );
      return evidence;
    },
  };
}

export function simVerdict(e: SimEvidence): Verdict {
  return {
    tee: "sim",
    status: "Unevaluated",
    advisories: [],
    debug: false,
    measurements: { digest: e.report.measurement },
    report_data: e.report.report_data,
    simulated: true,
    collateral_expires: null,
    details: { las_key: e.report.las_key, time: e.report.time, warning: "SIMULATED: no hardware protection" },
  };
}
