/**
 * SEV-SNP verification: the report's signature by its VCEK or VLEK, that key's chain through
 * the ASK or ASVK to the pinned ARK of its product (RSASSA-PSS), validity at a given time, and
 * the key's extensions against the report: the chip (hwID) and the TCB it was issued for.
 */
import { createHash, type KeyObject, X509Certificate } from "node:crypto";
import { certificateExtensions, readElement } from "../../crypto/der.ts";
import { type PendingSignature, settledNow } from "../pending-signature.ts";
import { type Verdict, VerificationError } from "../verdict.ts";
import {
  POLICY,
  parseReport,
  productOfCpuid,
  SnpAbiError,
  type SnpReport,
  type TcbVersion,
  tcbVersion,
} from "./abi.ts";
import { type ProductRoots, SNP_ROOTS, type SnpProduct } from "./trust.ts";

/** AMD's certificate extensions (1.3.6.1.4.1.3704.1.*). */
const AMD = {
  productName: "1.3.6.1.4.1.3704.1.2",
  blSpl: "1.3.6.1.4.1.3704.1.3.1",
  teeSpl: "1.3.6.1.4.1.3704.1.3.2",
  snpSpl: "1.3.6.1.4.1.3704.1.3.3",
  ucodeSpl: "1.3.6.1.4.1.3704.1.3.8",
  fmcSpl: "1.3.6.1.4.1.3704.1.3.9",
  /** spl4 … spl7: reserved TCB components. */
  reservedSpls: [
    "1.3.6.1.4.1.3704.1.3.4",
    "1.3.6.1.4.1.3704.1.3.5",
    "1.3.6.1.4.1.3704.1.3.6",
    "1.3.6.1.4.1.3704.1.3.7",
  ],
  hwId: "1.3.6.1.4.1.3704.1.4",
  /** VLEKs: the cloud provider the VLEK was made for. */
  cspId: "1.3.6.1.4.1.3704.1.5",
} as const;

export interface SnpVerified {
  readonly report: SnpReport;
  readonly product: SnpProduct;
  readonly key: "VCEK" | "VLEK";
  readonly reportedTcb: TcbVersion;
  /** The earliest notAfter of the chain. */
  readonly expires: Date;
  /**
   * How the report's chip was identified: by the VCEK's hwID; not at all because the host masked
   * CHIP_ID (all zeros: the VCEK's signature still binds the report to one chip, unnamed); or not
   * at all because a VLEK signed it (a VLEK belongs to a cloud provider, not to a chip).
   */
  readonly chip: "hwID" | "masked" | "none (VLEK)";
  /** VLEKs: the cloud provider the VLEK was made for (its CSP_ID extension). */
  readonly cspId?: string;
}

export interface SnpVerifyOptions {
  /** The VCEK or VLEK certificate (DER or PEM) that signed the report. */
  readonly endorsementKey: Uint8Array | string;
  /** When to check validity; default now. */
  readonly at?: Date;
  /**
   * Tests only: roots of their own (named as fake) instead of AMD's pinned ARKs, ASKs and ASVKs,
   * so that tests can make what no real chip gave us. Nothing outside the tests passes this.
   */
  readonly roots?: Readonly<Record<SnpProduct, ProductRoots>>;
}

interface EndorsementKey {
  readonly certificate: X509Certificate;
  readonly publicKey: KeyObject;
  readonly product: SnpProduct;
  readonly extensions: Map<string, Buffer>;
  readonly chainExpires: Date;
  readonly chainStarts: Date;
}

/** Verified endorsement keys by SHA-256 of their DER: a chip's VCEK signs many reports. */
const verifiedKeys = new Map<string, EndorsementKey>();
const MAX_CACHED = 1024;

export function verifySnpReport(evidence: Uint8Array, options: SnpVerifyOptions): SnpVerified {
  return settledNow(prepareSnpReport(evidence, options));
}

/**
 * verifySnpReport up to the report's signature, which the caller checks where it likes (see
 * pending-signature.ts); the key's extensions are checked against the report after it.
 */
