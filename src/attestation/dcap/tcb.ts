/**
 * TCB evaluation with Intel's QVL rules: the platform's TCB level from the PCK certificate
 * (and, for TDX, the TD report's TEE_TCB_SVN), the QE's from its identity, the TDX module's from
 * its identity, then one status merged from them.
 */
import type { TcbStatus } from "../verdict.ts";
import { VerificationError } from "../verdict.ts";
import type { SgxReportBody, TdReportBody } from "./abi.ts";
import type { QeIdentity, TcbInfo } from "./collateral.ts";
import type { PckExtension } from "./pck.ts";

export interface TcbResult {
  readonly status: TcbStatus;
  readonly advisories: readonly string[];
  readonly tcbDate: string;
}

const STATUSES = new Set<string>([
  "UpToDate",
  "SWHardeningNeeded",
  "ConfigurationNeeded",
  "ConfigurationAndSWHardeningNeeded",
  "OutOfDate",
  "OutOfDateConfigurationNeeded",
  "Revoked",
]);

function asStatus(s: string): TcbStatus {
  if (!STATUSES.has(s)) throw new VerificationError("collateral", `unknown TCB status ${s}`);
  return s as TcbStatus;
}

/** The first TCB level (they are ordered newest first) that the platform reaches. */
export function platformTcb(tcbInfo: TcbInfo, pck: PckExtension, td?: TdReportBody): TcbResult {
  const moduleVersion = td ? td.teeTcbSvn[1]! : 0;
  for (const level of tcbInfo.tcbLevels) {
    const sgx = level.tcb.sgxtcbcomponents?.map((c) => c.svn) ?? v2Components(level.tcb);
    if (!sgx || level.tcb.pcesvn === undefined) continue;
    if (!sgx.every((svn, i) => pck.components[i]! >= svn) || pck.pcesvn < level.tcb.pcesvn) continue;
    if (td) {
      const tdx = level.tcb.tdxtcbcomponents?.map((c) => c.svn);
      if (!tdx) throw new VerificationError("collateral", "the TDX TCB info has a level without tdxtcbcomponents");
      // With a TDX module identity (TEE_TCB_SVN[1] > 0), bytes 0 and 1 are the module's SVN and
      // version, judged by the module identity instead.
      const from = moduleVersion > 0 ? 2 : 0;
      if (!tdx.every((svn, i) => i < from || td.teeTcbSvn[i]! >= svn)) continue;
    }
    return { status: asStatus(level.tcbStatus), advisories: level.advisoryIDs ?? [], tcbDate: level.tcbDate };
  }
  throw new VerificationError(
    "tcb",
    `no TCB level of the TCB info matches the platform (Intel's QVL: TCB_NOT_SUPPORTED): ${shortfall(tcbInfo, pck, td)}`,
  );
}

/** What keeps the platform below the lowest TCB level, for the refusal's message. */
function shortfall(tcbInfo: TcbInfo, pck: PckExtension, td?: TdReportBody): string {
  const level = tcbInfo.tcbLevels[tcbInfo.tcbLevels.length - 1]!;
  const sgx = level.tcb.sgxtcbcomponents?.map((c) => c.svn) ?? v2Components(level.tcb) ?? [];
  const short: string[] = [];
  sgx.forEach((svn, i) => {
    if (pck.components[i]! < svn) short.push(`SGX TCB component ${i + 1} is ${pck.components[i]}, needs ${svn}`);
  });
  if (level.tcb.pcesvn !== undefined && pck.pcesvn < level.tcb.pcesvn)
    short.push(`PCESVN is ${pck.pcesvn}, needs ${level.tcb.pcesvn}`);
  if (td) {
    const from = td.teeTcbSvn[1]! > 0 ? 2 : 0;
    level.tcb.tdxtcbcomponents?.forEach((c, i) => {
      if (i >= from && td.teeTcbSvn[i]! < c.svn) short.push(`TEE_TCB_SVN[${i}] is ${td.teeTcbSvn[i]}, needs ${c.svn}`);
    });
  }
  return `against the lowest level (${level.tcbDate}, ${level.tcbStatus}) ${short.length ? short.join("; ") : "nothing falls short"}`;
}

function v2Components(tcb: Record<string, unknown>): number[] | undefined {
  const out: number[] = [];
  for (let i = 1; i <= 16; i++) {
    const v = tcb[`sgxtcbcomp${String(i).padStart(2, "0")}svn`];
    if (typeof v !== "number") return undefined;
    out.push(v);
  }
  return out;
}

