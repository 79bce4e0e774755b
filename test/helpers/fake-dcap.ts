/**
 * A FAKE Intel DCAP world for tests: a root, PCK CA, PCK certificate and TCB signing
 * certificate of our own (each named FAKE), collateral re-signed by them, and quotes built and
 * signed here with an attestation key of our own — so that tests can produce what no real
 * platform gave us: debug enclaves and TDs, version 5 quotes with TD 1.5 bodies, revoked PCKs.
 * The QE report, TCB info and QE identity are the real ones from ../shared/testvectors, so the
 * TCB evaluation stays real. Verify with `anchor: fake.anchor`; the pinned root refuses all of it.
 */
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  webcrypto,
  X509Certificate,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseQuote, type Quote } from "../../src/attestation/dcap/abi.ts";
import { type Collateral, splitPem } from "../../src/attestation/dcap/collateral.ts";
import { certificateExtensions } from "../../src/crypto/der.ts";
import { x509 } from "./x509.ts";

const DIR = join(import.meta.dirname, "..", "..", "..", "shared", "testvectors", "intel-dcap");
const alg = { name: "ECDSA", hash: "SHA-256" } as const;
type Issued = { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };

export interface FakeDcap {
  readonly anchor: X509Certificate;
  /** Collateral for `tee`, re-signed by the fake PKI; the PCK CRL lists `revoked` serials. */
  collateral(
    tee: "sgx" | "tdx",
    options?: {
      revokePck?: boolean;
      /** The TCB info's or QE identity's text changed before it is signed. */
      editTcbInfo?: (text: string) => string;
      editQeIdentity?: (text: string) => string;
    },
  ): Promise<Collateral>;
  /** A quote with the vector's body (changed by `editBody`), signed by a fresh attestation key. */
  quote(
    tee: "sgx" | "tdx",
    options?: { version?: 3 | 4 | 5; editBody?: (body: Buffer) => void; td15?: boolean },
  ): Buffer;
}