export function prepareSnpReport(evidence: Uint8Array, options: SnpVerifyOptions): PendingSignature<SnpVerified> {
  let report: SnpReport;
  try {
    report = parseReport(evidence);
  } catch (error) {
    if (error instanceof SnpAbiError) throw new VerificationError("format", error.message);
    throw error;
  }
  if (report.signingKey !== 0 && report.signingKey !== 1) {
    throw new VerificationError("signature", `the report is not signed (signing key ${report.signingKey})`);
  }
  const keyType = report.signingKey === 0 ? "VCEK" : "VLEK";
  // The product: the report's CPUID names it (version 3 and later), and the key must then chain
  // to that product's root; a version 2 report names none, and the key's product is taken.
  const named = productOfCpuid(report.cpuid);
  if (named === "unknown") {
    const c = report.cpuid!;
    const h = (n: number) => `${n.toString(16).padStart(2, "0").toUpperCase()}h`;
    throw new VerificationError(
      "chip",
      `the report's CPUID family ${h(c.family)} model ${h(c.model)} is not an SEV-SNP product known here (Milan 19h/00h–0Fh, Genoa 19h/10h–1Fh and A0h–AFh, Turin 1Ah/00h–1Fh)`,
    );
  }
  const ek = endorsementKey(options.endorsementKey, keyType, options.roots ?? SNP_ROOTS, named);
  const at = options.at ?? new Date();
  if (at < ek.chainStarts || at > ek.chainExpires) {
    throw new VerificationError(
      "expired",
      `the ${keyType} chain is valid from ${ek.chainStarts.toISOString()} to ${ek.chainExpires.toISOString()}, not at ${at.toISOString()}`,
    );
  }
  return {
    check: {
      algorithm: "sha384",
      data: report.signed,
      key: ek.publicKey,
      signature: Buffer.concat([report.signatureR, report.signatureS]),
      dsaEncoding: "ieee-p1363",
    },
    failure: `the report's signature does not verify with the ${keyType}`,
    afterwards: () => {
      const decoded = tcbVersion(report.reportedTcb, ek.product);
      const chip = checkKeyMatchesReport(ek, report, decoded, keyType);
      const { reserved: _, ...reportedTcb } = decoded;
      return {
        report,
        product: ek.product,
        key: keyType,
        reportedTcb,
        expires: ek.chainExpires,
        chip,
        ...(keyType === "VLEK" ? { cspId: keyIdentity(ek, keyType).cspId! } : {}),
      };
    },
  };
}

/**
 * Check a VCEK or VLEK certificate on its own (for import into the CAS): its chain to the
 * pinned ARK of its product. Returns what identifies it: the chip (VCEK) and the TCB.
 */
export function checkEndorsementKey(input: Uint8Array | string): {
  keyType: "VCEK" | "VLEK";
  product: SnpProduct;
  hwId: string | null;
  notAfter: Date;
} {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(typeof input === "string" ? input : Buffer.from(input));
  } catch {
    throw new VerificationError("chain", "not an X.509 certificate");
  }
  const keyType = /CN=SEV-VLEK/.test(certificate.issuer) ? "VLEK" : "VCEK";
  const ek = endorsementKey(certificate.raw, keyType, SNP_ROOTS);
  return {
    keyType,
    product: ek.product,
    hwId: keyIdentity(ek, keyType).hwId?.toString("hex") ?? null,
    notAfter: ek.chainExpires,
  };
}

function endorsementKey(
  input: Uint8Array | string,
  keyType: "VCEK" | "VLEK",
  pinned: Readonly<Record<SnpProduct, ProductRoots>>,
  named?: SnpProduct,
): EndorsementKey {
  const id = `${keyType}:${named ?? "-"}:${createHash("sha256").update(input).digest("hex")}`;
  // Only keys verified through the pinned roots are remembered.
  const cached = pinned === SNP_ROOTS ? verifiedKeys.get(id) : undefined;
  if (cached) return cached;
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(typeof input === "string" ? input : Buffer.from(input));
  } catch {
    throw new VerificationError("chain", `the ${keyType} certificate cannot be parsed`);
  }
  const extensions = certificateExtensions(certificate.raw);
  // The report's CPUID, when it names the product, decides which root the key must chain to
  // (as go-sev-guest does: the key's productName is then not what decides).
  const product = named ?? productOf(certificate, extensions);
  const roots = pinned[product];
  const ark = new X509Certificate(roots.ark);
  const ask = new X509Certificate(keyType === "VCEK" ? roots.ask : roots.asvk);
  // The ARK is pinned; it must be the one we embed and sign itself and its ASK/ASVK.
  if (ark.fingerprint256 !== roots.arkFingerprint || !ark.verify(ark.publicKey) || !ask.verify(ark.publicKey)) {
    throw new VerificationError("chain", `the pinned ${product} roots do not verify`);
  }
  const ica = keyType === "VCEK" ? "ASK" : "ASVK";
  if (!certificate.checkIssued(ask)) {
    throw new VerificationError("chain", `the ${keyType} is not issued by AMD's ${ica} for ${product}`);
  }
  if (!certificate.verify(ask.publicKey)) {
    throw new VerificationError(
      "chain",
      `the ${keyType} names AMD's ${ica} for ${product} as its issuer, but its signature does not verify with that key`,
    );
  }
  const publicKey = certificate.publicKey;
  if (publicKey.asymmetricKeyType !== "ec" || publicKey.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new VerificationError("chain", `the ${keyType} is not a P-384 key`);
  }
  const dates = [certificate, ask, ark];
  const key: EndorsementKey = {
    certificate,
    publicKey,
    product,
    extensions,
    chainStarts: new Date(Math.max(...dates.map((c) => new Date(c.validFrom).getTime()))),
    chainExpires: new Date(Math.min(...dates.map((c) => new Date(c.validTo).getTime()))),
  };
  if (pinned === SNP_ROOTS) {
    if (verifiedKeys.size >= MAX_CACHED) verifiedKeys.clear();
    verifiedKeys.set(id, key);
  }
  return key;
}

