/** Secret values: what the CAS generates, and what it keeps, reissues or regenerates on update. */
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { describe, test } from "node:test";
import { BUILT_IN_SERVICE_CA, type StoredSecret, secretValuesFor } from "../../src/cas/secrets.ts";
import { randomAscii } from "../../src/crypto/random.ts";
import { checkPolicyText } from "../../src/policy/check.ts";

const policyOf = (secrets: string, extra = "") => {
  const r = checkPolicyText(`version: "1"\nname: gen\n${extra}secrets:\n${secrets}`, "t");
  assert.ok(r.ok, r.ok ? "" : JSON.stringify(r.errors));
  return r.policy;
};
const values = async (secrets: string, previous = new Map<string, StoredSecret>(), extra = "") =>
  secretValuesFor(policyOf(secrets, extra), previous);
const cert = (s: StoredSecret | undefined) => new X509Certificate((s as { certificate: string }).certificate);

describe("generation", () => {
  test("ascii and binary values have the size asked for", async () => {
    const v = await values(
      "  - {name: a, kind: ascii, size: 40}\n  - {name: d, kind: ascii}\n  - {name: b, kind: binary, size: 7}\n",
    );
    assert.match((v.get("a") as { value: string }).value, /^[A-Za-z0-9]{40}$/);
    assert.equal((v.get("d") as { value: string }).value.length, 32);
    assert.equal(Buffer.from((v.get("b") as { value: string }).value, "base64").length, 7);
  });

  test("ascii characters are uniform over the alphabet (no modulo bias)", () => {
    const counts = new Map<string, number>();
    const sample = randomAscii(62 * 2000);
    for (const c of sample) counts.set(c, (counts.get(c) ?? 0) + 1);
    assert.equal(counts.size, 62);
    const expected = sample.length / 62;
    const chi2 = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0);
    // 61 degrees of freedom: p = 0.0001 at about 112. A biased draw (e.g. bytes mod 62) lands far above.
    assert.ok(chi2 < 112, `chi-square ${chi2.toFixed(1)}`);
  });

  test("private keys of every type", async () => {
    const v = await values(
      ["P-256", "P-384", "Ed25519", "RSA-2048", "RSA-3072"]
        .map((t, i) => `  - {name: k${i}, kind: private-key, key_type: ${t}}\n`)
        .join(""),
    );
    const details = [0, 1, 2, 3, 4].map((i) => {
      const k = createPrivateKey((v.get(`k${i}`) as { key: string }).key);
      return `${k.asymmetricKeyType}:${k.asymmetricKeyDetails?.namedCurve ?? k.asymmetricKeyDetails?.modulusLength ?? ""}`;
    });
    assert.deepEqual(details, ["ec:prime256v1", "ec:secp384r1", "ed25519:", "rsa:2048", "rsa:3072"]);
  });

  test("certificates: chain, SANs, usages, validity, CA flag", async () => {
    const v = await values(
      '  - {name: root, kind: x509-ca, common_name: Root, valid_for: 100d}\n  - {name: mid, kind: x509-ca, issuer: root}\n  - {name: web, kind: x509, issuer: mid, san: ["dns:web.example", "ip:10.1.2.3"], valid_for: 30d, usage: [server]}\n',
    );
    const root = cert(v.get("root"));
    const mid = cert(v.get("mid"));
    const web = cert(v.get("web"));
    assert.ok(root.ca && mid.ca && !web.ca);
    assert.ok(web.verify(mid.publicKey) && mid.verify(root.publicKey));
    assert.equal(web.subjectAltName, "DNS:web.example, IP Address:10.1.2.3");
    assert.deepEqual(web.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
    const days = (c: X509Certificate) => (new Date(c.validTo).getTime() - new Date(c.validFrom).getTime()) / 86_400_000;
    assert.equal(Math.round(days(web)), 30);
    // The intermediate asked for 3650 days but may not outlive the root.
    assert.ok(new Date(mid.validTo) <= new Date(root.validTo));
    assert.deepEqual((v.get("web") as { issuers: readonly string[] }).issuers, [mid.toString(), root.toString()]);
    assert.ok(createPrivateKey((v.get("web") as { key: string }).key));
  });

  test("the built-in service CA exists only for policies with services", async () => {
    assert.equal((await values("  - {name: a, kind: ascii}\n")).has(BUILT_IN_SERVICE_CA), false);
    const withService = await values(
      "  - {name: a, kind: ascii}\n",
      new Map(),
      "security: {attestation: {mode: none}}\nservices: [{name: s, command: [x]}]\n",
    );
    assert.equal(cert(withService.get(BUILT_IN_SERVICE_CA)).ca, true);
  });
});

describe("on update (DESIGN.md §4)", () => {
  const v1 =
    "  - {name: pw, kind: ascii}\n  - {name: bin, kind: binary}\n  - {name: kept, kind: private-key, migrate: true}\n  - {name: fresh, kind: private-key}\n  - {name: ca, kind: x509-ca}\n  - {name: web, kind: x509, issuer: ca}\n";

  test("generated values stay; x509 is reissued; keys without migrate are regenerated", async () => {
    const first = await values(v1);
    const second = await values(v1, first);
    for (const name of ["pw", "bin", "kept", "ca"]) assert.deepEqual(second.get(name), first.get(name), name);
    assert.notDeepEqual(second.get("fresh"), first.get("fresh"), "a key without migrate is regenerated");
    assert.notEqual(
      (second.get("web") as { certificate: string }).certificate,
      (first.get("web") as { certificate: string }).certificate,
    );
    assert.notEqual((second.get("web") as { key: string }).key, (first.get("web") as { key: string }).key);
    assert.ok(cert(second.get("web")).verify(cert(first.get("ca")).publicKey), "reissued by the kept CA");
  });

  test("a changed generation parameter makes a new value", async () => {
    const first = await values(v1);
    const second = await values(
      v1
        .replace("{name: pw, kind: ascii}", "{name: pw, kind: ascii, size: 12}")
        .replace("{name: ca, kind: x509-ca}", "{name: ca, kind: x509-ca, common_name: Other}"),
      first,
    );
    assert.equal((second.get("pw") as { value: string }).value.length, 12);
    assert.notDeepEqual(second.get("ca"), first.get("ca"));
  });

  test("explicit values follow the policy", async () => {
    const first = await values('  - {name: pw, kind: ascii, value: "one"}\n');
    const second = await values('  - {name: pw, kind: ascii, value: "two"}\n', first);
    assert.equal((first.get("pw") as { value: string }).value, "one");
    assert.equal((second.get("pw") as { value: string }).value, "two");
  });
});
