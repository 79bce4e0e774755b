/**
 * DCAP collateral in the format PCCS serves: issuer chains (PEM), CRLs (hex DER), TCB info and
 * QE identity (the exact signed JSON text, with hex r ‖ s signatures). Verified against the
 * pinned Intel SGX Root CA: chains, CRL signatures and revocations, JSON signatures, and the
 * window in which all of it is valid. Verification is cached per collateral: the hot path of
 * quote verification only looks a verified object up.
 */
import { createHash, verify, X509Certificate } from "node:crypto";
import { z } from "zod";
import { subjectDer } from "../../crypto/certificate.ts";
import { type Crl, crlSignedBy, parseCrl } from "../../crypto/crl.ts";
import { VerificationError } from "../verdict.ts";
import { INTEL_SGX_ROOT_CA, INTEL_SGX_ROOT_CA_FINGERPRINT } from "./trust.ts";

export const Collateral = z.object({
  pck_crl_issuer_chain: z.string(),
  root_ca_crl: z.string(),
  pck_crl: z.string(),
  tcb_info_issuer_chain: z.string(),
  tcb_info: z.string(),
  tcb_info_signature: z.string(),
  qe_identity_issuer_chain: z.string(),
  qe_identity: z.string(),
  qe_identity_signature: z.string(),
});
export type Collateral = z.output<typeof Collateral>;

const TcbComponent = z.object({ svn: z.int().min(0).max(255) }).passthrough();
const TcbLevel = z.object({
  tcb: z
    .object({
      sgxtcbcomponents: z.array(TcbComponent).length(16).optional(),
      tdxtcbcomponents: z.array(TcbComponent).length(16).optional(),
      pcesvn: z.int().min(0).optional(),
      // TCB info v2
      sgxtcbcomp01svn: z.int().optional(),
    })
    .passthrough(),
  tcbDate: z.string(),
  tcbStatus: z.string(),
  advisoryIDs: z.array(z.string()).optional(),
});
export type TcbLevel = z.output<typeof TcbLevel>;

const ModuleIdentity = z.object({
  id: z.string(),
  mrsigner: z.string(),
  attributes: z.string(),
  attributesMask: z.string(),
  tcbLevels: z.array(
    z.object({
      tcb: z.object({ isvsvn: z.int() }),
      tcbDate: z.string(),
      tcbStatus: z.string(),
      advisoryIDs: z.array(z.string()).optional(),
    }),
  ),
});

export const TcbInfo = z
  .object({
    id: z.enum(["SGX", "TDX"]).optional(),
    version: z.union([z.literal(2), z.literal(3)]),
    issueDate: z.string(),
    nextUpdate: z.string(),
    fmspc: z.string(),
    pceId: z.string(),
    tcbType: z.int().optional(),
    tcbEvaluationDataNumber: z.int().optional(),
    tdxModule: z.object({ mrsigner: z.string(), attributes: z.string(), attributesMask: z.string() }).optional(),
    tdxModuleIdentities: z.array(ModuleIdentity).optional(),
    tcbLevels: z.array(TcbLevel).min(1),
  })
  .passthrough();
export type TcbInfo = z.output<typeof TcbInfo>;

export const QeIdentity = z
  .object({
    id: z.enum(["QE", "TD_QE", "QVE"]),
    version: z.literal(2),
    issueDate: z.string(),
    nextUpdate: z.string(),
    miscselect: z.string(),
    miscselectMask: z.string(),
    attributes: z.string(),
    attributesMask: z.string(),
    mrsigner: z.string(),
    isvprodid: z.int(),
    tcbLevels: z
      .array(
        z.object({
          tcb: z.object({ isvsvn: z.int() }),
          tcbDate: z.string(),
          tcbStatus: z.string(),
          advisoryIDs: z.array(z.string()).optional(),
        }),
      )
      .min(1),
  })
  .passthrough();
