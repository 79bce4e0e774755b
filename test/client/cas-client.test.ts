/**
 * The CAS client's connections against a real CAS: sequential requests share one pinned TLS
 * connection (a runtime's challenge and attestation cost one handshake), concurrent ones each get
 * their own, close() ends them, every new connection's key is checked before a request byte is
 * sent on it, and an idle kept connection does not keep a process alive.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { CasClient, CasPinError } from "../../src/client/cas-client.ts";
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
