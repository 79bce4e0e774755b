/**
 * bench/fs-throughput: sealing and unsealing a 1 GiB tree, and reading it as a volume presents
 * it, against this machine's AES-256-GCM limit (`openssl speed -evp aes-256-gcm`, one core, at
 * the tree's chunk size) and against gocryptfs (Debian's package, FUSE) on the same data, in the
 * same run. Everything lives on tmpfs (/dev/shm), so that the disk is not what is measured.
 * Targets: seal and unseal ≥ 60 % of the OpenSSL limit; faster than gocryptfs.
 *
 *   node bench/fs-throughput.ts [--mib 1024] [--files 64] [--rounds 3]   (root: FUSE for gocryptfs)
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chunkAad, DEFAULT_CHUNK_SIZE, NONCE_BYTES } from "../src/fs/format.ts";
import { extractTree } from "../src/fs/open.ts";
import { freshHeader, sealDirectory } from "../src/fs/seal.ts";

const { values: args } = parseArgs({
  options: {
    mib: { type: "string", default: "1024" },
    files: { type: "string", default: "64" },
    rounds: { type: "string", default: "3" },
  },
});
const MIB = Number(args.mib);
const FILES = Number(args.files);
const ROUNDS = Number(args.rounds);
const BYTES = MIB * 1024 * 1024;
const root = mkdtempSync("/dev/shm/cloister-bench-fs-");
const gbps = (bytes: number, ms: number) => bytes / (ms / 1000) / 1e9;
const time = (work: () => void) => {
  const t = performance.now();
  work();
  return performance.now() - t;
};

function writeAllSync(fd: number, buffer: Buffer, length: number): void {
  for (let at = 0; at < length; ) at += writeSync(fd, buffer, at, length - at);
}

/** Read every file under `dir` through read(2), into one reused buffer; returns bytes read. */
function readAll(dir: string): number {
  const buffer = Buffer.allocUnsafe(1 << 20);
  let total = 0;
  for (const name of readdirSync(dir)) {
    const fd = openSync(join(dir, name), "r");
    for (let n = readSync(fd, buffer); n > 0; n = readSync(fd, buffer)) total += n;
    closeSync(fd);
  }
  return total;
}