/** The product from the key's productName extension ("Milan-B0"), else from its issuer ("SEV-Milan"). */
function productOf(certificate: X509Certificate, extensions: Map<string, Buffer>): SnpProduct {
  let name = "";
  const ext = extensions.get(AMD.productName);
  if (ext) {
    const e = readElement(ext, 0);
    name = ext.subarray(e.contentStart, e.end).toString("ascii");
  } else {
    name = /CN=SEV-(?:VLEK-)?(\w+)/.exec(certificate.issuer)?.[1] ?? "";
  }
  const product = name.split("-")[0];
  if (product === "Milan" || product === "Genoa" || product === "Turin") return product;
  throw new VerificationError(
    "chain",
    `unknown SEV-SNP product ${JSON.stringify(name)}: expected Milan, Genoa or Turin`,
  );
}

function splOf(extensions: Map<string, Buffer>, oid: string): number | undefined {
  const ext = extensions.get(oid);
  if (!ext) return undefined;
  const e = readElement(ext, 0);
  if (e.tag !== 0x02) throw new VerificationError("chain", `extension ${oid} is not an INTEGER`);
  let v = 0;
  for (const byte of ext.subarray(e.contentStart, e.end)) v = v * 256 + byte;
  return v;
}

function checkKeyMatchesReport(
  ek: EndorsementKey,
  report: SnpReport,
  tcb: ReturnType<typeof tcbVersion>,
  keyType: "VCEK" | "VLEK",
): SnpVerified["chip"] {
  let chip: SnpVerified["chip"] = "none (VLEK)";
  const identity = keyIdentity(ek, keyType);
  if (identity.hwId) {
    // A host that masks the chip id (MASK_CHIP_ID) gets reports whose CHIP_ID is all zeros; that,
    // and not the report's MASK_CHIP_KEY bit, is what says the id is not there to compare.
    if (report.chipId.every((b) => b === 0)) chip = "masked";
    else {
      checkChipId(ek.product, identity.hwId, report.chipId);
      chip = "hwID";
    }
  }
  const expected: [string, number | undefined, number | undefined][] = [
    ["bootloader", splOf(ek.extensions, AMD.blSpl), tcb.bootloader],
    ["tee", splOf(ek.extensions, AMD.teeSpl), tcb.tee],
    ["snp", splOf(ek.extensions, AMD.snpSpl), tcb.snp],
    ["microcode", splOf(ek.extensions, AMD.ucodeSpl), tcb.microcode],
    ...(ek.product === "Turin"
      ? ([["fmc", splOf(ek.extensions, AMD.fmcSpl), tcb.fmc]] as [string, number | undefined, number | undefined][])
      : []),
  ];
  for (const [name, certified, reported] of expected) {
    if (certified === undefined) throw new VerificationError("chain", `the ${keyType} has no ${name} SPL extension`);
    if (certified !== reported) {
      throw new VerificationError(
        "tcb",
        `reported_tcb ${name} ${reported} is not the ${certified} the ${keyType} was issued for`,
      );
    }
  }
  // The rest of TCB_VERSION is reserved: zero in the report, and zero (or absent) in the key, so
  // that reported_tcb is exactly the TCB the key was issued for.
  const nonZero = tcb.reserved.filter((i) => report.reportedTcb[i] !== 0);
  if (nonZero.length > 0) {
    throw new VerificationError(
      "tcb",
      `reported_tcb ${tcb.raw} has reserved byte${nonZero.length > 1 ? "s" : ""} ${nonZero.join(", ")} set (${ek.product} layout)`,
    );
  }
  for (const oid of AMD.reservedSpls) {
    const spl = splOf(ek.extensions, oid);
    if (spl !== undefined && spl !== 0)
      throw new VerificationError(
        "tcb",
        `the ${keyType} certifies reserved SPL ${oid} = ${spl}, which no report carries`,
      );
  }
  return chip;
}

/**
 * The hwID a VCEK was issued for, by product (AMD's VCEK specification, 57230): Milan and Genoa
 * write the chip's 64-byte CHIP_ID, Turin an 8-byte chip identifier. AMD puts the bytes directly
 * in the extension's value; an OCTET STRING around them (as some tools write) is taken off.
 */
