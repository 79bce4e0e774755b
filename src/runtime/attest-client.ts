/**
 * The runtime's side of the attestation protocol (DESIGN.md §5): a nonce from the CAS, an
 * ephemeral P-256 key K made here, evidence binding both from the provider, and the
 * configuration back as a JWE that only K opens. K never leaves this process. Attested again
 * (a few times at most) if the policy changed while the CAS was deciding. Each answer is checked
 * on receipt against the protocol's schemas (protocol/attestation.ts): nothing of an answer that
 * is not one is used.
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import type { z } from "zod";
import { expectedReportData } from "../attestation/binding.ts";
import type { EvidenceProvider } from "../attestation/providers/provider.ts";
import { type CasClient, CasRequestError } from "../client/cas-client.ts";
import { decryptCompact, JweError } from "../crypto/jwe.ts";
import {
  type AttestationRequest,
  AttestationResponse,
  ChallengeResponse,
  Configuration,
} from "../protocol/attestation.ts";

/**
 * Attempts at most, when the CAS answers 409 `policy_changed`: the policy was updated while the
 * CAS verified this runtime's evidence, and it refuses to grant on the version it read (see
 * docs/cas.md). Nothing was released; a fresh attempt — new nonce, new key, new evidence — is
 * decided on the new version. A policy that changes at every attempt is not waited out.
 */
export const POLICY_CHANGED_ATTEMPTS = 3;

/** The CAS answered what the protocol does not allow: refused, whatever the rest of it says. */
export class CasAnswerError extends Error {}

/** Problems named at most in a refusal; the count of the rest follows them. */
const SHOWN_ISSUES = 3;

/**
 * `value` as `schema` reads it; if it does not, a CasAnswerError naming the first problems (a
 * field path and what was wrong: zod's messages do not repeat the value, which may be a secret).
 */
function received<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const { issues } = parsed.error;
  const shown = issues.slice(0, SHOWN_ISSUES).map((i) => {
    const where = i.path.length > 0 ? i.path.join(".") : "(top level)";
    // zod's "expected nonoptional, received undefined", and the like, for a field left out.
    const missing = i.code === "invalid_type" && i.message.endsWith("received undefined");
    return `${where}: ${missing ? "missing" : i.message}`;
  });
  if (issues.length > SHOWN_ISSUES) shown.push(`and ${issues.length - SHOWN_ISSUES} more`);
  throw new CasAnswerError(`the CAS answered with a malformed ${what}: ${shown.join("; ")}`);
}

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
  const { nonce } = received(
    ChallengeResponse,
    await cas.request("POST", "/v1/attestation/challenge", { config_id: configId }),
    "challenge",
  );
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const evidence = await provider.evidence(expectedReportData(Buffer.from(nonce, "base64"), spki));
  const request: AttestationRequest = {
    config_id: configId,
    nonce,
    evidence: {
      tee: evidence.tee,
      quote: evidence.quote.toString("base64"),
      ...(evidence.aux ? { aux: evidence.aux.toString("base64") } : {}),
    },
    spki: spki.toString("base64"),
  };
  const { configuration: jwe } = received(
    AttestationResponse,
    await cas.request("POST", "/v1/attestation", request),
    "attestation answer",
  );
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(decryptCompact(jwe, privateKey).plaintext).toString("utf8"));
  } catch (error) {
    if (error instanceof JweError)
      throw new CasAnswerError(
        `the CAS answered with a configuration that this runtime's key does not open: ${error.message}`,
      );
    if (error instanceof SyntaxError)
      throw new CasAnswerError("the CAS answered with a malformed configuration: not JSON");
    throw error;
  }
  return { configuration: received(Configuration, json, "configuration"), key: privateKey };
}
