/**
 * Generated values never cross a change of attestation mode (issue 17, item 1; docs/policy.md,
 * "Attestation mode changes"). In mode `none` the CAS hands a service's configuration to whoever
 * asks, with no evidence: a value generated under `simulation` or `hardware` must never reach
 * that route, and one generated under `none` (anyone may know it) must never become an attested
 * service's secret. Every order of changes is played against a real CAS and LAS: sim → none →
 * sim, hardware → none, none → hardware, imports into a policy that later becomes `none`; the
 * values seen are compared with every value the policy ever held.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BUILT_IN_SERVICE_CA, volumeKeyName } from "../../src/cas/secrets.ts";
import {
  type CasClient,
  type CasRequestError,
  policyPath,
  CasClient as RuntimeClient,
} from "../../src/client/cas-client.ts";
import { decryptCompact } from "../../src/crypto/jwe.ts";
import { Configuration } from "../../src/protocol/attestation.ts";
import { makeIdentity, type TestIdentity } from "../helpers/cas.ts";
import { type AttestationWorld, startAttestationWorld } from "../helpers/runtime.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-mode-change-"));
let world: AttestationWorld;
let owner: CasClient;
let ownerHash = "";
let digest = "";

before(async () => {
  // The world's own first policy is not used; each test makes its own.
  world = await startAttestationWorld(dir, (_program, d) => {
    digest = d;
    return 'version: "1"\nname: unused\n';
  });
  const identity: TestIdentity = await makeIdentity("mode-owner");
  owner = world.cas.client(identity);
  ownerHash = identity.hash;
});
after(async () => {
  await world.dispose();
  rmSync(dir, { recursive: true, force: true });
});

type Mode = "none" | "simulation" | "hardware";

/** A policy whose service receives every kind of generated value, and one explicit value. */
const policyText = (name: string, mode: Mode, predecessor?: string, explicit = '"given by the owner"') => {
  const measurement =
    mode === "simulation" ? `{tee: sim, digest: "${digest}"}` : `{tee: sgx, mrenclave: "${"ab".repeat(32)}"}`;
  return `version: "1"
name: ${name}
${predecessor ? `predecessor: ${predecessor}\n` : ""}security:
  attestation: {mode: ${mode}}
services:
  - name: app
    measurements: [${measurement}]
    command: [app]
    environment:
      ASCII: "$$cloister::pw$$"
      BINARY: "$$cloister::bin$$"
      KEY: "$$cloister::signing:pem$$"
      GIVEN: "$$cloister::given$$"
    files:
      - {path: /etc/app/ca.crt, content: "$$cloister::ca:pem$$"}
    volumes:
      - {name: data, path: /data}
volumes:
  - {name: data, update_policy: ephemeral}
secrets:
  - {name: pw, kind: ascii, size: 24}
  - {name: bin, kind: binary, size: 16}
  - {name: signing, kind: private-key, migrate: true}
  - {name: ca, kind: x509-ca}
  - {name: given, kind: ascii, value: ${explicit}}
`;
};

/** Every value a policy holds now, as strings (for "never seen before" checks). */
async function heldValues(name: string): Promise<Record<string, string>> {
  const loaded = await world.cas.running.service.secretValues(name);
  assert.ok(loaded, name);
  return Object.fromEntries(
    Object.entries(loaded.values).map(([k, v]) => [
      k,
      "value" in v ? v.value : "certificate" in v ? `${v.certificate}${v.key}` : v.key,
    ]),
  );
}

/** What anyone gets from the unauthenticated route for a policy in mode none: no evidence. */
async function unattested(configId: string): Promise<Configuration> {
  const runtime = new RuntimeClient({ url: world.cas.running.url, casKey: world.cas.running.identity.hash });
  const { nonce } = await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
    config_id: configId,
  });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const { configuration } = await runtime.request<{ configuration: string }>("POST", "/v1/attestation", {
    config_id: configId,
    nonce,
    evidence: { tee: "sim", quote: Buffer.from("made up").toString("base64") },
    spki: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
  });
  return Configuration.parse(JSON.parse(decryptCompact(configuration, privateKey).plaintext.toString()));
}

