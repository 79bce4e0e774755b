/**
 * Rows as both engines return them (SQLite's Uint8Array blobs, PostgreSQL's Buffers, BIGINTs as
 * strings or numbers), made into the Store's row types: one mapping, so the engines cannot drift.
 */
import type { AuditRow, CheckpointRow, PolicyRow, VersionRow } from "./store.ts";

type Row = Record<string, unknown>;

const blob = (v: unknown): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array));

export const policyRow = (r: Row): PolicyRow => ({
  name: r.name as string,
  version: Number(r.version),
  wrappedKey: blob(r.wrapped_key),
  sealed: blob(r.sealed),
});

export const versionRow = (r: Row): VersionRow => ({
  name: r.name as string,
  version: Number(r.version),
  sealed: blob(r.sealed),
});

export const auditRow = (r: Row): AuditRow => ({
  seq: Number(r.seq),
  entry: r.entry as string,
  chain: r.chain as string,
  mac: r.mac as string,
});

export const checkpointRow = (r: Row): CheckpointRow => ({
  seq: Number(r.seq),
  chain: r.chain as string,
  time: r.time as string,
  signature: r.signature as string,
});
