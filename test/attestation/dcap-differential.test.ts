/**
 * Differential test against @phala/dcap-qvl, an independent JavaScript port of Intel's QVL:
 * on the vectors and on 1,000 seeded mutations of quotes, collateral and time, accept/refuse
 * and the TCB status must agree. Each systematic disagreement is named below with the rule we
 * follow and why; anything else fails the test.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import qvl from "@phala/dcap-qvl";
import { parseQuote } from "../../src/attestation/dcap/abi.ts";
import { Collateral } from "../../src/attestation/dcap/collateral.ts";
import { verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { type FakeDcap, makeFakeDcap } from "../helpers/fake-dcap.ts";
import { seededRandom } from "../helpers/rng.ts";

const SHARED = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors");
const DIR = join(SHARED, "intel-dcap");
const MORE = join(SHARED, "more");
const collateralAt = (path: string) => Collateral.parse(JSON.parse(readFileSync(path, "utf8")));

interface Vector {
  readonly name: string;
  readonly tee: "sgx" | "tdx";
  readonly quote: Buffer;
  readonly collateral: Collateral;
  /** The time its provenance says to verify at. */
  readonly at: number;
  /** What both must conclude on the vector as it is: a status, or a refusal. */
  readonly expected: string;
}

/** go-tdx-guest's own TCB info v5: the PCS response's tcbInfo text and signature, in place of the copy's. */
function goTdxGuestTcbInfo(collateral: Collateral): Collateral {
  const response = readFileSync(join(MORE, "tdx-v5-gotdx", "sample_tcbinfo_response_v5.json"), "utf8");
  const m = /^\{"tcbInfo":(\{.*\}),"signature":"([0-9a-f]+)"\}\s*$/s.exec(response)!;
  return { ...collateral, tcb_info: m[1]!, tcb_info_signature: m[2]! };
}

const gotdxCollateral = collateralAt(join(MORE, "tdx-v5-gotdx", "collateral_fmspc90C06F000000_from_phala.json"));
const vectors: readonly Vector[] = [
  ...(["sgx", "tdx"] as const).map((tee) => ({
    name: `${tee} ${tee === "sgx" ? "v3" : "v4"}`,
    tee,
    quote: readFileSync(join(DIR, `${tee}_quote`)),
    collateral: collateralAt(join(DIR, `${tee}_quote_collateral.json`)),
    at: Date.parse("2025-07-01T00:00:00Z"),
    expected: tee === "sgx" ? "ConfigurationAndSWHardeningNeeded" : "UpToDate",
  })),
  {
    name: "tdx v5 go-tdx-guest",
    tee: "tdx",
    quote: readFileSync(join(MORE, "tdx-v5-gotdx", "quote_v5_sample.dat")),
    collateral: gotdxCollateral,
    at: Date.parse("2026-03-01T00:00:00Z"),
    expected: "UpToDate",
  },
  {
    name: "tdx v5 go-tdx-guest, its own TCB info",
    tee: "tdx",
    quote: readFileSync(join(MORE, "tdx-v5-gotdx", "quote_v5_sample.dat")),
    collateral: goTdxGuestTcbInfo(gotdxCollateral),
    at: Date.parse("2026-03-01T00:00:00Z"),
    expected: "UpToDate",
  },
  {
    name: "tdx v5 Phala outdated",
    tee: "tdx",
    quote: readFileSync(join(MORE, "tdx-v5-phala-outdated", "tdx_quote_outdated")),
    collateral: collateralAt(join(MORE, "tdx-v5-phala-outdated", "tdx_quote_outdated_collateral.json")),
    at: Date.parse("2026-03-01T00:00:00Z"),
    expected: "refused",
  },
];

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
  readonly vector: Vector;
}

const HEX_FIELDS = ["root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"] as const;
const TEXT_FIELDS = [
  "tcb_info",
  "qe_identity",
  "pck_crl_issuer_chain",
  "tcb_info_issuer_chain",
  "qe_identity_issuer_chain",
] as const;

