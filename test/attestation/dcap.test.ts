/**
 * Intel DCAP verification on real evidence: the SGX v3 and TDX v4 quotes of
 * ../shared/testvectors with their offline collateral. Every single-bit change of every signed
 * byte is refused; so are wrong roots, collateral of another platform or TEE, collateral
 * outside its window, and a revoked PCK certificate (in a PKI built here, named as fake).
 */
import assert from "node:assert/strict";
import { createHash, createPrivateKey, type KeyObject, sign, webcrypto, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { HEADER_SIZE, parseQuote, SGX_REPORT_SIZE, TD10_REPORT_SIZE } from "../../src/attestation/dcap/abi.ts";
import { Collateral, splitPem } from "../../src/attestation/dcap/collateral.ts";
import { dcapVerdict, verifyDcapQuote } from "../../src/attestation/dcap/verify.ts";
import { decodeEvidence, evidenceKind } from "../../src/attestation/evidence.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { certificateExtensions } from "../../src/crypto/der.ts";
import { x509 } from "../../src/crypto/x509.ts";

const DIR = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "intel-dcap");
const at = new Date("2025-07-01T00:00:00Z");
const load = (tee: "sgx" | "tdx") => ({
  quote: readFileSync(join(DIR, `${tee}_quote`)),
  collateral: Collateral.parse(JSON.parse(readFileSync(join(DIR, `${tee}_quote_collateral.json`), "utf8"))),
});
const sgx = load("sgx");
const tdx = load("tdx");

const refusedBy = (check: string | RegExp, f: () => unknown) =>
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof VerificationError, String(e));
    if (typeof check === "string") assert.equal(e.check, check, e.message);
    else assert.match(e.message, check);
    return true;
  });

describe("the vectors give their documented results", () => {
  test("SGX quote v3: ConfigurationAndSWHardeningNeeded with INTEL-SA-00289 and INTEL-SA-00615", () => {
    const v = dcapVerdict(verifyDcapQuote(sgx.quote, sgx.collateral, { at }));
    assert.equal(v.tee, "sgx");
    assert.equal(v.status, "ConfigurationAndSWHardeningNeeded");
    assert.deepEqual(v.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert.equal(v.debug, false);
    assert.match(String(v.measurements.mrenclave), /^33d8736d[0-9a-f]{50}452fbb$/);
    assert.match(String(v.measurements.mrsigner), /^815f42f1[0-9a-f]{50}a3e0e6$/);
    assert.equal(v.measurements.isvprodid, 0);
    assert.equal(v.measurements.isvsvn, 0);
    assert.equal(Buffer.from(v.report_data, "hex").subarray(0, 13).toString(), "Hello, world!");
    assert.equal(v.collateral_expires, "2025-07-19T10:01:18.000Z");
  });

  test("TDX quote v4 (70 bytes of trailing zeros): UpToDate, no advisories", () => {
    assert.equal(tdx.quote.length, 5006);
    const v = dcapVerdict(verifyDcapQuote(tdx.quote, tdx.collateral, { at }));
    assert.equal(v.tee, "tdx");
    assert.equal(v.status, "UpToDate");
    assert.deepEqual(v.advisories, []);
    assert.equal(v.debug, false);
    assert.match(String(v.measurements.mrtd), /^91eb2b44[0-9a-f]{80}873118b7$/);
    assert.equal(v.details.module_status, "UpToDate");
  });

  test("evidence as hex and base64 decodes to the quote", () => {
    assert.deepEqual(decodeEvidence(Buffer.from(sgx.quote.toString("hex"))), sgx.quote);
    assert.deepEqual(decodeEvidence(Buffer.from(sgx.quote.toString("base64"))), sgx.quote);
    assert.equal(evidenceKind(sgx.quote), "dcap-quote");
    assert.equal(evidenceKind(tdx.quote), "dcap-quote");
  });
});

/** Flip every bit of [from, to) and collect the flips that were accepted. */
function acceptedFlips(quote: Buffer, collateral: Collateral, from: number, to: number): string[] {
  const accepted: string[] = [];
  for (let byte = from; byte < to; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      const copy = Buffer.from(quote);
      copy[byte]! ^= 1 << bit;
      try {
        verifyDcapQuote(copy, collateral, { at });
        accepted.push(`${byte}.${bit}`);
      } catch (error) {
        if (!(error instanceof VerificationError)) throw new Error(`flip ${byte}.${bit}: ${error}`);
      }
    }
  }
  return accepted;
}

describe("every single-bit change of every signed byte is refused (exhaustive)", () => {
  for (const [name, v, body] of [
    ["SGX", sgx, SGX_REPORT_SIZE],
    ["TDX", tdx, TD10_REPORT_SIZE],
  ] as const) {
    test(`${name}: header and report body (signed by the attestation key)`, () => {
      assert.deepEqual(acceptedFlips(v.quote, v.collateral, 0, HEADER_SIZE + body), []);
    });
    test(`${name}: quote signature, attestation key, QE report, its signature and auth data`, () => {
      const start = HEADER_SIZE + body + 4; // after the signature data length
      const q = parseQuote(v.quote);
      // v4 wraps the QE report certification data in a type-6 header of 6 bytes.
      const qeStart = start + 128 + (q.version === 3 ? 0 : 6);
      const end = qeStart + SGX_REPORT_SIZE + 64 + 2 + q.certification.qeAuthData.length;
      assert.deepEqual(acceptedFlips(v.quote, v.collateral, start, end), []);
    });
  }
});

