/**
 * SEV-SNP verification on real evidence: the Milan report and VCEK in ../shared/testvectors,
 * verified through AMD's pinned roots; every single-bit change of every signed byte refused.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { decodeEvidence, evidenceKind } from "../../src/attestation/evidence.ts";
import { REPORT_SIZE, SIGNED_END } from "../../src/attestation/snp/abi.ts";
import { SNP_ROOTS } from "../../src/attestation/snp/trust.ts";
import { snpVerdict, verifySnpReport } from "../../src/attestation/snp/verify.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { issue, selfSigner } from "../../src/crypto/certificate.ts";
import { type FakeSnp, makeFakeSnp } from "../helpers/fake-snp.ts";

const VECTORS = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "amd-snp");
const reportHex = readFileSync(join(VECTORS, "report_milan.hex"), "utf8").trim();
const report = Buffer.from(reportHex, "hex");
const vcek = readFileSync(join(VECTORS, "vcek_milan.der"));
const IN_WINDOW = new Date("2025-07-01T00:00:00Z");
const MORE = join(VECTORS, "..", "more");
const genoa = {
  report: readFileSync(join(MORE, "snp-genoa-msft", "genoa_attestation_report.bin")),
  vcek: readFileSync(join(MORE, "snp-genoa-msft", "genoa_vcek.pem"), "utf8"),
};
const vlek = {
  report: readFileSync(join(MORE, "snp-milan-vlek-aws", "test-vlek-report.bin")),
  key: readFileSync(join(MORE, "snp-milan-vlek-aws", "test-vlek.der")),
  at: new Date("2025-06-01T00:00:00Z"),
};
const turin = {
  report: readFileSync(join(MORE, "snp-turin-msft", "turin_attestation_report.bin")),
  vcek: readFileSync(join(MORE, "snp-turin-msft", "turin_vcek.pem"), "utf8"),
  at: new Date("2026-03-01T00:00:00Z"),
};

const refusedBy = (check: string, f: () => unknown) =>
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof VerificationError, String(e));
    assert.equal(e.check, check, e.message);
    return true;
  });

/** The promise is refused by `check`, with a message matching `why` when given. */
const refusedAsync = (check: string, p: Promise<unknown>, why?: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof VerificationError, String(e));
    assert.equal(e.check, check, e.message);
    if (why) assert.match(e.message, why);
    return true;
  });

describe("the Milan vector", () => {
  test("verifies, with the measurement, policy, VMPL and TCB its README documents", () => {
    const v = verifySnpReport(report, { endorsementKey: vcek, at: IN_WINDOW });
    assert.equal(v.product, "Milan");
    assert.equal(v.key, "VCEK");
    assert.equal(v.report.version, 2);
    assert.equal(v.report.policy, 0x30000n);
    assert.equal(v.report.vmpl, 0);
    assert.equal(v.reportedTcb.raw, "0300000000000873");
    assert.equal(v.report.currentTcb.toString("hex"), "0300000000000873");
    const verdict = snpVerdict(v);
    assert.equal(verdict.tee, "snp");
    assert.equal(verdict.debug, false);
    assert.equal(verdict.simulated, false);
    assert.equal(verdict.status, "Unevaluated");
    assert.match(String(verdict.measurements.measurement), /^7a1e5c26[0-9a-f]{80}cd81841f$/);
    assert.equal(verdict.collateral_expires, "2030-04-03T19:23:43.000Z");
    assert.equal(verdict.details.smt_allowed, true);
    assert.equal(verdict.details.migration_agent_allowed, false);
  });

  test("the VCEK also verifies as PEM; evidence as hex, base64 and binary decodes the same", () => {
    const pem = `-----BEGIN CERTIFICATE-----\n${vcek.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`;
    verifySnpReport(report, { endorsementKey: pem, at: IN_WINDOW });
    assert.deepEqual(decodeEvidence(Buffer.from(reportHex)), report);
    assert.deepEqual(decodeEvidence(Buffer.from(report.toString("base64"))), report);
    assert.deepEqual(decodeEvidence(report), report);
    assert.equal(evidenceKind(report), "snp-report");
  });

  test("trailing zero padding is tolerated; anything else after the report is not", () => {
    verifySnpReport(Buffer.concat([report, Buffer.alloc(64)]), { endorsementKey: vcek, at: IN_WINDOW });
    refusedBy("format", () =>
      verifySnpReport(Buffer.concat([report, Buffer.from([1])]), { endorsementKey: vcek, at: IN_WINDOW }),
    );
    refusedBy("format", () =>
      verifySnpReport(report.subarray(0, REPORT_SIZE - 1), { endorsementKey: vcek, at: IN_WINDOW }),
    );
  });
});