function mutate(random: () => number, v: Vector, other: Vector): Mutation {
  const pick = Math.floor(random() * 6);
  const quote = Buffer.from(v.quote);
  const collateral = { ...v.collateral };
  const AT = v.at;
  if (pick <= 2) {
    const offset = Math.floor(random() * quote.length);
    quote[offset]! ^= 1 << Math.floor(random() * 8);
    return { what: `${v.name} quote byte ${offset}`, quote, collateral, at: AT, offset, vector: v };
  }
  if (pick === 3) {
    const field = HEX_FIELDS[Math.floor(random() * HEX_FIELDS.length)]!;
    const s = collateral[field];
    const i = Math.floor(random() * s.length);
    const c = "0123456789abcdef"[(Number.parseInt(s[i]!, 16) ^ (1 + Math.floor(random() * 15))) & 15]!;
    collateral[field] = `${s.slice(0, i)}${c}${s.slice(i + 1)}`;
    return { what: `${v.name} collateral ${field}[${i}]`, quote, collateral, at: AT, field, vector: v };
  }
  if (pick === 4) {
    const field = TEXT_FIELDS[Math.floor(random() * TEXT_FIELDS.length)]!;
    const s = collateral[field];
    const i = Math.floor(random() * s.length);
    collateral[field] =
      `${s.slice(0, i)}${String.fromCharCode(s.charCodeAt(i) ^ (1 << Math.floor(random() * 6)))}${s.slice(i + 1)}`;
    return { what: `${v.name} collateral ${field}[${i}]`, quote, collateral, at: AT, field, vector: v };
  }
  const r = random();
  if (r < 0.4)
    return {
      what: `${v.name} at a random day within half a year of its time`,
      quote,
      collateral,
      at: AT + Math.floor((random() - 0.5) * 182) * 86_400_000,
      vector: v,
    };
  if (r < 0.7)
    return {
      what: `${v.name} quote with ${other.name} collateral`,
      quote,
      collateral: other.collateral,
      at: AT,
      vector: v,
    };
  const cut = Math.floor(random() * quote.length);
  return { what: `${v.name} quote truncated to ${cut}`, quote: quote.subarray(0, cut), collateral, at: AT, vector: v };
}

/** The byte range of the last certificate (the root) of the PCK chain inside a vector's quote. */
const rootRegion = new Map(
  vectors.map((v) => {
    const text = v.quote.toString("latin1");
    const start = text.lastIndexOf("-----BEGIN CERTIFICATE-----");
    const end = text.lastIndexOf("-----END CERTIFICATE-----") + "-----END CERTIFICATE-----".length;
    return [v, { start, end }];
  }),
);
/** Where a vector's quote ends and its zero padding begins (the TDX quotes carry some). */
const quoteEnd = new Map(
  vectors.map((v) => {
    const q = parseQuote(v.quote);
    return [v, q.signed.length + 4 + v.quote.readUInt32LE(q.signed.length)];
  }),
);

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
  const root = rootRegion.get(m.vector)!;
  if (m.offset !== undefined && m.offset >= root.start && m.offset < root.end && a.why.startsWith("chain:")) {
    return "the chain's root certificate is ignored by dcap-qvl";
  }
  // The TDX vectors end in zero bytes: we tolerate zero padding and nothing else.
  if (m.offset !== undefined && m.offset >= quoteEnd.get(m.vector)! && a.why.startsWith("format:"))
    return "non-zero bytes after the quote";
  return undefined;
}

test("every DCAP vector: both give its stated verdict", () => {
  for (const v of vectors) {
    const a = ours(v.quote, v.collateral, v.at);
    const b = theirs(v.quote, v.collateral, v.at);
    assert.equal(a.ok ? a.status : "refused", v.expected, `${v.name}: ours ${JSON.stringify(a)}`);
    assert.equal(b.ok ? b.status : "refused", v.expected, `${v.name}: dcap-qvl ${JSON.stringify(b)}`);
    if (!a.ok && !b.ok) {
      // The outdated quote: both for the same reason, no TCB level (Intel's TCB_NOT_SUPPORTED).
      assert.match(a.why, /^tcb: no TCB level/);
      assert.match(b.why, /^No matching TCB level found$/);
    }
  }
});

