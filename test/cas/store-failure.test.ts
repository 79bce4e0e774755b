/**
 * A CAS whose disk fails a sync stops, rather than answer from memory what the disk may not hold
 * (issue 17's review: an fsync error at a group commit must stop the CAS). The disk is a fake —
 * fsync(2) of the WAL answers EIO once the test says so; everything else is the real CAS.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { measureFile } from "../../src/attestation/sim/evidence.ts";
import { StoreFailedError } from "../../src/cas/store/store.ts";
import { loadOrCreateNodeKey, startLas } from "../../src/las/server.ts";
import { makeIdentity, startTestCas } from "../helpers/cas.ts";
import { attestAs } from "../helpers/runtime.ts";

const dir = mkdtempSync(join(tmpdir(), "cloister-store-failure-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("a failed sync at a group commit: the attestation is answered 503, and the CAS stops by itself", async () => {
  const program = join(dir, "app.sh");
  writeFileSync(program, "#!/bin/sh\n", { mode: 0o755 });
  let failing = false;
  const owner = await makeIdentity("owner");
  const cas = await startTestCas({
    admins: [owner.hash],
    storeOptions: {
      syncWal: (fd, done) =>
        failing
          ? setImmediate(() => done(Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" })))
          : import("node:fs").then(({ fsync }) => fsync(fd, done)),
    },
  });
  const { key } = await loadOrCreateNodeKey(join(dir, "las.pem"));
  const las = await startLas({ listen: "127.0.0.1:0", key });
  try {
    await cas.client(owner).request("POST", "/v1/las", { key: las.key });
    await cas.client(owner).request("POST", "/v1/policies", {
      policy: `version: "1"\nname: shop\nsecurity:\n  attestation: {mode: simulation}\nservices:\n  - name: app\n    measurements: [{tee: sim, digest: ${measureFile(Buffer.from("#!/bin/sh\n"))}}]\n    command: [${program}]\n`,
    });
    const endpoint = { url: cas.running.url, casKey: cas.running.identity.hash };
    await attestAs(endpoint, las.url, program, "shop/app");

    failing = true;
    await assert.rejects(attestAs(endpoint, las.url, program, "shop/app"), (e: Error & { status?: number }) => {
      assert.equal(e.status, 503);
      assert.match(e.message, /store_failed|could not make its writes durable/);
      return true;
    });
    const why = await cas.running.failed;
    assert.ok(why instanceof StoreFailedError);
    // Stopped: nothing listens on its port any more.
    const port = Number(new URL(cas.running.url).port);
    await assert.rejects(
      new Promise((resolve, reject) => connect(port, "127.0.0.1").once("connect", resolve).once("error", reject)),
      { code: "ECONNREFUSED" },
    );
  } finally {
    await las.close();
    await cas.stop().catch(() => {});
    rmSync(cas.dataDir, { recursive: true, force: true });
  }
});