describe("collateral", () => {
  test("outside its window, before and after", () => {
    refusedBy("expired collateral", () =>
      verifyDcapQuote(sgx.quote, sgx.collateral, { at: new Date("2025-07-20T00:00:00Z") }),
    );
    refusedBy("expired collateral", () =>
      verifyDcapQuote(sgx.quote, sgx.collateral, { at: new Date("2025-06-19T10:00:00Z") }),
    );
    refusedBy("expired collateral", () =>
      verifyDcapQuote(tdx.quote, tdx.collateral, { at: new Date("2025-07-19T10:00:36Z") }),
    );
  });

  test("another platform's or TEE's collateral", () => {
    refusedBy(/another CA|FMSPC|collateral for a/, () => verifyDcapQuote(tdx.quote, sgx.collateral, { at }));
    refusedBy(/another CA|FMSPC|collateral for a/, () => verifyDcapQuote(sgx.quote, tdx.collateral, { at }));
    // SGX CRLs and chains with the (validly signed) TDX TCB info: the FMSPC differs.
    const mixed = {
      ...sgx.collateral,
      tcb_info: tdx.collateral.tcb_info,
      tcb_info_signature: tdx.collateral.tcb_info_signature,
    };
    refusedBy(/FMSPC B0C06F000000, the platform is 00A067110000/, () => verifyDcapQuote(sgx.quote, mixed, { at }));
    // The TD QE's identity for an SGX quote.
    const wrongQe = {
      ...sgx.collateral,
      qe_identity: tdx.collateral.qe_identity,
      qe_identity_signature: tdx.collateral.qe_identity_signature,
    };
    refusedBy(/TD_QE identity for a sgx quote/, () => verifyDcapQuote(sgx.quote, wrongQe, { at }));
  });

  test("altered collateral: TCB info text, QE identity, CRLs", () => {
    const edit = (field: keyof Collateral, f: (s: string) => string) => ({
      ...sgx.collateral,
      [field]: f(sgx.collateral[field]),
    });
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("tcb_info", (s) => s.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"')),
        { at },
      ),
    );
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("tcb_info", (s) => s.replace("SWHardeningNeeded", "UpToDate")),
        { at },
      ),
    );
    refusedBy("signature", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("qe_identity", (s) => s.replace('"isvprodid":1', '"isvprodid":2')),
        { at },
      ),
    );
    refusedBy("CRL", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("pck_crl", (s) => `${s.slice(0, 100)}${s[100] === "0" ? "1" : "0"}${s.slice(101)}`),
        { at },
      ),
    );
    refusedBy("CRL", () =>
      verifyDcapQuote(
        sgx.quote,
        edit("root_ca_crl", (s) => `${s.slice(0, -10)}${s.slice(-10, -9) === "0" ? "1" : "0"}${s.slice(-9)}`),
        { at },
      ),
    );
  });
});

