/**
 * What the CAS trusts besides the pinned roots: enrolled LAS keys (simulation) and imported
 * collateral (Intel PCCS collateral per TEE and FMSPC; AMD VCEK and VLEK certificates). Kept in
 * the store sealed under the master key, so that nobody with write access to the database can
 * enrol a LAS or swap collateral; held in memory, so verification never reads the store or the
 * network on the hot path.
 */
import { createHash } from "node:crypto";
import { Collateral, verifyCollateral } from "../attestation/dcap/collateral.ts";
import { checkEndorsementKey } from "../attestation/snp/verify.ts";
import { VerificationError } from "../attestation/verdict.ts";
import type { Envelope } from "./store/envelope.ts";
import type { Store } from "./store/store.ts";

/** Where LAS keys were kept as one list (read still; each key now has an entry of its own under LAS). */
const LAS_KEYS = "las_keys";
/**
 * One meta entry per key, and per AMD certificate (named by its digest): replicas enrolling or
 * importing at once each write their own entry, rather than one overwriting the other's list.
 */
const LAS = "las/";
const DCAP = "collateral/dcap/";
const AMD = "collateral/amd/";

export interface DcapCollateralSummary {
  readonly kind: "dcap";
  readonly tee: "SGX" | "TDX";
  readonly fmspc: string;
  readonly issued: string;
  readonly valid_until: string;
}

export interface AmdKeySummary {
  readonly kind: "amd";
  readonly key_type: "VCEK" | "VLEK";
  readonly product: string;
  readonly chip: string | null;
  readonly valid_until: string;
}

export class CollateralError extends Error {}

export class TrustStore {
  readonly #store: Store;
  readonly #envelope: Envelope;
  readonly #lasKeys = new Set<string>();
  /** Imported PCCS collateral by "TEE/FMSPC". */
  readonly #dcap = new Map<string, Collateral>();
  /** AMD keys (PEM) by chip id (VCEK) or "vlek". */
  readonly #amd = new Map<string, string[]>();

  private constructor(store: Store, envelope: Envelope) {
    this.#store = store;
    this.#envelope = envelope;
  }

  static async load(store: Store, envelope: Envelope): Promise<TrustStore> {
    const trust = new TrustStore(store, envelope);
    await trust.reload();
    return trust;
  }

