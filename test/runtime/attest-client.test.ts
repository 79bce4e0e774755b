/**
 * The runtime's client of the attestation protocol, against a CAS played here: every answer is
 * checked on receipt against the protocol's schemas. A well-formed configuration comes through as
 * sent; a malformed one — or a malformed challenge or attestation answer, a configuration that is
 * not JSON or not sealed to K — is refused with a CasAnswerError that names the fields and never
 * repeats a value.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import type { EvidenceProvider } from "../../src/attestation/providers/provider.ts";
import type { CasClient } from "../../src/client/cas-client.ts";
import { manageKey, sealCompact } from "../../src/crypto/jwe.ts";
import { p256SpkiPoint } from "../../src/crypto/keys.ts";
import type { AttestationRequest, Configuration } from "../../src/protocol/attestation.ts";
import { CasAnswerError, obtainConfiguration } from "../../src/runtime/attest-client.ts";

const provider: EvidenceProvider = {
  tee: "sim",
  evidence: async () => ({ tee: "sim", quote: Buffer.from("evidence") }),
};

const hex64 = (c: string) => c.repeat(64);

const good: Configuration = {
  config_id: "acme/shop/web",
  policy_hash: hex64("a"),
  command: ["/usr/bin/web", "--port=8080"],
  environment: { API_KEY: "s3cr3t-value" },
  pwd: "/srv",
  files: [{ path: "/etc/web/key", mode: "0400", content: Buffer.from("key").toString("base64") }],
  volumes: [
    {
      name: "data",
      path: "/var/lib/web",
      key: hex64("b"),
      tag: null,
      update_policy: "rollback-protected",
      checkpoint_interval: 60,
    },
  ],
  tls: {
    inbound: [{ listen: "0.0.0.0:443", forward: "127.0.0.1:8080", certificate: null, client_ca: null }],
    outbound: [],
  },
  certificate_chain: "-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n",
  ca_bundle: "-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n",
  tls_material: {},
  verdict: { tee: "sim", status: "Unevaluated", simulated: true, debug: true, measurements: { digest: hex64("c") } },
};

/** `plaintext` sealed to the key `spki`, as the CAS seals a configuration. */
const sealTo = (plaintext: Buffer, spki: Buffer) =>
  sealCompact(plaintext, manageKey(p256SpkiPoint(spki)!), { cty: "cloister-configuration+json" });

/**
 * A CAS that answers the challenge with `challenge` and the attestation with `answer`, given the
 * runtime's key K: by default, `configuration`'s JSON sealed to K (as the CAS seals it).
 */
function fakeCas(
  options: {
    configuration?: unknown;
    plaintext?: Buffer;
    challenge?: unknown;
    answer?: (spki: Buffer) => unknown;
  } = {},
): CasClient {
  const seal = (spki: Buffer) => {
    const plaintext = options.plaintext ?? Buffer.from(JSON.stringify(options.configuration ?? good));
    return { configuration: sealTo(plaintext, spki) };
  };
  return {
    request: async (_method: string, path: string, body: unknown) => {
      if (path === "/v1/attestation/challenge")
        return options.challenge ?? { nonce: Buffer.alloc(32).toString("base64"), expires_at: "2030-01-01T00:00:00Z" };
      const spki = Buffer.from((body as AttestationRequest).spki, "base64");
      return (options.answer ?? seal)(spki);
    },
  } as unknown as CasClient;
}

/** The CasAnswerError `obtainConfiguration` is refused with against `cas`. */
async function refusal(cas: CasClient): Promise<CasAnswerError> {
  const error = await obtainConfiguration(cas, "acme/shop/web", provider).then(
    () => assert.fail("a malformed answer was accepted"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof CasAnswerError, `refused with a CasAnswerError, not ${String(error)}`);
  return error;
}

describe("attest-client: answers checked on receipt", () => {
  test("a well-formed configuration comes through as sent", async () => {
    const { configuration } = await obtainConfiguration(fakeCas(), "acme/shop/web", provider);
    assert.deepEqual(configuration, good);
  });

  test("a malformed configuration is refused, its fields named, no value repeated", async () => {
    const malformed = {
      ...good,
      environment: { API_KEY: 4242424242 },
      volumes: [{ ...good.volumes[0], key: "not hex" }],
    };
    const error = await refusal(fakeCas({ configuration: malformed }));
    assert.match(error.message, /^the CAS answered with a malformed configuration: /);
    assert.match(error.message, /environment\.API_KEY: /);
    assert.match(error.message, /volumes\.0\.key: 64 lower-case hex digits/);
    assert.doesNotMatch(error.message, /4242424242|not hex/);
  });

  test("a configuration missing a field, or with one the runtime does not know, is refused", async () => {
    const { tls: _, ...withoutTls } = good;
    assert.match((await refusal(fakeCas({ configuration: withoutTls }))).message, /configuration: tls: missing$/);
    const tlsWithoutClientCa = {
      ...good,
      tls: { inbound: [{ listen: "0.0.0.0:443", forward: "127.0.0.1:8080", certificate: null }], outbound: [] },
    };
    assert.match(
      (await refusal(fakeCas({ configuration: tlsWithoutClientCa }))).message,
      /configuration: tls\.inbound\.0\.client_ca: missing$/,
    );
    assert.match(
      (await refusal(fakeCas({ configuration: { ...good, seccomp: "strict" } }))).message,
      /configuration: \(top level\): Unrecognized key: "seccomp"/,
    );
  });

  test("a configuration that is not JSON, or not sealed to K, is refused", async () => {
    assert.equal(
      (await refusal(fakeCas({ plaintext: Buffer.from("{not json") }))).message,
      "the CAS answered with a malformed configuration: not JSON",
    );
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    const sealedElsewhere = (_k: Buffer) => ({
      configuration: sealTo(Buffer.from(JSON.stringify(good)), other),
    });
    assert.match(
      (await refusal(fakeCas({ answer: sealedElsewhere }))).message,
      /^the CAS answered with a configuration that this runtime's key does not open: /,
    );
  });

  test("a malformed challenge or attestation answer is refused", async () => {
    assert.match(
      (await refusal(fakeCas({ challenge: { nonce: 7 } }))).message,
      /^the CAS answered with a malformed challenge: nonce: .*string.*; expires_at: missing$/,
    );
    assert.match(
      (await refusal(fakeCas({ answer: () => ({ jwe: "…" }) }))).message,
      /^the CAS answered with a malformed attestation answer: /,
    );
  });
});
