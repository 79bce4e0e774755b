/**
 * Crash safety of volume commits: a runtime's volume work (test/helpers/volume-committer.ts:
 * open, then change and commit in a loop against a real CAS) is killed with SIGKILL at seeded
 * random instants, 200 times. After each kill the tree on disk is the state the CAS holds, or
 * its direct successor whose commit did not reach the CAS — or, while no commit has put a
 * manifest in place yet, no state at all: a fresh volume; the next start opens it without
 * repair (committing that successor if need be), and the records written so far are all there,
 * in order, none twice. CLOISTER_CRASH_SEED replays a run.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { MANIFEST } from "../../src/fs/format.ts";
import { openManifest, verifyTree } from "../../src/fs/open.ts";
import { openVolume, type TagKeeper } from "../../src/runtime/volumes.ts";
import type { TestCas } from "../helpers/cas.ts";
import { type AttestationWorld, type Attested, startAttestationWorld } from "../helpers/runtime.ts";

const KILLS = 200;
const SEED = Number(process.env.CLOISTER_CRASH_SEED ?? 20261123);
const COMMITTER = join(import.meta.dirname, "..", "helpers", "volume-committer.ts");
const dir = mkdtempSync(join(tmpdir(), "cloister-crash-"));
let world: AttestationWorld;
let cas: TestCas;
let runtime: Attested;

before(async () => {
  world = await startAttestationWorld(
    dir,
    (program, digest) => `version: "1"
name: crash
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${digest}}]
    command: [${program}]
    volumes: [{name: data, path: /srv/data}]
volumes:
  - {name: data}
`,
  );
  cas = world.cas;
  runtime = await world.attest("crash/app");
});
after(async () => {
  await world.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** mulberry32: a small seeded generator, so that a failing run can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const casTag = async () => {
  const { record } = (await cas.running.service.secretValues("crash"))!;
  return cas.running.service.volumeTag(record, "data");
};

test(`${KILLS} SIGKILLs at random instants during commits: the next start needs no repair and loses nothing committed`, async () => {
  const next = random(SEED);
  const tree = join(dir, "tree");
  const volume = runtime.config.volumes[0]!;
  const key = Buffer.from(volume.key, "hex");
  const tags: TagKeeper = {
    commit: async (name, previous, nextTag) => {
      await runtime.client.request("POST", `/v1/volumes/crash/${name}/tag`, { previous, next: nextTag });
    },
  };
  let pendingSeen = 0;
  let lastRecords = 0;
  for (let kill = 0; kill < KILLS; kill++) {
    const expected = await casTag();
    const child = spawn(
      process.execPath,
      [
        COMMITTER,
        JSON.stringify({
          volume: { ...volume, tag: expected },
          tree,
          plaintext: join(dir, "plain-child"),
          cas: { url: cas.running.url, casKey: cas.running.identity.hash },
          keyPem: runtime.keyPem,
          certificatePem: runtime.certificatePem,
          policy: "crash",
        }),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const exited = new Promise((r) => child.on("exit", r));
    await new Promise<void>((resolve, reject) => {
      const check = setInterval(() => {
        if (out.includes("ready")) {
          clearInterval(check);
          resolve();
        } else if (child.exitCode !== null) {
          clearInterval(check);
          reject(new Error(`seed ${SEED}, kill ${kill}: the committer failed to start: ${out}`));
        }
      }, 2);
    });
    // Somewhere in the first few commits: each seals ~300 kB, fsyncs, and asks the CAS.
    await new Promise((r) => setTimeout(r, next() * 60));
    child.kill("SIGKILL");
    await exited;

    const held = await casTag();
    const plain = join(dir, "plain-check");
    rmSync(plain, { recursive: true, force: true });
    // A kill before the first commit renamed its manifest into place (the commit point on disk;
    // before it, the tree holds at most what that commit had written so far — .cloister-fs, its
    // objects, the state's copy under states/, the temporary manifest — and no manifest). Nothing
    // was committed: the state is the old one, a fresh volume, and the CAS holds no tag. A slow
    // first commit (a loaded machine, slow fsyncs) still running at the first kill lands here;
    // the next start opens it fresh, as test/runtime/volumes.test.ts checks on that exact state.
    if (!existsSync(join(tree, MANIFEST))) {
      assert.equal(held, null, `seed ${SEED}, kill ${kill}: no manifest on disk, but the CAS holds a tag`);
      const opened = await openVolume({ ...volume, tag: held }, tree, plain, tags);
      assert.equal(opened.tag, null, `seed ${SEED}, kill ${kill}: opened fresh`);
      assert.deepEqual(readdirSync(plain), [], `seed ${SEED}, kill ${kill}: a fresh volume is empty`);
      continue;
    }
    // The invariant: the disk holds the CAS's state, or its direct successor not yet committed.
    const disk = openManifest(tree, key);
    const pending = disk.tag !== held;
    if (pending) {
      pendingSeen++;
      assert.equal(
        disk.body.previous,
        held,
        `seed ${SEED}, kill ${kill}: the disk is neither the CAS's state nor its successor`,
      );
    }
    // The next start: no repair, whatever the instant.
    const opened = await openVolume({ ...volume, tag: held }, tree, plain, tags);
    assert.equal(opened.tag, await casTag(), `seed ${SEED}, kill ${kill}: opened in the CAS's state`);
    verifyTree(tree, key, (await casTag())!);
    let records: string[] = [];
    try {
      records = readFileSync(join(plain, "records.txt"), "utf8").split("\n").filter(Boolean);
    } catch {
      // no commit yet
    }
    assert.deepEqual(
      records,
      records.map((_, i) => `record-${i}`),
      `seed ${SEED}, kill ${kill}: records in order, none twice`,
    );
    assert.ok(records.length >= lastRecords, `seed ${SEED}, kill ${kill}: nothing committed was lost`);
    lastRecords = records.length;
  }
  // The instants must have covered both sides of the CAS commit, or the test proved little.
  assert.ok(pendingSeen > 0, `seed ${SEED}: no kill fell between the manifest's rename and the CAS's commit`);
  assert.ok(lastRecords > 50, `seed ${SEED}: only ${lastRecords} commits reached the CAS`);
});