const masked = (value: Buffer, maskHex: string) => {
  const mask = Buffer.from(maskHex, "hex");
  if (mask.length !== value.length) throw new VerificationError("collateral", "an identity mask has the wrong length");
  return Buffer.from(value.map((b, i) => b & mask[i]!));
};

/** The QE's report against its identity: who signed it, what it is, and its TCB level. */
export function qeTcb(identity: QeIdentity, qe: SgxReportBody): TcbResult {
  if (qe.mrsigner.toString("hex").toUpperCase() !== identity.mrsigner.toUpperCase()) {
    throw new VerificationError("QE identity", "the QE's MRSIGNER is not Intel's");
  }
  if (qe.isvprodid !== identity.isvprodid)
    throw new VerificationError("QE identity", `QE ISVPRODID ${qe.isvprodid} is not ${identity.isvprodid}`);
  // MISCSELECT is a 32-bit number; the identity writes it (and its mask) as big-endian hex.
  const mask = Number.parseInt(identity.miscselectMask, 16);
  if ((qe.miscselect & mask) >>> 0 !== (Number.parseInt(identity.miscselect, 16) & mask) >>> 0) {
    throw new VerificationError("QE identity", "the QE's MISCSELECT does not match");
  }
  if (
    !masked(qe.attributes, identity.attributesMask).equals(
      masked(Buffer.from(identity.attributes, "hex"), identity.attributesMask),
    )
  ) {
    throw new VerificationError("QE identity", "the QE's ATTRIBUTES do not match");
  }
  const level = identity.tcbLevels.find((l) => qe.isvsvn >= l.tcb.isvsvn);
  if (!level) throw new VerificationError("QE identity", `no QE TCB level for ISVSVN ${qe.isvsvn}`);
  return { status: asStatus(level.tcbStatus), advisories: level.advisoryIDs ?? [], tcbDate: level.tcbDate };
}

/** The TDX module's identity (TDX_<version>) and TCB level, when TEE_TCB_SVN[1] names one. */
export function moduleTcb(tcbInfo: TcbInfo, td: TdReportBody): TcbResult | undefined {
  const version = td.teeTcbSvn[1]!;
  if (version === 0) {
    const module = tcbInfo.tdxModule;
    if (module && td.mrsignerseam.toString("hex").toUpperCase() !== module.mrsigner.toUpperCase()) {
      throw new VerificationError("TDX module", "MRSIGNERSEAM is not the TDX module's signer");
    }
    return undefined;
  }
  const id = `TDX_${version.toString(16).padStart(2, "0").toUpperCase()}`;
  const identity = tcbInfo.tdxModuleIdentities?.find((m) => m.id.toUpperCase() === id);
  if (!identity) throw new VerificationError("TDX module", `the TCB info has no identity ${id} for the TDX module`);
  if (td.mrsignerseam.toString("hex").toUpperCase() !== identity.mrsigner.toUpperCase()) {
    throw new VerificationError("TDX module", `MRSIGNERSEAM is not the signer of ${id}`);
  }
  if (
    !masked(td.seamAttributes, identity.attributesMask).equals(
      masked(Buffer.from(identity.attributes, "hex"), identity.attributesMask),
    )
  ) {
    throw new VerificationError("TDX module", `SEAM attributes do not match ${id}`);
  }
  const isvsvn = td.teeTcbSvn[0]!;
  const level = identity.tcbLevels.find((l) => isvsvn >= l.tcb.isvsvn);
  if (!level) throw new VerificationError("TDX module", `no ${id} TCB level for SVN ${isvsvn}`);
  return { status: asStatus(level.tcbStatus), advisories: level.advisoryIDs ?? [], tcbDate: level.tcbDate };
}

/**
 * Merge a component's status into the platform's (QVL's convergence): an out-of-date QE or TDX
 * module makes the whole out of date, keeping "configuration needed"; a revoked one revokes it.
 */
export function converge(platform: TcbStatus, component: TcbStatus): TcbStatus {
  if (component === "Revoked") return "Revoked";
  if (component === "OutOfDate" || component === "OutOfDateConfigurationNeeded") {
    if (platform === "UpToDate" || platform === "SWHardeningNeeded") return "OutOfDate";
    if (platform === "ConfigurationNeeded" || platform === "ConfigurationAndSWHardeningNeeded")
      return "OutOfDateConfigurationNeeded";
  }
  return platform;
}
