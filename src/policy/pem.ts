/**
 * PEM text in explicit secret values: split into blocks one way for the checker, the normaliser
 * and the CAS, and read with node:crypto without ever throwing. The checker reads a value with
 * readCertificateValue or readPrivateKeyValue; what they accept, normalisation and the CAS
 * (cas/secrets.ts) parse again as they are sure to succeed — so a damaged block is a problem
 * at its position in the policy, never an OpenSSL error escaping as a crash or a 500.
 *
 * Messages name blocks by their place and their (known) label, never by their content: the
 * value is secret.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";

export interface PemBlock {
  /** CERTIFICATE, PRIVATE KEY, EC PRIVATE KEY…: the text between BEGIN and the dashes. */
  readonly label: string;
  /** The block from its BEGIN line to the end of its END line. */
  readonly text: string;
}

/** The labels a message may name; any other label came from the author and stays unsaid. */
const KNOWN_LABELS = new Set([
  "CERTIFICATE",
  "PRIVATE KEY",
  "EC PRIVATE KEY",
  "RSA PRIVATE KEY",
  "ENCRYPTED PRIVATE KEY",
  "OPENSSH PRIVATE KEY",
  "EC PARAMETERS",
  "PUBLIC KEY",
]);

const BEGIN = /-----BEGIN ([A-Z0-9 ]+)-----/g;

/** A private key block: PKCS#8 (PRIVATE KEY), SEC1 (EC PRIVATE KEY), PKCS#1 (RSA PRIVATE KEY)… */
export const isKeyBlock = (b: PemBlock): boolean => b.label.endsWith("PRIVATE KEY");

/**
 * The blocks of `text`, in order. Each BEGIN line must be followed by its END line before the
 * next BEGIN: otherwise the block was cut short, and `problem` says which one. Text outside
 * blocks (OpenSSL's "Bag Attributes", comments) is ignored, as OpenSSL ignores it.
 */
export function pemBlocks(text: string): { blocks: PemBlock[]; problem?: string } {
  const blocks: PemBlock[] = [];
  BEGIN.lastIndex = 0;
  for (let m = BEGIN.exec(text); m !== null; m = BEGIN.exec(text)) {
    const label = m[1]!;
    const endLine = `-----END ${label}-----`;
    const bodyStart = m.index + m[0].length;
    const end = text.indexOf(endLine, bodyStart);
    const next = text.indexOf("-----BEGIN ", bodyStart);
    if (end < 0 || (next >= 0 && next < end)) {
      const what = KNOWN_LABELS.has(label) ? ` (${label})` : "";
      return { blocks, problem: `PEM block ${blocks.length + 1}${what} has no matching END line: it is cut short` };
    }
    blocks.push({ label, text: text.slice(m.index, end + endLine.length) });
    BEGIN.lastIndex = end + endLine.length;
  }
  return { blocks };
}

/** A certificate value as the CAS keeps it: the certificate, its issuers in order, its key. */
export interface CertificateValue {
  readonly certificates: readonly X509Certificate[];
  readonly key: KeyObject;
}

/**
 * An explicit `x509` or `x509-ca` value: PEM text with the certificate first, then its issuers,
 * and exactly one private key that belongs to the certificate. Every certificate is parsed,
 * not only the first: the CAS stores and serves them all.
 */
export function readCertificateValue(pem: string): { value: CertificateValue } | { problem: string } {
  const { blocks, problem } = pemBlocks(pem);
  if (problem) return { problem };
  const certBlocks = blocks.filter((b) => b.label === "CERTIFICATE");
  const keyBlocks = blocks.filter(isKeyBlock);
  if (certBlocks.length === 0 || keyBlocks.length !== 1) {
    return {
      problem: `expected PEM text with the certificate (then any issuers) and exactly one private key, found ${count(certBlocks.length, "CERTIFICATE block")} and ${count(keyBlocks.length, "private key")}`,
    };
  }
  const certificates: X509Certificate[] = [];
  for (const [i, b] of certBlocks.entries()) {
    const certificate = parseCertificate(b.text);
    if (!certificate) {
      const which = i === 0 ? "the first CERTIFICATE block" : `CERTIFICATE block ${i + 1} (an issuer)`;
      return { problem: `${which} cannot be parsed as X.509: its base64 or DER is damaged` };
    }
    certificates.push(certificate);
  }
  const key = readKeyBlock(keyBlocks[0]!);
  if ("problem" in key) return key;
  if (!belongsTo(key.key, certificates[0]!)) {
    return {
      problem:
        "the private key does not belong to the first certificate (the certificate comes first, then its issuers)",
    };
  }
  return { value: { certificates, key: key.key } };
}

/** An explicit `private-key` value: exactly one PEM private key (PKCS#8, SEC1 or PKCS#1). */
export function readPrivateKeyValue(pem: string): { key: KeyObject } | { problem: string } {
  const { blocks, problem } = pemBlocks(pem);
  if (problem) return { problem };
  const keyBlocks = blocks.filter(isKeyBlock);
  if (keyBlocks.length !== 1) {
    return {
      problem: `expected exactly one PEM private key (PKCS#8, SEC1 or PKCS#1), found ${count(keyBlocks.length, "private key")}`,
    };
  }
  return readKeyBlock(keyBlocks[0]!);
}

function readKeyBlock(block: PemBlock): { key: KeyObject } | { problem: string } {
  // An encrypted key would need its passphrase here, and again in the CAS and the runtime.
  if (block.label === "ENCRYPTED PRIVATE KEY" || /^Proc-Type: *4, *ENCRYPTED/m.test(block.text)) {
    return { problem: "the private key is encrypted: give it unencrypted (the CAS stores it sealed)" };
  }
  const key = parsePrivateKey(block.text);
  if (!key) {
    const hint = block.label === "OPENSSH PRIVATE KEY" ? " (an OpenSSH key converts with ssh-keygen -p -m PKCS8)" : "";
    return { problem: `expected a PEM private key (PKCS#8, SEC1 or PKCS#1) that can be parsed${hint}` };
  }
  return { key };
}

function parseCertificate(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function parsePrivateKey(pem: string): KeyObject | undefined {
  try {
    return createPrivateKey(pem);
  } catch {
    return undefined;
  }
}

function belongsTo(key: KeyObject, certificate: X509Certificate): boolean {
  try {
    return certificate.checkPrivateKey(key);
  } catch {
    return false;
  }
}

const count = (n: number, what: string) => (n === 0 ? `no ${what}` : n === 1 ? `one ${what}` : `${n} ${what}s`);
