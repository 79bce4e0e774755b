/**
 * A volume's open and commit against a real CAS, in the cases a review found: answers lost on
 * the way back, the CAS having moved on since attestation, symbolic links planted in the tree,
 * not-protected regions, special files made by the program, and confidential names kept out of
 * messages. Lost answers are injected around the real CAS client (a FAULT INJECTION, named so):
 * the CAS does the commit, the runtime never hears of it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { CasRequestError } from "../../src/client/cas-client.ts";
import { LOCK, MANIFEST, META_DIR, OBJECTS, regionsFrom, STATES } from "../../src/fs/format.ts";
import { openManifest } from "../../src/fs/open.ts";
import { freshHeader, sealDirectory } from "../../src/fs/seal.ts";
import type { ConfiguredVolume } from "../../src/protocol/attestation.ts";
import { lockTree, VolumeInUse } from "../../src/runtime/directory-lock.ts";
import { commitVolume, openVolume, TagConflict, type TagKeeper, VolumeError } from "../../src/runtime/volumes.ts";
import type { TestCas } from "../helpers/cas.ts";
import { type AttestationWorld, type Attested, startAttestationWorld } from "../helpers/runtime.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-volumes-"));
let world: AttestationWorld;
let cas: TestCas;
let runtime: Attested;
let n = 0;
const fresh = (name: string) => join(dir, `${name}-${n++}`);
const volumeNames = Array.from({ length: 9 }, (_, i) => `v${i}`);

before(async () => {
  world = await startAttestationWorld(
    dir,
    (program, digest) => `version: "1"
name: vt
security:
  attestation: {mode: simulation}
services:
  - name: app
    measurements: [{tee: sim, digest: ${digest}}]
    command: [${program}]
    volumes: [${volumeNames.map((v) => `{name: ${v}, path: /srv/${v}}`).join(", ")}]
volumes: [${volumeNames.map((v) => `{name: ${v}}`).join(", ")}]
`,
  );
  cas = world.cas;
  runtime = await world.attest("vt/app");
});
after(async () => {
  await world.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** The real CAS, as the volume launcher asks it. */
const realTags: TagKeeper = {
  commit: async (volume, previous, next) => {
    try {
      await runtime.client.request("POST", `/v1/volumes/vt/${volume}/tag`, { previous, next });
    } catch (error) {
      if ((error as CasRequestError).status === 409) throw new TagConflict((error as Error).message);
      throw error;
    }
  },
};
/** FAULT INJECTION: the CAS commits, and the answer is lost on its way back. */
const answerLost: TagKeeper = {
  commit: async (volume, previous, next) => {
    await realTags.commit(volume, previous, next);
    throw new Error("connection reset (injected)");
  },
};
/** FAULT INJECTION: the CAS cannot be reached at all. */
const unreachable: TagKeeper = {
  commit: async () => {
    throw new Error("connect ECONNREFUSED (injected)");
  },
};

const casTag = async (volume: string) => {
  const { record } = (await cas.running.service.secretValues("vt"))!;
  return cas.running.service.volumeTag(record, volume);
};
const volume = async (name: string): Promise<ConfiguredVolume> => ({
  ...runtime.config.volumes.find((v) => v.name === name)!,
  tag: await casTag(name),
});

