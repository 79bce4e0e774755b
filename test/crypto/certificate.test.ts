/**
 * Certificates built by crypto/certificate.ts, parsed back by OpenSSL (node's X509Certificate
 * and the openssl command) and by @peculiar/x509 as independent readers.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { certificatePem, issue, keyIdentifier, selfSigner, signerFor } from "../../src/crypto/certificate.ts";
import {
  bitString,
  namedBits,
  oid,
  readElement,
  sequence,
  set,
  smallInteger,
  time,
  tlv,
  unsignedInteger,
} from "../../src/crypto/der.ts";
import { x509 } from "../helpers/x509.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-certs-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const keys: Record<string, () => { privateKey: KeyObject; publicKey: KeyObject }> = {
  "P-256": () => generateKeyPairSync("ec", { namedCurve: "P-256" }),
  "P-384": () => generateKeyPairSync("ec", { namedCurve: "P-384" }),
  Ed25519: () => generateKeyPairSync("ed25519"),
  "RSA-2048": () => generateKeyPairSync("rsa", { modulusLength: 2048 }),
};

const now = new Date();
const inDays = (d: number) => new Date(now.getTime() + d * 86_400_000);

function opensslVerify(leaf: X509Certificate, chain: X509Certificate[]): string {
  const leafPath = join(dir, "leaf.pem");
  const rootPath = join(dir, "root.pem");
  const midPath = join(dir, "mid.pem");
  writeFileSync(leafPath, leaf.toString());
  writeFileSync(rootPath, chain[chain.length - 1]!.toString());
  writeFileSync(
    midPath,
    chain
      .slice(0, -1)
      .map((c) => c.toString())
      .join("") || chain[0]!.toString(),
  );
  return execFileSync("openssl", ["verify", "-CAfile", rootPath, "-untrusted", midPath, leafPath], {
    stdio: "pipe",
  }).toString();
}

describe("DER", () => {
  test("lengths, integers, OIDs, named bits and times encode as X.690 says", () => {
    assert.equal(tlv(0x04, Buffer.alloc(127)).subarray(0, 2).toString("hex"), "047f");
    assert.equal(tlv(0x04, Buffer.alloc(128)).subarray(0, 3).toString("hex"), "048180");
    assert.equal(tlv(0x04, Buffer.alloc(256)).subarray(0, 4).toString("hex"), "04820100");
    assert.equal(smallInteger(0).toString("hex"), "020100");
    assert.equal(smallInteger(127).toString("hex"), "02017f");
    assert.equal(smallInteger(128).toString("hex"), "02020080");
    assert.equal(unsignedInteger(Buffer.from("0000ff", "hex")).toString("hex"), "020200ff");
    assert.equal(oid("1.2.840.113549").toString("hex"), "06062a864886f70d");
    assert.equal(oid("2.5.29.19").toString("hex"), "0603551d13");
    assert.equal(namedBits([0]).toString("hex"), "03020780");
    assert.equal(namedBits([0, 5, 6]).toString("hex"), "03020186");
    assert.equal(namedBits([0, 2]).toString("hex"), "030205a0");
    assert.equal(bitString(Buffer.from([1, 2])).toString("hex"), "0303000102");
    assert.equal(time(new Date("2049-12-31T23:59:59Z")).toString("ascii", 2), "491231235959Z");
    assert.equal(time(new Date("2050-01-01T00:00:00Z")).toString("hex").slice(0, 4), "180f");
  });

  test("elements built in place equal X.690's definition, at every length boundary", () => {
    // The definition, written out the slow way: tag ‖ length (short form below 128, else 0x80|k
    // and k big-endian bytes) ‖ content.
    const definedLength = (n: number) => {
      if (n < 0x80) return Buffer.from([n]);
      const bytes: number[] = [];
      for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
      return Buffer.from([0x80 | bytes.length, ...bytes]);
    };
    const defined = (tag: number, content: Buffer) =>
      Buffer.concat([Buffer.from([tag]), definedLength(content.length), content]);
    for (const n of [0, 1, 127, 128, 129, 255, 256, 257, 65535, 65536, 65537, 16777215, 16777216]) {
      const content = randomBytes(n);
      assert.ok(tlv(0x04, content).equals(defined(0x04, content)), `tlv of ${n} bytes`);
      // Split in three parts, so that the parts' offsets are exercised too.
      const parts = [content.subarray(0, n / 3), content.subarray(n / 3, n / 2), content.subarray(n / 2)];
      assert.ok(sequence(...parts).equals(defined(0x30, content)), `sequence of ${n} bytes`);
      assert.ok(
        bitString(content).equals(defined(0x03, Buffer.concat([Buffer.from([0]), content]))),
        `bit string of ${n}`,
      );
    }
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }), (items) => {
        const buffers = items.map((i) => Buffer.from(i));
        assert.ok(sequence(...buffers).equals(defined(0x30, Buffer.concat(buffers))));
        assert.ok(set(...buffers).equals(defined(0x31, Buffer.concat([...buffers].sort(Buffer.compare)))));
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (magnitude) => {
        let i = 0;
        while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
        const trimmed = Buffer.from(magnitude.subarray(i));
        const content = trimmed[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed;
        const built = unsignedInteger(magnitude);
        assert.ok(built.equals(defined(0x02, content)));
        // The magnitude is copied, never shared: changing it afterwards changes nothing built.
        magnitude.fill(0x5a);
        assert.ok(built.equals(defined(0x02, content)));
      }),
    );
    // An OID is encoded once and shared; the same bytes every time.
    assert.ok(oid("2.5.29.17").equals(oid("2.5.29.17")));
    assert.equal(sequence(oid("2.5.29.17")).toString("hex"), "30050603551d11");
  });

  test("the reader never trusts a length", () => {
    assert.throws(() => readElement(Buffer.from("3005020101", "hex"), 0), /runs past/);
    assert.throws(() => readElement(Buffer.from("30", "hex"), 0), /truncated/);
    assert.throws(() => readElement(Buffer.from("3085ffffffffff", "hex"), 0), /bad length/);
    assert.throws(() => readElement(Buffer.from("1f8101", "hex"), 0), /multi-byte tags/);
    assert.deepEqual(readElement(Buffer.from("3003020101", "hex"), 0), {
      tag: 0x30,
      start: 0,
      contentStart: 2,
      end: 5,
    });
  });
});

describe("issued certificates", () => {
  for (const [caType, makeCa] of Object.entries(keys)) {
    for (const [leafType, makeLeaf] of Object.entries(keys)) {
      if (caType !== "P-256" && leafType !== "P-256" && caType !== leafType) continue; // keep the square small
      test(`${leafType} end entity under a ${caType} CA`, () => {
        const caKeys = makeCa();
        const ca = issue(
          {
            commonName: `CA ${caType}`,
            subjectPublicKey: caKeys.publicKey,
            ca: true,
            notBefore: now,
            notAfter: inDays(3650),
          },
          selfSigner(`CA ${caType}`, caKeys.privateKey),
        );
        const leafKeys = makeLeaf();
        const san = [
          "dns:shop.example",
          "dns:*.internal.example",
          "ip:127.0.0.1",
          "ip:::1",
          "ip:fe80::1:2",
          "email:ops@shop.example",
          "uri:spiffe://shop/web",
        ];
        const leaf = issue(
          {
            commonName: 'shop, "quoted" ünïcode',
            subjectPublicKey: leafKeys.publicKey,
            ca: false,
            notBefore: now,
            notAfter: inDays(90),
            san,
            usage: ["server"],
          },
          signerFor(ca, caKeys.privateKey),
        );
        // OpenSSL, through node.
        assert.ok(ca.verify(caKeys.publicKey), "self-signed");
        assert.ok(leaf.verify(caKeys.publicKey), "signed by the CA");
        assert.ok(leaf.checkIssued(ca));
        assert.equal(ca.ca, true);
        assert.equal(leaf.ca, false);
        assert.equal(
          leaf.subjectAltName,
          "DNS:shop.example, DNS:*.internal.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:FE80:0:0:0:0:0:1:2, email:ops@shop.example, URI:spiffe://shop/web",
        );
        assert.deepEqual(leaf.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
        assert.ok(leaf.publicKey.equals(leafKeys.publicKey));
        // The openssl command verifies the chain.
        assert.match(opensslVerify(leaf, [ca]), /leaf\.pem: OK/);
        // @peculiar/x509 reads the same.
        const p = new x509.X509Certificate(leaf.raw);
        assert.equal(p.subjectName.getField("CN")[0], 'shop, "quoted" ünïcode');
        const bc = p.getExtension(x509.BasicConstraintsExtension);
        assert.equal(bc?.ca, false);
        assert.equal(bc?.critical, true);
        const ku = p.getExtension(x509.KeyUsagesExtension);
        assert.equal(ku?.critical, true);
        const rsa = leafType.startsWith("RSA");
        assert.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature | (rsa ? x509.KeyUsageFlags.keyEncipherment : 0));
        const ski = p.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
        const aki = p.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId;
        assert.equal(ski, keyIdentifier(leafKeys.publicKey).toString("hex"));
        assert.equal(aki, keyIdentifier(caKeys.publicKey).toString("hex"));
        const pca = new x509.X509Certificate(ca.raw);
        assert.equal(
          pca.getExtension(x509.KeyUsagesExtension)?.usages,
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        );
        assert.equal(pca.getExtension(x509.BasicConstraintsExtension)?.ca, true);
        assert.deepEqual(
          p
            .getExtension(x509.SubjectAlternativeNameExtension)
            ?.names.toJSON()
            .map((n) => `${n.type}:${n.value}`),
          [
            "dns:shop.example",
            "dns:*.internal.example",
            "ip:127.0.0.1",
            "ip:::1",
            "ip:fe80::1:2",
            "email:ops@shop.example",
            "url:spiffe://shop/web",
          ],
        );
      });
    }
  }

  test("a subject given as SubjectPublicKeyInfo alone gets the profile its KeyObject would", () => {
    const ca = keys["P-256"]!();
    const caCert = issue(
      { commonName: "ca", subjectPublicKey: ca.publicKey, ca: true, notBefore: now, notAfter: inDays(30) },
      selfSigner("ca", ca.privateKey),
    );
    for (const [type, make] of Object.entries(keys)) {
      const subject = make().publicKey;
      const spki = subject.export({ type: "spki", format: "der" });
      const profile = { commonName: type, ca: false, notBefore: now, notAfter: inDays(1) } as const;
      const fromKey = new x509.X509Certificate(
        issue({ ...profile, subjectPublicKey: subject }, signerFor(caCert, ca.privateKey)).raw,
      );
      const fromSpki = issue({ ...profile, subjectSpki: spki }, signerFor(caCert, ca.privateKey));
      assert.ok(fromSpki.publicKey.equals(subject), type);
      assert.match(opensslVerify(fromSpki, [caCert]), /OK/, type);
      const read = new x509.X509Certificate(fromSpki.raw);
      // RSA subjects get keyEncipherment: told from the SPKI's algorithm when there is no KeyObject.
      assert.equal(
        read.getExtension(x509.KeyUsagesExtension)?.usages,
        fromKey.getExtension(x509.KeyUsagesExtension)?.usages,
        type,
      );
      assert.equal(
        read.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
        keyIdentifier(subject).toString("hex"),
        type,
      );
    }
  });

  test("an intermediate CA chains, and a certificate never outlives its issuer", () => {
    const root = keys["P-384"]!();
    const rootCert = issue(
      { commonName: "root", subjectPublicKey: root.publicKey, ca: true, notBefore: now, notAfter: inDays(30) },
      selfSigner("root", root.privateKey),
    );
    const mid = keys["P-256"]!();
    const midCert = issue(
      { commonName: "mid", subjectPublicKey: mid.publicKey, ca: true, notBefore: now, notAfter: inDays(3650) },
      signerFor(rootCert, root.privateKey),
    );
    const leaf = keys.Ed25519!();
    const leafCert = issue(
      { commonName: "leaf", subjectPublicKey: leaf.publicKey, ca: false, notBefore: now, notAfter: inDays(90) },
      signerFor(midCert, mid.privateKey),
    );
    assert.equal(new Date(midCert.validTo).getTime(), new Date(rootCert.validTo).getTime());
    assert.ok(new Date(leafCert.validTo) <= new Date(rootCert.validTo));
    assert.match(opensslVerify(leafCert, [midCert, rootCert]), /OK/);
  });

  test("the issuer name is copied byte for byte from a CA made elsewhere (openssl)", () => {
    const key = join(dir, "ext-ca.key");
    const cert = join(dir, "ext-ca.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "30",
        "-subj",
        "/C=DE/O=Example, Inc./CN=External Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
      ],
      { stdio: "pipe" },
    );
    const ca = new X509Certificate(readFileSync(cert));
    const leafKeys = keys["P-256"]!();
    const leaf = issue(
      { commonName: "leaf", subjectPublicKey: leafKeys.publicKey, ca: false, notBefore: now, notAfter: inDays(10) },
      signerFor(ca, createPrivateKey(readFileSync(key))),
    );
    assert.equal(leaf.issuer, ca.subject);
    assert.match(opensslVerify(leaf, [ca]), /OK/);
  });

  test("dates from 2050 on are GeneralizedTime", () => {
    const k = keys["P-256"]!();
    const c = issue(
      {
        commonName: "long",
        subjectPublicKey: k.publicKey,
        ca: true,
        notBefore: now,
        notAfter: new Date("2060-01-01T00:00:00Z"),
      },
      selfSigner("long", k.privateKey),
    );
    assert.equal(new Date(c.validTo).toISOString(), "2060-01-01T00:00:00.000Z");
  });
});

describe("PEM", () => {
  test("certificatePem writes what OpenSSL writes, at every line-length boundary", () => {
    // Subject names of growing length move the DER, and so the base64, across 64-character
    // lines: full last lines, one character over, and everything between.
    const k = keys["P-256"]!();
    const lastLines = new Set<number>();
    for (let extra = 0; extra < 64; extra++) {
      const name = `pem ${"x".repeat(extra)}`;
      const der = issue(
        { commonName: name, subjectPublicKey: k.publicKey, ca: true, notBefore: now, notAfter: inDays(1) },
        selfSigner(name, k.privateKey),
      ).raw;
      const pem = certificatePem(der);
      assert.equal(pem, new X509Certificate(der).toString(), `with ${der.length} bytes of DER`);
      lastLines.add((Math.ceil(der.length / 3) * 4) % 64);
      // A Uint8Array view into a larger buffer encodes only its own bytes.
      const padded = Buffer.concat([Buffer.from("junk"), der, Buffer.from("junk")]);
      assert.equal(certificatePem(new Uint8Array(padded.buffer, padded.byteOffset + 4, der.length)), pem);
    }
    assert.ok(lastLines.has(0), "a base64 text ending on a line boundary was covered");
  });
});
