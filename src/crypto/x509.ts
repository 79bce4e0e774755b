/** X.509 certificates through @peculiar/x509 on node's WebCrypto. */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** @peculiar/x509, ready to use: import it from here so that its set-up always comes first. */
export { x509 };

const P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN_P256 = { name: "ECDSA", hash: "SHA-256" } as const;

export interface KeyAndCertificate {
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  /** X.509 PEM. */
  readonly certificatePem: string;
}

/** Escape a value for an RFC 4514 distinguished name. */
export function dnValue(value: string): string {
  return value.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`).replace(/^[ #]|[ ]$/g, (c) => `\\${c}`);
}

/**
 * A fresh P-256 key and a self-signed certificate for it: how an identity presents itself as
 * a TLS client. Nothing trusts the certificate as such; peers match the key's hash.
 */
export async function selfSignedP256(commonName: string, validDays: number): Promise<KeyAndCertificate> {
  const keys = (await webcrypto.subtle.generateKey(P256, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 5 * 60_000); // tolerate small clock skew between peers
  const notAfter = new Date(notBefore.getTime() + validDays * 86_400_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${dnValue(commonName)}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGN_P256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return {
    keyPem: toPem(new Uint8Array(pkcs8), "PRIVATE KEY"),
    certificatePem: certificate.toString("pem"),
  };
}

/** A positive 128-bit serial number in hex (RFC 5280 allows up to 20 octets). */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f || 0x01;
  return Buffer.from(bytes).toString("hex");
}

export function toPem(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)?.join("\n") ?? ""}\n-----END ${label}-----\n`;
}
