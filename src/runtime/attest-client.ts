/**
 * The runtime's side of the attestation protocol (DESIGN.md §5): a nonce from the CAS, an
 * ephemeral P-256 key K made here, evidence binding both from the provider, and the
 * configuration back as a JWE that only K opens. K never leaves this process. Attested again
 * (a few times at most) if the policy changed while the CAS was deciding.
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { expectedReportData } from "../attestation/binding.ts";
import type { EvidenceProvider } from "../attestation/providers/provider.ts";
import { type CasClient, CasRequestError } from "../client/cas-client.ts";
import { decryptCompact } from "../crypto/jwe.ts";
import type { Configuration } from "../protocol/attestation.ts";

/**
 * Attempts at most, when the CAS answers 409 `policy_changed`: the policy was updated while the
 * CAS verified this runtime's evidence, and it refuses to grant on the version it read (see
 * docs/cas.md). Nothing was released; a fresh attempt — new nonce, new key, new evidence — is
 * decided on the new version. A policy that changes at every attempt is not waited out.
 */
export const POLICY_CHANGED_ATTEMPTS = 3;

export async function obtainConfiguration(
  cas: CasClient,
  configId: string,
  provider: EvidenceProvider,
): Promise<{ configuration: Configuration; key: KeyObject }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await attestOnce(cas, configId, provider);
    } catch (error) {
      if (!(error instanceof CasRequestError && error.code === "policy_changed")) throw error;
      if (attempt >= POLICY_CHANGED_ATTEMPTS)
        throw new CasRequestError(
          error.status,
          error.code,
          `${error.message} (refused ${attempt} times in a row: the policy changes faster than this runtime attests)`,
          error.details,
        );
    }
  }
}

async function attestOnce(
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