describe("the chip: how each product's VCEK names the chip it was issued to", () => {
  test("Turin: the VCEK's hwID is 8 bytes, the report's CHIP_ID those 8 followed by 56 zeros (the real Turin vector)", () => {
    const v = verifySnpReport(turin.report, { endorsementKey: turin.vcek, at: turin.at });
    assert.equal(v.product, "Turin");
    assert.equal(snpVerdict(v).details.chip_id, `59790fb1c39f35c1${"00".repeat(56)}`);
  });

  test("Milan and Genoa: all 64 bytes (the real Milan vector's VCEK and CHIP_ID)", () => {
    const v = verifySnpReport(report, { endorsementKey: vcek, at: IN_WINDOW });
    assert.equal(snpVerdict(v).details.chip_id, report.subarray(0x1a0, 0x1e0).toString("hex"));
  });
});

describe("refusals", () => {
  /** Flip every bit of [from, to) and collect the flips that were accepted. */
  const acceptedFlips = (from: number, to: number): string[] => {
    const accepted: string[] = [];
    for (let byte = from; byte < to; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const copy = Buffer.from(report);
        copy[byte]! ^= 1 << bit;
        try {
          verifySnpReport(copy, { endorsementKey: vcek, at: IN_WINDOW });
          accepted.push(`${byte}.${bit}`);
        } catch (error) {
          if (!(error instanceof VerificationError)) throw error;
        }
      }
    }
    return accepted;
  };

  test("every single-bit change of every signed byte (exhaustive)", () => {
    assert.deepEqual(acceptedFlips(0, SIGNED_END), []);
  });

  test("every single-bit change of the signature and its reserved bytes", () => {
    assert.deepEqual(acceptedFlips(SIGNED_END, REPORT_SIZE), []);
  });

  test("KEY_INFO's reserved bits (31:5) set: a format error, before any signature", () => {
    const copy = Buffer.from(report);
    copy[0x48]! |= 0x20;
    refusedBy("format", () => verifySnpReport(copy, { endorsementKey: vcek, at: IN_WINDOW }));
  });

  test("outside the VCEK's validity", () => {
    refusedBy("expired", () => verifySnpReport(report, { endorsementKey: vcek, at: new Date("2031-01-01T00:00:00Z") }));
    refusedBy("expired", () => verifySnpReport(report, { endorsementKey: vcek, at: new Date("2023-01-01T00:00:00Z") }));
  });

  test("a key that does not chain to AMD's pinned root (a test CA, named so)", () => {
    const fakeAsk = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const fakeVcek = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const now = new Date();
    const ca = issue(
      {
        commonName: "SEV-Milan",
        subjectPublicKey: fakeAsk.publicKey,
        ca: true,
        notBefore: now,
        notAfter: new Date(now.getTime() + 1e10),
      },
      selfSigner("SEV-Milan", fakeAsk.privateKey),
    );
    const forged = issue(
      {
        commonName: "SEV-VCEK",
        subjectPublicKey: fakeVcek.publicKey,
        ca: false,
        notBefore: now,
        notAfter: new Date(now.getTime() + 1e9),
      },
      selfSigner("SEV-Milan", fakeAsk.privateKey),
    );
    assert.ok(ca.ca);
    refusedBy("chain", () => verifySnpReport(report, { endorsementKey: forged.raw }));
  });

  test("AMD's own certificates in the wrong place: an ASK presented as the VCEK, another product's", () => {
    refusedBy("chain", () => verifySnpReport(report, { endorsementKey: SNP_ROOTS.Milan.ask, at: IN_WINDOW }));
    refusedBy("chain", () => verifySnpReport(report, { endorsementKey: SNP_ROOTS.Genoa.ask, at: IN_WINDOW }));
    refusedBy("chain", () =>
      verifySnpReport(report, { endorsementKey: Buffer.from("not a certificate"), at: IN_WINDOW }),
    );
  });
});

