/** Warnings (src/policy/warnings.ts): templates that lost their $$, secrets nothing uses. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { stringify } from "yaml";
import { checkPolicyText, type PolicyWarning } from "../../src/policy/check.ts";

const DIGEST = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/** A valid policy around one service; `service` and `rest` are merged in. */
function warningsOf(service: Record<string, unknown>, rest: Record<string, unknown> = {}): readonly PolicyWarning[] {
  const doc = {
    version: "1",
    name: "warn/unit",
    security: { attestation: { mode: "simulation" } },
    services: [{ name: "app", measurements: [{ tee: "sim", digest: DIGEST }], command: ["/app"], ...service }],
    secrets: [{ name: "api_key", kind: "ascii" }],
    ...rest,
  };
  const r = checkPolicyText(stringify(doc), "unit.yaml");
  assert.ok(r.ok, r.ok ? "" : r.errors.map((e) => `${e.field}: ${e.message}`).join("\n"));
  return r.warnings;
}

const fields = (ws: readonly PolicyWarning[]) => ws.map((w) => w.field);

describe("templates that lost their $$ delimiters", () => {
  const use = { environment: { USED: "$$cloister::api_key$$" } };

  test("cloister::NAME without $$, in command, environment and file content", () => {
    const ws = warningsOf({
      command: ["/app", "--key=cloister::api_key"],
      environment: { A: "cloister::api_key", ...use.environment },
      files: [{ path: "/etc/a", content: "k = cloister::api_key:hex\n" }],
    });
    assert.deepEqual(fields(ws), [
      "services[0].command[1]",
      "services[0].environment.A",
      "services[0].files[0].content",
    ]);
    assert.match(ws[0]!.message, /^"cloister::api_key" at character 7 looks like a template that lost its \$\$/);
    assert.match(ws[0]!.message, /expected \$\$cloister::api_key\$\$$/);
    assert.match(ws[2]!.message, /expected \$\$cloister::api_key:hex\$\$$/);
  });

  test("a heredoc's PIDs around the name: the declared secret is named", () => {
    const [w, ...more] = warningsOf({ environment: { A: "12345cloister::api_key12345", ...use.environment } });
    assert.deepEqual(more, []);
    assert.match(w!.message, /^"cloister::api_key12345" at character 6 .*expected \$\$cloister::api_key\$\$$/);
    const [f] = warningsOf({ environment: { A: "9cloister::api_key:base64url9", ...use.environment } });
    assert.match(f!.message, /expected \$\$cloister::api_key:base64url\$\$$/);
  });

  test("::NAME and ::NAME:FORMAT left by make and a shell, for a declared secret", () => {
    const ws = warningsOf({ command: ["/app", "--key=::api_key:hex$", "::api_key"], ...use });
    assert.deepEqual(fields(ws), ["services[0].command[1]", "services[0].command[2]"]);
    assert.match(
      ws[0]!.message,
      /^"::api_key:hex" at character 7 looks like what a shell or make left of \$\$cloister::api_key:hex\$\$$/,
    );
  });

  test("no warning for templates, escapes, or text that merely contains ::", () => {
    const ws = warningsOf({
      command: ["/app", "--listen=[::1]:8080", "std::string", "Foo::api_key", "::other", "a::api_key"],
      environment: {
        T: "$$cloister::api_key$$ and $$cloister::api_key:hex$$",
        LITERAL: "$$$$cloister::api_key$$$$",
        IPV6: "::1",
      },
      files: [{ path: "/etc/a", content: "$$cloister::api_key:base64$$\n" }],
    });
    assert.deepEqual(ws, []);
  });
});

describe("secrets nothing uses", () => {
  const unused = (secrets: unknown[], service: Record<string, unknown> = {}, rest: Record<string, unknown> = {}) =>
    warningsOf(
      { environment: { K: "$$cloister::api_key$$" }, ...service },
      { secrets: [{ name: "api_key", kind: "ascii" }, ...secrets], ...rest },
    );

  test("a secret named by nothing is reported at its name, without its value", () => {
    const ws = unused([{ name: "spare", kind: "ascii", value: "canary-value-98765" }]);
    assert.equal(ws.length, 1);
    assert.equal(ws[0]!.field, "secrets[1].name");
    assert.match(
      ws[0]!.message,
      /^secret "spare" is used by nothing: no template, TLS setting, volume key, service_ca or issuer names it, and it is not exported$/,
    );
    assert.ok(!ws[0]!.message.includes("canary-value"));
  });

  test("an import nothing uses is reported too", () => {
    assert.deepEqual(fields(unused([{ name: "imp", import: { policy: "other/p", secret: "s" } }])), [
      "secrets[1].name",
    ]);
  });

  test("every kind of use counts", () => {
    const pki = [
      { name: "ca", kind: "x509-ca" },
      { name: "issued", kind: "x509", issuer: "ca" },
      { name: "client_ca", kind: "x509-ca" },
      { name: "remote_ca", kind: "x509-ca" },
      { name: "client_cert", kind: "x509" },
      { name: "service_ca", kind: "x509-ca" },
      { name: "vol", kind: "binary" },
      { name: "shared", kind: "binary", export: [{ policy: "other/p" }] },
      { name: "in_file", kind: "binary" },
      { name: "in_argv", kind: "binary" },
    ];
    const ws = unused(
      pki,
      {
        command: ["/app", "$$cloister::in_argv:hex$$"],
        files: [{ path: "/k", content: "$$cloister::in_file:raw$$" }],
        volumes: [{ name: "data", path: "/data" }],
        tls: {
          inbound: [
            { listen: "0.0.0.0:8443", forward: "127.0.0.1:8080", certificate: "issued", client_ca: "client_ca" },
          ],
          outbound: [{ listen: "127.0.0.1:6379", connect: "db:6380", ca: "remote_ca", certificate: "client_cert" }],
        },
      },
      {
        volumes: [{ name: "data", key: "vol" }],
        security: { attestation: { mode: "simulation" }, service_ca: "service_ca" },
      },
    );
    assert.deepEqual(ws, []);
  });

  test("an issuer counts as used even when what it issues is not: one warning, at the certificate", () => {
    const ws = unused([
      { name: "ca", kind: "x509-ca" },
      { name: "cert", kind: "x509", issuer: "ca" },
    ]);
    assert.deepEqual(fields(ws), ["secrets[2].name"]);
  });
});

test("a policy that fails has errors only: warnings need references that resolve", () => {
  const r = checkPolicyText('version: "1"\nname: w/x\nsecrets: [{name: a, kind: ascii, size: 0}]\n', "x.yaml");
  assert.equal(r.ok, false);
  assert.ok(!("warnings" in r));
});
