/**
 * The audit log: append-only and hash-chained. Each entry records who did what to which
 * policy, with what outcome and why — never a secret value. The chain hash through entry n is
 * SHA-256("cloister-audit-v1" ‖ chain(n-1) ‖ SHA-256(entry n)); checkpoints sign a chain hash
 * with the CAS key, so that anyone holding an export and the CAS key's hash can check it
 * offline. Inside the CAS each row also carries an HMAC under a key derived from the master
 * key, so that entries written after the last checkpoint cannot be forged in the database.
 */
import {
  createHash,
  createHmac,
  createPublicKey,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  sign,
  timingSafeEqual,
  verify,
} from "node:crypto";
import { z } from "zod";
import { spkiHash } from "../crypto/keys.ts";
import { canonicalJson } from "../policy/canonical.ts";
import type { AuditRow, CheckpointRow } from "./store/store.ts";

export const AuditEntry = z.strictObject({
  seq: z.int().min(1),
  time: z.string(),
  /** Identity hash of the caller, or "cas" for the CAS's own events. */
  actor: z.string(),
  action: z.string(),
  /** The policy (or policy/service) concerned; "" when none. */
  target: z.string(),
  policy_hash: z.string().nullable(),
  outcome: z.enum(["granted", "refused"]),
  reason: z.string(),
});
export type AuditEntry = z.output<typeof AuditEntry>;

const GENESIS = "0".repeat(64);

/**
 * An entry's canonical JSON (RFC 8785, what canonicalJson writes), by JSON.stringify of an object
 * whose keys are put in their sorted order: the entry is flat, of strings, null and one integer,
 * so this is the same text (test/cas/audit.test.ts holds the two together) at a fifth of
 * canonicalJson's cost — one is written for every attestation.
 */
export function entryJson(e: AuditEntry): string {
  return JSON.stringify({
    action: e.action,
    actor: e.actor,
    outcome: e.outcome,
    policy_hash: e.policy_hash,
    reason: e.reason,
    seq: e.seq,
    target: e.target,
    time: e.time,
  });
}

export const entryDigest = (entryJson: string): string => createHash("sha256").update(entryJson).digest("hex");

export function chainHash(previous: string, digest: string): string {
  return createHash("sha256").update("cloister-audit-v1\0").update(previous).update(digest).digest("hex");
}

export function checkpointMessage(seq: number, chain: string, time: string): Buffer {
  return Buffer.from(`cloister-audit-checkpoint-v1\0${seq}\0${chain}\0${time}`, "utf8");
}

export class AuditLog {
  /** A KeyObject, made once: given bytes, createHmac would make one at every entry. */
  readonly #macKey: KeyObject;
  readonly #signingKey: KeyObject;

