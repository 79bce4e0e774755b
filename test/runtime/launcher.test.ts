/**
 * The launcher on its own, for real: `unshare --mount` and the shell script of
 * src/runtime/launcher.ts, with real programs (env, Python). The program's environment is exactly
 * the policy's; files — binary, nested, several per directory, odd names — exist with their
 * modes for the program only; failures before the exec say what failed in one line. Needs root
 * (as CI runs), like the mount namespaces themselves; test/e2e covers the user-namespace path.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type { Configuration } from "../../src/protocol/attestation.ts";
import { type Launch, LaunchError, planLaunch, quote, startLaunch } from "../../src/runtime/launcher.ts";
import { type AnyUserInstall, installForAnyUser } from "../helpers/any-user.ts";

const NAMESPACE = ["--mount", "--propagation", "private"];
const dir = mkdtempSync(join(tmpdir(), "cloister-launcher-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function config(over: Partial<Configuration>): Configuration {
  return {
    config_id: "p/s",
    policy_hash: "0".repeat(64),
    command: ["/bin/true"],
    environment: {},
    pwd: "/",
    files: [],
    volumes: [],
    tls: { inbound: [], outbound: [] },
    certificate_chain: "",
    ca_bundle: "",
    tls_material: {},
    verdict: { tee: "sim", status: "UpToDate", simulated: true, debug: false, measurements: {} },
    ...over,
  } as Configuration;
}

/** Start a planned launch and collect what the program wrote; killed after `limitMs`, if given. */
async function run(launch: Launch, limitMs?: number): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  const { child, exit } = startLaunch(launch, "pipe");
  if (limitMs !== undefined) setTimeout(() => child.kill("SIGKILL"), limitMs).unref();
  const out: Buffer[] = [];
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => out.push(d));
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  const [code] = await Promise.all([exit, once(child, "close")]);
  return { code, stdout: Buffer.concat(out), stderr };
}

describe("the program's environment", () => {
  test("is exactly the policy's: nothing of the shell's, PWD and OLDPWD as the policy sets them", async () => {
    const environment = {
      A: "1",
      EMPTY: "",
      QUOTES: `it's "$HOME" \`id\` $(id) \\n`,
      PWD: "/policy/says",
      OLDPWD: "two\nlines\n\n",
      PATH: "/nowhere",
    };
    const r = await run(planLaunch(config({ command: ["/usr/bin/env", "-0"], environment, pwd: dir }), NAMESPACE));
    assert.equal(r.code, 0, r.stderr);
    const seen = Object.fromEntries(
      r.stdout
        .toString()
        .split("\0")
        .filter(Boolean)
        .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
    );
    assert.deepEqual(seen, environment);
  });

  test("without PWD in the policy, the program has none", async () => {
    const r = await run(planLaunch(config({ command: ["/usr/bin/env", "-0"], environment: { B: "2" } }), NAMESPACE));
    assert.equal(r.stdout.toString(), "B=2\0");
  });
});

