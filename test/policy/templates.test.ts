/** Templates: parsing, and rendering of every format on real keys and certificates. */
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { before, describe, test } from "node:test";
import {
  FORMATS,
  KIND_FORMATS,
  parseTemplate,
  renderSecret,
  renderTemplate,
  renderTemplateText,
  type SecretMaterial,
  secretBytes,
} from "../../src/policy/templates.ts";
import { x509 } from "../helpers/x509.ts";

describe("parseTemplate", () => {
  test("splits text and references", () => {
    const { parts, errors } = parseTemplate("a=$$cloister::x$$, b=$$cloister::y:hex$$!");
    assert.deepEqual(errors, []);
    assert.deepEqual(
      parts.map((p) => (p.type === "text" ? p.text : `<${p.name}:${p.format ?? ""}>`)),
      ["a=", "<x:>", ", b=", "<y:hex>", "!"],
    );
  });

  test("$$$$ is a literal $$, also right before a template", () => {
    const { parts, errors } = parseTemplate("$$$$$$cloister::x$$ and $5 and $$$$");
    assert.deepEqual(errors, []);
    assert.deepEqual(
      parts.map((p) => (p.type === "text" ? p.text : `<${p.name}>`)),
      ["$$", "<x>", " and $5 and $$"],
    );
  });

  test("text without templates is one part; the empty string none", () => {
    assert.deepEqual(parseTemplate("plain $ text").parts, [{ type: "text", text: "plain $ text" }]);
    assert.deepEqual(parseTemplate("").parts, []);
  });

  for (const [source, fragment] of [
    ["$$HOME", "starts no template"],
    ["$$cloister::x", "starts no template"],
    ["$$cloister::x:hex", "starts no template"],
    ["$$cloister::$$", "names no secret"],
    ["$$cloister::x:base32$$", 'unknown template format "base32"'],
    ["$$cloister::x:hex:more$$", "starts no template"],
    ["$$$", "starts no template"],
  ] as const) {
    test(`refuses ${JSON.stringify(source)}`, () => {
      const { errors } = parseTemplate(source);
      assert.ok(
        errors.some((e) => e.message.includes(fragment)),
        JSON.stringify(errors),
      );
    });
  }
});

