/**
 * Volumes end to end (the file shield in `cloister run`): a Python program appending records to
 * an encrypted volume across ten restarts, nginx serving a www tree protected offline with
 * `cloister fs protect`, and the refusals — an older copy of the tree, a fork.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  chmodSync,
  chownSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { verifyTree } from "../../src/fs/open.ts";
import { type AnyUserInstall, installForAnyUser } from "../helpers/any-user.ts";
import { runCli } from "../helpers/cli.ts";
import { eventually, startUntil, startWorld, stop, type World } from "../helpers/e2e.ts";
import { freePort } from "../helpers/net.ts";

const exec = promisify(execFile);
let world: World;
const dir = mkdtempSync(join(tmpdir(), "cloister-volumes-"));
const python = "/usr/bin/python3";
before(async () => {
  world = await startWorld();
});
after(async () => {
  await world.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Every byte of every file under `root`. */
function allBytes(root: string): Buffer {
  const parts: Buffer[] = [];
  const visit = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) visit(p);
      else parts.push(readFileSync(p));
    }
  };
  visit(root);
  return Buffer.concat(parts);
}

const journalPolicy = (script: string) => `version: "1"
name: journal
security:
  attestation: {mode: simulation}
services:
  - name: writer
    measurements: [{tee: sim, digest: ${world.digest(python)}}]
    command: [${python}, ${script}]
    volumes: [{name: records, path: /srv/cloister-journal}]
  - name: holder
    measurements: [{tee: sim, digest: ${world.digest(python)}}]
    command: [${python}, ${script.replace("append.py", "hold.py")}]
    volumes: [{name: records, path: /srv/cloister-journal}]
volumes:
  - {name: records}
`;