describe("files", () => {
  test("binary, nested in new directories, several per directory, odd names: for the program only, with their modes", async () => {
    const binary = Buffer.from([...Array(256).keys(), 10, 10]);
    const files = [
      { path: "/etc/cloister-launcher-test.bin", mode: "0400", content: binary.toString("base64") },
      {
        path: "/opt/cloister-launcher-test/a/b/deep",
        mode: "0755",
        content: Buffer.from("#!/bin/sh\n").toString("base64"),
      },
      { path: "/opt/cloister-launcher-test/a/b/it's here", mode: "0644", content: Buffer.from("q").toString("base64") },
      { path: "/opt/cloister-launcher-test/a/c/empty", mode: "0600", content: "" },
      { path: `${dir}/sub/x`, mode: "0440", content: Buffer.from("in a temporary directory").toString("base64") },
    ];
    const script = join(dir, "report.py");
    writeFileSync(
      script,
      "import json, os, sys\nout = {'cwd': os.getcwd()}\nfor p in sys.argv[1:]:\n" +
        "    out[p] = [open(p, 'rb').read().hex(), oct(os.stat(p).st_mode & 0o7777)]\nprint(json.dumps(out))\n",
    );
    const r = await run(
      planLaunch(
        config({ command: ["/usr/bin/python3", script, ...files.map((f) => f.path)], files, pwd: `${dir}/sub` }),
        NAMESPACE,
      ),
    );
    assert.equal(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout.toString());
    assert.equal(seen.cwd, `${dir}/sub`, "the working directory is the policy's, inside the overlay");
    for (const f of files) {
      assert.deepEqual(
        seen[f.path],
        [Buffer.from(f.content, "base64").toString("hex"), `0o${Number.parseInt(f.mode, 8).toString(8)}`],
        f.path,
      );
      assert.equal(existsSync(f.path), false, `${f.path} is not on the host`);
    }
    assert.equal(existsSync("/opt/cloister-launcher-test"), false);
    assert.equal(existsSync(`${dir}/sub`), false);
  });

  test("directories resolved by the caller before its mounts are the ones written in, not resolved again", () => {
    const files = [{ path: "/srv/app/conf/secret", mode: "0400", content: "" }];
    const resolved = new Map([["/srv/app/conf", "/srv/real-conf"]]);
    const noRealpath = () => {
      throw new Error("resolved again");
    };
    // The caller's overlay of /srv, mounted first on the staging tmpfs (as the volume launcher does).
    const mounted = [
      { anchor: "/srv", upper: "/dev/shm/.cloister/ou0", work: "/dev/shm/.cloister/ow0", staged: "/m0" },
    ];
    const { args } = planLaunch(config({ files }), null, () => true, noRealpath, resolved, statSync, mounted);
    assert.match(
      args[1]!,
      /cd -P -- '\/m0\/real-conf' && \[ "\$\(pwd -P\)" = '\/m0\/real-conf' \] && \[ \. -ef '\/srv\/real-conf' \]/,
    );
    assert.throws(
      () => planLaunch(config({ files }), null, () => true, noRealpath, resolved),
      /\/srv\/real-conf is under no overlay/,
    );
  });

  test("symbolic links on the way carry nothing to the host: a link at the file's path, a linked directory", async () => {
    // As a host (or an ordinary image: /etc/resolv.conf is often a link) may have them.
    const root = join(dir, "links");
    mkdirSync(join(root, "disk"), { recursive: true });
    mkdirSync(join(root, "disk2"));
    mkdirSync(join(root, "app"));
    writeFileSync(join(root, "disk", "secret.txt"), "the host's own");
    symlinkSync(join(root, "disk", "secret.txt"), join(root, "app", "secret.txt"));
    symlinkSync(join(root, "disk2"), join(root, "app", "linked"));
    const files = [
      { path: join(root, "app", "secret.txt"), mode: "0400", content: Buffer.from("S1").toString("base64") },
      { path: join(root, "app", "linked", "b.txt"), mode: "0400", content: Buffer.from("S2").toString("base64") },
      {
        path: join(root, "app", "linked", "new", "c.txt"),
        mode: "0400",
        content: Buffer.from("S3").toString("base64"),
      },
    ];
    const r = await run(planLaunch(config({ command: ["/bin/cat", ...files.map((f) => f.path)], files }), NAMESPACE));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), "S1S2S3", "the program sees the policy's files at the paths it names");
    assert.equal(readFileSync(join(root, "disk", "secret.txt"), "utf8"), "the host's own");
    assert.deepEqual(readdirSync(join(root, "disk2")), [], "nothing written where the directory link points");
    assert.equal(lstatSync(join(root, "app", "secret.txt")).isSymbolicLink(), true, "the host's link is as it was");
  });
});

describe("the directories a program finds its files in", () => {
  // An overlay's merged directory shows its upper layer's mode and owner. Made under the
  // launcher's umask 077, that showed /etc as 0700, and a program that drops root could no longer
  // read /etc/passwd nor reach its own files; the directories made where the host has none were
  // 0700 too.
  test("look as the host's (mode, sticky and setgid bits, owner); those the host lacks are made 0755; files stay root's", async () => {
    const root = join(dir, "looks");
    const sticky = join(root, "sticky");
    const owned = join(root, "owned");
    const plain = join(root, "plain");
    const shared = join(root, "shared");
    for (const d of [sticky, owned, plain, shared]) mkdirSync(d, { recursive: true });
    chmodSync(sticky, 0o1777);
    chmodSync(owned, 0o750);
    chownSync(owned, 65534, 65534);
    chmodSync(plain, 0o711);
    chownSync(shared, 0, 4);
    chmodSync(shared, 0o2775); // setgid: what is made in it takes group 4
    const content = Buffer.from("x").toString("base64");
    const files = [
      { path: join(sticky, "a"), mode: "0400", content },
      { path: join(owned, "b"), mode: "0400", content },
      { path: join(plain, "new", "deeper", "c"), mode: "0444", content },
      { path: join(shared, "d"), mode: "0440", content },
      { path: join(shared, "sub", "e"), mode: "0440", content },
    ];
    const looked = [
      sticky,
      owned,
      plain,
      join(plain, "new"),
      join(plain, "new", "deeper"),
      files[2]!.path,
      shared,
      files[3]!.path,
      join(shared, "sub"),
      files[4]!.path,
    ];
    const r = await run(
      planLaunch(config({ command: ["/usr/bin/stat", "-c", "%a %u %g", ...looked], files }), NAMESPACE),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.toString().trim().split("\n"), [
      "1777 0 0",
      "750 65534 65534",
      "711 0 0",
      "755 0 0",
      "755 0 0",
      "444 0 0",
      "2775 0 4",
      "440 0 0", // 0440 for root's group, not the setgid directory's
      "2755 0 4", // made in a setgid directory, as mkdir makes it there
      "440 0 0",
    ]);
    assert.deepEqual(readdirSync(plain), [], "nothing made on the host");
  });
});