export async function makeFakeDcap(): Promise<FakeDcap> {
  const now = new Date("2025-01-01T00:00:00Z");
  const later = new Date("2030-01-01T00:00:00Z");
  const keys = () =>
    webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]) as Promise<webcrypto.CryptoKeyPair>;
  const ca = (isCa: boolean) => [new x509.BasicConstraintsExtension(isCa, undefined, true)];
  const rootKeys = await keys();
  const root: Issued = {
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
  const issue = async (
    subject: string,
    isCa: boolean,
    issuer: Issued,
    extra: x509.Extension[] = [],
  ): Promise<Issued> => {
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
  const pckCa = await issue("CN=FAKE Intel SGX PCK Processor CA (test)", true, root);
  const tcbSigner = await issue("CN=FAKE Intel SGX TCB Signing (test)", false, root);
  const pem = (c: x509.X509Certificate) => `${c.toString("pem")}\n`;
  const keyObject = async (k: webcrypto.CryptoKey) =>
    createPrivateKey({ key: Buffer.from(await webcrypto.subtle.exportKey("pkcs8", k)), format: "der", type: "pkcs8" });

  // One PCK certificate per vector, carrying that platform's real SGX extension.
  const vectors = {} as Record<
    "sgx" | "tdx",
    { quote: Quote; collateral: Collateral; pck: x509.X509Certificate; pckKey: KeyObject }
  >;
  for (const tee of ["sgx", "tdx"] as const) {
    const quote = parseQuote(readFileSync(join(DIR, `${tee}_quote`)));
    const realPck = splitPem(quote.certification.pckChainPem)[0]!;
    const ext = certificateExtensions(realPck.raw).get("1.2.840.113741.1.13.1")!;
    const pck = await issue(`CN=FAKE Intel SGX PCK Certificate ${tee} (test)`, false, pckCa, [
      new x509.Extension("1.2.840.113741.1.13.1", false, ext),
    ]);
    vectors[tee] = {
      quote,
      collateral: JSON.parse(readFileSync(join(DIR, `${tee}_quote_collateral.json`), "utf8")) as Collateral,
      pck: pck.cert,
      pckKey: await keyObject(pck.keys.privateKey),
    };
  }

  const crl = async (issuer: Issued, serials: string[]) =>
    Buffer.from(
      (
        await x509.X509CrlGenerator.create({
          issuer: issuer.cert.subject,
          thisUpdate: new Date("2025-06-01T00:00:00Z"),
          nextUpdate: new Date("2025-08-01T00:00:00Z"),
          entries: serials.map((serialNumber) => ({ serialNumber, revocationDate: new Date("2025-06-01T00:00:00Z") })),
          signingKey: issuer.keys.privateKey,
          signingAlgorithm: alg,
        })
      ).rawData,
    ).toString("hex");
  const signJson = async (text: string) =>
    Buffer.from(await webcrypto.subtle.sign(alg, tcbSigner.keys.privateKey, Buffer.from(text))).toString("hex");

  return {
    anchor: new X509Certificate(Buffer.from(root.cert.rawData)),

    async collateral(tee, options = {}) {
      const v = vectors[tee];
      const signerChain = `${pem(tcbSigner.cert)}${pem(root.cert)}`;
      const tcbInfo = (options.editTcbInfo ?? ((t) => t))(v.collateral.tcb_info);
      const qeIdentity = (options.editQeIdentity ?? ((t) => t))(v.collateral.qe_identity);
      return {
        pck_crl_issuer_chain: `${pem(pckCa.cert)}${pem(root.cert)}`,
        root_ca_crl: await crl(root, []),
        pck_crl: await crl(pckCa, options.revokePck ? [v.pck.serialNumber] : []),
        tcb_info_issuer_chain: signerChain,
        tcb_info: tcbInfo,
        tcb_info_signature: await signJson(tcbInfo),
        qe_identity_issuer_chain: signerChain,
        qe_identity: qeIdentity,
        qe_identity_signature: await signJson(qeIdentity),
      };
    },

    quote(tee, options = {}) {
      const v = vectors[tee];
      const version = options.version ?? (tee === "sgx" ? 3 : 4);
      const q = v.quote;
      let body = Buffer.from(
        q.sgx
          ? q.sgx.raw
          : Buffer.concat([
              q.td!.teeTcbSvn,
              q.td!.mrseam,
              q.td!.mrsignerseam,
              q.td!.seamAttributes,
              q.td!.tdAttributes,
              q.td!.xfam,
              q.td!.mrtd,
              q.td!.mrconfigid,
              q.td!.mrowner,
              q.td!.mrownerconfig,
              ...q.td!.rtmr,
              q.td!.reportData,
            ]),
      );
      if (tee === "tdx" && options.td15) body = Buffer.concat([body, Buffer.alloc(64)]);
      options.editBody?.(body);
      // Header: the vector's, with the version (and TEE type) as asked.
      const header = Buffer.alloc(48);
      header.writeUInt16LE(version, 0);
      header.writeUInt16LE(2, 2);
      header.writeUInt32LE(tee === "tdx" ? 0x81 : 0, 4);
      header.writeUInt16LE(q.qeSvn, 8);
      header.writeUInt16LE(q.pceSvn, 10);
      q.qeVendorId.copy(header, 12);
      q.userData.copy(header, 28);
      const descriptor = version === 5 ? Buffer.alloc(6) : Buffer.alloc(0);
      if (version === 5) {
        descriptor.writeUInt16LE(tee === "sgx" ? 1 : options.td15 ? 3 : 2, 0);
        descriptor.writeUInt32LE(body.length, 2);
      }
      const signed = Buffer.concat([header, descriptor, body]);
      // A fresh attestation key, certified by a QE report re-bound to it and signed by our PCK.
      const att = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const jwk = att.publicKey.export({ format: "jwk" });
      const attRaw = Buffer.concat([Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
      const auth = q.certification.qeAuthData;
      const qeReport = Buffer.from(q.certification.qeReport.raw);
      createHash("sha256").update(attRaw).update(auth).digest().copy(qeReport, 320);
      qeReport.fill(0, 352, 384);
      const qeSig = sign("sha256", qeReport, { key: v.pckKey, dsaEncoding: "ieee-p1363" });
      const chain = Buffer.from(`${pem(v.pck)}${pem(pckCa.cert)}${pem(root.cert)}`);
      const u16 = (n: number) => {
        const b = Buffer.alloc(2);
        b.writeUInt16LE(n);
        return b;
      };
      const u32 = (n: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(n);
        return b;
      };
      const qeCert = Buffer.concat([qeReport, qeSig, u16(auth.length), auth, u16(5), u32(chain.length), chain]);
      const certData = version === 3 ? qeCert : Buffer.concat([u16(6), u32(qeCert.length), qeCert]);
      const signature = sign("sha256", signed, { key: att.privateKey, dsaEncoding: "ieee-p1363" });
      const sigData = Buffer.concat([signature, attRaw, certData]);
      return Buffer.concat([signed, u32(sigData.length), sigData]);
    },
  };
}
