/** `cloister fs …` as a user runs it: the real binary, real files. */
import assert from "node:assert/strict";
import {
  existsSync,
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
import { OBJECTS } from "../../src/fs/format.ts";
import { runCli } from "../helpers/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-cli-fs-"));
const src = join(dir, "www");
after(() => rmSync(dir, { recursive: true, force: true }));
before(() => {
  mkdirSync(join(src, "css"), { recursive: true });
  writeFileSync(join(src, "index.html"), "<p>hello from a protected tree</p>\n");
  writeFileSync(join(src, "css/site.css"), "body { color: teal }\n");
});

const cli = (...args: string[]) => runCli(["fs", ...args], { cwd: dir });

describe("cloister fs", () => {
  test("protect prints the tag and makes a key; show, verify, tag and decrypt agree", async () => {
    const p = await cli("protect", "www", "--out", "www.protected");
    assert.equal(p.code, 0, p.stderr);
    const tag = p.stdout.trim();
    assert.match(tag, /^[0-9a-f]{64}$/);
    assert.match(p.stderr, /wrote a new tree key to .*www\.protected\.key \(mode 0600\)/);
    assert.equal(statSync(join(dir, "www.protected.key")).mode & 0o777, 0o600);
    assert.match(readFileSync(join(dir, "www.protected.key"), "utf8"), /^[0-9a-f]{64}\n$/);

    const show = await cli("show", "www.protected", "--output", "json");
    assert.equal(JSON.parse(show.stdout).tag, tag);
    const verify = await cli("verify", "www.protected", "--key-file", "www.protected.key", "--tag", tag);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, new RegExp(`^ok: 2 files, \\d+ bytes, tag ${tag}\\n$`));
    assert.equal((await cli("tag", "www.protected", "--key-file", "www.protected.key")).stdout, `${tag}\n`);
    const d = await cli("decrypt", "www.protected", "--key-file", "www.protected.key", "--out", "plain", "--tag", tag);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(readFileSync(join(dir, "plain/css/site.css"), "utf8"), "body { color: teal }\n");
  });

  test("the same key file protects a second tree; --out that exists is refused", async () => {
    writeFileSync(join(dir, "given.key"), `${"ab".repeat(32)}\n`);
    const p = await cli("protect", "www", "--out", "second", "--key-file", "given.key", "--authenticate", "/css");
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stderr, "", "no new key");
    const again = await cli("protect", "www", "--out", "second", "--key-file", "given.key");
    assert.deepEqual(
      [again.code, again.stderr],
      [1, "cloister: --out second: already exists; choose a new directory\n"],
    );
  });

  test("failures are one line and exit 1: another key, another state, an altered object, a bad key file", async () => {
    await cli("protect", "www", "--out", "t3", "--key-file", "t3.key");
    writeFileSync(join(dir, "other.key"), `${"cd".repeat(32)}\n`);
    const wrong = await cli("verify", "t3", "--key-file", "other.key");
    assert.deepEqual(
      [wrong.code, wrong.stderr],
      [1, "cloister: manifest: does not open with this key (another tree's key, or the manifest was altered)\n"],
    );
    const stale = await cli("verify", "t3", "--key-file", "t3.key", "--tag", "0".repeat(64));
    assert.equal(stale.code, 1);
    assert.match(stale.stderr, /^cloister: the tree is at tag [0-9a-f]{64}, not the expected 0{64}: an older copy/);
    const object = join(dir, "t3", OBJECTS, readdirSync(join(dir, "t3", OBJECTS))[0]!);
    const bytes = readFileSync(object);
    bytes[20]! ^= 4;
    writeFileSync(object, bytes);
    const altered = await cli("decrypt", "t3", "--key-file", "t3.key", "--out", "t3.plain");
    assert.equal(altered.code, 1);
    assert.match(
      altered.stderr,
      /^cloister: \/(index\.html|css\/site\.css): chunk 0 was altered, moved or belongs to another file\n$/,
    );
    assert.equal(existsSync(join(dir, "t3.plain")), false, "nothing decrypted when anything fails");
    writeFileSync(join(dir, "bad.key"), "not a key\n");
    const bad = await cli("verify", "t3", "--key-file", "bad.key");
    assert.match(bad.stderr, /bad\.key: expected a tree key, 64 hex digits/);
    const usage = await cli("verify", "t3", "--key-file", "t3.key", "--tag", "xyz");
    assert.equal(usage.code, 2);
    const notTree = await cli("show", "www");
    assert.match(notTree.stderr, /www: not a protected tree \(no \.cloister-fs\/manifest\)/);
  });
});