describe("an SEV-SNP world made here (FAKE ARKs, ASKs, ASVKs and keys; for tests only)", () => {
  let fake: FakeSnp;
  before(async () => {
    fake = await makeFakeSnp();
  });
  /** The Milan vector's chip and TCB in a fake VCEK, and the vector re-signed by it. */
  const milan = async () => {
    const key = await fake.key({
      product: "Milan",
      type: "VCEK",
      structVersion: 0,
      hwId: report.subarray(0x1a0, 0x1e0),
      tcb: { bl: 3, tee: 0, snp: 8, ucode: 0x73, reserved: [0, 0, 0, 0] },
    });
    return { key: key.der, report: fake.sign(report, key.privateKey) };
  };

  test("the fake world is accepted when it is the root (so the refusals made in it mean something)", async () => {
    const m = await milan();
    const v = verifySnpReport(m.report, { endorsementKey: m.key, at: IN_WINDOW, roots: fake.roots });
    assert.equal(v.product, "Milan");
    assert.equal(v.reportedTcb.raw, "0300000000000873");
  });

  test("and refused by AMD's pinned roots", async () => {
    const m = await milan();
    refusedBy("chain", () => verifySnpReport(m.report, { endorsementKey: m.key, at: IN_WINDOW }));
    // The real VCEK does not verify the re-signed report, nor the fake key the real one.
    refusedBy("signature", () => verifySnpReport(m.report, { endorsementKey: vcek, at: IN_WINDOW }));
    refusedBy("signature", () => verifySnpReport(report, { endorsementKey: m.key, at: IN_WINDOW, roots: fake.roots }));
  });
});

