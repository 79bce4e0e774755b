/**
 * The runtime's side of the attestation protocol (DESIGN.md §5): a nonce from the CAS, an
 * ephemeral P-256 key K made here, evidence binding both from the provider, and the
 * configuration back as a JWE that only K opens. K never leaves this process.
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { expectedReportData } from "../attestation/binding.ts";
import type { EvidenceProvider } from "../attestation/providers/provider.ts";
import type { Configuration } from "../cas/attestation.ts";
import type { CasClient } from "../client/cas-client.ts";
import { decryptCompact } from "../crypto/jwe.ts";

export async function obtainConfiguration(
  cas: CasClient,
  configId: string,
  provider: EvidenceProvider,
): Promise<{ configuration: Configuration; key: KeyObject }> {
  const { nonce } = await cas.request<{ nonce: string }>("POST", "/v1/attestation/challenge", { config_id: configId });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const evidence = await provider.evidence(expectedReportData(Buffer.from(nonce, "base64"), spki));
  const { configuration } = await cas.request<{ configuration: string }>("POST", "/v1/attestation", {
    config_id: configId,
    nonce,
    evidence: {
      tee: evidence.tee,
      quote: evidence.quote.toString("base64"),
      ...(evidence.aux ? { aux: evidence.aux.toString("base64") } : {}),
    },
    spki: spki.toString("base64"),
  });
  const { plaintext } = decryptCompact(configuration, privateKey);
  return { configuration: JSON.parse(Buffer.from(plaintext).toString("utf8")) as Configuration, key: privateKey };
}
