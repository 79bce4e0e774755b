/**
 * Nothing of a service outlives its runtime (issue 17, item 8): `cloister run` killed with
 * SIGKILL — it can do nothing about it — takes the program and everything the program started
 * with it, through the launch's PID namespace (src/runtime/launcher.ts). nginx with two worker
 * processes, and a service with a volume (the Node volume launcher as the namespace's init).
 * Before, nginx kept serving with no runtime.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { BIN } from "../helpers/cli.ts";
import { eventually, startUntil, startWorld, type World } from "../helpers/e2e.ts";
import { freePort } from "../helpers/net.ts";

const run = promisify(execFile);
let world: World;
before(async () => {
  world = await startWorld();
});
after(() => world.dispose());

/** Processes whose command line holds `marker`, by pid. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) found.push(Number(entry));
    } catch {} // gone meanwhile
  }
  return found;
}

/** A policy in simulation mode whose one service, app, runs `/bin/sh -c SCRIPT ARGS…`, with an ephemeral volume at `volumeAt`. */
const shellPolicy = (name: string, script: string, args: readonly string[] = [], volumeAt?: string) => `version: "1"
name: ${name}
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${world.digest("/bin/sh")}}]
    command: [/bin/sh, -c, "${script}"${args.map((a) => `, ${a}`).join("")}]
${volumeAt ? `    volumes: [{name: data, path: ${volumeAt}}]\nvolumes:\n  - {name: data, update_policy: ephemeral}\n` : ""}`;

async function killedRuntimeLeavesNothing(
  configId: string,
  program: string,
  marker: string,
  ready: () => Promise<unknown>,
) {
  const started = world.start(configId, program);
  try {
    await eventually(ready, `${configId}: ${started.output()}`);
    assert.ok(processesWith(marker).length >= 2, "the program and what it started are running");
    started.child.kill("SIGKILL");
    await new Promise((resolve) => started.child.once("exit", resolve));
    await eventually(
      async () => {
        const left = processesWith(marker);
        if (left.length > 0) throw new Error(`still running: ${left.join(", ")}`);
      },
      `nothing of ${configId} left after its runtime was killed`,
      5_000,
    );
  } finally {
    // Whatever was left would hold the port: the test's own cleanup, not the product's.
    for (const pid of processesWith(marker)) process.kill(pid, "SIGKILL");
  }
}

