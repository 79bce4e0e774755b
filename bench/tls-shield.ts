/**
 * bench/tls-shield: a memcached client's throughput to Debian's memcached directly, through the
 * runtime's inbound TLS shield, and through stunnel4 — each TLS terminator in a process of its
 * own, with the same certificate. Target: the shield at least matches stunnel.
 *
 *   node bench/tls-shield.ts [--seconds 3] [--connections 16]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { parseArgs } from "node:util";
import { freePort } from "../test/helpers/net.ts";
import { keyPem, testCa, testLeaf } from "../test/helpers/pki.ts";

const { values: args } = parseArgs({
  options: { seconds: { type: "string", default: "3" }, connections: { type: "string", default: "16" } },
});
const SECONDS = Number(args.seconds);
const CONNECTIONS = Number(args.connections);
const dir = mkdtempSync(join(tmpdir(), "cloister-bench-tls-"));
const children: ChildProcess[] = [];

const startProcess = (cmd: string, argv: string[], ready: RegExp) =>
  new Promise<void>((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    children.push(c);
    let out = "";
    const check = (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolve();
    };
    c.stdout!.on("data", check);
    c.stderr!.on("data", check);
    c.on("exit", (code) => reject(new Error(`${cmd} exited ${code}: ${out}`)));
  });
const listening = async (port: number) => {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = tcpConnect(port, "127.0.0.1", () => {
        s.destroy();
        r(true);
      }).on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
};

/** get operations per second of a 1 KiB value over CONNECTIONS connections. */
async function measure(open: () => Socket): Promise<number> {
  let ops = 0;
  const end = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from(
      { length: CONNECTIONS },
      () =>
        new Promise<void>((resolve, reject) => {
          const s = open();
          let buffered = "";
          const ask = () => {
            if (performance.now() < end) s.write("get bench\r\n");
            else {
              s.end();
              resolve();
            }
          };
          s.on("data", (d) => {
            buffered += d;
            if (buffered.endsWith("END\r\n")) {
              ops++;
              buffered = "";
              ask();
            }
          });
          s.on("error", reject);
          s.once("encrypted" in s ? "secureConnect" : "connect", ask);
        }),
    ),
  );
  return ops / ((performance.now() - start) / 1000);
}

try {
  const ca = testCa("bench CA");
  const leaf = testLeaf("memcached", ca, ["server"]);
  const leafKeyPem = keyPem(leaf.key);
  const chain = leaf.cert.toString() + ca.cert.toString();

  const mc = await freePort();
  const shieldPort = await freePort();
  const stunnelPort = await freePort();
  // memcached says nothing when it is ready; the port answering is the signal.
  startProcess("/usr/bin/memcached", ["-l", "127.0.0.1", "-p", String(mc), "-U", "0", "-u", "memcache"], /(?!)/).catch(
    () => {},
  );
  await listening(mc);
  await new Promise<void>((resolve) => {
    const s = tcpConnect(mc, "127.0.0.1", () => s.write(`set bench 0 0 1024\r\n${"x".repeat(1024)}\r\n`));
    s.on("data", () => {
      s.end();
      resolve();
    });
  });

  const shieldConfig = {
    config: {
      tls: {
        inbound: [
          { listen: `127.0.0.1:${shieldPort}`, forward: `127.0.0.1:${mc}`, certificate: null, client_ca: null },
        ],
        outbound: [],
      },
      tls_material: {},
    },
    keys: { serviceKeyPem: leafKeyPem, serviceChainPem: chain },
  };
  await startProcess(
    process.execPath,
    [join(import.meta.dirname, "support", "shield-process.ts"), JSON.stringify(shieldConfig)],
    /ready/,
  );

  writeFileSync(join(dir, "key.pem"), leafKeyPem, { mode: 0o600 });
  writeFileSync(join(dir, "chain.pem"), chain);
  writeFileSync(
    join(dir, "stunnel.conf"),
    `foreground = yes\npid =\n[memcached]\naccept = 127.0.0.1:${stunnelPort}\nconnect = 127.0.0.1:${mc}\ncert = ${join(dir, "chain.pem")}\nkey = ${join(dir, "key.pem")}\nsslVersionMin = TLSv1.3\n`,
  );
  startProcess("/usr/bin/stunnel4", [join(dir, "stunnel.conf")], /Configuration successful/).catch(() => {});
  await listening(stunnelPort);

  const tls = (port: number) => () =>
    tlsConnect({ host: "127.0.0.1", port, ca: ca.cert.toString(), minVersion: "TLSv1.3" });
  const direct = await measure(() => tcpConnect(mc, "127.0.0.1"));
  // Alternate the two terminators (three rounds each) so that neither always runs on a warmer or a
  // more throttled machine; report each one's median.
  const shieldRuns: number[] = [];
  const stunnelRuns: number[] = [];
  for (let round = 0; round < 3; round++) {
    shieldRuns.push(await measure(tls(shieldPort)));
    stunnelRuns.push(await measure(tls(stunnelPort)));
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const shield = median(shieldRuns);
  const stunnel = median(stunnelRuns);
  console.log(
    `tls-shield: ${CONNECTIONS} connections, get of 1 KiB, ${SECONDS} s each; TLS: median of 3 alternating rounds`,
  );
  console.log(`direct (plaintext)   ${direct.toFixed(0)} ops/s`);
  console.log(`cloister TLS shield  ${shield.toFixed(0)} ops/s`);
  console.log(
    `stunnel4             ${stunnel.toFixed(0)} ops/s   shield/stunnel = ${(shield / stunnel).toFixed(2)} (target ≥ 1)`,
  );
} finally {
  for (const c of children) c.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