describe("rendering every format", () => {
  const secrets: Record<string, SecretMaterial> = {};
  let caCertPem = "";
  before(async () => {
    const subtle = globalThis.crypto.subtle;
    const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
    const caKeys = await subtle.generateKey(alg, true, ["sign", "verify"]);
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=Test CA",
      keys: caKeys,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
    });
    const leafKeys = await subtle.generateKey(alg, true, ["sign", "verify"]);
    const leaf = await x509.X509CertificateGenerator.create({
      subject: "CN=leaf",
      issuer: ca.subject,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: alg,
    });
    const leafKeyPem = x509.PemConverter.encode(await subtle.exportKey("pkcs8", leafKeys.privateKey), "PRIVATE KEY");
    caCertPem = `${ca.toString("pem")}\n`;
    const ed = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    secrets.ascii = { kind: "ascii", value: "p@ss word" };
    secrets.binary = { kind: "binary", value: Uint8Array.from([0, 1, 0xfe, 0xff, 0x3e, 0x3f]) };
    secrets.key = { kind: "private-key", key: ed };
    secrets.ca = { kind: "x509-ca", certificate: caCertPem };
    secrets.leaf = { kind: "x509", certificate: `${leaf.toString("pem")}\n`, issuers: [caCertPem], key: leafKeyPem };
  });

  test("ascii: raw, hex, base64, base64url", () => {
    const s = secrets.ascii!;
    assert.equal(renderSecret(s, undefined).toString(), "p@ss word");
    assert.equal(renderSecret(s, "raw").toString(), "p@ss word");
    assert.equal(renderSecret(s, "hex").toString(), Buffer.from("p@ss word").toString("hex"));
    assert.equal(renderSecret(s, "base64").toString(), "cEBzcyB3b3Jk");
    assert.equal(renderSecret(s, "base64url").toString(), "cEBzcyB3b3Jk");
  });

  test("binary: hex by default; base64 and base64url differ where they should", () => {
    const s = secrets.binary!;
    assert.equal(renderSecret(s, undefined).toString(), "0001feff3e3f");
    assert.deepEqual([...renderSecret(s, "raw")], [0, 1, 0xfe, 0xff, 0x3e, 0x3f]);
    assert.equal(renderSecret(s, "base64").toString(), "AAH+/z4/");
    assert.equal(renderSecret(s, "base64url").toString(), "AAH-_z4_");
  });

  test("private-key: pem by default (PKCS#8); generic formats encode the PKCS#8 DER", () => {
    const s = secrets.key as Extract<SecretMaterial, { kind: "private-key" }>;
    const pem = renderSecret(s, undefined).toString();
    assert.equal(pem, renderSecret(s, "pem").toString());
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
    const der = createPrivateKey(s.key).export({ type: "pkcs8", format: "der" });
    assert.deepEqual(renderSecret(s, "raw"), der);
    assert.equal(renderSecret(s, "hex").toString(), der.toString("hex"));
    assert.equal(
      createPrivateKey({ key: renderSecret(s, "raw"), format: "der", type: "pkcs8" }).asymmetricKeyType,
      "ed25519",
    );
  });

  test("x509-ca: pem by default; raw is the certificate DER", () => {
    const s = secrets.ca!;
    assert.equal(renderSecret(s, undefined).toString(), caCertPem);
    assert.deepEqual(renderSecret(s, "raw"), Buffer.from(new X509Certificate(caCertPem).raw));
    assert.equal(renderSecret(s, "base64").toString(), new X509Certificate(caCertPem).raw.toString("base64"));
  });

  test("x509: crt (default) and pem are the leaf, chain adds the issuers, key is the key", () => {
    const s = secrets.leaf as Extract<SecretMaterial, { kind: "x509" }>;
    const crt = renderSecret(s, "crt").toString();
    assert.equal(renderSecret(s, undefined).toString(), crt);
    assert.equal(renderSecret(s, "pem").toString(), crt);
    const chain = renderSecret(s, "chain").toString();
    assert.equal(chain, crt + caCertPem);
    const certs = chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
    assert.equal(certs.length, 2);
    const [leaf, ca] = certs.map((c) => new X509Certificate(c));
    assert.ok(leaf!.verify(ca!.publicKey), "the chain's second certificate signs the first");
    const key = renderSecret(s, "key").toString();
    assert.ok(leaf!.checkPrivateKey(createPrivateKey(key)));
    assert.deepEqual(renderSecret(s, "raw"), Buffer.from(leaf!.raw));
  });

  test("every kind renders every format it declares, and refuses the others", () => {
    for (const [name, s] of Object.entries(secrets)) {
      for (const f of FORMATS) {
        if (KIND_FORMATS[s.kind].formats.includes(f)) assert.ok(renderSecret(s, f).length > 0, `${name}:${f}`);
        else assert.throws(() => renderSecret(s, f), /does not apply/, `${name}:${f}`);
      }
    }
  });

  test("whole templates expand in place", () => {
    const lookup = (n: string) => secrets[n]!;
    const { parts } = parseTemplate("pw=$$cloister::ascii$$ key=$$cloister::binary:base64url$$ cost=$$$$5");
    assert.equal(renderTemplateText(parts, lookup), "pw=p@ss word key=AAH-_z4_ cost=$$5");
    const file = renderTemplate(parseTemplate("$$cloister::binary:raw$$").parts, lookup);
    assert.deepEqual([...file], [0, 1, 0xfe, 0xff, 0x3e, 0x3f]);
  });

  test("text expansion refuses NUL and invalid UTF-8 (argv and environment cannot carry them)", () => {
    const lookup = (n: string) => secrets[n]!;
    assert.throws(() => renderTemplateText(parseTemplate("$$cloister::binary:raw$$").parts, lookup), /NUL/);
    const notUtf8: SecretMaterial = { kind: "binary", value: Uint8Array.from([0xc3, 0x28]) };
    assert.throws(() => renderTemplateText(parseTemplate("$$cloister::x:raw$$").parts, () => notUtf8), /not UTF-8/);
  });

  test("secretBytes of a certificate is its DER, of a key its PKCS#8", () => {
    assert.deepEqual(secretBytes(secrets.ca!), Buffer.from(new X509Certificate(caCertPem).raw));
    const key = secrets.key as Extract<SecretMaterial, { kind: "private-key" }>;
    assert.deepEqual(secretBytes(key), createPrivateKey(key.key).export({ type: "pkcs8", format: "der" }));
  });
});