export function hwIdOf(extensions: Map<string, Buffer>, product: SnpProduct): Buffer {
  const value = extensions.get(AMD.hwId);
  if (!value) throw new VerificationError("chain", "the VCEK has no hwID extension");
  const size = HWID_SIZE[product];
  const id = value.length === size ? value : unwrapOctetString(value);
  if (id.length !== size) {
    throw new VerificationError(
      "chain",
      `the ${product} VCEK's hwID is ${id.length} bytes; a ${product} hwID is ${size}`,
    );
  }
  return id;
}

const HWID_SIZE: Record<SnpProduct, number> = { Milan: 64, Genoa: 64, Turin: 8 };

/**
 * What a key names: a VCEK its chip (hwID, and no CSP_ID); a VLEK, derived for a cloud provider
 * and loaded into each of its chips, that provider (CSP_ID) and no chip — so a VLEK-signed
 * report's CHIP_ID has nothing to be compared with.
 */
function keyIdentity(ek: EndorsementKey, keyType: "VCEK" | "VLEK"): { hwId?: Buffer; cspId?: string } {
  if (keyType === "VLEK") {
    if (ek.extensions.has(AMD.hwId))
      throw new VerificationError("chain", "the VLEK has a hwID extension: a VLEK names no chip");
    return { cspId: cspIdOf(ek.extensions) };
  }
  if (ek.extensions.has(AMD.cspId))
    throw new VerificationError("chain", "the VCEK has a CSP_ID extension: only a VLEK names a cloud provider");
  return { hwId: hwIdOf(ek.extensions, ek.product) };
}

/** A VLEK's CSP_ID extension: an IA5String naming the cloud provider. */
function cspIdOf(extensions: Map<string, Buffer>): string {
  const value = extensions.get(AMD.cspId);
  if (!value) throw new VerificationError("chain", "the VLEK has no CSP_ID extension");
  try {
    const e = readElement(value, 0);
    if (e.tag === 0x16 && e.end === value.length) return value.subarray(e.contentStart, e.end).toString("latin1");
  } catch {
    // refused below
  }
  throw new VerificationError("chain", "the VLEK's CSP_ID extension is not an IA5String");
}

/**
 * The report's CHIP_ID against the hwID of the VCEK that signed it: on Milan and Genoa all
 * 64 bytes equal; on Turin the first 8 bytes are the hwID and the other 56 are zero.
 */
export function checkChipId(product: SnpProduct, hwId: Buffer, chipId: Buffer): void {
  const head = chipId.subarray(0, hwId.length);
  const tail = chipId.subarray(hwId.length);
  if (!head.equals(hwId) || tail.some((b) => b !== 0)) {
    throw new VerificationError(
      "chip",
      product === "Turin"
        ? `the report's CHIP_ID is not the Turin chip the VCEK was issued to (its 8-byte hwID ${hwId.toString("hex")} followed by 56 zero bytes)`
        : "the report's CHIP_ID is not the chip the VCEK was issued to",
    );
  }
}

function unwrapOctetString(value: Buffer): Buffer {
  try {
    const e = readElement(value, 0);
    if (e.tag === 0x04 && e.end === value.length) return value.subarray(e.contentStart, e.end);
  } catch {
    // not DER: compared as it is
  }
  return value;
}

/** The shared verdict for a verified report. */
export function snpVerdict(v: SnpVerified): Verdict {
  const r = v.report;
  const hex = (b: Buffer) => b.toString("hex");
  return {
    tee: "snp",
    // AMD publishes no TCB status: what is verified is that the key was issued for reported_tcb.
    status: "Unevaluated",
    advisories: [],
    debug: (r.policy & POLICY.debug) !== 0n,
    measurements: {
      measurement: hex(r.measurement),
      host_data: hex(r.hostData),
      id_key_digest: hex(r.idKeyDigest),
      author_key_digest: hex(r.authorKeyDigest),
      guest_svn: r.guestSvn,
      vmpl: r.vmpl,
    },
    report_data: hex(r.reportData),
    simulated: false,
    collateral_expires: v.expires.toISOString(),
    details: {
      product: v.product,
      signing_key: v.key,
      report_version: r.version,
      cpuid: r.cpuid ?? null,
      policy: `0x${r.policy.toString(16)}`,
      smt_allowed: (r.policy & POLICY.smt) !== 0n,
      migration_agent_allowed: (r.policy & POLICY.migrateMa) !== 0n,
      reported_tcb: v.reportedTcb,
      chip_id: hex(r.chipId),
      chip_identified_by: v.chip,
      ...(v.cspId === undefined ? {} : { csp_id: v.cspId }),
    },
  };
}