test("nginx and its workers die with a runtime killed by SIGKILL", async () => {
  const port = await freePort();
  const conf = "/etc/nginx-runtime-death/nginx.conf";
  await world.owner.request("POST", "/v1/policies", {
    policy: `version: "1"
name: death
security:
  attestation: {mode: simulation}
services:
  - name: nginx
    measurements: [{tee: sim, digest: ${world.digest("/usr/sbin/nginx")}}]
    command: [/usr/sbin/nginx, -e, stderr, -c, ${conf}, -g, "daemon off;"]
    files:
      - path: ${conf}
        mode: "0444"
        content: |
          pid /dev/shm/nginx.pid;
          worker_processes 2;
          events {}
          http {
            access_log off;
            server { listen 127.0.0.1:${port}; location / { return 200 "up\\n"; } }
          }
`,
  });
  await killedRuntimeLeavesNothing("death/nginx", "/usr/sbin/nginx", conf, async () => {
    const { stdout } = await run("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/`]);
    assert.equal(stdout, "up\n");
  });
  await assert.rejects(run("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/`]), "nothing serves any more");
});

test("a service with a volume: the volume launcher, the program and its child die with the runtime", async () => {
  const marker = "runtime-death-volume-marker";
  await world.owner.request("POST", "/v1/policies", {
    policy: shellPolicy("death-volume", "sleep 300 & echo ready; wait", [marker], "/srv/runtime-death"),
  });
  const started = await startUntil(world, "death-volume/app", "/bin/sh");
  try {
    // The program's child: a sleep whose command line is exactly that.
    const sleeper = await eventually(async () => {
      const found = processesWith("sleep\u0000300\u0000").filter((pid) =>
        readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("sleep\u0000"),
      );
      if (found.length === 0) throw new Error("no sleep yet");
      return found;
    }, "the program's child started");
    assert.equal(sleeper.length, 1, "the program's child is running");
    started.child.kill("SIGKILL");
    await new Promise((resolve) => started.child.once("exit", resolve));
    await eventually(
      async () => {
        const left = [...processesWith(marker), ...sleeper.filter((pid) => processesWith("sleep 300").includes(pid))];
        if (left.length > 0) throw new Error(`still running: ${left.join(", ")}`);
        if (
          processesWith("--cloister-volumes").some((pid) =>
            readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("volume-launcher"),
          )
        )
          throw new Error("the volume launcher is still running");
      },
      "nothing of death-volume/app left",
      5_000,
    );
  } finally {
    for (const pid of processesWith(marker)) process.kill(pid, "SIGKILL");
  }
});

/** The processes whose parent is one of `parents`. */
function childrenOf(parents: readonly number[]): number[] {
  return readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        const ppid = Number(/^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${e}/status`, "utf8"))?.[1]);
        return parents.includes(ppid);
      } catch {
        return false;
      }
    })
    .map(Number);
}

for (const withVolume of [false, true]) {
  test(`the lifeline: with the parent-death signal never armed, the service still dies with its runtime${withVolume ? " (volume launcher)" : ""}`, async () => {
    // A fake setpriv that drops --pdeathsig: what happens when cloister is killed after forking
    // it but before it armed the signal (a window too short to hit on purpose). Only the
    // lifeline (launcher.ts) is left to end the service.
    const fake = mkdtempSync(join(tmpdir(), "cloister-unarmed-"));
    writeFileSync(
      join(fake, "setpriv"),
      '#!/bin/sh\n# fake setpriv: never arms the parent-death signal\n[ "$1" = --pdeathsig ] && shift 3\nexec "$@"\n',
      { mode: 0o755 },
    );
    const name = `death-unarmed${withVolume ? "-volume" : ""}`;
    const marker = `runtime-${name}-marker`;
    await world.owner.request("POST", "/v1/policies", {
      policy: shellPolicy(
        name,
        "sleep 300 & echo ready; wait",
        [marker],
        withVolume ? "/srv/runtime-death-unarmed" : undefined,
      ),
    });
    const started = await startUntil(world, `${name}/app`, "/bin/sh", "ready", {
      PATH: `${fake}:${process.env.PATH}`,
    });
    try {
      const program = processesWith(marker);
      const sleeper = await eventually(async () => {
        const found = childrenOf(program);
        if (found.length === 0) throw new Error("no sleep yet");
        return found;
      }, "the program's child started");
      started.child.kill("SIGKILL");
      await new Promise((resolve) => started.child.once("exit", resolve));
      await eventually(
        async () => {
          const left = [
            ...processesWith(marker),
            ...sleeper.filter((pid) => readdirSync("/proc").includes(String(pid))),
          ];
          if (left.length > 0) throw new Error(`still running: ${left.join(", ")}`);
        },
        `nothing of ${name}/app left after its runtime was killed`,
        5_000,
      );
    } finally {
      for (const pid of processesWith(marker)) process.kill(pid, "SIGKILL");
      rmSync(fake, { recursive: true, force: true });
    }
  });
}

test("the namespace's init relays SIGTERM to a program with no handler for it, and cloister exits 128 + 15", async () => {
  const marker = "runtime-death-relay-marker";
  await world.owner.request("POST", "/v1/policies", {
    policy: shellPolicy("death-relay", "echo ready; exec sleep 300", [marker]),
  });
  const started = await startUntil(world, "death-relay/app", "/bin/sh");
  await eventually(async () => {
    if (!processesWith("sleep\u0000300\u0000").length) throw new Error("not yet");
  }, "the program started");
  // A PID namespace's init would ignore it; the program is the init's child, and dies of it.
  started.child.kill("SIGTERM");
  const code = await new Promise<number | null>((resolve) => started.child.once("exit", (c) => resolve(c)));
  assert.equal(code, 143, started.output());
});

test("SIGINT interrupts a program with no handler for it (an asynchronous command's is ignored)", async () => {
  await world.owner.request("POST", "/v1/policies", {
    policy: shellPolicy("death-interrupt", "grep SigIgn /proc/self/status; echo ready; exec sleep 300"),
  });
  const started = await startUntil(world, "death-interrupt/app", "/bin/sh");
  assert.match(started.output(), /SigIgn:\s+0+\n/, "the program ignores no signal");
  started.child.kill("SIGINT");
  const code = await new Promise<number | null>((resolve) => started.child.once("exit", (c) => resolve(c)));
  assert.equal(code, 130, started.output());
});

test("the program reads the runtime's standard input", async () => {
  await world.owner.request("POST", "/v1/policies", {
    policy: `version: "1"
name: death-stdin
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${world.digest("/usr/bin/wc")}}]
    command: [/usr/bin/wc, -c]
`,
  });
  const child = execFile(
    process.execPath,
    [BIN, "--", "run", "--config-id", "death-stdin/app", "--tee", "sim", "--", "/usr/bin/wc"],
    { env: { ...process.env, ...world.env } },
  );
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stdin!.end("twelve bytes");
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  assert.equal(code, 0);
  assert.equal(out.trim(), "12");
});
