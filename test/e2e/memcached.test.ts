/**
 * End to end: memcached (Debian's, unmodified) started by `cloister run --tee sim` against a real
 * CAS and LAS, reachable only through the runtime's inbound TLS shield.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { realpathSync } from "node:fs";
import { after, before, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { startWorld, type World } from "../helpers/e2e.ts";
import { freePort } from "../helpers/net.ts";

const MEMCACHED = realpathSync("/usr/bin/memcached");
let world: World;
let run: ChildProcess;
let shieldPort = 0;
let caPem = "";

/** One exchange over TLS to the shield, verified against the policy's CA. */
function overTls(request: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port: shieldPort, ca: caPem, minVersion: "TLSv1.3" }, () =>
      s.write(request),
    );
    let got = "";
    s.on("data", (d) => {
      got += d;
      if (until.test(got)) {
        s.end();
        resolve(got);
      }
    });
    s.on("error", reject);
    s.on("close", () => reject(new Error(`closed after ${JSON.stringify(got)}`)));
    s.setTimeout(5_000, () => s.destroy(new Error("timeout")));
  });
}

before(async () => {
  world = await startWorld();
  const port = await freePort();
  shieldPort = await freePort();
  await world.owner.request("POST", "/v1/policies", {
    policy: `version: "1"
name: cache
security:
  attestation: {mode: simulation}
services:
  - name: memcached
    measurements: [{tee: sim, digest: ${world.digest(MEMCACHED)}}]
    command: [${MEMCACHED}, -l, 127.0.0.1, -p, "${port}", -U, "0", -u, memcache]
    tls:
      inbound: [{listen: "127.0.0.1:${shieldPort}", forward: "127.0.0.1:${port}", certificate: mc_cert}]
secrets:
  - {name: mc_ca, kind: x509-ca}
  - {name: mc_cert, kind: x509, issuer: mc_ca, san: ["ip:127.0.0.1"], usage: [server]}
`,
  });
  caPem = ((await world.secret("cache", "mc_ca")) as { certificate: string }).certificate;
  const started = world.start("cache/memcached", MEMCACHED);
  run = started.child;
  // Wait until memcached answers through the shield.
  for (let i = 0; ; i++) {
    try {
      if (/^VERSION /.test(await overTls("version\r\n", /\r\n$/))) break;
    } catch {
      if (i > 100 || run.exitCode !== null)
        throw new Error(`memcached did not come up behind the shield: ${started.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
});
after(() => world.dispose());

test("memcached behind the inbound shield: set and get over TLS 1.3, verified against the policy's CA", async () => {
  assert.match(await overTls("set greeting 0 0 5\r\nhello\r\n", /STORED\r\n/), /STORED/);
  assert.equal(await overTls("get greeting\r\n", /END\r\n/), "VALUE greeting 0 5\r\nhello\r\nEND\r\n");
});

test("plaintext to the shield gets no memcached answer", async () => {
  const answer = await new Promise<string>((resolve) => {
    const { connect } = process.getBuiltinModule("node:net");
    const s = connect(shieldPort, "127.0.0.1", () => s.write("version\r\n"));
    let got = "";
    s.on("data", (d: Buffer) => (got += d));
    s.on("close", () => resolve(got));
    s.on("error", () => resolve(got));
    setTimeout(() => s.destroy(), 1000);
  });
  assert.doesNotMatch(answer, /VERSION/);
});

test("SIGTERM stops memcached and the shield with it", async () => {
  run.kill("SIGTERM");
  await new Promise((r) => run.on("exit", r));
  await assert.rejects(overTls("version\r\n", /\r\n$/));
});