describe("the chip rule per product, in the fake world", () => {
  let fake: FakeSnp;
  before(async () => {
    fake = await makeFakeSnp();
  });
  const milanChip = report.subarray(0x1a0, 0x1e0);
  const turinChip = turin.report.subarray(0x1a0, 0x1e0);
  /** A key of `product` with this hwID signing the vector of that product with this CHIP_ID. */
  const verifyWith = async (
    product: "Milan" | "Genoa" | "Turin",
    hwId: Buffer,
    chipId: Buffer,
    edit?: (r: Buffer) => void,
  ) => {
    const base = product === "Turin" ? turin.report : report;
    const tcb =
      product === "Turin"
        ? { fmc: 1, bl: 1, tee: 1, snp: 4, ucode: 0x51 }
        : { bl: 3, tee: 0, snp: 8, ucode: 0x73, reserved: [0, 0, 0, 0] as [number, number, number, number] };
    const key = await fake.key({ product, type: "VCEK", hwId, tcb });
    const signed = fake.sign(base, key.privateKey, (r) => {
      chipId.copy(r, 0x1a0);
      if (product === "Genoa") r.writeUInt32LE(3, 0); // a Genoa report is version 3 or later
      edit?.(r);
    });
    return verifySnpReport(signed, { endorsementKey: key.der, at: turin.at, roots: fake.roots });
  };
  const zeros = (n: number) => Buffer.alloc(n);

  test("Turin: hwID then 56 zero bytes is the chip; anything after the hwID, or another hwID, is not", async () => {
    const hwId = turinChip.subarray(0, 8);
    assert.equal((await verifyWith("Turin", hwId, turinChip)).product, "Turin");
    const tail = Buffer.from(turinChip);
    tail[63] = 1;
    await refusedAsync(
      "chip",
      verifyWith("Turin", hwId, tail),
      /not the Turin chip .* 59790fb1c39f35c1 followed by 56 zero/,
    );
    const other = Buffer.from(turinChip);
    other[0]! ^= 1;
    await refusedAsync("chip", verifyWith("Turin", hwId, other));
  });

  test("Turin: a 64-byte hwID is not a Turin VCEK's, even equal to the CHIP_ID", async () => {
    await refusedAsync(
      "chain",
      verifyWith("Turin", Buffer.from(turinChip), turinChip),
      /the Turin VCEK's hwID is 64 bytes/,
    );
  });

  for (const product of ["Milan", "Genoa"] as const) {
    test(`${product}: all 64 bytes; the Turin reading (8 bytes and zeros) is not the ${product} chip`, async () => {
      assert.equal((await verifyWith(product, Buffer.from(milanChip), milanChip)).product, product);
      const prefixOnly = Buffer.concat([milanChip.subarray(0, 8), zeros(56)]);
      await refusedAsync("chip", verifyWith(product, Buffer.from(milanChip), prefixOnly));
      await refusedAsync(
        "chain",
        verifyWith(product, milanChip.subarray(0, 8), prefixOnly),
        new RegExp(`the ${product} VCEK's hwID is 8 bytes; a ${product} hwID is 64`),
      );
    });
  }
});

describe("a masked chip id, in the fake world", () => {
  let fake: FakeSnp;
  before(async () => {
    fake = await makeFakeSnp();
  });
  const chipId = report.subarray(0x1a0, 0x1e0);
  const signed = async (edit: (r: Buffer) => void) => {
    const key = await fake.key({
      product: "Milan",
      type: "VCEK",
      hwId: Buffer.from(chipId),
      tcb: { bl: 3, tee: 0, snp: 8, ucode: 0x73 },
    });
    return { key: key.der, report: fake.sign(report, key.privateKey, edit) };
  };
  const otherChip = Buffer.from(chipId.map((b) => b ^ 0xff));

  test("MASK_CHIP_KEY set does not excuse a CHIP_ID that is another chip's", async () => {
    const s = await signed((r) => {
      r.writeUInt32LE(2, 0x48); // KEY_INFO: MASK_CHIP_KEY, signed by the VCEK
      otherChip.copy(r, 0x1a0);
    });
    refusedBy("chip", () => verifySnpReport(s.report, { endorsementKey: s.key, at: IN_WINDOW, roots: fake.roots }));
  });

  test("an all-zero CHIP_ID (the host's MASK_CHIP_ID) is not compared, and the verdict says so", async () => {
    for (const keyInfo of [0, 2]) {
      const s = await signed((r) => {
        r.writeUInt32LE(keyInfo, 0x48);
        r.fill(0, 0x1a0, 0x1e0);
      });
      const v = verifySnpReport(s.report, { endorsementKey: s.key, at: IN_WINDOW, roots: fake.roots });
      assert.equal(v.chip, "masked");
      assert.equal(snpVerdict(v).details.chip_identified_by, "masked");
    }
    const named = await signed(() => {});
    assert.equal(
      verifySnpReport(named.report, { endorsementKey: named.key, at: IN_WINDOW, roots: fake.roots }).chip,
      "hwID",
    );
  });
});

