/**
 * Intel DCAP verification of SGX and TDX quotes: the PCK certificate chain to the pinned Intel
 * SGX Root CA and its CRLs, the QE report signed by the PCK key and bound to the attestation
 * key, the quote signed by the attestation key, the collateral's FMSPC, PCE-ID and TEE type,
 * and the TCB status merged from the platform, the QE and (for TDX) the TDX module.
 */
import { createHash, createPublicKey, type KeyObject, verify, type X509Certificate } from "node:crypto";
import { type PendingSignature, settledNow } from "../pending-signature.ts";
import { type Verdict, VerificationError } from "../verdict.ts";
import { DcapAbiError, parseQuote, type Quote } from "./abi.ts";
import {
  type Collateral,
  ROOT,
  splitPem,
  type VerifiedCollateral,
  verifyCollateral,
  verifyIntelChain,
} from "./collateral.ts";
import { type PckExtension, pckExtension } from "./pck.ts";
import { converge, moduleTcb, platformTcb, qeTcb, type TcbResult } from "./tcb.ts";

export interface DcapVerified {
  readonly quote: Quote;
  readonly status: Verdict["status"];
  readonly advisories: readonly string[];
  readonly platform: TcbResult;
  readonly qe: TcbResult;
  readonly module: TcbResult | undefined;
  readonly pck: PckExtension;
  readonly expires: Date;
}

interface PckChain {
  readonly pck: X509Certificate;
  readonly pckKey: KeyObject;
  readonly ca: X509Certificate;
  readonly extension: PckExtension;
  readonly from: Date;
  readonly until: Date;
}

const chains = new Map<string, PckChain>();
const verifiedQeReports = new Set<string>();
const attestationKeys = new Map<string, KeyObject>();

/** The attestation key (raw x ‖ y) as a KeyObject, remembered: a QE signs many quotes with it. */
function attestationKeyOf(raw: Buffer): KeyObject {
  const id = raw.toString("base64");
  let key = attestationKeys.get(id);
  if (!key) {
    key = createPublicKey({
      key: {
        kty: "EC",
        crv: "P-256",
        x: raw.subarray(0, 32).toString("base64url"),
        y: raw.subarray(32).toString("base64url"),
      },
      format: "jwk",
    });
    if (attestationKeys.size > 4096) attestationKeys.clear();
    attestationKeys.set(id, key);
  }
  return key;
}
const serialOf = (c: X509Certificate) => c.serialNumber.toLowerCase().replace(/^0+(?=.)/, "");

function pckChain(pem: string, anchor: X509Certificate): PckChain {
  // Keyed by the PEM text itself: equal text, equal chain (the Map compares strings by value).
  const cached = anchor === ROOT ? chains.get(pem) : undefined;
  if (cached) return cached;
  const certs = splitPem(pem);
  const window = verifyIntelChain(certs, "PCK certificate", anchor);
  const pck = certs[0]!;
  const chain: PckChain = { pck, pckKey: pck.publicKey, ca: certs[1]!, extension: pckExtension(pck.raw), ...window };
  if (chains.size > 4096) chains.clear();
  if (anchor === ROOT) chains.set(pem, chain);
  return chain;
}

export interface DcapVerifyOptions {
  /** When to check validity; default now. */
  readonly at?: Date;
  /** Tests only: a root of their own (named as fake) instead of the pinned Intel SGX Root CA. */
  readonly anchor?: X509Certificate;
}

export function verifyDcapQuote(
  evidence: Uint8Array,
  collateral: Collateral,
  options: DcapVerifyOptions = {},
): DcapVerified {
  return settledNow(prepareDcapQuote(evidence, collateral, options));
}

/**
 * verifyDcapQuote up to the quote's own signature, which the caller checks where it likes (see
 * pending-signature.ts); the TCB levels are evaluated after it. (The QE report's signature is
 * checked here: a QE's report recurs, and a checked one is remembered.)
 */
