/** A throwaway P-256 CA and the leaves it signs, valid for a day: for TLS tests and bench/tls-shield. */
import { generateKeyPairSync, type KeyObject, type X509Certificate } from "node:crypto";
import { issue, selfSigner, signerFor } from "../../src/crypto/certificate.ts";

export type Pair = { cert: X509Certificate; key: KeyObject };

const notBefore = () => new Date(Date.now() - 60_000);
const notAfter = () => new Date(Date.now() + 86_400_000);

export const keyPem = (k: KeyObject) => k.export({ type: "pkcs8", format: "pem" }).toString();

export function testCa(name: string): Pair {
  const k = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    cert: issue(
      { commonName: name, subjectPublicKey: k.publicKey, ca: true, notBefore: notBefore(), notAfter: notAfter() },
      selfSigner(name, k.privateKey),
    ),
    key: k.privateKey,
  };
}

/** A leaf for localhost and 127.0.0.1, signed by `by`. */
export function testLeaf(name: string, by: Pair, usage: ("server" | "client")[]): Pair {
  const k = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    cert: issue(
      {
        commonName: name,
        subjectPublicKey: k.publicKey,
        ca: false,
        notBefore: notBefore(),
        notAfter: notAfter(),
        san: ["dns:localhost", "ip:127.0.0.1"],
        usage,
      },
      signerFor(by.cert, by.key),
    ),
    key: k.privateKey,
  };
}