describe("a Python program and an encrypted volume", () => {
  test("appends a record at each of ten restarts: nothing lost, no plaintext on disk, the CAS's tag advances", async () => {
    const script = join(dir, "append.py");
    writeFileSync(
      script,
      "import os\npath = '/srv/cloister-journal/records.txt'\n" +
        "n = len(open(path).read().splitlines()) if os.path.exists(path) else 0\n" +
        "open(path, 'a').write(f'record-{n} confidential\\n')\nprint(n + 1)\n",
    );
    writeFileSync(
      join(dir, "hold.py"),
      "import signal, sys, time\nopen('/srv/cloister-journal/records.txt', 'a').write('held\\n')\n" +
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nprint('ready', flush=True)\nwhile True: time.sleep(1)\n",
    );
    await world.owner.request("POST", "/v1/policies", { policy: journalPolicy(script) });
    const tree = join(world.volumesDir, "journal", "records");
    const tags: string[] = [];
    for (let i = 1; i <= 10; i++) {
      const r = await world.run("journal/writer", python);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${i}\n`, `run ${i} saw every earlier record`);
      const key = Buffer.from(
        ((await world.secret("journal", "$volume_key:records")) as { value: string }).value,
        "base64",
      );
      tags.push(verifyTree(tree, key).tag);
    }
    assert.equal(new Set(tags).size, 10, "each run committed a new state");
    assert.ok(!allBytes(tree).includes("confidential"), "the disk holds no plaintext");
    assert.ok(!allBytes(tree).includes("records.txt"), "nor the file's name");
  });

  test("an older copy of the tree is refused and the program never starts; a fork's second commit is refused", async () => {
    const tree = join(world.volumesDir, "journal", "records");
    const old = join(dir, "old-records");
    cpSync(tree, old, { recursive: true });
    const r = await world.run("journal/writer", python);
    assert.equal(r.code, 0, r.stderr);
    const current = join(dir, "current-records");
    cpSync(tree, current, { recursive: true });
    // Roll the whole tree back to the copy.
    rmSync(tree, { recursive: true });
    cpSync(old, tree, { recursive: true });
    const refused = await world.run("journal/writer", python);
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, "", "the program never started");
    assert.match(
      refused.stderr,
      /^cloister: volume records: the tree at .* is at tag [0-9a-f]{64}, but the CAS expects [0-9a-f]{64}: an older copy, or a fork\n$/,
    );
    // Back to the current state for the fork.
    rmSync(tree, { recursive: true });
    cpSync(current, tree, { recursive: true });

    // One tree, one runtime: a second start on the same directory is refused while the first runs.
    const a = await startUntil(world, "journal/holder", python);
    const second = await world.run("journal/holder", python);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /volume records: .* is in use by another runtime; one runtime per volume tree\n$/);

    // A fork: two runtimes started from one state, on two copies of the tree (two machines).
    // The first commit wins; the second is refused by the CAS, and its copy stays refused.
    const otherVolumes = join(dir, "volumes-b");
    cpSync(join(world.volumesDir, "journal"), join(otherVolumes, "journal"), { recursive: true });
    const b = await startUntil(world, "journal/holder", python, "ready", { CLOISTER_VOLUMES_DIR: otherVolumes });
    assert.equal(await stop(a), 0, a.output());
    assert.equal(await stop(b), 1, b.output());
    assert.match(b.output(), /volume records: commit at exit failed: .*another runtime committed first \(a fork\)/);
    const loser = world.start("journal/writer", python, { CLOISTER_VOLUMES_DIR: otherVolumes });
    assert.equal(await new Promise((r) => loser.child.on("exit", r)), 1);
    assert.match(loser.output(), /is at tag [0-9a-f]{64}, but the CAS expects [0-9a-f]{64}: an older copy, or a fork/);
    const after = await world.run("journal/writer", python);
    assert.equal(after.code, 0, after.stderr);
    const lines = Number(after.stdout.trim());
    assert.equal(lines, 13, "ten records, one more, the winner's, and this run's");
  });
});

describe("nginx and a www tree protected offline", () => {
  test("serves the page from the encrypted tree; the disk holds no plaintext", async () => {
    const www = join(dir, "www");
    mkdirSync(join(www, "docs"), { recursive: true });
    writeFileSync(join(www, "index.html"), "<h1>served from an encrypted volume</h1>\n");
    writeFileSync(join(www, "docs/a.txt"), "a document\n");
    const protect = await runCli([
      "fs",
      "protect",
      www,
      "--out",
      join(dir, "www.protected"),
      "--key-file",
      join(dir, "www.key"),
    ]);
    assert.equal(protect.code, 0, protect.stderr);
    const tag = protect.stdout.trim();
    const key = readFileSync(join(dir, "www.key"), "utf8").trim();
    const tree = join(world.volumesDir, "site2", "www");
    mkdirSync(join(world.volumesDir, "site2"), { recursive: true });
    cpSync(join(dir, "www.protected"), tree, { recursive: true });
    const port = await freePort();
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: site2
security:
  attestation: {mode: simulation}
services:
  - name: nginx
    measurements: [{tee: sim, digest: ${world.digest("/usr/sbin/nginx")}}]
    command: [/usr/sbin/nginx, -e, stderr, -c, /etc/nginx-cloister2/nginx.conf, -g, "daemon off;"]
    files:
      - path: /etc/nginx-cloister2/nginx.conf
        mode: "0444"
        content: |
          pid /dev/shm/nginx.pid;
          events {}
          http {
            access_log off;
            server {
              listen 127.0.0.1:${port};
              root /srv/cloister-www;
            }
          }
    volumes: [{name: www, path: /srv/cloister-www}]
volumes:
  - {name: www, key: www_key, tag: ${tag}, update_policy: ephemeral}
secrets:
  - {name: www_key, kind: binary, value: ${key}}
`,
    });
    const nginx = world.start("site2/nginx", "/usr/sbin/nginx");
    try {
      const { stdout } = await eventually(
        () => exec("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/index.html`]),
        `nginx: ${nginx.output()}`,
      );
      assert.equal(stdout, "<h1>served from an encrypted volume</h1>\n");
      assert.equal(
        (await exec("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/docs/a.txt`])).stdout,
        "a document\n",
      );
      assert.ok(!allBytes(tree).includes("served from"), "no plaintext in the tree on disk");
      assert.deepEqual(
        readdirSync("/srv").filter((f) => f.includes("cloister")),
        [],
        "nothing at the mount path on the host",
      );
    } finally {
      nginx.child.kill("SIGTERM");
      await new Promise((r) => nginx.child.on("exit", r));
    }
  });
});

describe("update policies and checkpoints", () => {
  test("checkpoints commit while the program runs; ephemeral changes are discarded; no-rollback-protection takes an older copy", async () => {
    const script = join(dir, "ticker.py");
    writeFileSync(
      script,
      "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n" +
        "for d in ['/srv/cloister-ticks', '/srv/cloister-scratch', '/srv/cloister-loose']:\n" +
        "    open(d + '/seen', 'a').write('x')\n" +
        "print('ready', len(open('/srv/cloister-scratch/seen').read()), len(open('/srv/cloister-loose/seen').read()), flush=True)\n" +
        "i = 0\nwhile True:\n    i += 1\n    open('/srv/cloister-ticks/count', 'w').write(str(i))\n    time.sleep(0.1)\n",
    );
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: ticks
security:
  attestation: {mode: simulation}
services:
  - name: ticker
    measurements: [{tee: sim, digest: ${world.digest(python)}}]
    command: [${python}, ${script}]
    volumes:
      - {name: ticks, path: /srv/cloister-ticks}
      - {name: scratch, path: /srv/cloister-scratch}
      - {name: loose, path: /srv/cloister-loose}
volumes:
  - {name: ticks, checkpoint_interval: 1s}
  - {name: scratch, update_policy: ephemeral}
  - {name: loose, update_policy: no-rollback-protection}
`,
    });
    const tagOf = async (volume: string) => {
      const { record } = (await world.cas.running.service.secretValues("ticks"))!;
      return world.cas.running.service.volumeTag(record, volume);
    };
    const first = await startUntil(world, "ticks/ticker", python);
    assert.match(first.output(), /ready 1 1/);
    const seen = new Set<string | null>();
    await eventually(
      async () => {
        seen.add(await tagOf("ticks"));
        if (seen.size < 3) throw new Error(`${seen.size} states so far`);
      },
      "two checkpoints while the program runs",
      8_000,
    );
    assert.equal(await stop(first), 0, first.output());
    const loose = join(world.volumesDir, "ticks", "loose");
    const older = join(dir, "loose-older");
    cpSync(loose, older, { recursive: true });

    const second = await startUntil(world, "ticks/ticker", python);
    assert.match(second.output(), /ready 1 2/, "scratch starts empty again; loose kept the first run's write");
    await stop(second);

    // no-rollback-protection: an older copy of the tree is accepted, as documented.
    rmSync(loose, { recursive: true });
    cpSync(older, loose, { recursive: true });
    const third = await startUntil(world, "ticks/ticker", python);
    assert.match(third.output(), /ready 1 2/, "the older copy (one write) was taken, plus this run's");
    await stop(third);
  });
});

describe("the directories a program finds its volume and files in", () => {
  // Through the volume launcher (a service with a volume): its overlays' merged directories look
  // as the host's, and what it makes where the host has none is 0755, as
  // test/runtime/launcher.test.ts holds for the plain launcher. Its upper layers were made under
  // the process's umask: an overlay over /tmp showed it 0755, not writable by a program that
  // drops root.
  test("look as the host's; those the host lacks are made 0755", async () => {
    const stat = "/usr/bin/stat";
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: looks
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${world.digest(stat)}}]
    command: [${stat}, -c, "%a %u %n", /tmp, /tmp/cloister-looks, /tmp/cloister-looks/deeper, /srv, /srv/cloister-looks]
    files: [{path: /tmp/cloister-looks/deeper/app.conf, content: "x"}]
    volumes: [{name: data, path: /srv/cloister-looks}]
volumes:
  - {name: data}
`,
    });
    const host = (path: string) => `${(statSync(path).mode & 0o7777).toString(8)} ${statSync(path).uid} ${path}`;
    // Under a private umask, which `cloister run` inherits: what it makes must not follow it.
    const umask = process.umask(0o077);
    let r: Awaited<ReturnType<World["run"]>>;
    try {
      r = await world.run("looks/app", stat);
    } finally {
      process.umask(umask);
    }
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), [
      host("/tmp"), // 1777: sticky and writable by all, as on the host
      "755 0 /tmp/cloister-looks",
      "755 0 /tmp/cloister-looks/deeper",
      host("/srv"),
      "755 0 /srv/cloister-looks",
    ]);
  });
});