describe("the product: named by the report's CPUID (version 3 and later), else by the key", () => {
  let fake: FakeSnp;
  before(async () => {
    fake = await makeFakeSnp();
  });
  type Tcb = Parameters<FakeSnp["key"]>[0]["tcb"];
  const signedBy = async (
    product: "Milan" | "Genoa" | "Turin",
    base: Buffer,
    tcb: Tcb,
    edit: (r: Buffer) => void = () => {},
    hwId = Buffer.from(base.subarray(0x1a0, product === "Turin" ? 0x1a8 : 0x1e0)),
  ) => {
    const key = await fake.key({ product, type: "VCEK", hwId, tcb });
    return { key: key.der, report: fake.sign(base, key.privateKey, edit) };
  };
  const verify = (s: { key: Buffer; report: Buffer }) =>
    verifySnpReport(s.report, { endorsementKey: s.key, at: turin.at, roots: fake.roots });
  const masked = (r: Buffer) => r.fill(0, 0x1a0, 0x1e0);

  test("the real Genoa and Turin reports name their products (19h/11h, 1Ah/02h)", () => {
    const g = verifySnpReport(genoa.report, { endorsementKey: genoa.vcek, at: turin.at });
    assert.deepEqual([g.product, g.report.cpuid], ["Genoa", { family: 0x19, model: 0x11, stepping: 1 }]);
    const t = verifySnpReport(turin.report, { endorsementKey: turin.vcek, at: turin.at });
    assert.deepEqual([t.product, t.report.cpuid], ["Turin", { family: 0x1a, model: 0x02, stepping: 1 }]);
  });

  test("Genoa: a Genoa report signed by a Turin key, whose TCB read the Turin way fits, is refused", async () => {
    // 0a 00 00 00 00 00 17 54 read as Turin: FMC 10, BL 0, TEE 0, SNP 0, ucode 0x54.
    const s = await signedBy("Turin", genoa.report, { fmc: 10, bl: 0, tee: 0, snp: 0, ucode: 0x54 }, masked);
    refusedBy("chain", () => verify(s));
    // The same report signed by a Genoa key with its Genoa TCB is accepted.
    const g = await signedBy("Genoa", genoa.report, { bl: 10, tee: 0, snp: 0x17, ucode: 0x54 });
    assert.equal(verify(g).product, "Genoa");
  });

  test("Turin: a Turin report signed by a Genoa key, whose TCB read the Genoa way fits, is refused", async () => {
    // 01 01 01 04 00 00 00 51 read as Genoa: BL 1, TEE 1, SNP 0, ucode 0x51 (and reserved bytes).
    const s = await signedBy("Genoa", turin.report, { bl: 1, tee: 1, snp: 0, ucode: 0x51 }, masked);
    refusedBy("chain", () => verify(s));
  });

  test("Milan: a CPUID of no SEV-SNP product is refused; a zero CPUID leaves the product to the key", async () => {
    const milanTcb = { bl: 3, tee: 0, snp: 8, ucode: 0x73 };
    const zen2 = await signedBy("Milan", report, milanTcb, (r) => {
      r.writeUInt32LE(3, 0);
      r[0x188] = 0x17;
      r[0x189] = 0x31;
    });
    refusedBy("chip", () => verify(zen2));
    assert.throws(() => verify(zen2), /CPUID family 17h model 31h is not an SEV-SNP product/);
    const zero = await signedBy("Milan", report, milanTcb, (r) => r.writeUInt32LE(3, 0));
    assert.equal(verify(zero).product, "Milan");
    const milanCpuid = await signedBy("Milan", report, milanTcb, (r) => {
      r.writeUInt32LE(3, 0);
      r[0x188] = 0x19;
      r[0x189] = 0x01;
    });
    assert.equal(verify(milanCpuid).product, "Milan");
  });

  test("reported_tcb's reserved bytes are zero, per product's layout; so are the key's reserved SPLs", async () => {
    const milanTcb = { bl: 3, tee: 0, snp: 8, ucode: 0x73 };
    const reservedSet = await signedBy("Milan", report, milanTcb, (r) => {
      r[0x180 + 3] = 1;
    });
    refusedBy("tcb", () => verify(reservedSet));
    assert.throws(() => verify(reservedSet), /reserved byte 3 set \(Milan layout\)/);
    const turinTcb = { fmc: 1, bl: 1, tee: 1, snp: 4, ucode: 0x51 };
    const turinReserved = await signedBy("Turin", turin.report, turinTcb, (r) => {
      r[0x180 + 5] = 2;
    });
    assert.throws(() => verify(turinReserved), /tcb: .*reserved byte 5 set \(Turin layout\)/);
    const keyReserved = await signedBy("Milan", report, { ...milanTcb, reserved: [0, 1, 0, 0] });
    assert.throws(
      () => verify(keyReserved),
      /tcb: the VCEK certifies reserved SPL 1\.3\.6\.1\.4\.1\.3704\.1\.3\.5 = 1/,
    );
    assert.equal(verify(await signedBy("Turin", turin.report, turinTcb)).reportedTcb.fmc, 1);
  });
});