test("1,500 seeded mutations: accept/refuse and status agree, or the disagreement is explained", () => {
  const random = seededRandom(20261123);
  const unexplained: string[] = [];
  const counts = { agree: 0, explained: 0, bothRefuse: 0, bothAccept: 0 };
  const reasons = new Map<string, number>();
  for (let i = 0; i < 1500; i++) {
    const v = vectors[i % vectors.length]!;
    const m = mutate(random, v, vectors[(i + 1) % vectors.length]!);
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
  // The explanations are not a blanket: each names a tenth of the mutations at most.
  for (const [reason, n] of reasons) assert.ok(n < 150, `${reason}: ${n}`);
  assert.ok(counts.bothRefuse > 750, `most mutations are refused by both: ${JSON.stringify(counts)}`);
  assert.ok(
    counts.bothAccept > 0,
    `some mutations (time inside the window, unsigned bytes) are accepted by both: ${JSON.stringify(counts)}`,
  );
});

/**
 * Where the two follow different rules, shown in a DCAP world made here (FAKE root, PCK and TCB
 * signing keys, test/helpers/fake-dcap.ts; the TCB info and QE identity are the real ones, edited
 * and re-signed), since no real vector exercises them. Intel's QVL is the arbiter; in both cases
 * we follow it (docs/attestation.md): QuoteVerification/QVL, Verifiers/Checks/TcbLevelCheck.cpp
 * (convergeTcbStatusWithQeTcbStatus) and TdxModuleCheck.cpp (checkTdxModuleTcbStatus,
 * convergeTcbStatusWithTdxModuleStatus).
 */
describe("the rules on which dcap-qvl differs from Intel's QVL, in the fake world", () => {
  let fake: FakeDcap;
  const at = Date.parse("2025-07-01T00:00:00Z");
  before(async () => {
    fake = await makeFakeDcap();
  });
  const both = (quote: Buffer, collateral: Collateral) => ({
    ours: verifyDcapQuote(quote, collateral, { at: new Date(at), anchor: fake.anchor }).status,
    theirs: qvl.QuoteVerifier.newWithRootCa(Buffer.from(fake.anchor.raw)).verify(quote, collateral, at / 1000).status,
  });

  test("unedited, the fake world gives both the vectors' statuses (so what follows is the rule, not the world)", async () => {
    assert.deepEqual(both(fake.quote("sgx"), await fake.collateral("sgx")), {
      ours: "ConfigurationAndSWHardeningNeeded",
      theirs: "ConfigurationAndSWHardeningNeeded",
    });
    assert.deepEqual(both(fake.quote("tdx"), await fake.collateral("tdx")), { ours: "UpToDate", theirs: "UpToDate" });
  });

  test("an out-of-date TDX module: QVL (and we) OutOfDate; dcap-qvl ignores the TDX module identities", async () => {
    // The quote's module is TDX_01 at SVN 6 (TEE_TCB_SVN 06 01 …); its UpToDate level now needs 7.
    const collateral = await fake.collateral("tdx", {
      editTcbInfo: (t) => {
        const at01 = t.indexOf('"id":"TDX_01"');
        const level = t.indexOf('"isvsvn":4', at01);
        assert.ok(at01 > 0 && level > at01);
        return `${t.slice(0, level)}"isvsvn":7${t.slice(level + '"isvsvn":4'.length)}`;
      },
    });
    assert.deepEqual(both(fake.quote("tdx"), collateral), { ours: "OutOfDate", theirs: "UpToDate" });
  });

  test("an out-of-date QE on a platform that needs configuration: QVL (and we) OutOfDateConfigurationNeeded; dcap-qvl takes the worse word", async () => {
    // The SGX platform's level is ConfigurationAndSWHardeningNeeded; the QE's UpToDate level now needs ISVSVN 99.
    const collateral = await fake.collateral("sgx", {
      editQeIdentity: (t) => t.replace('"tcb":{"isvsvn":8}', '"tcb":{"isvsvn":99}'),
    });
    assert.notEqual(collateral.qe_identity, (await fake.collateral("sgx")).qe_identity);
    assert.deepEqual(both(fake.quote("sgx"), collateral), {
      ours: "OutOfDateConfigurationNeeded",
      theirs: "OutOfDate",
    });
  });
});
