/** `cloister policy check` as a user runs it: exit codes, output formats, every error. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { runCli } from "../helpers/cli.ts";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "policies");
const dir = mkdtempSync(join(tmpdir(), "cloister-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("cloister policy check", () => {
  const valid = join(FIXTURES, "valid", "design-example.yaml");

  test("a valid policy: exit 0 and the hash; json and yaml give {name, hash, warnings}", async () => {
    const text = await runCli(["policy", "check", valid]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^[0-9a-f]{64}\n$/);
    // DESIGN.md's example declares three secrets that nothing uses (its fixture states them).
    const unused = ["secrets[1].name", "secrets[2].name", "secrets[7].name"];
    const json = await runCli(["policy", "check", valid, "--output", "json"]);
    const fromJson = JSON.parse(json.stdout) as { name: string; hash: string; warnings: { field: string }[] };
    assert.deepEqual({ name: fromJson.name, hash: fromJson.hash }, { name: "acme/shop", hash: text.stdout.trim() });
    assert.deepEqual(
      fromJson.warnings.map((w) => w.field),
      unused,
    );
    const yaml = await runCli(["policy", "check", valid, "-o", "yaml"]);
    assert.deepEqual(parseYaml(yaml.stdout), fromJson);
    assert.equal(json.stderr, "", "json and yaml carry the warnings in the document, not on stderr");
    const clean = await runCli(["policy", "check", join(FIXTURES, "valid", "minimal.yaml"), "-o", "json"]);
    assert.deepEqual((JSON.parse(clean.stdout) as { warnings: unknown[] }).warnings, []);
  });

  test("warnings: exit 0 and the hash on stdout; each warning positioned on stderr", async () => {
    const file = join(FIXTURES, "valid", "warnings.yaml");
    const r = await runCli(["policy", "check", file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^[0-9a-f]{64}\n$/);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 6, r.stderr);
    assert.equal(
      lines[2],
      `${file}:19:14: warning: services[0].environment.PLAIN: "cloister::api_key" at character 1 looks like a template that lost its $$ delimiters (a shell or make expands $$): expected $$cloister::api_key$$`,
    );
    assert.equal(
      lines[4],
      `${file}:28:13: warning: secrets[1].name: secret "leftover" is used by nothing: no template, TLS setting, volume key, service_ca or issuer names it, and it is not exported`,
    );
    assert.equal(lines[5], `5 warnings in ${file}`);
    for (const line of lines.slice(0, 5)) assert.match(line, new RegExp(`^${file}:\\d+:\\d+: warning: `));
  });

  test("an invalid policy: exit 1 and every error as FILE:LINE:COL: field: message", async () => {
    const file = join(FIXTURES, "invalid", "many-errors.yaml");
    const r = await runCli(["policy", "check", file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 4, r.stderr);
    assert.equal(
      lines[0],
      `${file}:7:46: security.attestation.tolerate[0]: expected debug-mode, outdated-tcb, configuration-needed, sw-hardening-needed, got "nothing"`,
    );
    assert.match(lines[1]!, new RegExp(`^${file}:12:10: services\\[0\\]\\.pwd: `));
    assert.match(
      lines[2]!,
      new RegExp(`^${file}:14:28: secrets\\[0\\]\\.siz: unknown field \\(did you mean "size"\\?\\)$`),
    );
    assert.equal(lines[3], `3 problems in ${file}`);
  });

  test("a damaged certificate in an explicit value is a positioned problem, not an internal error", async () => {
    // The issuer after the leaf is cut short inside its base64: OpenSSL's error used to escape
    // from normalisation with a stack trace.
    const file = join(FIXTURES, "invalid", "x509-value-issuer-damaged.yaml");
    const r = await runCli(["policy", "check", file]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(
      r.stderr,
      `${file}:8:12: secrets[0].value: CERTIFICATE block 2 (an issuer) cannot be parsed as X.509: its base64 or DER is damaged\n1 problem in ${file}\n`,
    );
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
  });

  test("a map or list as a key is a positioned problem, without a warning from Node", async () => {
    const file = join(FIXTURES, "invalid", "yaml-collection-key.yaml");
    const r = await runCli(["policy", "check", file]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `${file}:5:3: yaml: a key must be a plain name, not a map or a list\n1 problem in ${file}\n`,
    );
  });

  test("json errors are machine-readable on stdout", async () => {
    const r = await runCli(["policy", "check", join(FIXTURES, "invalid", "many-errors.yaml"), "-o", "json"]);
    assert.equal(r.code, 1);
    const { errors } = JSON.parse(r.stdout) as {
      errors: { line: number; column: number; field: string; message: string }[];
    };
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.field]),
      [
        [7, 46, "security.attestation.tolerate[0]"],
        [12, 10, "services[0].pwd"],
        [14, 28, "secrets[0].siz"],
      ],
    );
  });

  test("reads standard input with -", async () => {
    const r = await runCli(["policy", "check", "-"], { input: 'version: "1"\nname: from/stdin\n' });
    assert.equal(r.code, 0, r.stderr);
    const bad = await runCli(["policy", "check", "-"], { input: 'version: "1"\n' });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^<stdin>:1:1: name: missing/);
    assert.match(bad.stderr, /1 problem in <stdin>\n$/);
  });

  test("unreadable input fails with one clear line", async () => {
    const missing = await runCli(["policy", "check", join(dir, "nope.yaml")]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, `cloister: ${join(dir, "nope.yaml")}: no such file\n`);
    const isDir = await runCli(["policy", "check", dir]);
    assert.equal(isDir.code, 1);
    assert.match(isDir.stderr, /is a directory/);
    const binary = join(dir, "binary.yaml");
    writeFileSync(binary, Buffer.from([0x76, 0x00, 0xff, 0xfe]));
    const bin = await runCli(["policy", "check", binary]);
    assert.equal(bin.code, 1);
    assert.match(bin.stderr, /not UTF-8 text/);
    const huge = join(dir, "huge.yaml");
    writeFileSync(huge, `# ${"x".repeat(1024 * 1024)}\n`);
    const big = await runCli(["policy", "check", huge]);
    assert.equal(big.code, 1);
    assert.match(big.stderr, /larger than 1048576 bytes/);
  });

  test("usage errors exit 2", async () => {
    const noFile = await runCli(["policy", "check"]);
    assert.equal(noFile.code, 2);
    assert.match(noFile.stderr, /missing required argument 'file'/);
    const badOutput = await runCli(["policy", "check", valid, "--output", "xml"]);
    assert.equal(badOutput.code, 2);
    assert.match(badOutput.stderr, /Allowed choices are text, json, yaml/);
    const unknown = await runCli(["policy", "chek", valid]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Did you mean check\?/);
    const bareGroup = await runCli(["identity"]);
    assert.equal(bareGroup.code, 2);
    assert.match(bareGroup.stderr, /Usage: cloister identity/);
  });

  test("--help teaches: the exit codes, the error format, the docs", async () => {
    const r = await runCli(["policy", "check", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /FILE:LINE:COL/);
    assert.match(r.stdout, /docs\/policy\.md/);
    const top = await runCli(["--help"]);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /identity/);
    assert.match(top.stdout, /Exit codes: 0 ok, 1 refused or failed, 2 usage/);
  });

  test("the same policy written differently prints the same hash", async () => {
    const a = join(dir, "a.yaml");
    const b = join(dir, "b.json");
    writeFileSync(a, 'version: "1"\nname: x/y\nsecrets:\n  - {name: k, kind: binary}   # 32 bytes\n');
    writeFileSync(b, '{"secrets":[{"size":32,"kind":"binary","name":"k","export":[]}],"name":"x/y","version":1}');
    const [ra, rb] = await Promise.all([runCli(["policy", "check", a]), runCli(["policy", "check", b])]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(ra.stdout, rb.stdout);
  });
});
