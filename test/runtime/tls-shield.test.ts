/** The TLS shield with real TLS on loopback: inbound termination, client certificates, outbound mTLS. */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { createServer as createTcpServer, type Server, connect as tcpConnect } from "node:net";
import { after, before, describe, test } from "node:test";
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from "node:tls";
import { issue, signerFor } from "../../src/crypto/certificate.ts";
import { type RunningShields, startShields } from "../../src/runtime/tls-shield.ts";
import { testCa as ca, keyPem, testLeaf as leaf, type Pair } from "../helpers/pki.ts";

const material = (p: Pair, issuer: Pair) => ({
  certificate: p.cert.toString(),
  key: keyPem(p.key),
  chain: p.cert.toString() + issuer.cert.toString(),
});
const caMaterial = (p: Pair) => ({ certificate: p.cert.toString(), chain: p.cert.toString() });

let echo: Server;
let echoPort = 0;
const shields: RunningShields[] = [];
before(async () => {
  echo = createTcpServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  echoPort = (echo.address() as { port: number }).port;
});
after(async () => {
  for (const s of shields) await s.close();
  echo.close();
});

const serviceCa = ca("service CA");
const service = leaf("shop/web", serviceCa, ["server", "client"]);
const keys = {
  serviceKeyPem: keyPem(service.key),
  serviceChainPem: service.cert.toString() + serviceCa.cert.toString(),
};
const portOf = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

/** Send `message` over TLS and return what came back, or the error. */
function tlsRoundTrip(
  port: number,
  options: { ca: string; key?: string; cert?: string; maxVersion?: "TLSv1.2" | "TLSv1.3" },
  message = "ping",
): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: TLSSocket = tlsConnect({ host: "127.0.0.1", port, ...options });
    let got = "";
    s.on("secureConnect", () => s.write(message));
    s.on("data", (d) => {
      got += d;
      if (got.length >= message.length) {
        s.end();
        resolve(got);
      }
    });
    s.on("error", reject);
    s.on("close", () => (got ? resolve(got) : reject(new Error("closed without data"))));
  });
}

describe("inbound", () => {
  test("terminates TLS 1.3 with the named certificate and forwards plaintext", async () => {
    const webCa = ca("web CA");
    const web = leaf("web", webCa, ["server"]);
    const shield = await startShields(
      {
        tls: {
          inbound: [{ listen: "127.0.0.1:0", forward: `127.0.0.1:${echoPort}`, certificate: "web", client_ca: null }],
          outbound: [],
        },
        tls_material: { web: material(web, webCa) },
      },
      keys,
    );
    shields.push(shield);
    const port = portOf(shield.addresses[0]!);
    assert.equal(await tlsRoundTrip(port, { ca: webCa.cert.toString() }), "ping");
    await assert.rejects(tlsRoundTrip(port, { ca: webCa.cert.toString(), maxVersion: "TLSv1.2" }));
    await assert.rejects(tlsRoundTrip(port, { ca: serviceCa.cert.toString() }), /certificate/);
  });

  test("without a named certificate, the service certificate; with client_ca, only its clients", async () => {
    const clients = ca("clients CA");
    const alice = leaf("alice", clients, ["client"]);
    const mallory = leaf("mallory", ca("other CA"), ["client"]);
    const shield = await startShields(
      {
        tls: {
          inbound: [
            { listen: "127.0.0.1:0", forward: `127.0.0.1:${echoPort}`, certificate: null, client_ca: "clients" },
          ],
          outbound: [],
        },
        tls_material: { clients: caMaterial(clients) },
      },
      keys,
    );
    shields.push(shield);
    const port = portOf(shield.addresses[0]!);
    const trust = serviceCa.cert.toString();
    assert.equal(await tlsRoundTrip(port, { ca: trust, key: keyPem(alice.key), cert: alice.cert.toString() }), "ping");
    await assert.rejects(tlsRoundTrip(port, { ca: trust }));
    await assert.rejects(tlsRoundTrip(port, { ca: trust, key: keyPem(mallory.key), cert: mallory.cert.toString() }));
  });
});