export type QeIdentity = z.output<typeof QeIdentity>;

export interface VerifiedCollateral {
  readonly tcbInfo: TcbInfo;
  readonly qeIdentity: QeIdentity;
  /** The CA that issues PCK certificates (Processor or Platform), and what it revoked. */
  readonly pckCa: X509Certificate;
  readonly pckRevoked: ReadonlySet<string>;
  readonly rootRevoked: ReadonlySet<string>;
  /** All of it is valid from `from` to `until`. */
  readonly from: Date;
  readonly until: Date;
}

export const ROOT = new X509Certificate(INTEL_SGX_ROOT_CA);
if (ROOT.fingerprint256 !== INTEL_SGX_ROOT_CA_FINGERPRINT)
  throw new Error("the embedded Intel SGX Root CA is not the pinned one");

const cache = new Map<string, VerifiedCollateral>();
/** The hot path hands the same collateral object again and again: skip even the hashing. */
const byObject = new WeakMap<Collateral, VerifiedCollateral>();

export function splitPem(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch {
      throw new VerificationError("chain", "a certificate in the chain cannot be parsed");
    }
  });
}

/**
 * Check a chain (leaf first) that ends at the pinned Intel root: each certificate signed by the
 * next, the root exactly the pinned one. Returns the certificates and their common validity.
 */
export function verifyIntelChain(
  certs: readonly X509Certificate[],
  what: string,
  anchor: X509Certificate = ROOT,
): { from: Date; until: Date } {
  if (certs.length < 2) throw new VerificationError("chain", `the ${what} chain is too short`);
  const root = certs[certs.length - 1]!;
  if (root.fingerprint256 !== anchor.fingerprint256) {
    throw new VerificationError("chain", `the ${what} chain does not end at the pinned Intel SGX Root CA`);
  }
  for (let i = 0; i < certs.length - 1; i++) {
    const c = certs[i]!;
    const issuer = certs[i + 1]!;
    if (!c.checkIssued(issuer) || !c.verify(issuer.publicKey)) {
      throw new VerificationError("chain", `certificate ${i + 1} of the ${what} chain is not signed by the next one`);
    }
  }
  return {
    from: new Date(Math.max(...certs.map((c) => new Date(c.validFrom).getTime()))),
    until: new Date(Math.min(...certs.map((c) => new Date(c.validTo).getTime()))),
  };
}

function hexBytes(text: string, what: string): Buffer {
  const t = text.trim();
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(t)) throw new VerificationError("collateral", `${what} is not hex`);
  return Buffer.from(t, "hex");
}

function verifyCrl(crl: Crl, issuer: X509Certificate, what: string): void {
  if (!crl.issuer.equals(subjectDer(issuer)) || !crlSignedBy(crl, issuer.publicKey)) {
    throw new VerificationError(
      "CRL",
      `the ${what} is not signed by ${issuer.subject.split("\n").find((l) => l.startsWith("CN=")) ?? "its issuer"}`,
    );
  }
}

/** A signed JSON document of the collateral: the exact text, its r ‖ s signature, its chain. */
function verifySignedJson(
  text: string,
  signatureHex: string,
  chainPem: string,
  what: string,
  rootRevoked: ReadonlySet<string>,
  anchor: X509Certificate,
) {
  const chain = splitPem(chainPem);
  const window = verifyIntelChain(chain, `${what} issuer`, anchor);
  const signer = chain[0]!;
  if (rootRevoked.has(signer.serialNumber.toLowerCase().replace(/^0+(?=.)/, ""))) {
    throw new VerificationError("CRL", `the ${what} signing certificate is revoked`);
  }
  const signature = hexBytes(signatureHex, `the ${what} signature`);
  if (
    signature.length !== 64 ||
    !verify("sha256", Buffer.from(text, "utf8"), { key: signer.publicKey, dsaEncoding: "ieee-p1363" }, signature)
  ) {
    throw new VerificationError("signature", `the ${what} signature does not verify`);
  }
  return window;
}

