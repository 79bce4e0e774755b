/**
 * A FAKE AMD SEV-SNP world for tests: an ARK, ASK and ASVK of our own per product (each named
 * FAKE, P-384 ECDSA instead of AMD's RSA-PSS), VCEKs and VLEKs issued by them with AMD's
 * extensions as a test asks, and real reports from ../shared/testvectors edited and re-signed by
 * such a key — so that tests can produce what no real chip gave us: a masked CHIP_ID, a report
 * whose CPUID names another product than its key, a VLEK with a chip id. Verify with
 * `roots: fake.roots`; AMD's pinned roots refuse all of it.
 */
import { createPrivateKey, type KeyObject, sign, webcrypto, X509Certificate } from "node:crypto";
import { SIGNED_END } from "../../src/attestation/snp/abi.ts";
import type { ProductRoots, SnpProduct } from "../../src/attestation/snp/trust.ts";
import { x509 } from "./x509.ts";

const alg = { name: "ECDSA", hash: "SHA-384" } as const;
type Issued = { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair };

/** AMD's extensions of a VCEK or VLEK (1.3.6.1.4.1.3704.1.*), each left out when undefined. */
export interface FakeKeyOptions {
  readonly product: SnpProduct;
  readonly type: "VCEK" | "VLEK";
  /** The productName extension's text; default the product's name. */
  readonly productName?: string;
  readonly structVersion?: number;
  /** The hwID extension's value, as AMD writes it: the raw bytes. */
  readonly hwId?: Buffer;
  /** The CSP_ID extension (VLEKs): an IA5String. */
  readonly cspId?: string;
  readonly tcb: {
    readonly fmc?: number;
    readonly bl?: number;
    readonly tee?: number;
    readonly snp?: number;
    readonly ucode?: number;
    /** spl4 … spl7 (1.3.6.1.4.1.3704.1.3.4–7), reserved. */
    readonly reserved?: readonly [number?, number?, number?, number?];
  };
}

export interface FakeSnp {
  readonly roots: Readonly<Record<SnpProduct, ProductRoots>>;
  key(options: FakeKeyOptions): Promise<{ der: Buffer; privateKey: KeyObject }>;
  /** The report's bytes, edited, signed anew by `privateKey` (R and S little-endian). */
  sign(report: Buffer, privateKey: KeyObject, edit?: (report: Buffer) => void): Buffer;
}

const keys = () =>
  webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, [
    "sign",
    "verify",
  ]) as Promise<webcrypto.CryptoKeyPair>;

const der = {
  integer: (n: number) => {
    const bytes = n === 0 ? [0] : [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    if (bytes[0]! & 0x80) bytes.unshift(0);
    return Buffer.from([0x02, bytes.length, ...bytes]);
  },
  ia5: (text: string) => Buffer.concat([Buffer.from([0x16, text.length]), Buffer.from(text, "ascii")]),
};

export async function makeFakeSnp(): Promise<FakeSnp> {
  const notBefore = new Date("2020-01-01T00:00:00Z");
  const notAfter = new Date("2040-01-01T00:00:00Z");
  const ca = [new x509.BasicConstraintsExtension(true, undefined, true)];
  const issue = async (subject: string, issuer: Issued, extensions: x509.Extension[]): Promise<Issued> => {
    const k = await keys();
    const cert = await x509.X509CertificateGenerator.create({
      subject,
      issuer: issuer.cert.subject,
      publicKey: k.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: alg,
      notBefore,
      notAfter,
      extensions,
    });
    return { cert, keys: k };
  };
  const pem = (c: x509.X509Certificate) => c.toString("pem");
  const roots = {} as Record<SnpProduct, ProductRoots>;
  const issuers = {} as Record<SnpProduct, { ask: Issued; asvk: Issued }>;
  for (const product of ["Milan", "Genoa", "Turin"] as const) {
    const arkKeys = await keys();
    const ark: Issued = {
      keys: arkKeys,
      cert: await x509.X509CertificateGenerator.createSelfSigned({
        name: `CN=FAKE ARK-${product} (test)`,
        keys: arkKeys,
        signingAlgorithm: alg,
        notBefore,
        notAfter,
        extensions: ca,
      }),
    };
    const ask = await issue(`CN=FAKE SEV-${product} (test)`, ark, ca);
    const asvk = await issue(`CN=FAKE SEV-VLEK-${product} (test)`, ark, ca);
    issuers[product] = { ask, asvk };
    roots[product] = {
      ark: pem(ark.cert),
      ask: pem(ask.cert),
      asvk: pem(asvk.cert),
      arkFingerprint: new X509Certificate(Buffer.from(ark.cert.rawData)).fingerprint256,
    };
  }

  return {
    roots,
    async key(o) {
      const amd = (suffix: string, value: Buffer) => new x509.Extension(`1.3.6.1.4.1.3704.1.${suffix}`, false, value);
      const spl = (suffix: string, n: number | undefined) =>
        n === undefined ? [] : [amd(`3.${suffix}`, der.integer(n))];
      const reserved = o.tcb.reserved ?? [];
      const extensions = [
        ...(o.structVersion === undefined ? [] : [amd("1", der.integer(o.structVersion))]),
        amd("2", der.ia5(o.productName ?? o.product)),
        ...spl("9", o.tcb.fmc),
        ...spl("1", o.tcb.bl),
        ...spl("2", o.tcb.tee),
        ...spl("4", reserved[0]),
        ...spl("5", reserved[1]),
        ...spl("6", reserved[2]),
        ...spl("7", reserved[3]),
        ...spl("3", o.tcb.snp),
        ...spl("8", o.tcb.ucode),
        ...(o.hwId ? [amd("4", o.hwId)] : []),
        ...(o.cspId === undefined ? [] : [amd("5", der.ia5(o.cspId))]),
      ];
      const issuer = o.type === "VCEK" ? issuers[o.product].ask : issuers[o.product].asvk;
      const key = await issue(`CN=FAKE SEV-${o.type} (test)`, issuer, extensions);
      return {
        der: Buffer.from(key.cert.rawData),
        privateKey: createPrivateKey({
          key: Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key.keys.privateKey)),
          format: "der",
          type: "pkcs8",
        }),
      };
    },
    sign(report, privateKey, edit) {
      const out = Buffer.from(report);
      edit?.(out);
      const rs = sign("sha384", out.subarray(0, SIGNED_END), { key: privateKey, dsaEncoding: "ieee-p1363" });
      out.fill(0, SIGNED_END, SIGNED_END + 144);
      Buffer.from(rs.subarray(0, 48)).reverse().copy(out, SIGNED_END);
      Buffer.from(rs.subarray(48))
        .reverse()
        .copy(out, SIGNED_END + 72);
      return out;
    },
  };
}
