/**
 * A fresh P-256 key and a self-signed certificate for it: how an identity (or the CAS) presents
 * itself in TLS. Nothing trusts the certificate as such; peers match the key's hash.
 */
import { generateKeyPairSync } from "node:crypto";
import { certificatePem, issueDer, selfSigner } from "./certificate.ts";

export interface KeyAndCertificate {
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  /** X.509 PEM. */
  readonly certificatePem: string;
}

export async function selfSignedP256(commonName: string, validDays: number): Promise<KeyAndCertificate> {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const notBefore = new Date(Date.now() - 5 * 60_000); // tolerate small clock skew between peers
  const der = issueDer(
    {
      commonName,
      subjectPublicKey: publicKey,
      ca: false,
      notBefore,
      notAfter: new Date(notBefore.getTime() + validDays * 86_400_000),
      usage: ["client", "server"],
    },
    selfSigner(commonName, privateKey, publicKey),
  );
  return {
    keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    certificatePem: certificatePem(der),
  };
}