/**
 * Verify collateral against the pinned Intel SGX Root CA. `anchor` replaces it only in tests,
 * which build a PKI of their own (named as fake) to exercise revocation.
 */
export function verifyCollateral(collateral: Collateral, anchor: X509Certificate = ROOT): VerifiedCollateral {
  const known = anchor === ROOT ? byObject.get(collateral) : undefined;
  if (known) return known;
  const key = createHash("sha256").update(anchor.fingerprint256).update(JSON.stringify(collateral)).digest("hex");
  const cached = cache.get(key);
  if (cached) {
    if (anchor === ROOT) byObject.set(collateral, cached);
    return cached;
  }

  let rootCrl: Crl;
  let pckCrl: Crl;
  try {
    rootCrl = parseCrl(hexBytes(collateral.root_ca_crl, "root_ca_crl"));
    pckCrl = parseCrl(hexBytes(collateral.pck_crl, "pck_crl"));
  } catch (error) {
    if (error instanceof VerificationError) throw error;
    throw new VerificationError("CRL", `a CRL cannot be parsed: ${(error as Error).message}`);
  }
  verifyCrl(rootCrl, anchor, "root CA CRL");
  const pckChain = splitPem(collateral.pck_crl_issuer_chain);
  const pckWindow = verifyIntelChain(pckChain, "PCK CRL issuer", anchor);
  const pckCa = pckChain[0]!;
  verifyCrl(pckCrl, pckCa, "PCK CRL");
  const serial = (c: X509Certificate) => c.serialNumber.toLowerCase().replace(/^0+(?=.)/, "");
  if (rootCrl.revoked.has(serial(pckCa))) throw new VerificationError("CRL", "the PCK issuing CA is revoked");

  const tcbWindow = verifySignedJson(
    collateral.tcb_info,
    collateral.tcb_info_signature,
    collateral.tcb_info_issuer_chain,
    "TCB info",
    rootCrl.revoked,
    anchor,
  );
  const qeWindow = verifySignedJson(
    collateral.qe_identity,
    collateral.qe_identity_signature,
    collateral.qe_identity_issuer_chain,
    "QE identity",
    rootCrl.revoked,
    anchor,
  );

  const tcbInfo = parseJson(TcbInfo, collateral.tcb_info, "TCB info");
  const qeIdentity = parseJson(QeIdentity, collateral.qe_identity, "QE identity");
  const dates = [
    pckWindow,
    tcbWindow,
    qeWindow,
    { from: rootCrl.thisUpdate, until: rootCrl.nextUpdate ?? new Date(8.64e15) },
    { from: pckCrl.thisUpdate, until: pckCrl.nextUpdate ?? new Date(8.64e15) },
    { from: new Date(tcbInfo.issueDate), until: new Date(tcbInfo.nextUpdate) },
    { from: new Date(qeIdentity.issueDate), until: new Date(qeIdentity.nextUpdate) },
  ];
  const verified: VerifiedCollateral = {
    tcbInfo,
    qeIdentity,
    pckCa,
    pckRevoked: pckCrl.revoked,
    rootRevoked: rootCrl.revoked,
    from: new Date(Math.max(...dates.map((d) => d.from.getTime()))),
    until: new Date(Math.min(...dates.map((d) => d.until.getTime()))),
  };
  if (cache.size > 256) cache.clear();
  cache.set(key, verified);
  if (anchor === ROOT) byObject.set(collateral, verified);
  return verified;
}

function parseJson<S extends z.ZodType>(schema: S, text: string, what: string): z.output<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new VerificationError("collateral", `the ${what} is not JSON`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new VerificationError(
      "collateral",
      `the ${what} is malformed: ${i ? `${i.path.join(".")}: ${i.message}` : ""}`,
    );
  }
  return parsed.data;
}