describe("a link the host plants where the volume launcher is to make a directory", () => {
  // After the overlay over /srv is mounted, the host plants a link at the missing directory the
  // volume needs; made recursively through the overlay, the rest of the path landed on the host's
  // disk (a review showed it). Here the host's part is played by a `mount` first on the PATH.
  test("is refused: the program does not start, and nothing is made where the link points", async () => {
    const name = `cloister-planted-${process.pid}`;
    const planted = `/srv/${name}`;
    const elsewhere = join(dir, "planted-elsewhere");
    const fakes = join(dir, "planted-bin");
    mkdirSync(elsewhere);
    mkdirSync(fakes);
    const realMount = (await exec("sh", ["-c", "command -v mount"])).stdout.trim();
    writeFileSync(
      join(fakes, "mount"),
      `#!/bin/sh\n${realMount} "$@" || exit\nif [ "$1 $2" = "-t overlay" ]; then ln -s ${elsewhere} ${planted}; fi\n`,
      { mode: 0o755 },
    );
    const python3 = python;
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: planted
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${world.digest(python3)}}]
    command: [${python3}, -c, "print('started')"]
    volumes: [{name: data, path: ${planted}/data}]
volumes:
  - {name: data}
`,
    });
    try {
      const r = await runCli(["run", "--config-id", "planted/app", "--tee", "sim", "--", python3], {
        env: { ...world.env, PATH: `${fakes}:${process.env.PATH}` },
      });
      assert.deepEqual(readdirSync(elsewhere), [], "nothing made where the link points");
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /started/);
      assert.match(r.stderr, new RegExp(`cannot make ${planted}`));
    } finally {
      rmSync(planted, { force: true });
    }
  });
});

describe("as a non-root user", () => {
  // nobody runs a copy of cloister that it can reach: the checkout may sit in a 0700 directory.
  let install: AnyUserInstall;
  before(() => {
    install = installForAnyUser();
  });
  after(() => install.dispose());

  test("a volume opens, presents and commits inside a user namespace of its own", async () => {
    // The tests run as root (CI does); runuser makes these runs start as nobody.
    const script = join(dir, "nobody.py");
    chmodSync(dir, 0o755);
    writeFileSync(
      script,
      "import os\npath = '/srv/cloister-nobody/notes.txt'\n" +
        "n = len(open(path).read().splitlines()) if os.path.exists(path) else 0\n" +
        "open(path, 'a').write(f'note-{n}\\n')\nprint(n + 1)\n",
    );
    await world.owner.request("POST", "/v1/policies", {
      policy: `version: "1"
name: unprivileged-volume
security:
  attestation: {mode: simulation}
services:
  - name: notes
    measurements: [{tee: sim, digest: ${world.digest(python)}}]
    command: [${python}, ${script}]
    volumes: [{name: notes, path: /srv/cloister-nobody}]
volumes:
  - {name: notes}
`,
    });
    const volumes = mkdtempSync(join(tmpdir(), "cloister-nobody-volumes-"));
    try {
      chownSync(volumes, 65534, 65534);
      const argv = [
        install.node,
        install.bin,
        "--",
        "run",
        "--config-id",
        "unprivileged-volume/notes",
        "--tee",
        "sim",
        "--",
        python,
      ];
      for (const expected of ["1\n", "2\n"]) {
        const { stdout } = await exec("runuser", ["-u", "nobody", "--", ...argv], {
          env: { ...process.env, ...world.env, CLOISTER_VOLUMES_DIR: volumes },
        });
        assert.equal(stdout, expected);
      }
      const tree = join(volumes, "unprivileged-volume", "notes");
      const key = Buffer.from(
        ((await world.secret("unprivileged-volume", "$volume_key:notes")) as { value: string }).value,
        "base64",
      );
      const { record } = (await world.cas.running.service.secretValues("unprivileged-volume"))!;
      verifyTree(tree, key, world.cas.running.service.volumeTag(record, "notes")!);
      assert.equal(statSync(join(tree, ".cloister-fs", "manifest")).uid, 65534, "the tree belongs to the user");
      assert.ok(!allBytes(tree).includes("note-1"), "no plaintext on disk");
    } finally {
      rmSync(volumes, { recursive: true, force: true });
    }
  });
});
