/**
 * Intel DCAP quotes (Intel SGX ECDSA Quote Library API): SGX quotes v3, TDX quotes v4 and v5
 * (TD 1.0 and TD 1.5 bodies). Parsing only: every length is checked against the bytes that
 * are there, and trailing zero padding is tolerated.
 */

export class DcapAbiError extends Error {}

export const HEADER_SIZE = 48;
export const SGX_REPORT_SIZE = 384;
export const TD10_REPORT_SIZE = 584;
export const TD15_REPORT_SIZE = 648;
const TEE_SGX = 0x00000000;
const TEE_TDX = 0x00000081;
const ATT_KEY_ECDSA_P256 = 2;
const INTEL_QE_VENDOR_ID = "939a7233f79c4ca9940a0db3957f0607";

export interface SgxReportBody {
  readonly cpusvn: Buffer;
  readonly miscselect: number;
  readonly attributes: Buffer;
  readonly mrenclave: Buffer;
  readonly mrsigner: Buffer;
  readonly configid: Buffer;
  readonly isvprodid: number;
  readonly isvsvn: number;
  readonly configsvn: number;
  readonly reportData: Buffer;
  /** The 384 bytes as they are (signed). */
  readonly raw: Buffer;
}

export interface TdReportBody {
  readonly teeTcbSvn: Buffer;
  readonly mrseam: Buffer;
  readonly mrsignerseam: Buffer;
  readonly seamAttributes: Buffer;
  readonly tdAttributes: Buffer;
  readonly xfam: Buffer;
  readonly mrtd: Buffer;
  readonly mrconfigid: Buffer;
  readonly mrowner: Buffer;
  readonly mrownerconfig: Buffer;
  readonly rtmr: readonly [Buffer, Buffer, Buffer, Buffer];
  readonly reportData: Buffer;
  /** TD 1.5 only. */
  readonly teeTcbSvn2?: Buffer;
  readonly mrservicetd?: Buffer;
}

export interface QeReportCertification {
  readonly qeReport: SgxReportBody;
  readonly qeReportSignature: Buffer;
  readonly qeAuthData: Buffer;
  /** Certification data type 5: the PCK certificate chain, PEM, leaf first. */
  readonly pckChainPem: string;
}

export interface Quote {
  readonly version: 3 | 4 | 5;
  readonly tee: "sgx" | "tdx";
  readonly qeSvn: number;
  readonly pceSvn: number;
  readonly qeVendorId: Buffer;
  readonly userData: Buffer;
  readonly sgx?: SgxReportBody;
  readonly td?: TdReportBody;
  /** What the attestation key signed: header and body (and for v5 the body descriptor). */
  readonly signed: Buffer;
  /** ECDSA P-256 r ‖ s. */
  readonly signature: Buffer;
  /** Raw P-256 public key x ‖ y. */
  readonly attestationKey: Buffer;
  readonly certification: QeReportCertification;
}

class Reader {
  readonly #b: Buffer;
  #at: number;
  readonly #end: number;
  constructor(b: Buffer, at = 0, end = b.length) {
    this.#b = b;
    this.#at = at;
    this.#end = end;
  }
  get offset(): number {
    return this.#at;
  }
  take(n: number, what: string): Buffer {
    if (n < 0 || this.#at + n > this.#end) {
      throw new DcapAbiError(`${what} needs ${n} bytes at offset ${this.#at}, only ${this.#end - this.#at} remain`);
    }
    const out = this.#b.subarray(this.#at, this.#at + n);
    this.#at += n;
    return Buffer.from(out);
  }
  u16(what: string): number {
    return this.take(2, what).readUInt16LE(0);
  }
  u32(what: string): number {
    return this.take(4, what).readUInt32LE(0);
  }
}

export function parseSgxReport(raw: Buffer): SgxReportBody {
  if (raw.length !== SGX_REPORT_SIZE) throw new DcapAbiError(`an SGX report body is ${SGX_REPORT_SIZE} bytes`);
  return {
    cpusvn: raw.subarray(0, 16),
    miscselect: raw.readUInt32LE(16),
    attributes: raw.subarray(48, 64),
    mrenclave: raw.subarray(64, 96),
    mrsigner: raw.subarray(128, 160),
    configid: raw.subarray(192, 256),
    isvprodid: raw.readUInt16LE(256),
    isvsvn: raw.readUInt16LE(258),
    configsvn: raw.readUInt16LE(260),
    reportData: raw.subarray(320, 384),
    raw,
  };
}

function parseTdReport(raw: Buffer): TdReportBody {
  const s = (at: number, n: number) => raw.subarray(at, at + n);
  return {
    teeTcbSvn: s(0, 16),
    mrseam: s(16, 48),
    mrsignerseam: s(64, 48),
    seamAttributes: s(112, 8),
    tdAttributes: s(120, 8),
    xfam: s(128, 8),
    mrtd: s(136, 48),
    mrconfigid: s(184, 48),
    mrowner: s(232, 48),
    mrownerconfig: s(280, 48),
    rtmr: [s(328, 48), s(376, 48), s(424, 48), s(472, 48)],
    reportData: s(520, 64),
    ...(raw.length === TD15_REPORT_SIZE ? { teeTcbSvn2: s(584, 16), mrservicetd: s(600, 48) } : {}),
  };
}

