/**
 * X.509 CRLs (RFC 5280 §5), read with der.ts: the signed part, the signature, the issuer as
 * DER, the update times and the revoked serial numbers. The signature is checked by OpenSSL
 * through node:crypto; tests compare the reading with @peculiar/x509's.
 */
import { type KeyObject, verify } from "node:crypto";
import { children, DerError, readElement } from "./der.ts";

export interface Crl {
  readonly tbs: Buffer;
  readonly signatureAlgorithm: string;
  readonly signature: Buffer;
  /** The issuer Name, DER: compare with the CA certificate's subject. */
  readonly issuer: Buffer;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** Revoked serial numbers, lowercase hex without leading zeros. */
  readonly revoked: ReadonlySet<string>;
}

export function parseTime(buf: Buffer, e: { tag: number; contentStart: number; end: number }): Date {
  const s = buf.subarray(e.contentStart, e.end).toString("ascii");
  const m =
    e.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
      : e.tag === 0x18
        ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
        : null;
  if (!m) throw new DerError(`bad time ${JSON.stringify(s)}`);
  let year = Number(m[1]);
  if (e.tag === 0x17) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

export const serialHex = (content: Uint8Array): string =>
  Buffer.from(content)
    .toString("hex")
    .replace(/^0+(?=.)/, "");

export function parseCrl(der: Uint8Array): Crl {
  const buf = Buffer.from(der);
  const top = readElement(buf, 0);
  if (top.end !== buf.length) throw new DerError("trailing bytes after the CRL");
  const [tbsE, algE, sigE] = children(buf, top);
  if (!tbsE || !algE || !sigE || sigE.tag !== 0x03) throw new DerError("not a CRL");
  const fields = children(buf, tbsE);
  let i = fields[0]?.tag === 0x02 ? 1 : 0; // optional version
  const sigAlg = fields[i++];
  const issuer = fields[i++];
  const thisUpdate = fields[i++];
  if (!sigAlg || !issuer || !thisUpdate) throw new DerError("CRL fields missing");
  let nextUpdate: Date | undefined;
  if (fields[i] && (fields[i]!.tag === 0x17 || fields[i]!.tag === 0x18)) nextUpdate = parseTime(buf, fields[i++]!);
  const revoked = new Set<string>();
  if (fields[i]?.tag === 0x30) {
    for (const entry of children(buf, fields[i++]!)) {
      const serial = children(buf, entry)[0];
      if (serial?.tag !== 0x02) throw new DerError("bad revoked entry");
      revoked.add(serialHex(buf.subarray(serial.contentStart, serial.end)));
    }
  }
  const algOid = children(buf, algE)[0];
  return {
    tbs: Buffer.from(buf.subarray(tbsE.start, tbsE.end)),
    signatureAlgorithm: algOid ? buf.subarray(algOid.contentStart, algOid.end).toString("hex") : "",
    signature: Buffer.from(buf.subarray(sigE.contentStart + 1, sigE.end)),
    issuer: Buffer.from(buf.subarray(issuer.start, issuer.end)),
    thisUpdate: parseTime(buf, thisUpdate),
    nextUpdate,
    revoked,
  };
}

const ECDSA_SHA256 = "2a8648ce3d040302";

/** Whether `issuerKey` signed the CRL (ECDSA with SHA-256, as Intel's are). */
export function crlSignedBy(crl: Crl, issuerKey: KeyObject): boolean {
  if (crl.signatureAlgorithm !== ECDSA_SHA256) return false;
  return verify("sha256", crl.tbs, issuerKey, crl.signature);
}