describe("a directory swapped for a link while its overlay is mounted", () => {
  // A host that can write the parent of a file's directory swaps the directory for a link to
  // another while the launcher mounts over it, then swaps it back: a mount by path lands on the
  // link's target, and a file written by its path would reach the host's disk (a review showed
  // it, 2026-11-24). Here the host's part is played by a `mount` first on the launcher's PATH.
  test("the file never reaches the host's disk, and the program does not start", async () => {
    const root = join(dir, "swapped");
    const target = join(root, "app");
    const decoy = join(root, "decoy");
    const fakes = join(root, "bin");
    for (const d of [target, decoy, fakes]) mkdirSync(d, { recursive: true });
    writeFileSync(
      join(fakes, "mount"),
      `#!/bin/sh
last=; for a; do last=$a; done
if [ "$last" = ${quote(target)} ]; then mv ${quote(target)} ${quote(`${target}.real`)} && ln -s ${quote(decoy)} ${quote(target)}; fi
${spawnSync("sh", ["-c", "command -v mount"], { encoding: "utf8" }).stdout.trim()} "$@"; status=$?
if [ -L ${quote(target)} ]; then rm ${quote(target)} && mv ${quote(`${target}.real`)} ${quote(target)}; fi
exit $status
`,
      { mode: 0o755 },
    );
    const path = process.env.PATH;
    process.env.PATH = `${fakes}:${path}`;
    let launch: Launch;
    try {
      launch = planLaunch(
        config({
          command: ["/bin/true"],
          files: [{ path: join(target, "secret"), mode: "0400", content: Buffer.from("SECRET").toString("base64") }],
        }),
        NAMESPACE,
      );
    } finally {
      process.env.PATH = path;
    }
    assert.match(launch.args.join(" "), new RegExp(`${fakes}/mount`), "the host's mount is the one used");
    const r = await run(launch);
    assert.equal(r.code, 1, "the program does not start");
    assert.match(r.stderr, /is not the directory planned for/);
    assert.deepEqual(readdirSync(target), [], "nothing written in the host's directory");
    assert.deepEqual(readdirSync(decoy), [], "nor where the link pointed");
  });
});

describe("a link planted where a missing directory is to be made", () => {
  // Planned when /…/home/app did not exist; the host then plants a link there. `mkdir -p` through
  // the overlay would follow it and make the rest on the host's disk (a review showed it).
  test("is refused: nothing is made on the host's disk, and the program does not start", async () => {
    const root = join(dir, "planted");
    const home = join(root, "home");
    const elsewhere = join(root, "elsewhere");
    for (const d of [home, elsewhere]) mkdirSync(d, { recursive: true });
    const launch = planLaunch(
      config({
        files: [
          { path: join(home, "app", "conf", "secret"), mode: "0400", content: Buffer.from("S").toString("base64") },
        ],
      }),
      NAMESPACE,
    );
    symlinkSync(elsewhere, join(home, "app"));
    const r = await run(launch);
    assert.deepEqual(readdirSync(elsewhere), [], "nothing made where the link points");
    assert.equal(r.code, 1, "the program does not start");
    assert.match(r.stderr, /cannot make/);
  });
});

