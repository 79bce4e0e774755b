/** The CAS's HTTP surface: bad input, identities, slow clients, health, metrics, OpenAPI. */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmdirSync, symlinkSync, unlinkSync } from "node:fs";
import { type Socket, connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { DataDirectoryInUse } from "../../src/cas/data-dir-lock.ts";
import { startCas } from "../../src/cas/start.ts";
import { type CasRequestError, policyPath } from "../../src/client/cas-client.ts";
import { makeIdentity, startTestCas, type TestCas, type TestIdentity } from "../helpers/cas.ts";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "policies");

let cas: TestCas;
let alice: TestIdentity;
let mallory: TestIdentity;
before(async () => {
  cas = await startTestCas({ requestTimeoutMs: 1_000 });
  alice = await makeIdentity("alice");
  mallory = await makeIdentity("mallory");
  await cas.client(alice).request("POST", "/v1/policies", { policy: 'version: "1"\nname: mine\n' });
});
after(() => cas.dispose());

const port = () => Number(new URL(cas.running.url).port);

/** A raw HTTPS exchange over TLS 1.3, with or without a client certificate. */
function raw(request: string | Buffer, identity?: TestIdentity): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: "127.0.0.1",
      port: port(),
      rejectUnauthorized: false,
      ...(identity ? { key: identity.keyPem, cert: identity.certificatePem } : {}),
    });
    let data = "";
    socket.on("data", (d) => (data += d.toString()));
    socket.on("end", () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1]);
      resolve({ status, body: data.slice(data.indexOf("\r\n\r\n") + 4) });
    });
    socket.on("error", reject);
    socket.once("secureConnect", () => socket.end(request));
  });
}

const post = (body: string | Buffer, contentType = "application/json") =>
  Buffer.concat([
    Buffer.from(
      `POST /v1/policies HTTP/1.1\r\nhost: x\r\ncontent-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`,
    ),
    Buffer.from(body),
  ]);