/** A PKI of our own, shaped like Intel's, to exercise what real collateral cannot: revocation. */
describe("a PKI made here (fake, for tests only)", () => {
  const alg = { name: "ECDSA", hash: "SHA-256" } as const;
  let root: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };
  let pckCa: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };
  let tcbSigner: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };
  let pck: { cert: x509.X509Certificate; key: KeyObject };

  const keys = () =>
    webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]) as Promise<webcrypto.CryptoKeyPair>;
  const ca = (isCa: boolean) => [new x509.BasicConstraintsExtension(isCa, undefined, true)];
  const pemOf = (c: x509.X509Certificate) => `${c.toString("pem")}\n`;

  before(async () => {
    const now = new Date("2025-01-01T00:00:00Z");
    const later = new Date("2030-01-01T00:00:00Z");
    const rootKeys = await keys();
    root = {
      keys: rootKeys,
      cert: await x509.X509CertificateGenerator.createSelfSigned({
        name: "CN=FAKE Intel SGX Root CA (test)",
        keys: rootKeys,
        signingAlgorithm: alg,
        notBefore: now,
        notAfter: later,
        extensions: ca(true),
      }),
    };
    const issue = async (subject: string, isCa: boolean, issuer: typeof root, extra: x509.Extension[] = []) => {
      const k = await keys();
      const cert = await x509.X509CertificateGenerator.create({
        subject,
        issuer: issuer.cert.subject,
        publicKey: k.publicKey,
        signingKey: issuer.keys.privateKey,
        signingAlgorithm: alg,
        notBefore: now,
        notAfter: later,
        extensions: [...ca(isCa), ...extra],
      });
      return { cert, keys: k };
    };
    pckCa = await issue("CN=FAKE Intel SGX PCK Processor CA (test)", true, root);
    tcbSigner = await issue("CN=FAKE Intel SGX TCB Signing (test)", false, root);
    // The PCK certificate carries the real platform's SGX extension, so the TCB evaluation is real.
    const realPck = splitPem(parseQuote(sgx.quote).certification.pckChainPem)[0]!;
    const sgxExtension = certificateExtensions(realPck.raw).get("1.2.840.113741.1.13.1")!;
    const pckIssued = await issue("CN=FAKE Intel SGX PCK Certificate (test)", false, pckCa, [
      new x509.Extension("1.2.840.113741.1.13.1", false, sgxExtension),
    ]);
    pck = {
      cert: pckIssued.cert,
      key: createPrivateKey({
        key: Buffer.from(await webcrypto.subtle.exportKey("pkcs8", pckIssued.keys.privateKey)),
        format: "der",
        type: "pkcs8",
      }),
    };
  });

  /** The SGX quote with our PCK chain in it and its QE report re-signed by our PCK key. */
  function requote(): Buffer {
    const q = Buffer.from(sgx.quote);
    const parsed = parseQuote(q);
    const chain = Buffer.from(`${pemOf(pck.cert)}${pemOf(pckCa.cert)}${pemOf(root.cert)}`);
    const sigDataAt = HEADER_SIZE + SGX_REPORT_SIZE;
    const qeAt = sigDataAt + 4 + 128;
    const certTypeAt = qeAt + SGX_REPORT_SIZE + 64 + 2 + parsed.certification.qeAuthData.length;
    const head = Buffer.from(q.subarray(0, certTypeAt + 2));
    const size = Buffer.alloc(4);
    size.writeUInt32LE(chain.length);
    const out = Buffer.concat([head, size, chain]);
    out.writeUInt32LE(out.length - sigDataAt - 4, sigDataAt);
    const qeSig = sign("sha256", parsed.certification.qeReport.raw, { key: pck.key, dsaEncoding: "ieee-p1363" });
    qeSig.copy(out, qeAt + SGX_REPORT_SIZE);
    return out;
  }

  async function collateral(revokePck: boolean): Promise<Collateral> {
    const crl = async (issuer: typeof root, serials: string[]) =>
      Buffer.from(
        (
          await x509.X509CrlGenerator.create({
            issuer: issuer.cert.subject,
            thisUpdate: new Date("2025-06-01T00:00:00Z"),
            nextUpdate: new Date("2025-08-01T00:00:00Z"),
            entries: serials.map((serialNumber) => ({
              serialNumber,
              revocationDate: new Date("2025-06-01T00:00:00Z"),
            })),
            signingKey: issuer.keys.privateKey,
            signingAlgorithm: alg,
          })
        ).rawData,
      ).toString("hex");
    const signJson = async (text: string) =>
      Buffer.from(
        await webcrypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, tcbSigner.keys.privateKey, Buffer.from(text)),
      ).toString("hex");
    const signerChain = `${pemOf(tcbSigner.cert)}${pemOf(root.cert)}`;
    return {
      pck_crl_issuer_chain: `${pemOf(pckCa.cert)}${pemOf(root.cert)}`,
      root_ca_crl: await crl(root, []),
      pck_crl: await crl(pckCa, revokePck ? [pck.cert.serialNumber] : []),
      tcb_info_issuer_chain: signerChain,
      tcb_info: sgx.collateral.tcb_info,
      tcb_info_signature: await signJson(sgx.collateral.tcb_info),
      qe_identity_issuer_chain: signerChain,
      qe_identity: sgx.collateral.qe_identity,
      qe_identity_signature: await signJson(sgx.collateral.qe_identity),
    };
  }

  const anchor = () => new X509Certificate(Buffer.from(root.cert.rawData));

  test("the fake PKI is accepted when it is the anchor (so the refusals below mean something)", async () => {
    const v = verifyDcapQuote(requote(), await collateral(false), { at, anchor: anchor() });
    assert.equal(v.status, "ConfigurationAndSWHardeningNeeded");
  });

  test("a revoked PCK certificate is refused", async () => {
    const revoked = await collateral(true);
    refusedBy("Revoked", () => verifyDcapQuote(requote(), revoked, { at, anchor: anchor() }));
  });

  test("the same chain against the pinned Intel root is refused: a wrong root", async () => {
    const fake = await collateral(false);
    // Refused at the first place our root shows: its CRL is not signed by the pinned root.
    refusedBy(/^(CRL|chain):/, () => verifyDcapQuote(requote(), fake, { at }));
  });

  test("the real PCK chain with a fake root swapped in is refused", () => {
    const q = Buffer.from(sgx.quote);
    const realRoot = splitPem(parseQuote(q).certification.pckChainPem)[2]!;
    const hash = createHash("sha256").update(realRoot.raw).digest("hex");
    assert.equal(
      hash,
      createHash("sha256")
        .update(readFileSync(join(DIR, "TrustedRootCA.der")))
        .digest("hex"),
    );
    refusedBy("chain", () => verifyDcapQuote(requote(), sgx.collateral, { at }));
  });
});