export function parseQuote(bytes: Uint8Array): Quote {
  const b = Buffer.from(bytes);
  const r = new Reader(b);
  const version = r.u16("version");
  if (version !== 3 && version !== 4 && version !== 5)
    throw new DcapAbiError(`quote version ${version} is not supported (3, 4 or 5)`);
  const attKeyType = r.u16("attestation key type");
  if (attKeyType !== ATT_KEY_ECDSA_P256)
    throw new DcapAbiError(`attestation key type ${attKeyType} is not ECDSA P-256`);
  const teeType = r.u32("TEE type");
  const qeSvn = r.u16("QE SVN");
  const pceSvn = r.u16("PCE SVN");
  const qeVendorId = r.take(16, "QE vendor id");
  const userData = r.take(20, "user data");
  if (qeVendorId.toString("hex") !== INTEL_QE_VENDOR_ID)
    throw new DcapAbiError(`QE vendor ${qeVendorId.toString("hex")} is not Intel's`);
  let tee: "sgx" | "tdx";
  if (version === 3) {
    if (teeType !== TEE_SGX) throw new DcapAbiError("a version 3 quote is an SGX quote");
    tee = "sgx";
  } else if (teeType === TEE_SGX) tee = "sgx";
  else if (teeType === TEE_TDX) tee = "tdx";
  else throw new DcapAbiError(`TEE type 0x${teeType.toString(16)} is neither SGX (0) nor TDX (0x81)`);

  let bodySize: number;
  if (version === 5) {
    const bodyType = r.u16("body type");
    bodySize = r.u32("body size");
    const expected =
      bodyType === 1 ? SGX_REPORT_SIZE : bodyType === 2 ? TD10_REPORT_SIZE : bodyType === 3 ? TD15_REPORT_SIZE : -1;
    if (expected < 0) throw new DcapAbiError(`body type ${bodyType} is not SGX (1), TD 1.0 (2) or TD 1.5 (3)`);
    if (bodySize !== expected)
      throw new DcapAbiError(`body type ${bodyType} is ${expected} bytes, the quote says ${bodySize}`);
    if ((bodyType === 1) !== (tee === "sgx"))
      throw new DcapAbiError(`body type ${bodyType} does not fit a ${tee} quote`);
  } else {
    bodySize = tee === "sgx" ? SGX_REPORT_SIZE : TD10_REPORT_SIZE;
  }
  const body = r.take(bodySize, "report body");
  const signed = b.subarray(0, r.offset);
  const sigDataLength = r.u32("signature data length");
  const sigEnd = r.offset + sigDataLength;
  if (sigEnd > b.length) throw new DcapAbiError(`signature data of ${sigDataLength} bytes runs past the quote`);
  for (let i = sigEnd; i < b.length; i++) {
    if (b[i] !== 0) throw new DcapAbiError(`byte ${i} after the quote is not zero padding`);
  }
  const s = new Reader(b, r.offset, sigEnd);
  const signature = s.take(64, "quote signature");
  const attestationKey = s.take(64, "attestation key");
  let certification: QeReportCertification;
  if (version === 3) {
    certification = qeReportCertification(s, "v3 signature data");
  } else {
    const type = s.u16("certification data type");
    const size = s.u32("certification data size");
    if (type !== 6) throw new DcapAbiError(`certification data type ${type} is not 6 (QE report certification data)`);
    const inner = new Reader(b, s.offset, s.offset + size);
    s.take(size, "certification data");
    certification = qeReportCertification(inner, "QE report certification data");
  }
  return {
    version,
    tee,
    qeSvn,
    pceSvn,
    qeVendorId,
    userData,
    ...(tee === "sgx" ? { sgx: parseSgxReport(body) } : { td: parseTdReport(body) }),
    signed: Buffer.from(signed),
    signature,
    attestationKey,
    certification,
  };
}

function qeReportCertification(r: Reader, where: string): QeReportCertification {
  const qeReport = parseSgxReport(r.take(SGX_REPORT_SIZE, `QE report in ${where}`));
  const qeReportSignature = r.take(64, "QE report signature");
  const authSize = r.u16("QE authentication data size");
  const qeAuthData = r.take(authSize, "QE authentication data");
  const type = r.u16("certification data type");
  const size = r.u32("certification data size");
  if (type !== 5) throw new DcapAbiError(`certification data type ${type} is not 5 (PCK certificate chain)`);
  const chain = r.take(size, "PCK certificate chain");
  const pckChainPem = chain.toString("latin1").replace(/\0+$/, "");
  return { qeReport, qeReportSignature, qeAuthData, pckChainPem };
}
