/**
 * Issuing X.509 v3 certificates (RFC 5280) for one profile: a common name, key usage, basic
 * constraints, subject and authority key identifiers, and for end entities extended key usage
 * and subject alternative names. The DER is built by der.ts and signed by OpenSSL through
 * node:crypto; the CAS issues several certificates per policy and per attestation, and doing
 * this natively is about twenty times faster than through a pure-JavaScript ASN.1 library.
 * Tests parse every result back with OpenSSL and with @peculiar/x509.
 */
import { createHash, createPublicKey, type KeyObject, sign, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import {
  bitString,
  boolean,
  certificateExtensions,
  children,
  type Der,
  decodeOid,
  type Element,
  explicit,
  implicitPrimitive,
  NULL,
  namedBits,
  octetString,
  oid,
  readElement,
  sequence,
  set,
  smallInteger,
  time,
  unsignedInteger,
  utf8String,
} from "./der.ts";
import { randomBytesPooled } from "./random-pool.ts";

export type CertificateRequest = CertificateProfile &
  (
    | { readonly subjectPublicKey: KeyObject; readonly subjectSpki?: Buffer }
    /** The subject key as SubjectPublicKeyInfo DER alone, as received: no KeyObject made for it. */
    | { readonly subjectPublicKey?: undefined; readonly subjectSpki: Buffer }
  );

interface CertificateProfile {
  /** The subject's common name. */
  readonly commonName: string;
  readonly ca: boolean;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** dns:…, ip:…, email:…, uri:… (end entities only). */
  readonly san?: readonly string[];
  /** Extended key usage (end entities only). */
  readonly usage?: readonly ("server" | "client")[];
}

export interface Signer {
  /** The issuer's subject Name, DER: exactly as in the issuer's certificate. */
  readonly name: Buffer;
  readonly keyId: Buffer;
  readonly key: KeyObject;
  readonly notAfter: Date;
}

const OID = {
  commonName: "2.5.4.3",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  ed25519: "1.3.101.112",
  rsaSha256: "1.2.840.113549.1.1.11",
  rsaEncryption: "1.2.840.113549.1.1.1",
} as const;

/** The algorithm OID of a SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID, … }, BIT STRING }. */
function spkiAlgorithm(spki: Buffer): string {
  const algorithm = children(spki, readElement(spki, 0))[0];
  const id = algorithm && children(spki, algorithm)[0];
  if (id?.tag !== 0x06) throw new Error("not a SubjectPublicKeyInfo");
  return decodeOid(spki.subarray(id.contentStart, id.end));
}

/** KeyUsage bits (RFC 5280 §4.2.1.3). */
const KU = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** The signature algorithm a key signs with, and the hash node:crypto needs for it. */
/** Per signing key: the answer never changes, and reading a key's details is a native call. */
const algorithms = new WeakMap<KeyObject, { identifier: Der; hash: string | null }>();

function signatureAlgorithm(key: KeyObject): { identifier: Der; hash: string | null } {
  let algorithm = algorithms.get(key);
  if (!algorithm) {
    algorithm = signatureAlgorithmOf(key);
    algorithms.set(key, algorithm);
  }
  return algorithm;
}

function signatureAlgorithmOf(key: KeyObject): { identifier: Der; hash: string | null } {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === "ec" && curve === "prime256v1") return { identifier: sequence(oid(OID.ecdsaSha256)), hash: "sha256" };
  if (type === "ec" && curve === "secp384r1") return { identifier: sequence(oid(OID.ecdsaSha384)), hash: "sha384" };
  if (type === "ed25519") return { identifier: sequence(oid(OID.ed25519)), hash: null };
  if (type === "rsa") return { identifier: sequence(oid(OID.rsaSha256), NULL), hash: "sha256" };
  throw new Error(`cannot sign certificates with a ${type}${curve ? ` ${curve}` : ""} key`);
}

/**
 * Whether the CAS can sign certificates with `key`. A CA given in a policy may hold any key that
 * OpenSSL reads (P-521, Ed448, DSA…): the policy checker asks this before such a CA is named to
 * issue anything, so that issuing never fails after the policy was accepted.
 */
export function signsCertificates(key: KeyObject): boolean {
  try {
    signatureAlgorithm(key);
    return true;
  } catch {
    return false;
  }
}

export function nameDer(commonName: string): Buffer {
  return sequence(set(sequence(oid(OID.commonName), utf8String(commonName))));
}

/** A key identifier (RFC 7093 method 1): the leftmost 160 bits of SHA-256 over the public key. */
export function keyIdentifier(publicKey: KeyObject): Buffer {
  const key = publicKey.type === "private" ? createPublicKey(publicKey) : publicKey;
  return keyIdentifierOf(key.export({ type: "spki", format: "der" }));
}

const keyIdentifierOf = (spki: Buffer): Buffer => createHash("sha256").update(spki).digest().subarray(0, 20);

function extension(id: string, critical: boolean, value: Der): Der {
  return critical ? sequence(oid(id), boolean(true), octetString(value)) : sequence(oid(id), octetString(value));
}

function generalName(san: string): Der {
  const i = san.indexOf(":");
  const type = san.slice(0, i);
  const value = san.slice(i + 1);
  switch (type) {
    case "dns":
      return implicitPrimitive(2, Buffer.from(value, "ascii"));
    case "email":
      return implicitPrimitive(1, Buffer.from(value, "ascii"));
    case "uri":
      return implicitPrimitive(6, Buffer.from(value, "ascii"));
    case "ip":
      return implicitPrimitive(7, ipBytes(value));
    default:
      throw new Error(`unknown subject alternative name ${san}`);
  }
}

