/**
 * Differential test against @phala/dcap-qvl, an independent JavaScript port of Intel's QVL:
 * on the vectors and on 1,000 seeded mutations of quotes, collateral and time, accept/refuse
 * and the TCB status must agree. Each systematic disagreement is named below with the rule we
 * follow and why; anything else fails the test.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import qvl from "@phala/dcap-qvl";
import { Collateral } from "../../src/attestation/dcap/collateral.ts";
import { verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { seededRandom } from "../helpers/rng.ts";

const DIR = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "intel-dcap");
const vectors = (["sgx", "tdx"] as const).map((tee) => ({
  tee,
  quote: readFileSync(join(DIR, `${tee}_quote`)),
  collateral: Collateral.parse(JSON.parse(readFileSync(join(DIR, `${tee}_quote_collateral.json`), "utf8"))),
}));
const AT = Date.parse("2025-07-01T00:00:00Z");

type Outcome = { ok: true; status: string } | { ok: false; why: string };

function ours(quote: Buffer, collateral: Collateral, at: number): Outcome {
  try {
    return { ok: true, status: verifyDcapQuote(quote, collateral, { at: new Date(at) }).status };
  } catch (error) {
    if (error instanceof VerificationError) return { ok: false, why: error.message };
    return { ok: false, why: `unexpected: ${error}` };
  }
}

function theirs(quote: Buffer, collateral: Collateral, at: number): Outcome {
  try {
    return { ok: true, status: qvl.verify(quote, collateral, Math.floor(at / 1000)).status };
  } catch (error) {
    return { ok: false, why: String((error as Error).message ?? error) };
  }
}

interface Mutation {
  readonly what: string;
  readonly quote: Buffer;
  readonly collateral: Collateral;
  readonly at: number;
  /** Where a quote byte was changed, if it was. */
  readonly offset?: number;
  /** Which collateral field was changed, if one was. */
  readonly field?: string;
  readonly tee: "sgx" | "tdx";
}

const HEX_FIELDS = ["root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"] as const;
const TEXT_FIELDS = [
  "tcb_info",
  "qe_identity",
  "pck_crl_issuer_chain",
  "tcb_info_issuer_chain",
  "qe_identity_issuer_chain",
] as const;

function mutate(random: () => number, v: (typeof vectors)[number], other: (typeof vectors)[number]): Mutation {
  const pick = Math.floor(random() * 6);
  const quote = Buffer.from(v.quote);
  const collateral = { ...v.collateral };
  if (pick <= 2) {
    const offset = Math.floor(random() * quote.length);
    quote[offset]! ^= 1 << Math.floor(random() * 8);
    return { what: `${v.tee} quote byte ${offset}`, quote, collateral, at: AT, offset, tee: v.tee };
  }
  if (pick === 3) {
    const field = HEX_FIELDS[Math.floor(random() * HEX_FIELDS.length)]!;
    const s = collateral[field];
    const i = Math.floor(random() * s.length);
    const c = "0123456789abcdef"[(Number.parseInt(s[i]!, 16) ^ (1 + Math.floor(random() * 15))) & 15]!;
    collateral[field] = `${s.slice(0, i)}${c}${s.slice(i + 1)}`;
    return { what: `${v.tee} collateral ${field}[${i}]`, quote, collateral, at: AT, field, tee: v.tee };
  }
  if (pick === 4) {
    const field = TEXT_FIELDS[Math.floor(random() * TEXT_FIELDS.length)]!;
    const s = collateral[field];
    const i = Math.floor(random() * s.length);
    collateral[field] =
      `${s.slice(0, i)}${String.fromCharCode(s.charCodeAt(i) ^ (1 << Math.floor(random() * 6)))}${s.slice(i + 1)}`;
    return { what: `${v.tee} collateral ${field}[${i}]`, quote, collateral, at: AT, field, tee: v.tee };
  }
  const r = random();
  const tee = v.tee;
  if (r < 0.4)
    return {
      what: `${tee} at a random time in 2025`,
      quote,
      collateral,
      at: Date.parse("2025-01-01T00:00:00Z") + Math.floor(random() * 365) * 86_400_000,
      tee,
    };
  if (r < 0.7)
    return { what: `${tee} quote with ${other.tee} collateral`, quote, collateral: other.collateral, at: AT, tee };
  const cut = Math.floor(random() * quote.length);
  return { what: `${tee} quote truncated to ${cut}`, quote: quote.subarray(0, cut), collateral, at: AT, tee };
}