try {
  // The data: FILES files of random bytes.
  const source = join(root, "plain");
  mkdirSync(source);
  const size = Math.floor(BYTES / FILES);
  for (let i = 0; i < FILES; i++)
    writeFileSync(join(source, `file-${String(i).padStart(3, "0")}.bin`), randomBytes(size));
  const total = size * FILES;

  // This machine's limit: OpenSSL's own loop, one core, at the tree's chunk size.
  const speed = execFileSync(
    "openssl",
    ["speed", "-evp", "aes-256-gcm", "-bytes", String(DEFAULT_CHUNK_SIZE), "-seconds", "3"],
    { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
  );
  const kPerSecond = Number(/AES-256-GCM\s+([\d.]+)k/.exec(speed)?.[1]);
  const openssl = (kPerSecond * 1000) / 1e9;

  // The same primitive as the tree uses it, in memory: per-chunk nonce, additional data, tag.
  const key = randomBytes(32);
  const chunk = randomBytes(DEFAULT_CHUNK_SIZE);
  const entry = { id: "00".repeat(16), path: "/x", size: total };
  const memoryMs = time(() => {
    for (let i = 0; i < total / DEFAULT_CHUNK_SIZE; i++) {
      const cipher = createCipheriv("aes-256-gcm", key, randomBytes(NONCE_BYTES));
      cipher.setAAD(chunkAad("00".repeat(16), entry, i));
      cipher.update(chunk);
      cipher.final();
      cipher.getAuthTag();
    }
  });

  // Three rounds of each, the median reported: this machine stalls now and then for tens of
  // milliseconds (memory reclaim on the VM's host), whoever is running.
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const seals: number[] = [];
  const unseals: number[] = [];
  const volumeReads: number[] = [];
  const treeKey = randomBytes(32);
  for (let round = 0; round < ROUNDS; round++) {
    const tree = join(root, "tree");
    seals.push(
      time(() => {
        sealDirectory(source, tree, {
          header: freshHeader(DEFAULT_CHUNK_SIZE),
          treeKey,
          regions: [{ prefix: "/", type: "encrypted" }],
        });
      }),
    );
    const out = join(root, "out");
    unseals.push(time(() => extractTree(tree, treeKey, out)));
    // A volume presents exactly this plaintext on a tmpfs: reading it is reading the tmpfs.
    volumeReads.push(time(() => readAll(out)));
    rmSync(out, { recursive: true });
    rmSync(tree, { recursive: true });
  }
  const [sealMs, unsealMs, volumeReadMs] = [median(seals), median(unseals), median(volumeReads)];

  // gocryptfs on the same data, its cipher directory on the same tmpfs.
  let gocrypt: { writeMs: number; readMs: number } | string;
  const cipher = join(root, "gocryptfs");
  const mount = join(root, "mnt");
  mkdirSync(cipher);
  mkdirSync(mount);
  writeFileSync(join(root, "pass"), "bench passphrase\n");
  const g = (argv: string[]) => spawnSync("gocryptfs", ["-q", "-nosyslog", ...argv], { encoding: "utf8" });
  const init = g(["-init", "-scryptn", "10", "-passfile", join(root, "pass"), cipher]);
  if (init.error || init.status !== 0) {
    gocrypt = `gocryptfs unavailable: ${init.error?.message ?? init.stderr.trim()}`;
  } else {
    const mountIt = () => {
      // Its daemon outlives the call and would hold a pipe open: no pipes.
      const m = spawnSync("gocryptfs", ["-q", "-nosyslog", "-passfile", join(root, "pass"), cipher, mount], {
        stdio: "ignore",
      });
      if (m.status !== 0) throw new Error(`gocryptfs could not mount ${mount} (exit ${m.status})`);
    };
    const unmount = () => spawnSync("fusermount", ["-u", mount]);
    mountIt();
    const buffer = Buffer.allocUnsafe(1 << 20);
    // Through the FUSE mount: each write is encrypted by gocryptfs into the cipher directory.
    const writeMs = time(() => {
      for (const name of readdirSync(source)) {
        const from = openSync(join(source, name), "r");
        const to = openSync(join(mount, name), "w");
        for (let n = readSync(from, buffer); n > 0; n = readSync(from, buffer)) writeAllSync(to, buffer, n);
        closeSync(from);
        closeSync(to);
      }
    });
    unmount();
    // Mounted afresh, so that nothing is read from the kernel's cache of plaintext pages.
    mountIt();
    const readMs = time(() => readAll(mount));
    unmount();
    gocrypt = { writeMs, readMs };
  }

  const line = (what: string, ms: number) =>
    `${what.padEnd(34)} ${gbps(total, ms).toFixed(2).padStart(6)} GB/s  ${((gbps(total, ms) / openssl) * 100).toFixed(0).padStart(3)} % of OpenSSL`;
  console.log(
    `fs-throughput: ${(total / 2 ** 30).toFixed(2)} GiB in ${FILES} files on tmpfs, chunk ${DEFAULT_CHUNK_SIZE / 1024} KiB`,
  );
  console.log(`openssl speed aes-256-gcm (1 core)  ${openssl.toFixed(2).padStart(6)} GB/s`);
  console.log(line("AES-256-GCM per chunk, in memory", memoryMs));
  console.log(line("seal (cloister fs protect)", sealMs));
  console.log(line("unseal (cloister fs decrypt)", unsealMs));
  console.log(line("read through a volume (tmpfs)", volumeReadMs));
  if (typeof gocrypt === "string") console.log(gocrypt);
  else {
    console.log(line("gocryptfs: write through FUSE", gocrypt.writeMs));
    console.log(line("gocryptfs: read through FUSE", gocrypt.readMs));
    console.log(
      `seal / gocryptfs write ${(gocrypt.writeMs / sealMs).toFixed(2)}×   unseal / gocryptfs read ${(gocrypt.readMs / unsealMs).toFixed(2)}×   volume read / gocryptfs read ${(gocrypt.readMs / volumeReadMs).toFixed(2)}×`,
    );
  }
  console.log("targets: seal and unseal ≥ 60 % of OpenSSL; faster than gocryptfs");
} finally {
  spawnSync("fusermount", ["-u", join(root, "mnt")]);
  rmSync(root, { recursive: true, force: true });
}
