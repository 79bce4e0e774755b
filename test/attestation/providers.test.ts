/**
 * Evidence providers. configfs-tsm and Gramine's /dev/attestation cannot run here (no TDX, SNP
 * or SGX hardware): they are tested against fakes, named so — an in-memory FAKE configfs with the
 * kernel's semantics, and a FAKE /dev/attestation directory tree. The LAS provider runs for real.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ConfigfsTsmProvider, type TsmFs } from "../../src/attestation/providers/configfs-tsm.ts";
import { selectProvider } from "../../src/attestation/providers/detect.ts";
import { GramineProvider } from "../../src/attestation/providers/gramine.ts";
import { LasProvider } from "../../src/attestation/providers/las.ts";
import { ProviderError } from "../../src/attestation/providers/provider.ts";
import { simVerdict, verifySimEvidence } from "../../src/attestation/sim/evidence.ts";
import { VerificationError } from "../../src/attestation/verdict.ts";
import { loadOrCreateNodeKey, startLas } from "../../src/las/server.ts";

const dirs: string[] = [];
const tmp = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const reportData = Buffer.alloc(64, 0x5a);

/**
 * A FAKE configfs-tsm, in memory: mkdir under the root makes a report entry with the kernel's
 * attribute files; writing inblob bumps generation; outblob is a canned blob that embeds the
 * inblob (as a real quote embeds report_data).
 */
class FakeConfigfsTsm implements TsmFs {
  readonly entries = new Map<string, { inblob?: Buffer; generation: number }>();
  readonly removed: string[] = [];
  raceOnRead = false;
  readonly root: string;
  readonly provider: string;
  constructor(root: string, provider: string) {
    this.root = root;
    this.provider = provider;
  }
  async mkdir(path: string) {
    if (!path.startsWith(`${this.root}/`)) throw Object.assign(new Error("no such directory"), { code: "ENOENT" });
    this.entries.set(path, { generation: 0 });
  }
  async rmdir(path: string) {
    this.entries.delete(path);
    this.removed.push(path);
  }
  async writeFile(path: string, data: Buffer) {
    const e = this.entries.get(path.slice(0, path.lastIndexOf("/")));
    if (!e || !path.endsWith("/inblob")) throw Object.assign(new Error("denied"), { code: "EACCES" });
    e.inblob = Buffer.from(data);
    e.generation++;
  }
  async readFile(path: string): Promise<Buffer> {
    const entry = path.slice(0, path.lastIndexOf("/"));
    const file = path.slice(path.lastIndexOf("/") + 1);
    const e = this.entries.get(entry);
    if (!e) throw Object.assign(new Error("no entry"), { code: "ENOENT" });
    switch (file) {
      case "provider":
        return Buffer.from(`${this.provider}\n`);
      case "generation":
        if (this.raceOnRead) e.generation++;
        return Buffer.from(`${e.generation}\n`);
      case "outblob":
        return Buffer.concat([Buffer.from(`FAKE ${this.provider} report:`), e.inblob ?? Buffer.alloc(0)]);
      case "auxblob":
        return Buffer.from("FAKE certificate table");
      default:
        throw Object.assign(new Error(`no ${file}`), { code: "ENOENT" });
    }
  }
}

describe("configfs-tsm (against a FAKE configfs)", () => {
  const root = "/fake/sys/kernel/config/tsm/report";

  test("TDX: report_data goes to inblob, the quote comes from outblob, the entry is removed", async () => {
    const fake = new FakeConfigfsTsm(root, "tdx_guest");
    const e = await new ConfigfsTsmProvider("tdx", root, fake).evidence(reportData);
    assert.equal(e.tee, "tdx");
    assert.deepEqual(e.quote.subarray(-64), reportData);
    assert.equal(e.aux, undefined);
    assert.equal(fake.entries.size, 0, "the report entry was removed");
    assert.equal(fake.removed.length, 1);
  });

  test("SNP: the host's certificate table comes from auxblob", async () => {
    const e = await new ConfigfsTsmProvider("snp", root, new FakeConfigfsTsm(root, "sev_guest")).evidence(reportData);
    assert.equal(e.aux?.toString(), "FAKE certificate table");
  });

  test("refusals: another provider, a racing writer, a wrong report_data length, no configfs", async () => {
    await assert.rejects(
      new ConfigfsTsmProvider("tdx", root, new FakeConfigfsTsm(root, "sev_guest")).evidence(reportData),
      /provider is sev_guest, not tdx_guest/,
    );
    const racing = new FakeConfigfsTsm(root, "tdx_guest");
    racing.raceOnRead = true;
    await assert.rejects(new ConfigfsTsmProvider("tdx", root, racing).evidence(reportData), /another writer/);
    await assert.rejects(
      new ConfigfsTsmProvider("tdx", root, new FakeConfigfsTsm(root, "tdx_guest")).evidence(Buffer.alloc(32)),
      /64 bytes/,
    );
    await assert.rejects(
      new ConfigfsTsmProvider("tdx", "/elsewhere", new FakeConfigfsTsm(root, "tdx_guest")).evidence(reportData),
      ProviderError,
    );
  });
});

