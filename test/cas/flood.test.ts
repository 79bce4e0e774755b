/**
 * A flood of made-up attestations from one source (issue 17, item 3): `cloister cas start` in a
 * process of its own, 16 connections sending refused attestations for a bounded time — forged
 * nonces, and real nonces with made-up evidence — and the CAS's audit log, database and memory
 * measured. Each refusal used to be a row: 18,509 in 30 s made 17.8 MB and took the CAS from 232
 * to 521 MiB. Now strangers' refusals are tallied (src/cas/refusal-tally.ts): a few rows, however
 * long the flood, and every refusal still counted in them.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { CasClient, CasRequestError } from "../../src/client/cas-client.ts";
import { startCasProcess } from "../helpers/cas.ts";

const FLOOD_MS = 6_000;
const MAX_REQUESTS = 60_000;
const CONNECTIONS = 16;
/** What the flood may add, at most: rows, bytes of database (and WAL), and resident memory. */
const MAX_ROWS = 10;
const MAX_DB_GROWTH = 1024 * 1024;
const MAX_RSS_GROWTH = 64 * 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), "cloister-flood-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const rss = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
const dbBytes = () =>
  ["cas.db", "cas.db-wal"].reduce(
    (n, f) => n + (statSync(join(dir, "data", f), { throwIfNoEntry: false })?.size ?? 0),
    0,
  );
function auditRows(): { count: number; reasons: string[] } {
  const db = new DatabaseSync(join(dir, "data", "cas.db"), { readOnly: true });
  try {
    const rows = db.prepare("SELECT entry FROM audit ORDER BY seq").all() as { entry: string }[];
    return { count: rows.length, reasons: rows.map((r) => (JSON.parse(r.entry) as { reason: string }).reason) };
  } finally {
    db.close();
  }
}

test("a flood of made-up attestations adds a bounded number of rows, bytes and memory, and every refusal is counted", async () => {
  const cas = await startCasProcess(["--data-dir", join(dir, "data"), "--listen", "127.0.0.1:0"]);
  const pid = cas.child.pid!;
  try {
    const runtime = new CasClient({ url: cas.url, casKey: cas.key });
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
    let refused = 0;
    let limited = 0;
    let sent = 0;
    const attempt = async (i: number) => {
      try {
        // Half with a forged nonce; half with a real one and made-up evidence.
        const nonce =
          i % 2 === 0
            ? randomBytes(32).toString("base64")
            : (
                await runtime.request<{ nonce: string }>("POST", "/v1/attestation/challenge", {
                  config_id: "shop/web",
                })
              ).nonce;
        await runtime.request("POST", "/v1/attestation", {
          config_id: "shop/web",
          nonce,
          evidence: { tee: "sim", quote: randomBytes(64).toString("base64") },
          spki: spki.toString("base64"),
        });
        assert.fail("a made-up attestation was accepted");
      } catch (error) {
        if (!(error instanceof CasRequestError)) throw error;
        if (error.status === 429) limited++;
        else if (error.status === 403 || error.status === 404) refused++;
        else throw error;
      }
    };
    const flood = async (until: number) => {
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (performance.now() < until && sent < MAX_REQUESTS) await attempt(sent++);
        }),
      );
    };
    // Warm up (the JIT, the connections), then measure from there.
    await flood(performance.now() + 1_000);
    const rowsBefore = auditRows().count;
    const bytesBefore = dbBytes();
    const rssBefore = rss(pid);
    let rssMost = rssBefore;
    const sampler = setInterval(() => (rssMost = Math.max(rssMost, rss(pid))), 100);
    const warm = refused + limited;
    try {
      await flood(performance.now() + FLOOD_MS);
    } finally {
      clearInterval(sampler);
    }
    rssMost = Math.max(rssMost, rss(pid));
    const during = refused + limited - warm;
    const rows = auditRows().count - rowsBefore;
    const growth = dbBytes() - bytesBefore;
    console.log(
      `flood: ${during} refused in ${FLOOD_MS} ms (${limited} rate-limited in all); +${rows} rows, +${growth} bytes, RSS ${(rssBefore / 2 ** 20).toFixed(0)} -> at most ${(rssMost / 2 ** 20).toFixed(0)} MiB`,
    );
    assert.ok(during > 2_000, `the flood was too small to show anything: ${during}`);
    assert.ok(rows <= MAX_ROWS, `${rows} rows for ${during} refusals`);
    assert.ok(growth <= MAX_DB_GROWTH, `the database grew ${growth} bytes`);
    assert.ok(rssMost - rssBefore <= MAX_RSS_GROWTH, `RSS grew ${rssMost - rssBefore} bytes`);

    // Stopping writes the tally: every refusal is in the log, counted.
    cas.child.kill("SIGTERM");
    await new Promise((resolve) => cas.child.once("exit", resolve));
    const { reasons } = auditRows();
    const counted = reasons.reduce(
      (n, r) => n + (/^refused (\d+) more times? like this/.exec(r) ? Number(RegExp.$1) : 0),
      0,
    );
    const firsts = reasons.filter((r) => !/^refused \d+ more/.test(r)).length;
    assert.equal(counted + firsts, refused, "every refusal is counted in the log");
  } finally {
    if (cas.child.exitCode === null) cas.child.kill("SIGKILL");
  }
});
