/**
 * End to end with real Debian programs, each started by `cloister run --tee sim` against a real
 * CAS and LAS: nginx serving HTTPS with an injected certificate, redis-server taking its password
 * from an injected configuration file, and a Python program with an environment secret and a
 * secret imported from another identity's policy.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { type AnyUserInstall, installForAnyUser } from "../helpers/any-user.ts";
import { makeIdentity } from "../helpers/cas.ts";
import { eventually, startWorld, type World } from "../helpers/e2e.ts";
import { freePort } from "../helpers/net.ts";

const run = promisify(execFile);
let world: World;
const dir = mkdtempSync(join(tmpdir(), "cloister-programs-"));
before(async () => {
  world = await startWorld();
});
after(async () => {
  await world.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("nginx", () => {
  test("serves HTTPS with the certificate and key injected from the CAS; curl verifies the chain against the policy's CA", async () => {
    const port = await freePort();
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: site
security:
  attestation: {mode: simulation}
services:
  - name: nginx
    measurements: [{tee: sim, digest: ${world.digest("/usr/sbin/nginx")}}]
    command: [/usr/sbin/nginx, -e, stderr, -c, /etc/nginx-cloister/nginx.conf, -g, "daemon off;"]
    files:
      - path: /etc/nginx-cloister/nginx.conf
        mode: "0444"
        content: |
          pid /dev/shm/nginx.pid;
          events {}
          http {
            access_log off;
            server {
              listen 127.0.0.1:${port} ssl;
              ssl_certificate     /etc/nginx-cloister/tls.crt;
              ssl_certificate_key /etc/nginx-cloister/tls.key;
              ssl_protocols TLSv1.3;
              location / { return 200 "hello from an attested nginx\\n"; }
            }
          }
      - {path: /etc/nginx-cloister/tls.crt, content: "$$cloister::web:chain$$", mode: "0444"}
      - {path: /etc/nginx-cloister/tls.key, content: "$$cloister::web:key$$", mode: "0400"}
secrets:
  - {name: site_ca, kind: x509-ca}
  - {name: web, kind: x509, issuer: site_ca, san: ["dns:localhost", "ip:127.0.0.1"], usage: [server]}
`,
    });
    const ca = join(dir, "site-ca.pem");
    writeFileSync(ca, ((await world.secret("site", "site_ca")) as { certificate: string }).certificate);
    const nginx = world.start("site/nginx", "/usr/sbin/nginx");
    try {
      const { stdout } = await eventually(
        () => run("curl", ["-sS", "--fail", "--cacert", ca, `https://127.0.0.1:${port}/`]),
        `nginx: ${nginx.output()}`,
      );
      assert.equal(stdout, "hello from an attested nginx\n");
      await assert.rejects(
        run("curl", ["-sS", "--fail", `https://127.0.0.1:${port}/`]),
        "without the policy's CA, curl refuses the certificate",
      );
      assert.equal(existsSync("/etc/nginx-cloister"), false, "the key never touched the host's filesystem");
    } finally {
      nginx.child.kill("SIGTERM");
      await new Promise((r) => nginx.child.on("exit", r));
    }
  });
});

describe("redis-server", () => {
  test("takes its password from an injected configuration file: redis-cli with it works, without it is refused", async () => {
    const port = await freePort();
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: kv
security:
  attestation: {mode: simulation}
services:
  - name: redis
    measurements: [{tee: sim, digest: ${world.digest("/usr/bin/redis-server")}}]
    command: [/usr/bin/redis-server, /etc/redis-cloister/redis.conf]
    files:
      - path: /etc/redis-cloister/redis.conf
        content: |
          bind 127.0.0.1
          port ${port}
          requirepass $$cloister::redis_password$$
          save ""
          appendonly no
          daemonize no
          dir /dev/shm
secrets:
  - {name: redis_password, kind: ascii, size: 32}
`,
    });
    const password = ((await world.secret("kv", "redis_password")) as { value: string }).value;
    const redis = world.start("kv/redis", "/usr/bin/redis-server");
    try {
      const { stdout } = await eventually(
        () => run("redis-cli", ["-p", String(port), "--no-auth-warning", "-a", password, "ping"]),
        `redis: ${redis.output()}`,
      );
      assert.equal(stdout.trim(), "PONG");
      const anonymous = await run("redis-cli", ["-p", String(port), "ping"]);
      assert.match(anonymous.stdout, /NOAUTH/);
      const wrong = await run("redis-cli", ["-p", String(port), "--no-auth-warning", "-a", "guess", "ping"]);
      assert.match(wrong.stdout + wrong.stderr, /WRONGPASS|invalid password/i);
    } finally {
      redis.child.kill("SIGTERM");
      await new Promise((r) => redis.child.on("exit", r));
    }
  });
});

describe("Python: a data owner's key reaches an analytics program", () => {
  test("an environment secret and an imported secret; refused once the exporter withdraws the export", async () => {
    const script = join(dir, "report.py");
    writeFileSync(
      script,
      // Python sets LC_CTYPE itself under the C locale (PEP 538); every other variable is the policy's.
      "import os\nprint('api', os.environ['API_TOKEN'])\nprint('dataset', os.environ['DATASET_KEY'])\n" +
        "print('env', *sorted(k for k in os.environ if k != 'LC_CTYPE'))\n",
    );
    const python = "/usr/bin/python3";
    // The data owner is another identity with a policy of its own.
    const dora = world.cas.client(await makeIdentity("dora"));
    const owner = (exportTo: string) =>
      `version: "1"\nname: dataowner\n# The key is generated: it reaches only importers of the same attestation mode.\nsecurity: {attestation: {mode: simulation}}\nsecrets:\n  - {name: dataset_key, kind: binary, size: 32, export: [${exportTo}]}\n`;
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: analytics
security:
  attestation: {mode: simulation}
services:
  - name: report
    measurements: [{tee: sim, digest: ${world.digest(python)}}]
    command: [${python}, ${script}]
    environment:
      API_TOKEN: "$$cloister::api_token$$"
      DATASET_KEY: "$$cloister::dataset_key:hex$$"
secrets:
  - {name: api_token, kind: ascii, size: 20}
  - {name: dataset_key, import: {policy: dataowner, secret: dataset_key, kind: binary}}
`,
    });
    // The exporter names a policy that exists: an export stored before its importer was made
    // would wait for the exporter to confirm it (test/cas/imports.test.ts).
    const created = await dora.request<{ hash: string }>("POST", "/v1/policies", {
      policy: owner("{policy: analytics}"),
    });
    const ok = await world.run("analytics/report", python);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /warning: analytics\/report runs without hardware attestation \(sim, \w+, simulated\)/);
    const token = ((await world.secret("analytics", "api_token")) as { value: string }).value;
    const key = Buffer.from(
      ((await world.secret("dataowner", "dataset_key")) as { value: string }).value,
      "base64",
    ).toString("hex");
    assert.equal(
      ok.stdout,
      `api ${token}\ndataset ${key}\nenv API_TOKEN DATASET_KEY\n`,
      "nothing of cloister's environment",
    );

    await dora.request("PUT", "/v1/policies/dataowner", { policy: `${owner("")}predecessor: ${created.hash}\n` });
    const refused = await world.run("analytics/report", python);
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, "", "the program never started");
    assert.match(refused.stderr, /dataowner does not export dataset_key to analytics/);
  });
});

describe("as a non-root user", () => {
  // nobody runs a copy of cloister that it can reach: the checkout may sit in a 0700 directory.
  let install: AnyUserInstall;
  before(() => {
    install = installForAnyUser();
  });
  after(() => install.dispose());

  test("the files exist in a user namespace of its own, for the program only", async () => {
    // The tests run as root (CI does); runuser makes this one start as nobody.
    const cat = "/usr/bin/cat";
    const path = "/etc/cloister-nobody/token.txt";
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: unprivileged
security:
  attestation: {mode: simulation}
services:
  - name: reader
    measurements: [{tee: sim, digest: ${world.digest(cat)}}]
    command: [${cat}, ${path}]
    files: [{path: ${path}, content: "token $$cloister::token$$"}]
secrets:
  - {name: token, kind: ascii, size: 16}
`,
    });
    const argv = [
      install.node,
      install.bin,
      "--",
      "run",
      "--config-id",
      "unprivileged/reader",
      "--tee",
      "sim",
      "--",
      cat,
    ];
    const { stdout, stderr } = await run("runuser", ["-u", "nobody", "--", ...argv], {
      env: { ...process.env, ...world.env },
    });
    const token = ((await world.secret("unprivileged", "token")) as { value: string }).value;
    assert.equal(stdout, `token ${token}`, stderr);
    assert.equal(existsSync(path), false, "nothing was written to the host's file system");
    assert.equal(existsSync("/etc/cloister-nobody"), false);
  });

  test("where the host forbids user namespaces: one line saying so, before attesting, and no start", async () => {
    // A FAKE unshare, first on PATH, answers as a kernel with kernel.unprivileged_userns_clone=0 does.
    const fakes = mkdtempSync(join(tmpdir(), "cloister-fake-unshare-"));
    try {
      chmodSync(fakes, 0o755);
      writeFileSync(
        join(fakes, "unshare"),
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n",
        {
          mode: 0o755,
        },
      );
      const argv = [
        install.node,
        install.bin,
        "--",
        "run",
        "--config-id",
        "unprivileged/reader",
        "--tee",
        "sim",
        "--",
        "/usr/bin/cat",
      ];
      const refused = await run(
        "runuser",
        ["-u", "nobody", "--", "env", `PATH=${fakes}:${process.env.PATH}`, ...argv],
        {
          // No CAS listens here: had cloister attested first, the error would say the CAS is unreachable.
          env: { ...process.env, ...world.env, CLOISTER_CAS_ADDR: "https://127.0.0.1:1" },
        },
      ).then(
        () => assert.fail("cloister run must refuse"),
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
      assert.equal(refused.code, 1);
      assert.equal(refused.stdout, "", "the program never started");
      assert.match(
        refused.stderr,
        /^cloister: cloister run as a non-root user needs unprivileged user namespaces, which this host refuses \(unshare: unshare failed: Operation not permitted\)/,
      );
      assert.equal(refused.stderr.trim().split("\n").length, 1);
    } finally {
      rmSync(fakes, { recursive: true, force: true });
    }
  });
});
