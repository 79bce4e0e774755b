/** A runtime's side of attestation for tests: the configuration and the service certificate's client. */
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expectedReportData } from "../../src/attestation/binding.ts";
import { LasProvider } from "../../src/attestation/providers/las.ts";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { CasClient } from "../../src/client/cas-client.ts";
import { decryptCompact } from "../../src/crypto/jwe.ts";
import { loadOrCreateNodeKey, startLas } from "../../src/las/server.ts";
import { Configuration } from "../../src/protocol/attestation.ts";
import { makeIdentity, startTestCas, type TestCas } from "./cas.ts";

export interface Attested {
  readonly config: Configuration;
  /** The runtime's key K and its service certificate, PEM. */
  readonly keyPem: string;
  readonly certificatePem: string;
  /** A CAS client authenticated by the service certificate. */
  readonly client: CasClient;
}

/** Attest as a runtime of `configId` whose program (measured by the LAS at `lasUrl`) is `program`. */
export async function attestAs(
  cas: { url: string; casKey: string },
  lasUrl: string,
  program: string,
  configId: string,
): Promise<Attested> {
  const runtime = new CasClient(cas);
  const { nonce } = await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
    config_id: configId,
  });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const evidence = await new LasProvider(lasUrl, program).evidence(
    expectedReportData(Buffer.from(nonce, "base64"), spki),
  );
  const { configuration } = await runtime.request<{ configuration: string }>("POST", "/v1/attestation", {
    config_id: configId,
    nonce,
    evidence: { tee: "sim", quote: evidence.quote.toString("base64") },
    spki: spki.toString("base64"),
  });
  const config = Configuration.parse(JSON.parse(decryptCompact(configuration, privateKey).plaintext.toString()));
  const certificatePem = config.certificate_chain.match(
    /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/,
  )![0];
  const keyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  return { config, keyPem, certificatePem, client: new CasClient({ ...cas, keyPem, certificatePem }) };
}

/** A CAS and an enrolled LAS, a policy for a small program, and attestation as its runtime. */
export interface AttestationWorld {
  readonly cas: TestCas;
  readonly program: string;
  attest(configId: string): Promise<Attested>;
  dispose(): Promise<void>;
}

/** `policy(program, digest)`: the policy's YAML for the program /bin/sh-script `program`. */
export async function startAttestationWorld(
  dir: string,
  policy: (program: string, digest: string) => string,
): Promise<AttestationWorld> {
  const program = join(dir, "app.sh");
  writeFileSync(program, "#!/bin/sh\n", { mode: 0o755 });
  const owner = await makeIdentity("owner");
  const cas = await startTestCas({ admins: [owner.hash] });
  const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  const las = await startLas({ listen: "127.0.0.1:0", key });
  await cas.client(owner).request("POST", "/v1/las", { key: las.key });
  await cas
    .client(owner)
    .request("POST", "/v1/policies", { policy: policy(program, measureFile(readFileSync(program))) });
  return {
    cas,
    program,
    attest: (configId) =>
      attestAs({ url: cas.running.url, casKey: cas.running.identity.hash }, las.url, program, configId),
    async dispose() {
      await las.close();
      await cas.dispose();
    },
  };
}