export function prepareDcapQuote(
  evidence: Uint8Array,
  collateral: Collateral,
  options: DcapVerifyOptions = {},
): PendingSignature<DcapVerified> {
  const at = options.at ?? new Date();
  const anchor = options.anchor ?? ROOT;
  let quote: Quote;
  try {
    quote = parseQuote(evidence);
  } catch (error) {
    if (error instanceof DcapAbiError) throw new VerificationError("format", error.message);
    throw error;
  }
  const coll: VerifiedCollateral = verifyCollateral(collateral, anchor);
  if (at < coll.from || at > coll.until) {
    throw new VerificationError(
      "expired collateral",
      `the collateral is valid from ${coll.from.toISOString()} to ${coll.until.toISOString()}, not at ${at.toISOString()}`,
    );
  }
  const chain = pckChain(quote.certification.pckChainPem, anchor);
  if (at < chain.from || at > chain.until) {
    throw new VerificationError(
      "expired",
      `the PCK chain is valid from ${chain.from.toISOString()} to ${chain.until.toISOString()}, not at ${at.toISOString()}`,
    );
  }
  // The collateral's CRL must be the one of the CA that issued this PCK certificate.
  if (chain.ca.fingerprint256 !== coll.pckCa.fingerprint256) {
    throw new VerificationError(
      "CRL",
      "the collateral's PCK CRL is from another CA than the one that issued the PCK certificate",
    );
  }
  if (coll.pckRevoked.has(serialOf(chain.pck)))
    throw new VerificationError("Revoked", "the PCK certificate is revoked");
  if (coll.rootRevoked.has(serialOf(chain.ca))) throw new VerificationError("Revoked", "the PCK issuing CA is revoked");

  const tcbInfo = coll.tcbInfo;
  if (tcbInfo.fmspc.toUpperCase() !== chain.extension.fmspc) {
    throw new VerificationError(
      "collateral",
      `collateral for FMSPC ${tcbInfo.fmspc}, the platform is ${chain.extension.fmspc}`,
    );
  }
  if (tcbInfo.pceId.toUpperCase() !== chain.extension.pceId) {
    throw new VerificationError(
      "collateral",
      `collateral for PCE-ID ${tcbInfo.pceId}, the platform's is ${chain.extension.pceId}`,
    );
  }
  const tcbTee = tcbInfo.id ?? "SGX";
  if ((quote.tee === "sgx") !== (tcbTee === "SGX"))
    throw new VerificationError("collateral", `${tcbTee} collateral for a ${quote.tee} quote`);
  if (quote.tee === "tdx" && tcbInfo.version !== 3)
    throw new VerificationError("collateral", "TDX needs TCB info version 3");
  const wantQe = quote.tee === "sgx" ? "QE" : "TD_QE";
  if (coll.qeIdentity.id !== wantQe)
    throw new VerificationError(
      "collateral",
      `a ${coll.qeIdentity.id} identity for a ${quote.tee} quote (needs ${wantQe})`,
    );

  const cert = quote.certification;
  // A QE certifies one attestation key for many quotes: its report, signature and auth data
  // recur byte for byte, so a successful check is remembered (same bytes, same answer).
  const qeKey = `${chain.pck.fingerprint256}|${cert.qeReport.raw.toString("base64")}|${cert.qeReportSignature.toString("base64")}|${cert.qeAuthData.toString("base64")}|${quote.attestationKey.toString("base64")}`;
  if (!verifiedQeReports.has(qeKey)) {
    if (
      !verify("sha256", cert.qeReport.raw, { key: chain.pckKey, dsaEncoding: "ieee-p1363" }, cert.qeReportSignature)
    ) {
      throw new VerificationError("signature", "the QE report is not signed by the PCK key");
    }
    const binding = createHash("sha256").update(quote.attestationKey).update(cert.qeAuthData).digest();
    if (
      !cert.qeReport.reportData.subarray(0, 32).equals(binding) ||
      cert.qeReport.reportData.subarray(32).some((b) => b !== 0)
    ) {
      throw new VerificationError("signature", "the QE report does not vouch for the attestation key");
    }
    if (verifiedQeReports.size > 4096) verifiedQeReports.clear();
    verifiedQeReports.add(qeKey);
  }
  return {
    check: {
      algorithm: "sha256",
      data: quote.signed,
      key: attestationKeyOf(quote.attestationKey),
      signature: quote.signature,
      dsaEncoding: "ieee-p1363",
    },
    failure: "the quote is not signed by the attestation key",
    afterwards: () => {
      const qe = qeTcb(coll.qeIdentity, cert.qeReport);
      const platform = platformTcb(tcbInfo, chain.extension, quote.td);
      const module = quote.td ? moduleTcb(tcbInfo, quote.td) : undefined;
      let status = converge(platform.status, qe.status);
      if (module) status = converge(status, module.status);
      if (status === "Revoked") throw new VerificationError("Revoked", "the platform's TCB is revoked");
      const advisories = [...new Set([...platform.advisories, ...qe.advisories, ...(module?.advisories ?? [])])].sort();
      const expires = new Date(Math.min(coll.until.getTime(), chain.until.getTime()));
      return { quote, status, advisories, platform, qe, module, pck: chain.extension, expires };
    },
  };
}

export function dcapVerdict(v: DcapVerified): Verdict {
  const q = v.quote;
  const hex = (b: Buffer) => b.toString("hex");
  const common = {
    status: v.status,
    advisories: v.advisories,
    simulated: false,
    collateral_expires: v.expires.toISOString(),
  };
  const tcb = {
    fmspc: v.pck.fmspc,
    platform_status: v.platform.status,
    qe_status: v.qe.status,
    tcb_date: v.platform.tcbDate,
    quote_version: q.version,
  };
  if (q.sgx) {
    return {
      tee: "sgx",
      ...common,
      debug: (q.sgx.attributes[0]! & 0x02) !== 0,
      measurements: {
        mrenclave: hex(q.sgx.mrenclave),
        mrsigner: hex(q.sgx.mrsigner),
        isvprodid: q.sgx.isvprodid,
        isvsvn: q.sgx.isvsvn,
      },
      report_data: hex(q.sgx.reportData),
      details: {
        ...tcb,
        mrconfigid: hex(q.sgx.configid),
        configsvn: q.sgx.configsvn,
        attributes: hex(q.sgx.attributes),
      },
    };
  }
  const td = q.td!;
  return {
    tee: "tdx",
    ...common,
    debug: (td.tdAttributes[0]! & 0x01) !== 0,
    measurements: {
      mrtd: hex(td.mrtd),
      rtmr0: hex(td.rtmr[0]),
      rtmr1: hex(td.rtmr[1]),
      rtmr2: hex(td.rtmr[2]),
      rtmr3: hex(td.rtmr[3]),
      mrconfigid: hex(td.mrconfigid),
      mrowner: hex(td.mrowner),
      mrownerconfig: hex(td.mrownerconfig),
    },
    report_data: hex(td.reportData),
    details: {
      ...tcb,
      module_status: v.module?.status ?? null,
      tee_tcb_svn: hex(td.teeTcbSvn),
      mrseam: hex(td.mrseam),
      td_attributes: hex(td.tdAttributes),
      // TD 1.5 (quote v5, body type 3): the TDX module's SVN now (it may have been updated under
      // the running TD since TEE_TCB_SVN was taken at launch), and the service TD's measurement.
      ...(td.teeTcbSvn2 && td.mrservicetd
        ? { tee_tcb_svn2: hex(td.teeTcbSvn2), mrservicetd: hex(td.mrservicetd) }
        : {}),
    },
  };
}
