/**
 * SEV-SNP attestation reports (AMD SEV-SNP ABI specification, ATTESTATION_REPORT): parsing
 * only, nothing trusted. Versions 2, 3 and 5; 1184 bytes, trailing padding tolerated.
 */

import type { SnpProduct } from "./trust.ts";

export const REPORT_SIZE = 0x4a0;
/** The signature covers bytes [0, SIGNED_END). */
export const SIGNED_END = 0x2a0;
const SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1;

export class SnpAbiError extends Error {}

/** TCB_VERSION: the security version of each firmware component. */
export interface TcbVersion {
  readonly raw: string;
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  /** Turin and later only. */
  readonly fmc?: number;
}

export interface SnpReport {
  readonly version: number;
  readonly guestSvn: number;
  readonly policy: bigint;
  readonly familyId: Buffer;
  readonly imageId: Buffer;
  readonly vmpl: number;
  readonly signatureAlgo: number;
  readonly currentTcb: Buffer;
  readonly platformInfo: bigint;
  readonly authorKeyEn: boolean;
  readonly maskChipKey: boolean;
  /** 0: VCEK, 1: VLEK, 7: none. */
  readonly signingKey: number;
  readonly reportData: Buffer;
  readonly measurement: Buffer;
  readonly hostData: Buffer;
  readonly idKeyDigest: Buffer;
  readonly authorKeyDigest: Buffer;
  readonly reportId: Buffer;
  readonly reportIdMa: Buffer;
  readonly reportedTcb: Buffer;
  /** Version 3 and later: the CPUID family, model and stepping of the chip. */
  readonly cpuid?: { readonly family: number; readonly model: number; readonly stepping: number };
  readonly chipId: Buffer;
  readonly committedTcb: Buffer;
  readonly launchTcb: Buffer;
  /** R and S, big-endian, 48 bytes each. */
  readonly signatureR: Buffer;
  readonly signatureS: Buffer;
  /** The bytes the signature covers. */
  readonly signed: Buffer;
}

/** Guest policy bits (ABI §4.3). */
export const POLICY = {
  smt: 1n << 16n,
  reserved1: 1n << 17n,
  migrateMa: 1n << 18n,
  debug: 1n << 19n,
  singleSocket: 1n << 20n,
} as const;

export function parseReport(bytes: Uint8Array): SnpReport {
  if (bytes.length < REPORT_SIZE)
    throw new SnpAbiError(`an SEV-SNP report is ${REPORT_SIZE} bytes, got ${bytes.length}`);
  const b = Buffer.from(bytes.subarray(0, REPORT_SIZE));
  for (let i = REPORT_SIZE; i < bytes.length; i++) {
    if (bytes[i] !== 0) throw new SnpAbiError(`byte ${i} after the ${REPORT_SIZE}-byte report is not zero padding`);
  }
  const version = b.readUInt32LE(0);
  if (version !== 2 && version !== 3 && version !== 5)
    throw new SnpAbiError(`report version ${version} is not supported (2, 3 or 5)`);
  const signatureAlgo = b.readUInt32LE(0x34);
  if (signatureAlgo !== SIGNATURE_ALGO_ECDSA_P384_SHA384) {
    throw new SnpAbiError(`signature algorithm ${signatureAlgo} is not ECDSA P-384 with SHA-384`);
  }
  const keyInfo = b.readUInt32LE(0x48);
  if (keyInfo >>> 5 !== 0) throw new SnpAbiError(`KEY_INFO 0x${keyInfo.toString(16)} has reserved bits (31:5) set`);
  const slice = (at: number, n: number) => Buffer.from(b.subarray(at, at + n));
  const component = (at: number) => {
    // R and S are little-endian in 72 bytes; the 24 high bytes must be zero.
    const le = b.subarray(at, at + 72);
    if (le.subarray(48).some((x) => x !== 0))
      throw new SnpAbiError(`the unused high bytes of signature component at 0x${at.toString(16)} are not zero`);
    return Buffer.from(le.subarray(0, 48)).reverse();
  };
  // The rest of the 512-byte signature field is reserved and must be zero.
  if (b.subarray(0x2a0 + 144, REPORT_SIZE).some((x) => x !== 0))
    throw new SnpAbiError("the reserved bytes after the signature are not zero");
  return {
    version,
    guestSvn: b.readUInt32LE(0x04),
    policy: b.readBigUInt64LE(0x08),
    familyId: slice(0x10, 16),
    imageId: slice(0x20, 16),
    vmpl: b.readUInt32LE(0x30),
    signatureAlgo,
    currentTcb: slice(0x38, 8),
    platformInfo: b.readBigUInt64LE(0x40),
    authorKeyEn: (keyInfo & 1) === 1,
    maskChipKey: (keyInfo & 2) === 2,
    signingKey: (keyInfo >> 2) & 7,
    reportData: slice(0x50, 64),
    measurement: slice(0x90, 48),
    hostData: slice(0xc0, 32),
    idKeyDigest: slice(0xe0, 48),
    authorKeyDigest: slice(0x110, 48),
    reportId: slice(0x140, 32),
    reportIdMa: slice(0x160, 32),
    reportedTcb: slice(0x180, 8),
    ...(version >= 3 ? { cpuid: { family: b[0x188]!, model: b[0x189]!, stepping: b[0x18a]! } } : {}),
    chipId: slice(0x1a0, 64),
    committedTcb: slice(0x1e0, 8),
    launchTcb: slice(0x1f0, 8),
    signatureR: component(0x2a0),
    signatureS: component(0x2e8),
    signed: slice(0, SIGNED_END),
  };
}

/**
 * Decode a TCB_VERSION by product (SEV-SNP ABI, TCB_VERSION): Milan and Genoa write
 * [BOOT_LOADER, TEE, reserved ×4, SNP, MICROCODE]; Turin [FMC, BOOT_LOADER, TEE, SNP,
 * reserved ×3, MICROCODE]. `reserved` is where the reserved bytes are.
 */
export function tcbVersion(raw: Buffer, product: SnpProduct): TcbVersion & { readonly reserved: readonly number[] } {
  const hex = raw.toString("hex");
  return product === "Turin"
    ? {
        raw: hex,
        fmc: raw[0]!,
        bootloader: raw[1]!,
        tee: raw[2]!,
        snp: raw[3]!,
        microcode: raw[7]!,
        reserved: [4, 5, 6],
      }
    : { raw: hex, bootloader: raw[0]!, tee: raw[1]!, snp: raw[6]!, microcode: raw[7]!, reserved: [2, 3, 4, 5] };
}

/**
 * The product a version 3+ report names by its CPUID family and model (CPUID_FAM_ID, the
 * extended and base family added; CPUID_MOD_ID, extended and base model): family 19h models
 * 00h–0Fh Milan, 10h–1Fh and A0h–AFh Genoa (and the Zen 4 parts under Genoa's root), family 1Ah
 * models 00h–1Fh Turin. Undefined when the fields are zero (version 2, or firmware that left them
 * out); "unknown" for any other family or model.
 */
export function productOfCpuid(cpuid: SnpReport["cpuid"]): SnpProduct | "unknown" | undefined {
  if (!cpuid || (cpuid.family === 0 && cpuid.model === 0 && cpuid.stepping === 0)) return undefined;
  const { family, model } = cpuid;
  if (family === 0x19 && model <= 0x0f) return "Milan";
  if (family === 0x19 && ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf))) return "Genoa";
  if (family === 0x1a && model <= 0x1f) return "Turin";
  return "unknown";
}
