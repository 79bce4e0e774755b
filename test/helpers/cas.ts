/** A real CAS for tests: a temporary data directory, a free loopback port, real mTLS clients. */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CasStartOptions, type RunningCas, startCas } from "../../src/cas/start.ts";
import { CasClient, type CasRequestError } from "../../src/client/cas-client.ts";
import { spkiHash } from "../../src/crypto/keys.ts";
import { selfSignedP256 } from "../../src/crypto/self-signed.ts";
import { BIN } from "./cli.ts";

export interface TestIdentity {
  readonly name: string;
  readonly hash: string;
  readonly keyPem: string;
  readonly certificatePem: string;
}

export async function makeIdentity(name: string): Promise<TestIdentity> {
  const { keyPem, certificatePem } = await selfSignedP256(`test ${name}`, 30);
  return { name, hash: spkiHash(createPrivateKey(keyPem)), keyPem, certificatePem };
}

export interface TestCas {
  readonly running: RunningCas;
  readonly dataDir: string;
  client(identity: TestIdentity): CasClient;
  restart(options?: Partial<CasStartOptions>): Promise<TestCas>;
  stop(): Promise<void>;
  /** Stop and remove the data directory. */
  dispose(): Promise<void>;
}

/** A CAS on which any identity may create top-level policies, unless `options` say otherwise. */
export async function startTestCas(options: Partial<CasStartOptions> = {}, dataDir?: string): Promise<TestCas> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "cloister-cas-test-"));
  const running = await startCas({ dataDir: dir, listen: "127.0.0.1:0", createTopLevel: "any", ...options });
  let stopped = false;
  const stop = async () => {
    if (!stopped) await running.close();
    stopped = true;
  };
  return {
    running,
    dataDir: dir,
    client: (identity) =>
      new CasClient({
        url: running.url,
        casKey: running.identity.hash,
        keyPem: identity.keyPem,
        certificatePem: identity.certificatePem,
      }),
    async restart(more = {}) {
      await stop();
      return startTestCas({ ...options, ...more }, dir);
    },
    stop,
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface CasProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly key: string;
  /** Everything it printed so far (standard output and error). */
  output(): string;
}

/** Start `cloister cas start ARGS` in its own process and wait until it prints its address and key. */
export function startCasProcess(args: readonly string[]): Promise<CasProcess> {
  const child = spawn(process.execPath, [BIN, "--", "cas", "start", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cas start printed no address in 20 s: ${out}`)), 20_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`cas start exited ${code}: ${out}`));
    });
    const poll = setInterval(() => {
      const url = /CAS listening on (\S+)/.exec(out)?.[1];
      const key = /CAS key ([0-9a-f]{64})/.exec(out)?.[1];
      if (url && key) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve({ child, url, key, output: () => out });
      }
    }, 50);
  });
}

/** `p` is refused by the CAS with `status` and a message matching `message`. */
export const refusedWith = (p: Promise<unknown>, status: number, message: RegExp) =>
  assert.rejects(p, (e: CasRequestError) => {
    assert.equal(e.status, status, e.message);
    assert.match(e.message, message);
    return true;
  });
