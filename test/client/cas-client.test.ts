/**
 * The CAS client's connections against a real CAS: sequential requests share one pinned TLS
 * connection (a runtime's challenge and attestation cost one handshake), concurrent ones each get
 * their own, close() ends them, every new connection's key is checked before a request byte is
 * sent on it, and an idle kept connection does not keep a process alive.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer as createTcpServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { after, before, test } from "node:test";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { CasClient, CasPinError } from "../../src/client/cas-client.ts";
import { selfSignedP256 } from "../../src/crypto/self-signed.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

let cas: TestCas;
let alice: TestIdentity;
/** What the CAS's server saw: TLS connections made, requests received. */
const seen = { connections: 0, requests: 0 };
before(async () => {
  cas = await startTestCas();
  alice = await makeIdentity("alice");
  const server = cas.running.app.server;
  server.on("secureConnection", (_socket: TLSSocket) => seen.connections++);
  server.on("request", () => seen.requests++);
});
after(() => cas.dispose());

const counting = async (work: () => Promise<unknown>) => {
  const before = { ...seen };
  await work();
  return { connections: seen.connections - before.connections, requests: seen.requests - before.requests };
};

test("sequential requests share one pinned connection; close() ends it, the next request opens another", async () => {
  const client = cas.client(alice);
  const first = await counting(async () => {
    for (let i = 0; i < 3; i++) await client.request("GET", "/healthz");
  });
  assert.deepEqual(first, { connections: 1, requests: 3 });
  client.close();
  const again = await counting(() => client.request("GET", "/healthz"));
  assert.deepEqual(again, { connections: 1, requests: 1 });
  client.close();
});

test("concurrent requests get connections of their own, each pinned", async () => {
  const client = cas.client(alice);
  const counted = await counting(() => Promise.all([1, 2, 3].map(() => client.request("GET", "/healthz"))));
  assert.deepEqual(counted, { connections: 3, requests: 3 });
  client.close();
});

test("a wrong pin: refused at every attempt, before any request is sent", async () => {
  const wrong = new CasClient({ url: cas.running.url, casKey: "ab".repeat(32) });
  const requestsBefore = seen.requests;
  const counted = await counting(async () => {
    for (let i = 0; i < 2; i++)
      await assert.rejects(
        wrong.request("POST", "/v1/attestation/challenge", { config_id: "x/y" }),
        (e: Error) => e instanceof CasPinError && /not the pinned abab/.test(e.message),
      );
  });
  // Whatever the client might have sent has reached the server by now.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(seen.requests - requestsBefore, 0, "no request reached the CAS");
  assert.equal(counted.requests, 0);
  wrong.close();
});

test("an idle kept connection does not keep a process alive", async () => {
  const script = `
    const { CasClient } = await import(${JSON.stringify(new URL("../../src/client/cas-client.ts", import.meta.url).href)});
    const client = new CasClient({ url: ${JSON.stringify(cas.running.url)}, casKey: ${JSON.stringify(cas.running.identity.hash)} });
    await client.request("GET", "/healthz");
    console.log("done");`;
  const started = performance.now();
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d));
  child.stderr.on("data", (d: Buffer) => (out += d));
  const code = await new Promise((resolve) => child.on("exit", resolve));
  assert.equal(code, 0, out);
  assert.equal(out.trim(), "done");
  // The CAS keeps idle connections for 30 s: an exit well before that was not held up by one.
  assert.ok(performance.now() - started < 10_000, `exited after ${performance.now() - started} ms`);
});

/**
 * A TCP forwarder in front of the CAS, its address what the client is given: connection n goes
 * where `route(n)` says (a port), and the test can reach into each pair.
 */
async function forwarder(route: (n: number) => number) {
  const pairs: { client: Socket; upstream: Socket }[] = [];
  const server: Server = createTcpServer((client) => {
    const upstream = tcpConnect(route(pairs.length + 1), "127.0.0.1");
    pairs.push({ client, upstream });
    client.pipe(upstream).pipe(client);
    // Either side gone, the other goes too (as a server closing its side would be seen).
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`,
    pairs,
    close: () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const casPort = () => Number(new URL(cas.running.url).port);
const client = (url: string) => new CasClient({ url, casKey: cas.running.identity.hash });

test("the pin is checked on every new connection, not only the first: an impostor later at the same address gets nothing", async () => {
  const impostorKeys = await selfSignedP256("impostor", 1);
  let impostorBytes = 0;
  const impostor = createTlsServer({ key: impostorKeys.keyPem, cert: impostorKeys.certificatePem }, (socket) =>
    socket.on("data", (d: Buffer) => (impostorBytes += d.length)),
  );
  await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", resolve));
  const impostorPort = (impostor.address() as { port: number }).port;
  const front = await forwarder((n) => (n === 1 ? casPort() : impostorPort));
  const c = client(front.url);
  try {
    await c.request("GET", "/healthz");
    // The CAS's side of the kept connection goes away (as after its keep-alive timeout).
    front.pairs[0]!.upstream.destroy();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await assert.rejects(
      c.request("POST", "/v1/attestation/challenge", { config_id: "secret/body" }),
      (e: Error) => e instanceof CasPinError,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(impostorBytes, 0, "no request byte reached the impostor");
  } finally {
    c.close();
    await front.close();
    await new Promise((resolve) => impostor.close(resolve));
  }
});

test("a kept connection the CAS closed unnoticed: the request goes again on a new connection, once", async () => {
  // Connection 1's later bytes are answered with a reset, as a server that has just closed an
  // idle connection does: the request never reaches the CAS.
  let stale = false;
  const front = await forwarder(() => casPort());
  const c = client(front.url);
  try {
    const counted = await counting(async () => {
      await c.request("GET", "/healthz");
      stale = true;
      const first = front.pairs[0]!;
      first.client.unpipe(first.upstream);
      first.client.on("data", () => {
        if (stale) first.client.resetAndDestroy();
      });
      first.client.resume();
      await c.request("GET", "/healthz");
    });
    assert.equal(front.pairs.length, 2, "a second connection was opened");
    assert.deepEqual(counted, { connections: 2, requests: 2 }, "the stale attempt never reached the CAS");
  } finally {
    c.close();
    await front.close();
  }
});