  /**
   * Read everything again from the store: at start, and when another replica's enrolment or
   * import reaches this one through the audit log (CasService follows it).
   */
  async reload(): Promise<void> {
    const [legacy, las, dcap, amd] = await Promise.all([
      this.#store.readMeta(LAS_KEYS),
      this.#store.listMeta(LAS),
      this.#store.listMeta(DCAP),
      this.#store.listMeta(AMD),
    ]);
    this.#lasKeys.clear();
    this.#dcap.clear();
    this.#amd.clear();
    const envelope = this.#envelope;
    if (legacy)
      for (const key of JSON.parse(envelope.openOwn(LAS_KEYS, legacy).toString("utf8")) as string[])
        this.#lasKeys.add(key);
    for (const { key, value } of las) this.#lasKeys.add(envelope.openOwn(key, value).toString("utf8"));
    for (const { key, value } of dcap) {
      this.#dcap.set(
        key.slice(DCAP.length),
        Collateral.parse(JSON.parse(envelope.openOwn(key, value).toString("utf8"))),
      );
    }
    for (const { key, value } of amd) {
      const pem = envelope.openOwn(key, value).toString("utf8");
      const slot = key.slice(AMD.length).split("/")[0]!;
      const pems = this.#amd.get(slot) ?? [];
      if (!pems.includes(pem)) this.#amd.set(slot, [...pems, pem]);
    }
  }

  lasKeys(): ReadonlySet<string> {
    return this.#lasKeys;
  }

  async enrolLas(key: string): Promise<void> {
    if (!/^[0-9a-f]{64}$/.test(key))
      throw new CollateralError("a LAS key is the 64-hex-digit hash that `cloister las start` prints");
    const label = `${LAS}${key}`;
    await this.#store.writeMeta(label, this.#envelope.sealOwn(label, Buffer.from(key)));
    this.#lasKeys.add(key);
  }

  /**
   * Import PCCS collateral: its signatures must verify (its window may have passed: that is
   * judged at use). Newer collateral replaces older for the same TEE and FMSPC; older never
   * replaces newer, so a TCB recovery cannot be undone by re-importing old collateral.
   */
  async importDcap(collateral: Collateral): Promise<DcapCollateralSummary> {
    let verified: ReturnType<typeof verifyCollateral>;
    try {
      verified = verifyCollateral(collateral);
    } catch (error) {
      if (error instanceof VerificationError)
        throw new CollateralError(`the collateral does not verify: ${error.message}`);
      throw error;
    }
    const tee = verified.tcbInfo.id ?? "SGX";
    const fmspc = verified.tcbInfo.fmspc.toUpperCase();
    const slot = `${tee}/${fmspc}`;
    const current = this.#dcap.get(slot);
    if (current) {
      const currentIssued = Date.parse(verifyCollateral(current).tcbInfo.issueDate);
      if (Date.parse(verified.tcbInfo.issueDate) < currentIssued) {
        throw new CollateralError(
          `older than the ${tee} collateral for FMSPC ${fmspc} already imported (issued ${new Date(currentIssued).toISOString()})`,
        );
      }
    }
    const label = `${DCAP}${slot}`;
    await this.#store.writeMeta(label, this.#envelope.sealOwn(label, Buffer.from(JSON.stringify(collateral))));
    this.#dcap.set(slot, collateral);
    return summary(tee, fmspc, verified);
  }

  dcapFor(tee: "sgx" | "tdx", fmspc: string): Collateral | undefined {
    return this.#dcap.get(`${tee.toUpperCase()}/${fmspc.toUpperCase()}`);
  }

  /** Import a VCEK or VLEK certificate (PEM or DER) after checking its chain to AMD's pinned root. */
  async importAmdKey(certificate: Uint8Array | string): Promise<AmdKeySummary> {
    let info: ReturnType<typeof checkEndorsementKey>;
    try {
      info = checkEndorsementKey(certificate);
    } catch (error) {
      if (error instanceof VerificationError)
        throw new CollateralError(`the certificate does not verify: ${error.message}`);
      throw error;
    }
    const pem = typeof certificate === "string" ? certificate : toPem(Buffer.from(certificate));
    const slot = info.hwId ?? "vlek";
    const existing = this.#amd.get(slot) ?? [];
    if (!existing.includes(pem)) {
      const label = `${AMD}${slot}/${createHash("sha256").update(pem).digest("hex").slice(0, 32)}`;
      await this.#store.writeMeta(label, this.#envelope.sealOwn(label, Buffer.from(pem)));
      this.#amd.set(slot, [...existing, pem]);
    }
    return {
      kind: "amd",
      key_type: info.keyType,
      product: info.product,
      chip: info.hwId,
      valid_until: info.notAfter.toISOString(),
    };
  }

  /**
   * The imported keys that may have signed a report from this chip (its CHIP_ID, hex): the VCEKs
   * of that hwID — the whole CHIP_ID on Milan and Genoa, its first 8 bytes on Turin, whose
   * CHIP_ID is those followed by 56 zero bytes — and every VLEK.
   */
  amdKeysFor(chipId: string): readonly string[] {
    const turin = /^[0-9a-f]{16}0{112}$/.test(chipId) ? (this.#amd.get(chipId.slice(0, 16)) ?? []) : [];
    return [...(this.#amd.get(chipId) ?? []), ...turin, ...(this.#amd.get("vlek") ?? [])];
  }

  list(): (DcapCollateralSummary | AmdKeySummary)[] {
    const out: (DcapCollateralSummary | AmdKeySummary)[] = [];
    for (const [slot, c] of this.#dcap) {
      const [tee, fmspc] = slot.split("/") as ["SGX" | "TDX", string];
      out.push(summary(tee, fmspc, verifyCollateral(c)));
    }
    for (const pems of this.#amd.values())
      for (const pem of pems) {
        const info = checkEndorsementKey(pem);
        out.push({
          kind: "amd",
          key_type: info.keyType,
          product: info.product,
          chip: info.hwId,
          valid_until: info.notAfter.toISOString(),
        });
      }
    return out;
  }
}

function summary(tee: "SGX" | "TDX", fmspc: string, v: ReturnType<typeof verifyCollateral>): DcapCollateralSummary {
  return { kind: "dcap", tee, fmspc, issued: v.tcbInfo.issueDate, valid_until: v.until.toISOString() };
}

function toPem(der: Buffer): string {
  const b64 = der.toString("base64");
  if (b64.length === 0) throw new CollateralError("empty certificate");
  return `-----BEGIN CERTIFICATE-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
}