/** The byte range of the last certificate (the root) of the PCK chain inside a vector quote. */
const rootRegion = Object.fromEntries(
  vectors.map((v) => {
    const text = v.quote.toString("latin1");
    const start = text.lastIndexOf("-----BEGIN CERTIFICATE-----");
    const end = text.lastIndexOf("-----END CERTIFICATE-----") + "-----END CERTIFICATE-----".length;
    return [v.tee, { start, end }];
  }),
) as Record<"sgx" | "tdx", { start: number; end: number }>;

/**
 * Disagreements we expect. In each we are the stricter side, and Intel's QVL — the arbiter —
 * is on ours: it verifies CRL signatures and the CRL issuer chain (PckCrlVerifier), and it
 * requires the chain's root to be the trusted root (an unparsable or different root is
 * untrusted). @phala/dcap-qvl checks revocation lists for serial numbers without verifying
 * them, and checks the PCK chain against its own copy of the root key, ignoring the copy in the
 * quote.
 */
function explained(m: Mutation, a: Outcome, b: Outcome): string | undefined {
  if (a.ok || !b.ok) return undefined;
  if ((m.field === "root_ca_crl" || m.field === "pck_crl") && a.why.startsWith("CRL:"))
    return "CRL not verified by dcap-qvl";
  if (m.field === "pck_crl_issuer_chain" && /^(chain|CRL):/.test(a.why))
    return "CRL issuer chain not verified by dcap-qvl";
  const root = rootRegion[m.tee];
  if (m.offset !== undefined && m.offset >= root.start && m.offset < root.end && a.why.startsWith("chain:")) {
    return "the chain's root certificate is ignored by dcap-qvl";
  }
  // The TDX vector ends in 70 zero bytes: we tolerate zero padding and nothing else.
  if (m.offset !== undefined && m.tee === "tdx" && m.offset >= 5006 - 70 && a.why.startsWith("format:"))
    return "non-zero bytes after the quote";
  return undefined;
}

test("the vectors: both accept with the same status", () => {
  for (const v of vectors) {
    const a = ours(v.quote, v.collateral, AT);
    const b = theirs(v.quote, v.collateral, AT);
    assert.deepEqual(a, b, v.tee);
  }
});

test("1,000 seeded mutations: accept/refuse and status agree, or the disagreement is explained", () => {
  const random = seededRandom(20261123);
  const unexplained: string[] = [];
  const counts = { agree: 0, explained: 0, bothRefuse: 0, bothAccept: 0 };
  const reasons = new Map<string, number>();
  for (let i = 0; i < 1000; i++) {
    const v = vectors[i % 2]!;
    const m = mutate(random, v, vectors[(i + 1) % 2]!);
    const a = ours(m.quote, m.collateral, m.at);
    const b = theirs(m.quote, m.collateral, m.at);
    const agree = a.ok === b.ok && (!a.ok || (a.ok && b.ok && a.status === b.status));
    if (agree) {
      counts.agree++;
      if (a.ok) counts.bothAccept++;
      else counts.bothRefuse++;
      continue;
    }
    const reason = explained(m, a, b);
    if (reason) {
      counts.explained++;
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    } else
      unexplained.push(
        `${m.what}: ours ${a.ok ? `accepts (${a.status})` : `refuses (${a.why})`}, dcap-qvl ${b.ok ? `accepts (${b.status})` : `refuses (${b.why})`}`,
      );
  }
  assert.deepEqual(unexplained, [], JSON.stringify(counts));
  // The explanations are not a blanket: each names a few dozen cases at most.
  for (const [reason, n] of reasons) assert.ok(n < 100, `${reason}: ${n}`);
  assert.ok(counts.bothRefuse > 500, `most mutations are refused by both: ${JSON.stringify(counts)}`);
  assert.ok(
    counts.bothAccept > 0,
    `some mutations (time inside the window, unsigned bytes) are accepted by both: ${JSON.stringify(counts)}`,
  );
});
