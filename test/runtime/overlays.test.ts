/** planOverlays: one overlay per subtree, ancestors first, never over /; throughStaging. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { OverlayError, planOverlays, throughStaging } from "../../src/runtime/overlays.ts";

const host = new Set(["/", "/etc", "/etc/ssl", "/etc/ssl/certs", "/opt", "/srv", "/srv/data"]);
const exists = (p: string) => host.has(p);
const plan = (...dirs: string[]) =>
  planOverlays(
    dirs.map((dir) => ({ dir, what: `file ${dir}/x` })),
    exists,
    "/stage",
    "",
  );

describe("planOverlays", () => {
  test("directories the host lacks are made inside one overlay of their nearest existing ancestor, each once, parents first", () => {
    assert.deepEqual(plan("/opt/app/a", "/opt/app/b", "/opt/app/c"), {
      mounts: [{ anchor: "/opt", upper: "/stage/u0", work: "/stage/w0", staged: "/stage/m0" }],
      directories: ["/opt/app", "/opt/app/a", "/opt/app/b", "/opt/app/c"],
    });
  });

  test("ancestors first; a subtree already overlaid needs no other overlay", () => {
    const p = plan("/etc/ssl/certs", "/etc/new", "/etc/ssl");
    assert.deepEqual(
      p.mounts.map((m) => m.anchor),
      ["/etc"],
    );
    assert.deepEqual(p.directories, ["/etc/new"]);
    assert.deepEqual(
      plan("/srv/data", "/etc/ssl").mounts.map((m) => m.anchor),
      ["/etc/ssl", "/srv/data"],
    );
  });

  test("a top-level directory the host lacks is refused: a mount over / is not seen", () => {
    assert.throws(
      () => plan("/app/config"),
      (e: Error) => e instanceof OverlayError && /\/app does not exist on this host/.test(e.message),
    );
  });
});

describe("throughStaging", () => {
  const mounts = plan("/srv/data/x", "/etc/ssl", "/srv/y").mounts;
  test("a directory by way of its overlay's staged mount: the longest anchor that holds it", () => {
    assert.deepEqual(
      mounts.map((m) => [m.anchor, m.staged]),
      [
        ["/srv", "/stage/m0"],
        ["/etc/ssl", "/stage/m1"],
      ],
    );
    assert.equal(throughStaging("/etc/ssl", mounts), "/stage/m1");
    assert.equal(throughStaging("/etc/ssl/private/keys", mounts), "/stage/m1/private/keys");
    assert.equal(throughStaging("/srv/data/x", mounts), "/stage/m0/data/x");
  });
  test("a directory under no overlay is refused, a name that only begins like an anchor too", () => {
    assert.throws(() => throughStaging("/etc", mounts), OverlayError);
    assert.throws(() => throughStaging("/etc/sslx", mounts), /\/etc\/sslx is under no overlay/);
  });
});
