/**
 * `cloister run` end to end in simulation mode: a real CAS, a real LAS, a real program. The
 * program sees exactly the policy's argv, environment, working directory and files; the files
 * exist in its private mount namespace only; it never starts when attestation is refused.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { loadOrCreateNodeKey, type RunningLas, startLas } from "../../src/las/server.ts";
import { makeIdentity, startTestCas, type TestCas } from "../helpers/cas.ts";
import { BIN, runCli } from "../helpers/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-run-"));
const app = join(dir, "app.sh");
const trap = join(dir, "trap.sh");
const marker = join(dir, "started");
let cas: TestCas;
let las: RunningLas;
let env: Record<string, string>;
let owner: Awaited<ReturnType<typeof makeIdentity>>;

before(async () => {
  writeFileSync(
    app,
    `#!/bin/sh\necho started > ${marker}\necho "argv: $*"\necho "env: $(env | sort | tr '\\n' ' ')"\necho "pwd: $(pwd)"\ncat /etc/cloister-run-test/secret.conf\nexit 7\n`,
    { mode: 0o755 },
  );
  writeFileSync(trap, `#!/bin/sh\ntrap 'exit 42' TERM\necho ready\nwhile true; do sleep 0.05; done\n`, { mode: 0o755 });
  owner = await makeIdentity("owner");
  cas = await startTestCas({ admins: [owner.hash] });
  const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  las = await startLas({ listen: "127.0.0.1:0", key });
  await cas.client(owner).request("POST", "/v1/las", { key: las.key });
  const digest = (file: string) => measureFile(Buffer.from(require_("node:fs").readFileSync(file)));
  const policy = (name: string, mode: string, program: string, measurement: string) => `version: "1"
name: ${name}
security:
  attestation: {mode: ${mode}}
services:
  - name: svc
    measurements: [${measurement}]
    command: [${program}, "--token=$$cloister::token$$", "two words"]
    environment: {TOKEN: "$$cloister::token$$", GREETING: "hello"}
    pwd: ${dir}
    files:
      - {path: /etc/cloister-run-test/secret.conf, content: "password=$$cloister::pw$$", mode: "0400"}
secrets:
  - {name: token, kind: ascii, size: 16}
  - {name: pw, kind: ascii, value: "s3cret-in-memory"}
`;
  const c = cas.client(owner);
  await c.request("POST", "/v1/policies", {
    policy: policy("runme", "simulation", app, `{tee: sim, digest: ${digest(app)}}`),
  });
  await c.request("POST", "/v1/policies", {
    policy: policy("trapme", "simulation", trap, `{tee: sim, digest: ${digest(trap)}}`),
  });
  await c.request("POST", "/v1/policies", {
    policy: policy("hardonly", "hardware", app, `{tee: sgx, mrenclave: ${digest(app)}}`),
  });
  env = {
    CLOISTER_CAS_ADDR: cas.running.url,
    CLOISTER_CAS_KEY: cas.running.identity.hash,
    CLOISTER_LAS_ADDR: las.url,
    SECRET_FROM_HOST: "must-not-leak",
  };
});
after(async () => {
  await las.close();
  await cas.dispose();
  rmSync(dir, { recursive: true, force: true });
});

// node:fs through a function, so that the digest helper reads the file when called.
function require_(m: "node:fs") {
  return process.getBuiltinModule(m);
}

describe("cloister run", () => {
  test("the program gets the policy's argv, environment, directory and in-memory files, and its exit code is ours", async () => {
    let connections = 0;
    const count = () => connections++;
    cas.running.app.server.on("secureConnection", count);
    const r = await runCli(["run", "--config-id", "runme/svc", "--tee", "sim", "--", app, "--host-arg-ignored"], {
      env,
    }).finally(() => cas.running.app.server.off("secureConnection", count));
    assert.equal(r.code, 7, r.stderr);
    assert.equal(connections, 1, "the challenge and the attestation share one TLS connection to the CAS");
    const token = /--token=([A-Za-z0-9]{16}) two words/.exec(r.stdout)?.[1];
    assert.ok(token, r.stdout);
    assert.match(r.stdout, new RegExp(`env: .*TOKEN=${token}`));
    assert.match(r.stdout, /GREETING=hello/);
    assert.doesNotMatch(r.stdout, /SECRET_FROM_HOST|CLOISTER_CAS_KEY/, "the host's environment is not the program's");
    assert.match(r.stdout, new RegExp(`pwd: ${dir}`));
    assert.match(r.stdout, /password=s3cret-in-memory/);
    assert.equal(existsSync("/etc/cloister-run-test"), false, "nothing was written to the host's filesystem");
    assert.deepEqual(
      readdirSync("/dev/shm").filter((f) => f.includes("cloister")),
      [],
    );
  });

  test("signals reach the program", async () => {
    const child = spawn(process.execPath, [BIN, "--", "run", "--config-id", "trapme/svc", "--tee", "sim", trap], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    await new Promise<void>((resolve) =>
      child.stdout.on("data", (d: Buffer) => d.toString().includes("ready") && resolve()),
    );
    child.kill("SIGTERM");
    const code = await new Promise((resolve) => child.on("exit", resolve));
    assert.equal(code, 42);
  });

  const neverStarts = async (args: string[], message: RegExp, extraEnv: Record<string, string> = {}) => {
    rmSync(marker, { force: true });
    const r = await runCli(["run", ...args], { env: { ...env, ...extraEnv } });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.equal(existsSync(marker), false, "the program never started");
  };

  test("refusals leave the program unstarted: wrong measurement, hardware-only policy, unknown service, wrong CAS key", async () => {
    await neverStarts(
      ["--config-id", "runme/svc", "--tee", "sim", "/bin/true"],
      /^cloister: measurement [0-9a-f]{12}… is not allowed for runme\/svc/,
    );
    // The CAS says what it refused; the runtime says what to change.
    await neverStarts(
      ["--config-id", "hardonly/svc", "--tee", "sim", app],
      /^cloister: hardonly\/svc: the policy accepts only hardware evidence, and --tee sim gives simulated evidence: set security\.attestation\.mode: simulation in the policy for development \(with a measurement \{tee: sim, digest: <cloister measure --tee sim PROGRAM>\}\), or run in a TEE \(--tee auto\)\n$/,
    );
    await neverStarts(["--config-id", "runme/nothing", "--tee", "sim", app], /policy runme has no service nothing/);
    await neverStarts(["--config-id", "runme/svc", "--tee", "sim", app], /not the pinned/, {
      CLOISTER_CAS_KEY: "ab".repeat(32),
    });
    await neverStarts(["--config-id", "runme/svc", "--tee", "auto", app], /no TEE found .*--tee sim/);
  });

  test("a program named without a path is the one the launcher's shell finds, not the one first on the caller's PATH", async () => {
    // A `uname` of the host's first on this PATH; the policy names `uname` and sets no PATH, so
    // the launcher's shell runs the one on its default path. Measuring the first is refused.
    const bin = join(dir, "decoy-bin");
    mkdirSync(bin, { recursive: true });
    const decoy = join(bin, "uname");
    writeFileSync(decoy, "#!/bin/sh\necho decoy\n", { mode: 0o755 });
    const real = realpathSync(execFileSync("/bin/sh", ["-c", "command -v uname"], { env: {} }).toString().trim());
    const named = (digest: string) => `version: "1"
name: bare-${digest.slice(0, 8)}
security:
  attestation: {mode: simulation}
services:
  - name: svc
    measurements: [{tee: sim, digest: ${digest}}]
    command: [uname]
`;
    const decoyDigest = measureFile(readFileSync(decoy));
    const realDigest = measureFile(readFileSync(real));
    await cas.client(owner).request("POST", "/v1/policies", { policy: named(decoyDigest) });
    await cas.client(owner).request("POST", "/v1/policies", { policy: named(realDigest) });
    const path = { PATH: `${bin}:${process.env.PATH}` };
    await neverStarts(
      ["--config-id", `bare-${decoyDigest.slice(0, 8)}/svc`, "--tee", "sim", "--", "uname"],
      new RegExp(`^cloister: the policy runs uname, but ${decoy} was measured\n$`),
      path,
    );
    const ran = await runCli(["run", "--config-id", `bare-${realDigest.slice(0, 8)}/svc`, "--tee", "sim", "--", real], {
      env: { ...env, ...path },
    });
    assert.equal(ran.code, 0, ran.stderr);
    assert.doesNotMatch(ran.stdout, /decoy/);
  });

  test("simulated evidence from a LAS the CAS does not trust: refused, with how to enrol it", async () => {
    const { key } = await loadOrCreateNodeKey(join(dir, "other-las.pem"));
    const other = await startLas({ listen: "127.0.0.1:0", key });
    try {
      await neverStarts(
        ["--config-id", "runme/svc", "--tee", "sim", app],
        /^cloister: evidence refused: chain: LAS key [0-9a-f]{16}… is not enrolled in this CAS: an administrator of the CAS enrols this LAS with cloister cas las enrol KEY \(the key cloister las start printed\), or use cloister dev, which enrols its own\n$/,
        { CLOISTER_LAS_ADDR: other.url },
      );
    } finally {
      await other.close();
    }
  });

  test("a policy updated while the CAS verifies the evidence: attested again, on the new version; refused three times, given up", async () => {
    const racy = (version: number, predecessor?: string) => `version: "1"
name: racy
${predecessor ? `predecessor: ${predecessor}\n` : ""}security:
  attestation: {mode: simulation}
services:
  - name: svc
    measurements: [{tee: sim, digest: ${measureFile(Buffer.from(require_("node:fs").readFileSync(app)))}}]
    command: [${app}]
    environment: {GREETING: "version-${version}"}
    pwd: ${dir}
    files:
      - {path: /etc/cloister-run-test/secret.conf, content: "password=racy"}
`;
    const service = cas.running.service;
    let current = (await service.create(owner.hash, racy(1), [])).hash;
    let version = 1;
    // A seam on the real CAS (it runs in this process): while `updatesLeft` lasts, each time the
    // attestation flow reads policy racy, an update to it is made to land in the same turn of the
    // event loop — while the CAS waits for its crypto thread, between reading and granting: the
    // race the CAS refuses with 409 policy_changed.
    let updatesLeft = 0;
    const secretValues = service.secretValues;
    service.secretValues = function (this: typeof service, name: string) {
      const read = secretValues.call(this, name);
      if (name === "racy" && updatesLeft > 0) {
        updatesLeft--;
        setImmediate(() => {
          void service.update(owner.hash, racy(++version, current), [], "racy").then((s) => {
            current = s.hash;
          });
        });
      }
      return read;
    };
    const refusals = async () =>
      (
        await cas
          .client(owner)
          .request<{ entries: { entry?: { action: string; target: string; reason: string } }[] }>("GET", "/v1/audit")
      ).entries.filter(
        (e) =>
          e.entry?.action === "attestation" && e.entry.target === "racy/svc" && /changed while/.test(e.entry.reason),
      ).length;
    try {
      updatesLeft = 1;
      const r = await runCli(["run", "--config-id", "racy/svc", "--tee", "sim", app], { env });
      assert.equal(r.code, 7, r.stderr);
      assert.equal(updatesLeft, 0);
      assert.equal(await refusals(), 1, "the first attempt was refused");
      assert.match(r.stdout, /GREETING=version-2/, "granted on the version that landed meanwhile");
      assert.doesNotMatch(r.stderr, /changed|refused/, "the retry is silent");

      updatesLeft = 3;
      await neverStarts(
        ["--config-id", "racy/svc", "--tee", "sim", app],
        /^cloister: policy racy changed while this attestation was being verified.*\(refused 3 times in a row/,
      );
      assert.equal(await refusals(), 4);
    } finally {
      service.secretValues = secretValues;
    }
  });
});