describe("answers lost, the CAS moved on", () => {
  test("a commit whose answer was lost stays pending and is retried first, not sealed again as a sibling", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v0"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "one");
    await assert.rejects(commitVolume(open, answerLost), /connection reset/);
    const pending = open.pending!;
    assert.equal(await casTag("v0"), pending, "the CAS did commit it");
    writeFileSync(join(open.plaintext, "a.txt"), "two");
    // The retry finds it already done (the CAS's compare-and-swap is idempotent), then seals the change.
    const next = await commitVolume(open, realTags);
    assert.equal(openManifest(tree, Buffer.from(open.volume.key, "hex")).body.previous, pending);
    assert.equal(await casTag("v0"), next);
  });

  test("at start, a successor the CAS cannot confirm leaves the disk untouched", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v1"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "one");
    await commitVolume(open, realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "two");
    await assert.rejects(commitVolume(open, unreachable), /ECONNREFUSED/);
    const before = readdirSync(join(tree, OBJECTS)).sort();
    await assert.rejects(
      openVolume(await volume("v1"), tree, fresh("plain"), unreachable),
      /cannot commit the state the last run left .*ECONNREFUSED/,
    );
    assert.deepEqual(readdirSync(join(tree, OBJECTS)).sort(), before, "nothing removed");
    // With the CAS back, the next start commits it.
    const reopened = await openVolume(await volume("v1"), tree, fresh("plain"), realTags);
    assert.equal(readFileSync(join(reopened.plaintext, "a.txt"), "utf8"), "two");
    assert.equal(await casTag("v1"), reopened.tag);
  });

  test("at start, a CAS that moved on since attestation: refused, the disk untouched", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v2"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "one");
    await commitVolume(open, realTags);
    const stale = await volume("v2");
    writeFileSync(join(open.plaintext, "a.txt"), "two");
    await commitVolume(open, realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "three");
    await assert.rejects(commitVolume(open, unreachable));
    // `stale` is what a runtime attested before the second commit would have been told.
    const before = readdirSync(join(tree, OBJECTS)).sort();
    await assert.rejects(openVolume(stale, tree, fresh("plain"), realTags), (e: Error) => e instanceof VolumeError);
    assert.deepEqual(readdirSync(join(tree, OBJECTS)).sort(), before);
  });
});

describe("a fresh volume whose first commit was killed", () => {
  test("before its manifest's rename: it opens fresh, and its first commit clears what the killed one left", async () => {
    // The latest instant before the commit point on disk: objects written, the state's copy
    // under states/, the temporary manifest written and fsynced, not yet renamed (seal.ts's
    // replaceManifest). The CAS never heard of that state: the tree is still a fresh volume.
    const tree = fresh("tree");
    const v = await volume("v8");
    assert.equal(v.tag, null);
    const source = fresh("src");
    mkdirSync(source);
    writeFileSync(join(source, "a.txt"), "never committed");
    const killed = sealDirectory(source, tree, {
      header: freshHeader(4096),
      treeKey: Buffer.from(v.key, "hex"),
      regions: regionsFrom({}),
    });
    renameSync(join(tree, MANIFEST), join(tree, `${MANIFEST}.0123abcd.tmp`));
    const leftovers = readdirSync(join(tree, OBJECTS));
    assert.equal(leftovers.length, 1);
    assert.deepEqual(readdirSync(join(tree, STATES)), [killed.tag]);

    const open = await openVolume(v, tree, fresh("plain"), realTags);
    assert.equal(open.tag, null, "fresh: the killed commit's state is not taken");
    assert.deepEqual(readdirSync(open.plaintext), [], "and nothing of it is presented");
    assert.equal(await casTag("v8"), null);
    writeFileSync(join(open.plaintext, "b.txt"), "committed");
    const tag = await commitVolume(open, realTags);
    assert.equal(await casTag("v8"), tag);
    assert.equal(openManifest(tree, Buffer.from(v.key, "hex")).body.previous, null, "the first state");
    assert.deepEqual(readdirSync(join(tree, STATES)), [tag], "the killed state's copy is gone");
    assert.ok(!readdirSync(join(tree, OBJECTS)).includes(leftovers[0]!), "and its object");
    assert.deepEqual(
      readdirSync(join(tree, META_DIR)).filter((n) => n.endsWith(".tmp")),
      [],
      "and its temporary manifest",
    );
    const reopened = await openVolume(await volume("v8"), tree, fresh("plain"), realTags);
    assert.deepEqual(readdirSync(reopened.plaintext), ["b.txt"]);
  });
});

describe("the runtime's lock in the tree", () => {
  test("commits and their garbage collection leave the lock file, held; the tree reopens with it", async () => {
    const tree = fresh("tree");
    const release = lockTree(tree);
    try {
      const open = await openVolume(await volume("v7"), tree, fresh("plain"), realTags);
      for (const content of ["one", "two", "three"]) {
        writeFileSync(join(open.plaintext, "a.txt"), content);
        await commitVolume(open, realTags);
      }
      assert.ok(statSync(join(tree, LOCK)).isFile(), "the lock file is still there");
      assert.throws(() => lockTree(tree), VolumeInUse, "and still held");
      const reopened = await openVolume(await volume("v7"), tree, fresh("plain"), realTags);
      assert.equal(readFileSync(join(reopened.plaintext, "a.txt"), "utf8"), "three");
      assert.deepEqual(readdirSync(reopened.plaintext), ["a.txt"], "the lock is not a file of the volume");
    } finally {
      release();
    }
  });
});