/** An IP address as its 4 or 16 bytes (IPv6 with :: and an IPv4 tail expanded). */
export function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split(".").map(Number));
  if (isIP(ip) !== 6) throw new Error(`not an IP address: ${ip}`);
  // Expand :: and an embedded IPv4 tail into eight 16-bit groups.
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1]!.split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, -v4[1]!.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return out;
}

/**
 * Issue a certificate for `request`, signed by `signer`, as DER. Its validity never extends
 * past the issuer's.
 */
export function issueDer(request: CertificateRequest, signer: Signer): Buffer {
  const subjectName = nameDer(request.commonName);
  const subjectKey =
    request.subjectPublicKey?.type === "private" ? createPublicKey(request.subjectPublicKey) : request.subjectPublicKey;
  const spki = request.subjectSpki ?? subjectKey!.export({ type: "spki", format: "der" });
  const subjectKeyId = keyIdentifierOf(spki);
  const key = signer.key;
  const algorithm = signatureAlgorithm(key);
  const notAfter = request.notAfter > signer.notAfter ? signer.notAfter : request.notAfter;
  const rsaSubject = subjectKey ? subjectKey.asymmetricKeyType === "rsa" : spkiAlgorithm(spki) === OID.rsaEncryption;
  const usage = request.ca
    ? [KU.digitalSignature, KU.keyCertSign, KU.cRLSign]
    : [KU.digitalSignature, ...(rsaSubject ? [KU.keyEncipherment] : [])];
  const extensions: Der[] = [
    extension(OID.basicConstraints, true, request.ca ? sequence(boolean(true)) : sequence()),
    extension(OID.keyUsage, true, namedBits(usage)),
    extension(OID.subjectKeyIdentifier, false, octetString(subjectKeyId)),
    extension(OID.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, signer.keyId))),
  ];
  if (!request.ca) {
    const eku = (request.usage ?? ["server", "client"]).map((u) =>
      oid(u === "server" ? OID.serverAuth : OID.clientAuth),
    );
    extensions.push(extension(OID.extKeyUsage, false, sequence(...eku)));
    if (request.san && request.san.length > 0) {
      extensions.push(extension(OID.subjectAltName, false, sequence(...request.san.map(generalName))));
    }
  }
  // A positive serial number of 128 random bits (RFC 5280 allows up to 20 octets).
  const serial = randomBytesPooled(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = sequence(
    explicit(0, smallInteger(2)),
    unsignedInteger(serial),
    algorithm.identifier,
    signer.name,
    sequence(time(request.notBefore), time(notAfter)),
    subjectName,
    spki,
    explicit(3, sequence(...extensions)),
  );
  const signature = sign(algorithm.hash, tbs, key);
  return sequence(tbs, algorithm.identifier, bitString(signature));
}

/** issueDer, parsed: for callers that inspect the result. */
export const issue = (request: CertificateRequest, signer: Signer): X509Certificate =>
  new X509Certificate(issueDer(request, signer));

export function certificatePem(der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  // Lines of 64 characters (RFC 7468), cut by slicing: a regular expression over the base64 was
  // a fiftieth of the CAS's event-loop time per attestation.
  let pem = "-----BEGIN CERTIFICATE-----\n";
  for (let i = 0; i < b64.length; i += 64) pem += `${b64.slice(i, i + 64)}\n`;
  return `${pem}-----END CERTIFICATE-----\n`;
}

/** The signer of a self-signed certificate: the subject's own key and name. */
export function selfSigner(commonName: string, privateKey: KeyObject, publicKey?: KeyObject): Signer {
  return {
    name: nameDer(commonName),
    keyId: keyIdentifier(publicKey ?? createPublicKey(privateKey)),
    key: privateKey,
    notAfter: new Date("9999-12-31T23:59:59Z"),
  };
}

/** The fields of a certificate's TBSCertificate, and the certificate's subject Name as DER. */
function tbsFields(raw: Buffer): { fields: Element[]; subject: Element } {
  const cert = readElement(raw, 0);
  const tbs = children(raw, cert)[0];
  if (!tbs) throw new Error("not a certificate");
  const fields = children(raw, tbs);
  // [0] version is optional: subject is the fifth field after it (serial, signature, issuer, validity, subject).
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[offset + 4];
  if (subject?.tag !== 0x30) throw new Error("the certificate has no subject");
  return { fields, subject };
}

/** A certificate's subject Name exactly as encoded (to compare with a CRL's issuer, or to issue under it). */
export function subjectDer(certificate: X509Certificate): Buffer {
  const { subject } = tbsFields(certificate.raw);
  return Buffer.from(certificate.raw.subarray(subject.start, subject.end));
}

/** What issuing under an existing CA certificate needs: its subject Name exactly as encoded. */
export function signerFor(caCertificate: X509Certificate, caKey: KeyObject): Signer {
  const raw = caCertificate.raw;
  return {
    name: subjectDer(caCertificate),
    // Chain building matches our authority key identifier against the CA's own subject key
    // identifier: use the CA's when it has one (OpenSSL's is a SHA-1), else compute ours.
    keyId: subjectKeyIdentifierOf(raw) ?? keyIdentifier(caCertificate.publicKey),
    key: caKey,
    notAfter: new Date(caCertificate.validTo),
  };
}

/** The CA's own subject key identifier, if its certificate has one. */
function subjectKeyIdentifierOf(raw: Buffer): Buffer | undefined {
  const value = certificateExtensions(raw).get(OID.subjectKeyIdentifier);
  if (!value) return undefined;
  const inner = readElement(value, 0);
  return inner.tag === 0x04 ? Buffer.from(value.subarray(inner.contentStart, inner.end)) : undefined;
}