describe("cloister run as root of a user namespace it did not make (a rootless container)", () => {
  // It enters a mount namespace directly (it is uid 0), but the host's owners are not mapped
  // there: the launcher must not try to give the overlays' upper layers those owners.
  // nobody runs a copy of the launcher that it can reach: the checkout may sit in a 0700 directory.
  let install: AnyUserInstall;
  before(() => {
    install = installForAnyUser();
  });
  after(() => install.dispose());

  test("the files are placed; the directories keep their modes", async () => {
    const root = join(dir, "rootless");
    const app = join(root, "app");
    mkdirSync(app, { recursive: true });
    chmodSync(dir, 0o755);
    chmodSync(app, 0o751);
    chownSync(app, 0, 4); // a group the user namespace does not map
    const script = join(root, "launch.ts");
    writeFileSync(
      script,
      `import { planLaunch, startLaunch } from ${JSON.stringify(join(install.src, "runtime", "launcher.ts"))};\n` +
        "const config = JSON.parse(process.argv[2]);\n" +
        'process.exitCode = await startLaunch(planLaunch(config, ["--mount", "--propagation", "private"])).exit;\n',
    );
    const launched = config({
      command: ["/bin/sh", "-c", 'stat -c %a "$1" && cat "$1/conf"', "sh", app],
      files: [{ path: join(app, "conf"), mode: "0444", content: Buffer.from("C").toString("base64") }],
    });
    // The tests run as root (CI does): runuser makes this start as nobody, root of its own namespace.
    const r = spawnSync(
      "runuser",
      [
        "-u",
        "nobody",
        "--",
        "unshare",
        "--user",
        "--map-root-user",
        "--",
        install.node,
        script,
        JSON.stringify(launched),
      ],
      { encoding: "utf8", timeout: 20_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "751\nC");
  });
});

describe("a link planted at a file's name after the launch was planned", () => {
  // Why the launcher removes whatever is at a file's name inside the overlay before creating it,
  // even where nothing was there when it planned: dash's noclobber refuses an existing regular
  // file, directory or dangling link, but opens a FIFO or a device through a link, for writing.
  // The removal leaves a whiteout in the overlay, which also hides what the host adds later.
  test("a link to a FIFO the host reads: the program gets its file, the FIFO nothing", async () => {
    const root = join(dir, "late-fifo");
    mkdirSync(root);
    // Outside the directory the file goes in (and so outside its overlay): one pipe for both sides.
    const fifo = join(dir, "late-fifo.pipe");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    const conf = join(root, "conf");
    const launch = planLaunch(
      config({
        // Reads the file only if it is a regular file (through the link it is the FIFO, and a
        // read would wait for a writer forever).
        command: ["/bin/sh", "-c", 'test -f "$1" && test ! -L "$1" && cat -- "$1"', "sh", conf],
        files: [{ path: conf, mode: "0400", content: Buffer.from("SECRET").toString("base64") }],
      }),
      NAMESPACE,
    );
    symlinkSync(fifo, conf); // after planning: nothing was at the name then
    // The host's reader, open before the launch (so a writer would not block).
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      // Killed after 10 s: written through the link, the launch would hang there.
      const r = await run(launch, 10_000);
      const got = Buffer.alloc(64);
      let n = 0;
      try {
        n = readSync(reader, got);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
      }
      assert.equal(n, 0, `the host's FIFO received ${JSON.stringify(got.subarray(0, n).toString())}`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), "SECRET", "the program reads its own file, a regular file");
      assert.equal(lstatSync(conf).isSymbolicLink(), true, "the host's link is as it was");
    } finally {
      closeSync(reader);
    }
  });
});

describe("failures before the exec: one line, exit 1", () => {
  test("a program that is not there", async () => {
    const r = await run(planLaunch(config({ command: ["/nonexistent/prog"] }), NAMESPACE));
    assert.deepEqual([r.code, r.stderr], [1, "cloister: cannot start /nonexistent/prog: not found\n"]);
  });

  test("a working directory that is not there", async () => {
    const r = await run(planLaunch(config({ pwd: "/nonexistent/dir" }), NAMESPACE));
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").at(-1), "cloister: cannot enter the working directory /nonexistent/dir");
  });

  test("what cannot be planned is refused before anything runs", () => {
    const file = (path: string, mode = "0400") => config({ files: [{ path, mode, content: "" }] });
    assert.throws(() => planLaunch(file("relative/x"), NAMESPACE), LaunchError);
    assert.throws(() => planLaunch(file("/etc/x", "0999"), NAMESPACE), /mode 0999 is not octal/);
    assert.throws(() => planLaunch(file("/data,1/x"), NAMESPACE, () => true), /holds , : or \\/);
    assert.throws(() => planLaunch(config({ command: [] }), NAMESPACE), /command is empty/);
    assert.throws(() => planLaunch(file("/dev/shm/app/secret"), NAMESPACE), /\/dev\/shm is cloister's staging area/);
    // A mount over / would not be seen by path lookups: the file would reach the host's disk.
    assert.throws(
      () => planLaunch(file("/cloister-not-on-this-host/x"), NAMESPACE),
      /\/cloister-not-on-this-host does not exist on this host, and \/ itself cannot be overlaid/,
    );
  });
});

describe("startLaunch", () => {
  test("the program's exit status is ours; killed by a signal, 128 + its number", async () => {
    const launch = (script: string) => planLaunch(config({ command: ["/bin/sh", "-c", script] }), NAMESPACE);
    assert.equal(await startLaunch(launch("exit 7")).exit, 7);
    assert.equal(await startLaunch(launch("kill -TERM $$")).exit, 143);
    assert.equal(await startLaunch(launch("kill -KILL $$")).exit, 137);
  });
});

describe("quote", () => {
  test("the shell reads every quoted word back exactly", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 40 }), (word) => {
        const clean = word.replaceAll("\0", "");
        const r = spawnSync("/bin/sh", ["-c", `printf %s ${quote(clean)}`]);
        assert.equal(r.stdout.toString(), clean);
      }),
      { numRuns: 60 },
    );
  });
});