describe("what the host plants in the tree", () => {
  test("a symbolic link for the objects or states directory, or the manifest, is refused", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v3"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "a.txt"), "one");
    await commitVolume(open, realTags);
    const victim = fresh("victim");
    mkdirSync(victim);
    writeFileSync(join(victim, "precious"), "keep me");
    for (const planted of [OBJECTS, STATES]) {
      const path = join(tree, planted);
      const saved = `${path}.saved`;
      rmSync(saved, { recursive: true, force: true });
      mkdirSync(saved);
      for (const f of readdirSync(path)) writeFileSync(join(saved, f), readFileSync(join(path, f)));
      rmSync(path, { recursive: true });
      symlinkSync(victim, path);
      await assert.rejects(
        openVolume(await volume("v3"), tree, fresh("plain"), realTags),
        /not a directory \(a symbolic link\?\), refused/,
      );
      assert.equal(readFileSync(join(victim, "precious"), "utf8"), "keep me");
      rmSync(path);
      mkdirSync(path);
      for (const f of readdirSync(saved)) writeFileSync(join(path, f), readFileSync(join(saved, f)));
      rmSync(saved, { recursive: true });
    }
    const manifest = join(tree, ".cloister-fs", "manifest");
    const bytes = readFileSync(manifest);
    rmSync(manifest);
    writeFileSync(join(victim, "m"), bytes);
    symlinkSync(join(victim, "m"), manifest);
    await assert.rejects(openVolume(await volume("v3"), tree, fresh("plain"), realTags), /a symbolic link, refused/);
  });

  test("a tree with a not-protected region is not a volume", async () => {
    const source = fresh("src");
    mkdirSync(join(source, "pub"), { recursive: true });
    writeFileSync(join(source, "pub/x"), "public");
    const tree = fresh("tree");
    const v = await volume("v4");
    const sealed = sealDirectory(source, tree, {
      header: freshHeader(4096),
      treeKey: Buffer.from(v.key, "hex"),
      regions: regionsFrom({ notProtected: ["/pub"] }),
    });
    await assert.rejects(
      openVolume({ ...v, update_policy: "no-rollback-protection", tag: sealed.tag }, tree, fresh("plain"), realTags),
      /not-protected region; volumes hold encrypted and authenticated files only/,
    );
  });

  test("messages name objects, not the confidential file names", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v5"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "merger-plans-secret.txt"), "x".repeat(100));
    await commitVolume(open, realTags);
    const objects = readdirSync(join(tree, OBJECTS));
    writeFileSync(join(tree, OBJECTS, objects[0]!), randomBytes(128));
    await assert.rejects(openVolume(await volume("v5"), tree, fresh("plain"), realTags), (e: Error) => {
      assert.match(e.message, /^volume v5: object [0-9a-f]{32}: chunk 0 was altered/);
      assert.doesNotMatch(e.message, /merger/);
      return true;
    });
  });
});

describe("what the program makes", () => {
  test("symbolic links are skipped with a warning; everything else is committed", async () => {
    const tree = fresh("tree");
    const open = await openVolume(await volume("v6"), tree, fresh("plain"), realTags);
    writeFileSync(join(open.plaintext, "kept.txt"), "kept");
    symlinkSync("/etc/passwd", join(open.plaintext, "link"));
    const warnings: string[] = [];
    await commitVolume(open, realTags, (m) => warnings.push(m));
    assert.deepEqual(warnings, ["a symbolic link in volume v6 is not kept"]);
    const reopened = await openVolume(await volume("v6"), tree, fresh("plain"), realTags);
    assert.equal(readFileSync(join(reopened.plaintext, "kept.txt"), "utf8"), "kept");
    assert.equal(existsSync(join(reopened.plaintext, "link")), false);
  });
});