  constructor(masterKey: Buffer, signingKey: KeyObject) {
    this.#macKey = createSecretKey(
      Buffer.from(hkdfSync("sha256", masterKey, Buffer.alloc(0), "cloister-audit-mac-v1", 32)),
    );
    this.#signingKey = signingKey;
  }

  /** The row that appends `entry` (without seq: it is given here) after `previous`. */
  row(previous: AuditRow | undefined, entry: Omit<AuditEntry, "seq">): AuditRow {
    const seq = (previous?.seq ?? 0) + 1;
    const json = entryJson({ ...entry, seq });
    const chain = chainHash(previous?.chain ?? GENESIS, entryDigest(json));
    return { seq, entry: json, chain, mac: this.#mac(seq, chain) };
  }

  /** Check the chain and MACs of rows read from the store; returns the first problem, if any. */
  verifyRows(rows: readonly AuditRow[], previous: AuditRow | undefined): string | undefined {
    let before = previous;
    for (const row of rows) {
      const expectSeq = (before?.seq ?? 0) + 1;
      if (row.seq !== expectSeq) return `audit entry ${expectSeq} is missing (found ${row.seq})`;
      if (chainHash(before?.chain ?? GENESIS, entryDigest(row.entry)) !== row.chain)
        return `audit entry ${row.seq} was altered`;
      const mac = Buffer.from(this.#mac(row.seq, row.chain), "hex");
      const stored = Buffer.from(row.mac, "hex");
      if (stored.length !== mac.length || !timingSafeEqual(stored, mac))
        return `audit entry ${row.seq} was not written by this CAS`;
      before = row;
    }
    return undefined;
  }

  checkpoint(row: AuditRow, time: Date = new Date()): CheckpointRow {
    const t = time.toISOString();
    const signature = sign("sha256", checkpointMessage(row.seq, row.chain, t), this.#signingKey).toString("base64");
    return { seq: row.seq, chain: row.chain, time: t, signature };
  }

  #mac(seq: number, chain: string): string {
    return createHmac("sha256", this.#macKey).update(`${seq}\0${chain}`).digest("hex");
  }
}

// ---------------------------------------------------------------------------------------------
// Exports: what `cloister audit export` writes and `cloister audit verify` checks.

export const ExportedEntry = z.union([
  z.strictObject({ seq: z.int(), entry: AuditEntry, chain: z.string() }),
  /** An entry about a policy the exporter may not read: only its digest, so the chain still checks. */
  z.strictObject({ seq: z.int(), redacted: z.literal(true), digest: z.string(), chain: z.string() }),
]);

export const AuditExport = z.strictObject({
  format: z.literal("cloister-audit-v1"),
  /** The CAS's public key (SPKI DER, base64): checkpoints verify against it; pin its hash. */
  cas_key: z.string(),
  /** The chain hash before the first exported entry (GENESIS when exporting from the start). */
  previous_chain: z.string(),
  entries: z.array(ExportedEntry),
  checkpoints: z.array(z.strictObject({ seq: z.int(), chain: z.string(), time: z.string(), signature: z.string() })),
});
export type AuditExport = z.output<typeof AuditExport>;

/**
 * A page of GET /v1/audit: an export of the entries it holds, and `next`, the `since` of the page
 * after it — null on the last page, which ends at a signed checkpoint. `cloister audit export`
 * follows the pages and writes them as one export.
 */
export const AuditPage = AuditExport.extend({ next: z.int().min(1).nullable() });
export type AuditPage = z.output<typeof AuditPage>;

export interface ExportVerdict {
  readonly casKey: string;
  readonly entries: number;
  readonly checkpoints: number;
  readonly lastCheckpoint: number;
}

export class AuditVerifyError extends Error {}

/**
 * Check an export: every entry's digest and place in the chain, every checkpoint's signature and
 * chain hash, and that no checkpoint names an entry that is missing (truncation).
 */
export function verifyExport(doc: AuditExport): ExportVerdict {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(doc.cas_key, "base64"), format: "der", type: "spki" });
  } catch {
    throw new AuditVerifyError("the export's CAS key cannot be parsed");
  }
  if (doc.checkpoints.length === 0) throw new AuditVerifyError("the export has no signed checkpoint");
  const chains = new Map<number, string>();
  let previous = doc.previous_chain;
  let expectSeq = doc.entries[0]?.seq ?? 1;
  if (doc.previous_chain === GENESIS && expectSeq !== 1)
    throw new AuditVerifyError(`entries before ${expectSeq} are missing`);
  for (const e of doc.entries) {
    if (e.seq !== expectSeq) {
      throw new AuditVerifyError(
        e.seq > expectSeq ? `entry ${expectSeq} was deleted` : `entry ${e.seq} is out of order or inserted`,
      );
    }
    let digest: string;
    if ("entry" in e) {
      if (e.entry.seq !== e.seq) throw new AuditVerifyError(`entry ${e.seq} claims to be entry ${e.entry.seq}`);
      digest = entryDigest(canonicalJson(e.entry));
    } else {
      digest = e.digest;
    }
    const chain = chainHash(previous, digest);
    if (chain !== e.chain) throw new AuditVerifyError(`entry ${e.seq} was modified (its chain hash does not match)`);
    chains.set(e.seq, chain);
    previous = chain;
    expectSeq++;
  }
  const last = doc.entries[doc.entries.length - 1]?.seq ?? 0;
  let lastCheckpoint = 0;
  for (const c of doc.checkpoints) {
    if (!verify("sha256", checkpointMessage(c.seq, c.chain, c.time), key, Buffer.from(c.signature, "base64"))) {
      throw new AuditVerifyError(`checkpoint at entry ${c.seq} has an invalid signature`);
    }
    if (c.seq > last)
      throw new AuditVerifyError(
        `the log was truncated: a signed checkpoint covers entry ${c.seq}, the export ends at ${last}`,
      );
    const chain = chains.get(c.seq);
    if (chain !== undefined && chain !== c.chain)
      throw new AuditVerifyError(`checkpoint at entry ${c.seq} does not match the entries`);
    lastCheckpoint = Math.max(lastCheckpoint, c.seq);
  }
  if (lastCheckpoint < last) {
    throw new AuditVerifyError(`entries ${lastCheckpoint + 1}–${last} are not covered by a signed checkpoint`);
  }
  return { casKey: spkiHash(key), entries: doc.entries.length, checkpoints: doc.checkpoints.length, lastCheckpoint };
}

export { GENESIS as AUDIT_GENESIS };