describe("bad input gets a precise 4xx and stores nothing", () => {
  const policiesOf = async (who: TestIdentity) =>
    (await cas.client(who).request<{ policies: { name: string }[] }>("GET", "/v1/policies")).policies.map(
      (p) => p.name,
    );

  test("malformed JSON", async () => {
    const r = await raw(post('{"policy": "version: 1'), alice);
    assert.equal(r.status, 400);
    assert.match(r.body, /JSON/);
  });

  test("unknown fields in the request", async () => {
    await assert.rejects(
      cas.client(alice).request("POST", "/v1/policies", { policy: 'version: "1"\nname: x1\n', owner: "me" }),
      (e: CasRequestError) => {
        assert.equal(e.status, 400);
        assert.match(e.message, /owner/);
        return true;
      },
    );
  });

  test("malformed YAML and invalid policies say where", async () => {
    await assert.rejects(
      cas.client(alice).request("POST", "/v1/policies", { policy: "version: [1\n" }),
      (e: CasRequestError) => {
        assert.equal(e.status, 400);
        assert.equal(e.code, "invalid_policy");
        assert.match(e.message, /^policy:\d+:\d+: yaml: /);
        return true;
      },
    );
    await assert.rejects(
      cas
        .client(alice)
        .request("POST", "/v1/policies", { policy: 'version: "1"\nname: x2\nsecrets: [{name: k, kind: asci}]\n' }),
      (e: CasRequestError) => {
        assert.equal(e.status, 400);
        assert.match(e.message, /policy:3:27: secrets\[0\]\.kind: .*did you mean "ascii"/);
        assert.ok(Array.isArray(e.details) && e.details.length === 1);
        return true;
      },
    );
  });

  test("a wrong content type", async () => {
    const r = await raw(post("version: 1", "text/plain"), alice);
    assert.equal(r.status, 415);
  });

  test("an oversized body is 413", async () => {
    const big = JSON.stringify({ policy: `# ${"x".repeat(3 * 1024 * 1024)}` });
    const r = await raw(post(big), alice);
    assert.equal(r.status, 413);
  });

  test("a predecessor on create, none on update", async () => {
    await assert.rejects(
      cas
        .client(alice)
        .request("POST", "/v1/policies", { policy: `version: "1"\nname: x3\npredecessor: ${"a".repeat(64)}\n` }),
      { status: 400, code: "predecessor_on_create" },
    );
    await assert.rejects(
      cas.client(alice).request("PUT", policyPath("mine"), { policy: 'version: "1"\nname: mine\n' }),
      {
        status: 400,
        code: "no_predecessor",
      },
    );
    await assert.rejects(
      cas.client(alice).request("PUT", policyPath("other"), { policy: 'version: "1"\nname: mine\n' }),
      {
        status: 400,
        code: "name_mismatch",
      },
    );
  });

  test("no client certificate is 401; an unknown one has no rights", async () => {
    const r = await raw("GET /v1/policies HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.equal(r.status, 401);
    assert.match(r.body, /client certificate is required/);
    assert.deepEqual(await policiesOf(mallory), []);
    await assert.rejects(cas.client(mallory).request("GET", policyPath("mine")), { status: 404 });
    await assert.rejects(cas.client(mallory).request("GET", policyPath("mine", "/history")), { status: 404 });
  });

  test("an unknown route is 404 and names it", async () => {
    const r = await raw("GET /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", alice);
    assert.equal(r.status, 404);
    assert.match(r.body, /no route GET \/v1\/nothing/);
  });

  test("a damaged certificate in an explicit value is 400 invalid_policy, not 500", async () => {
    // The fixture's issuer certificate is cut short: OpenSSL's error escaped as a 500 before.
    const text = readFileSync(join(FIXTURES, "invalid", "x509-value-issuer-damaged.yaml"), "utf8");
    await assert.rejects(
      cas.client(alice).request("POST", "/v1/policies", { policy: text.replace("name: t/p", "name: x4") }),
      (e: CasRequestError) => {
        assert.equal(e.status, 400, e.message);
        assert.equal(e.code, "invalid_policy");
        assert.match(
          e.message,
          /^policy:8:12: secrets\[0\]\.value: CERTIFICATE block 2 \(an issuer\) cannot be parsed/,
        );
        assert.ok(!e.message.includes("MIIB"), "the value is not echoed");
        return true;
      },
    );
  });

  test("a given CA whose key the CAS cannot sign with, named as issuer, is 400 invalid_policy, not 500", async () => {
    // A P-521 CA: issuing the leaf under it threw after the policy had been accepted.
    const text = readFileSync(join(FIXTURES, "invalid", "x509-ca-value-cannot-sign.yaml"), "utf8");
    await assert.rejects(
      cas.client(alice).request("POST", "/v1/policies", { policy: text.replace("name: t/p", "name: x5") }),
      (e: CasRequestError) => {
        assert.equal(e.status, 400, e.message);
        assert.equal(e.code, "invalid_policy");
        assert.match(e.message, /^policy:6:15: security\.service_ca: .*cannot sign certificates/m);
        assert.match(e.message, /^policy:33:38: secrets\[1\]\.issuer: .*cannot sign certificates/m);
        return true;
      },
    );
  });

  test("nothing was stored by any of the above", async () => {
    assert.deepEqual(await policiesOf(alice), ["mine"]);
  });
});

describe("slow and abandoned connections", () => {
  test("idle TCP connections, stalled handshakes and slowloris requests do not stop others being served", async () => {
    const sockets: (Socket | TLSSocket)[] = [];
    try {
      // 20 connections that never start TLS.
      for (let i = 0; i < 20; i++) sockets.push(tcpConnect(port(), "127.0.0.1").on("error", () => {}));
      // 10 TLS connections that send half a request and stall.
      const slow: Promise<boolean>[] = [];
      for (let i = 0; i < 10; i++) {
        const s = tlsConnect({
          host: "127.0.0.1",
          port: port(),
          rejectUnauthorized: false,
          key: alice.keyPem,
          cert: alice.certificatePem,
        });
        s.on("error", () => {});
        s.once("secureConnect", () =>
          s.write(
            'POST /v1/policies HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"pol',
          ),
        );
        slow.push(new Promise((resolve) => s.on("close", () => resolve(true))));
        sockets.push(s);
      }
      const start = performance.now();
      const r = await cas.client(alice).request<{ policies: unknown[] }>("GET", "/v1/policies");
      assert.equal(r.policies.length, 1);
      assert.ok(performance.now() - start < 1_000, "served promptly despite the stalled clients");
      // The stalled requests are cut after the request timeout (1 s here).
      const closed = await Promise.race([Promise.all(slow), new Promise((r) => setTimeout(() => r("timeout"), 5_000))]);
      assert.notEqual(closed, "timeout", "stalled requests were cut");
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});

describe("service endpoints", () => {
  test("healthz and readyz answer without an identity", async () => {
    assert.equal((await raw("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")).status, 200);
    const ready = await raw("GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.equal(ready.status, 200);
    assert.match(ready.body, /ready/);
  });

  test("metrics in Prometheus text format", async () => {
    const r = await raw("GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.equal(r.status, 200);
    assert.match(r.body, /# TYPE cloister_cas_requests_total counter/);
    assert.match(r.body, /cloister_cas_requests_total\{route="\/v1\/policies",method="POST",status="201"\} \d+/);
    assert.match(r.body, /cloister_cas_policies 1/);
  });

  test("the OpenAPI 3.1 document covers every route", async () => {
    const r = await raw("GET /v1/openapi.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    const doc = JSON.parse(r.body) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.equal(doc.openapi, "3.1.0");
    assert.deepEqual(Object.keys(doc.paths).sort(), [
      "/v1/attestation",
      "/v1/attestation/challenge",
      "/v1/audit",
      "/v1/collateral",
      "/v1/las",
      "/v1/policies",
      "/v1/policies/{name}",
      "/v1/policies/{name}/history",
      "/v1/volumes/{policy}/{volume}/tag",
    ]);
    assert.deepEqual(Object.keys(doc.paths["/v1/policies/{name}"]!).sort(), ["delete", "get", "put"]);
    const body = (
      doc.paths["/v1/policies"]!.post as {
        requestBody: { content: Record<string, { schema: { properties: object } }> };
      }
    ).requestBody;
    assert.deepEqual(Object.keys(body.content["application/json"]!.schema.properties).sort(), ["policy", "signatures"]);
  });

  test("TLS 1.2 is refused", async () => {
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = tlsConnect({ host: "127.0.0.1", port: port(), rejectUnauthorized: false, maxVersion: "TLSv1.2" });
        s.once("secureConnect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", reject);
      }),
    );
  });
});

describe("one CAS per data directory", () => {
  test("a second CAS on the same directory, by any path, is refused; after the first stops, it starts", async () => {
    const link = `${cas.dataDir}-link`;
    symlinkSync(cas.dataDir, link);
    try {
      for (const dataDir of [cas.dataDir, link, `${cas.dataDir}/.`])
        await assert.rejects(
          startCas({ dataDir, listen: "127.0.0.1:0" }),
          (e: Error) => e instanceof DataDirectoryInUse && /in use by another CAS/.test(e.message),
        );
      const other = await startTestCas();
      await other.dispose();
    } finally {
      unlinkSync(link);
    }
  });

  test("a bind mount of the directory and another network namespace meet the same lock", async () => {
    const mounted = `${cas.dataDir}-bound`;
    mkdirSync(mounted);
    execFileSync("mount", ["--bind", cas.dataDir, mounted]);
    try {
      await assert.rejects(startCas({ dataDir: mounted, listen: "127.0.0.1:0" }), DataDirectoryInUse);
    } finally {
      execFileSync("umount", [mounted]);
      rmdirSync(mounted);
    }
    const bin = join(import.meta.dirname, "..", "..", "bin", "cloister");
    const other = spawnSync(
      "unshare",
      ["-n", bin, "cas", "start", "--data-dir", cas.dataDir, "--listen", "127.0.0.1:0"],
      {
        encoding: "utf8",
        timeout: 20_000,
      },
    );
    assert.equal(other.status, 1, other.stderr);
    assert.match(other.stderr, /in use by another CAS/);
  });

  test("released when the CAS stops, so a restart on the same directory works", async () => {
    const own = await startTestCas();
    const again = await own.restart();
    await assert.rejects(startCas({ dataDir: own.dataDir, listen: "127.0.0.1:0" }), DataDirectoryInUse);
    await again.dispose();
  });
});