describe("a CA that is an intermediate is trusted alone, not with its issuers", () => {
  const root = ca("org root");
  const intermediate = (name: string): Pair => {
    const k = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const now = Date.now();
    const cert = issue(
      {
        commonName: name,
        subjectPublicKey: k.publicKey,
        ca: true,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 86_400_000),
      },
      signerFor(root.cert, root.key),
    );
    return { cert, key: k.privateKey };
  };
  const named = intermediate("clients CA");
  const sibling = intermediate("another team's CA");
  // As the CAS hands it over: the CA's certificate, and its chain up to the root.
  const tls_material = {
    named: { certificate: named.cert.toString(), chain: named.cert.toString() + root.cert.toString() },
  };

  test("inbound: client_ca admits its own clients, not a sibling CA's", async () => {
    const shield = await startShields(
      {
        tls: {
          inbound: [{ listen: "127.0.0.1:0", forward: `127.0.0.1:${echoPort}`, certificate: null, client_ca: "named" }],
          outbound: [],
        },
        tls_material,
      },
      keys,
    );
    shields.push(shield);
    const port = portOf(shield.addresses[0]!);
    const trust = serviceCa.cert.toString();
    const client = (issuer: Pair) => {
      const c = leaf("client", issuer, ["client"]);
      return { ca: trust, key: keyPem(c.key), cert: c.cert.toString() + issuer.cert.toString() };
    };
    assert.equal(await tlsRoundTrip(port, client(named)), "ping");
    await assert.rejects(tlsRoundTrip(port, client(sibling)));
  });

  test("outbound: ca verifies a remote of that CA, not of a sibling", async () => {
    const remoteOf = async (issuer: Pair) => {
      const c = leaf("remote", issuer, ["server"]);
      const remote = createTlsServer(
        { key: keyPem(c.key), cert: c.cert.toString() + issuer.cert.toString(), minVersion: "TLSv1.3" },
        (s) => s.pipe(s),
      );
      remote.on("tlsClientError", () => {});
      await new Promise<void>((r) => remote.listen(0, "127.0.0.1", r));
      return remote;
    };
    for (const [issuer, expected] of [
      [named, "hello"],
      [sibling, ""],
    ] as const) {
      const remote = await remoteOf(issuer);
      try {
        const shield = await startShields(
          {
            tls: {
              inbound: [],
              outbound: [
                {
                  listen: "127.0.0.1:0",
                  connect: `127.0.0.1:${(remote.address() as { port: number }).port}`,
                  ca: "named",
                  certificate: null,
                  server_name: null,
                },
              ],
            },
            tls_material,
          },
          keys,
        );
        shields.push(shield);
        assert.equal(await plainRoundTrip(portOf(shield.addresses[0]!)), expected);
      } finally {
        remote.close();
      }
    }
  });
});

/** Write "hello" to a local plaintext port; what came back ("" when the shield gave up). */
function plainRoundTrip(port: number): Promise<string> {
  return new Promise<string>((resolve) => {
    const s = tcpConnect(port, "127.0.0.1", () => s.write("hello"));
    let got = "";
    s.on("data", (d) => {
      got += d;
      if (got === "hello") s.end();
    });
    s.on("close", () => resolve(got));
    s.on("error", () => resolve(got));
  });
}

describe("outbound", () => {
  test("a local plaintext port becomes mutual TLS to the remote, verified against the CA", async () => {
    const remoteCa = ca("remote CA");
    const remoteCert = leaf("remote", remoteCa, ["server"]);
    let clientSubject = "";
    const remote = createTlsServer(
      {
        key: keyPem(remoteCert.key),
        cert: remoteCert.cert.toString(),
        requestCert: true,
        rejectUnauthorized: true,
        ca: serviceCa.cert.toString(),
        minVersion: "TLSv1.3",
      },
      (s) => {
        clientSubject = s.getPeerX509Certificate()?.subject ?? "";
        s.pipe(s);
      },
    );
    await new Promise<void>((r) => remote.listen(0, "127.0.0.1", r));
    const remotePort = (remote.address() as { port: number }).port;
    try {
      const config = (caName: string) => ({
        tls: {
          inbound: [],
          outbound: [
            {
              listen: "127.0.0.1:0",
              connect: `127.0.0.1:${remotePort}`,
              ca: caName,
              certificate: null,
              server_name: null,
            },
          ],
        },
        tls_material: { remote_ca: caMaterial(remoteCa), wrong_ca: caMaterial(ca("wrong CA")) },
      });
      const plain = plainRoundTrip;
      const good = await startShields(config("remote_ca"), keys);
      shields.push(good);
      assert.equal(await plain(portOf(good.addresses[0]!)), "hello");
      assert.match(clientSubject, /CN=shop\/web/, "the remote saw the service certificate");
      const bad = await startShields(config("wrong_ca"), keys);
      shields.push(bad);
      assert.equal(await plain(portOf(bad.addresses[0]!)), "", "an unverified remote gets nothing");
    } finally {
      remote.close();
    }
  });
});