describe("Gramine /dev/attestation (against a FAKE directory tree)", () => {
  test("writes user_report_data and reads the quote", async () => {
    const dev = tmp("fake-dev-attestation-");
    writeFileSync(join(dev, "attestation_type"), "dcap\n");
    writeFileSync(join(dev, "quote"), "FAKE quote");
    const e = await new GramineProvider(dev).evidence(reportData);
    assert.equal(e.tee, "sgx");
    assert.equal(e.quote.toString(), "FAKE quote");
    assert.deepEqual(readFileSync(join(dev, "user_report_data")), reportData);
  });
});

describe("detection never falls back to simulation", () => {
  test("auto with no TEE fails and says how to ask for simulation", async () => {
    await assert.rejects(
      selectProvider({
        tee: "auto",
        gramineRoot: tmp("no-gramine-"),
        tsmRoot: "/nonexistent",
        lasUrl: "http://127.0.0.1:1",
        program: "/bin/true",
      }),
      /no TEE found .*--tee sim/,
    );
  });

  test("auto finds Gramine (FAKE tree) or configfs-tsm (FAKE configfs)", async () => {
    const dev = tmp("fake-dev-attestation-");
    writeFileSync(join(dev, "attestation_type"), "dcap\n");
    assert.equal((await selectProvider({ tee: "auto", gramineRoot: dev })).tee, "sgx");
    const root = "/fake/tsm";
    assert.equal(
      (
        await selectProvider({
          tee: "auto",
          gramineRoot: tmp("none-"),
          tsmRoot: root,
          tsmFs: new FakeConfigfsTsm(root, "tdx_guest"),
        })
      ).tee,
      "tdx",
    );
  });

  test("asking for a TEE that is not there fails; sim needs a LAS", async () => {
    const root = "/fake/tsm";
    await assert.rejects(
      selectProvider({ tee: "snp", tsmRoot: root, tsmFs: new FakeConfigfsTsm(root, "tdx_guest") }),
      /no SEV-SNP guest here: configfs-tsm at \/fake\/tsm is tdx/,
    );
    await assert.rejects(selectProvider({ tee: "sgx", gramineRoot: tmp("none-") }), /no Gramine DCAP attestation/);
    await assert.rejects(selectProvider({ tee: "sim", program: "/bin/true" }), /needs a LAS/);
  });
});

describe("the LAS (real) and simulated evidence", () => {
  test("the LAS measures the program itself; its evidence verifies only with an enrolled key", async () => {
    const { key } = await loadOrCreateNodeKey(join(tmp("las-"), "node-key.pem"));
    const las = await startLas({ listen: "127.0.0.1:0", key });
    try {
      const program = join(tmp("prog-"), "app");
      writeFileSync(program, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const e = await new LasProvider(las.url, program).evidence(reportData);
      const trusted = new Set([las.key]);
      const v = simVerdict(verifySimEvidence(e.quote, { trustedKeys: trusted }));
      assert.equal(v.simulated, true);
      assert.equal(v.tee, "sim");
      assert.equal(v.measurements.digest, createHash("sha256").update(readFileSync(program)).digest("hex"));
      assert.equal(v.report_data, reportData.toString("hex"));

      const refused = (check: string, bytes: Buffer, options = {}) =>
        assert.throws(
          () => verifySimEvidence(bytes, { trustedKeys: trusted, ...options }),
          (err: unknown) => err instanceof VerificationError && err.check === check,
        );
      refused("chain", e.quote, { trustedKeys: new Set(["00".repeat(32)]) });
      refused("expired", e.quote, { at: new Date(Date.now() + 10 * 60_000) });
      const doc = JSON.parse(e.quote.toString());
      doc.report.measurement = "ab".repeat(32);
      refused("signature", Buffer.from(JSON.stringify(doc)));
      refused("format", Buffer.from("not json"));
      await assert.rejects(new LasProvider(las.url, "/no/such/program").evidence(reportData), /LAS refused \(404\)/);
      await assert.rejects(new LasProvider("http://127.0.0.1:1", program).evidence(reportData), /cannot reach the LAS/);
    } finally {
      await las.close();
    }
  });
});