describe("a VLEK-signed report: checked against the cloud provider the VLEK names, not a chip", () => {
  let fake: FakeSnp;
  before(async () => {
    fake = await makeFakeSnp();
  });
  const tcb = { bl: 4, tee: 0, snp: 24, ucode: 0xd9 };
  const signed = async (key: { hwId?: Buffer; cspId?: string }, edit?: (r: Buffer) => void) => {
    const k = await fake.key({ product: "Milan", type: "VLEK", tcb, ...key });
    return { key: k.der, report: fake.sign(vlek.report, k.privateKey, edit) };
  };
  const verify = (s: { key: Buffer; report: Buffer }) =>
    verifySnpReport(s.report, { endorsementKey: s.key, at: vlek.at, roots: fake.roots });

  test("the real VLEK report (AWS): no chip compared, the provider in the verdict", () => {
    const v = verifySnpReport(vlek.report, { endorsementKey: vlek.key, at: vlek.at });
    assert.deepEqual(
      [v.key, v.product, v.chip, v.cspId],
      ["VLEK", "Milan", "none (VLEK)", "CN=cc-us-east-2.amazonaws.com"],
    );
    assert.equal(snpVerdict(v).details.csp_id, "CN=cc-us-east-2.amazonaws.com");
  });

  test("a VLEK names a provider: one with a hwID, or without a CSP_ID, is refused", async () => {
    const good = await signed({ cspId: "CN=example (test)" });
    assert.equal(verify(good).cspId, "CN=example (test)");
    const withHwId = await signed({ cspId: "CN=example (test)", hwId: Buffer.from(report.subarray(0x1a0, 0x1e0)) });
    refusedBy("chain", () => verify(withHwId));
    assert.throws(() => verify(withHwId), /the VLEK has a hwID extension: a VLEK names no chip/);
    const noProvider = await signed({});
    assert.throws(() => verify(noProvider), /chain: the VLEK has no CSP_ID extension/);
  });

  test("a VLEK-signed report's CHIP_ID is not compared with anything (any chip of the provider)", async () => {
    const s = await signed({ cspId: "CN=example (test)" }, (r) => report.subarray(0x1a0, 0x1e0).copy(r, 0x1a0));
    assert.equal(verify(s).chip, "none (VLEK)");
  });

  test("a VCEK names a chip: one with a CSP_ID is refused", async () => {
    const k = await fake.key({
      product: "Milan",
      type: "VCEK",
      tcb: { bl: 3, tee: 0, snp: 8, ucode: 0x73 },
      hwId: Buffer.from(report.subarray(0x1a0, 0x1e0)),
      cspId: "CN=example (test)",
    });
    const r = fake.sign(report, k.privateKey);
    assert.throws(
      () => verifySnpReport(r, { endorsementKey: k.der, at: IN_WINDOW, roots: fake.roots }),
      /chain: the VCEK has a CSP_ID extension/,
    );
  });
});