const hashOf = async (name: string) => (await owner.request<{ hash: string }>("GET", policyPath(name))).hash;

async function change(name: string, mode: Mode, consent: boolean, explicit?: string) {
  return owner.request<{ hash: string }>("PUT", policyPath(name), {
    policy: policyText(name, mode, await hashOf(name), explicit),
    regenerate_secrets: consent,
  });
}

/** No value of `before` appears anywhere in what the caller received. */
function assertNoneOf(received: Configuration, before: Record<string, string>, except: string[] = []) {
  // Line breaks out: PEM blocks are compared by their whole base64 bodies.
  const text = JSON.stringify(received).replaceAll("\\n", "");
  for (const [secret, value] of Object.entries(before)) {
    if (except.includes(secret)) continue;
    const blocks = [...value.matchAll(/-----BEGIN [A-Z ]+-----\n([\s\S]+?)-----END/g)].map((m) =>
      m[1]!.replaceAll("\n", ""),
    );
    for (const piece of blocks.length > 0 ? blocks : [value])
      assert.ok(!text.includes(piece), `${secret}'s old value reached the caller`);
  }
}

describe("a change of attestation mode", () => {
  test("sim → none: refused without consent, nothing changed; with it, every generated value is new", async () => {
    const name = "sim-to-none";
    await owner.request("POST", "/v1/policies", { policy: policyText(name, "simulation") });
    const attested = await world.attest(`${name}/app`);
    const simValues = await heldValues(name);
    assert.equal(attested.config.environment.ASCII, simValues.pw);
    const v1 = await hashOf(name);

    await assert.rejects(change(name, "none", false), (error: CasRequestError) => {
      assert.equal(error.status, 409);
      assert.equal(error.code, "regenerates_secrets");
      for (const what of ["pw", "bin", "signing", "ca", "the built-in service CA", "the key of volume data"])
        assert.ok(error.message.includes(what), `${what} is named in: ${error.message}`);
      assert.ok(!error.message.includes("given"), "an explicit value is kept, not named");
      assert.match(error.message, /--regenerate-secrets/);
      return true;
    });
    assert.equal(await hashOf(name), v1, "a refused change stores nothing");
    assert.deepEqual(await heldValues(name), simValues);

    await change(name, "none", true);
    const anyone = await unattested(`${name}/app`);
    assertNoneOf(anyone, simValues, ["given"]);
    assert.equal(anyone.environment.GIVEN, "given by the owner", "explicit values are the owner's and stay");
    const noneValues = await heldValues(name);
    for (const secret of ["pw", "bin", "signing", "ca", BUILT_IN_SERVICE_CA, volumeKeyName("data")])
      assert.notEqual(noneValues[secret], simValues[secret], secret);
    assert.equal(anyone.ca_bundle.includes(simValues[BUILT_IN_SERVICE_CA]!.split("\n")[1]!), false);

    // none → sim: what anyone could fetch under none must not become the attested service's.
    await assert.rejects(change(name, "simulation", false), { status: 409, code: "regenerates_secrets" });
    await change(name, "simulation", true);
    const again = await world.attest(`${name}/app`);
    assertNoneOf(again.config, noneValues, ["given"]);
    assertNoneOf(again.config, simValues, ["given"]);
    // And the unauthenticated route no longer answers.
    await assert.rejects(unattested(`${name}/app`), { status: 403, code: "evidence_refused" });
  });

  test("hardware → none: values made for hardware never reach the unauthenticated route", async () => {
    const name = "hardware-to-none";
    await owner.request("POST", "/v1/policies", { policy: policyText(name, "hardware") });
    const hardwareValues = await heldValues(name);
    await assert.rejects(change(name, "none", false), { status: 409, code: "regenerates_secrets" });
    await change(name, "none", true);
    assertNoneOf(await unattested(`${name}/app`), hardwareValues, ["given"]);
  });

  test("none → hardware → none: each crossing makes the values anew", async () => {
    const name = "none-and-back";
    await owner.request("POST", "/v1/policies", { policy: policyText(name, "none") });
    const first = await unattested(`${name}/app`);
    const noneValues = await heldValues(name);
    await change(name, "hardware", true);
    const hardwareValues = await heldValues(name);
    for (const secret of ["pw", "bin", "signing", "ca"]) assert.notEqual(hardwareValues[secret], noneValues[secret]);
    await change(name, "none", true);
    const last = await unattested(`${name}/app`);
    assertNoneOf(last, hardwareValues, ["given"]);
    assert.notEqual(last.environment.ASCII, first.environment.ASCII);
  });

  test("within one mode values stay, and no consent is asked", async () => {
    const name = "same-mode";
    await owner.request("POST", "/v1/policies", { policy: policyText(name, "none") });
    const before = await heldValues(name);
    await change(name, "none", false, '"given anew"');
    const after = await heldValues(name);
    for (const secret of ["pw", "bin", "signing", "ca", BUILT_IN_SERVICE_CA])
      assert.equal(after[secret], before[secret]);
    assert.equal(after.given, "given anew");
  });

  test("a policy with nothing generated to lose changes mode without consent", async () => {
    const name = "nothing-to-lose";
    const text = (mode: Mode, predecessor?: string) =>
      `version: "1"\nname: ${name}\n${predecessor ? `predecessor: ${predecessor}\n` : ""}security: {attestation: {mode: ${mode}}}\nsecrets: [{name: given, kind: ascii, value: "v"}]\n`;
    await owner.request("POST", "/v1/policies", { policy: text("simulation") });
    await owner.request("PUT", policyPath(name), { policy: text("none", await hashOf(name)) });
    assert.equal((await heldValues(name)).given, "v");
  });

  test("imports into a policy that later becomes none stop at once", async () => {
    const exporter = `version: "1"\nname: mc-data\nsecurity: {attestation: {mode: simulation}}\nsecrets: [{name: k, kind: ascii, export: [{policy: mc-app}]}]\n`;
    const importer = (mode: Mode, predecessor?: string) => `version: "1"
name: mc-app
${predecessor ? `predecessor: ${predecessor}\n` : ""}security: {attestation: {mode: ${mode}}}
services:
  - name: app
    measurements: [${mode === "simulation" ? `{tee: sim, digest: "${digest}"}` : `{tee: sgx, mrenclave: "${"ab".repeat(32)}"}`}]
    command: [app]
    environment: {K: "$$cloister::k$$"}
secrets:
  - {name: k, import: {policy: mc-data, secret: k}}
`;
    await owner.request("POST", "/v1/policies", { policy: importer("simulation") });
    await owner.request("POST", "/v1/policies", { policy: exporter });
    const exported = (await heldValues("mc-data")).k!;
    assert.equal((await world.attest("mc-app/app")).config.environment.K, exported);
    // Only the built-in service CA is the importer's own generated value.
    await assert.rejects(
      owner.request("PUT", policyPath("mc-app"), { policy: importer("none", await hashOf("mc-app")) }),
      (error: CasRequestError) => error.status === 409 && /the built-in service CA/.test(error.message),
    );
    await owner.request("PUT", policyPath("mc-app"), {
      policy: importer("none", await hashOf("mc-app")),
      regenerate_secrets: true,
    });
    await assert.rejects(unattested("mc-app/app"), (error: CasRequestError) => {
      assert.equal(error.code, "import_refused");
      assert.ok(!error.message.includes(exported));
      return true;
    });
  });

  test("the audit log says the values were made anew, and that a change was refused for want of consent", async () => {
    const entries = (await world.cas.running.service.exportAudit(ownerHash, 0)).entries.flatMap((e) =>
      "entry" in e && e.entry.target === "hardware-to-none" ? [e.entry] : [],
    );
    assert.ok(
      entries.some((e) => e.outcome === "refused" && /makes every generated value anew.*not confirmed/.test(e.reason)),
    );
    assert.ok(
      entries.some(
        (e) => e.outcome === "granted" && /mode hardware -> none: generated values made anew/.test(e.reason),
      ),
    );
  });
});
