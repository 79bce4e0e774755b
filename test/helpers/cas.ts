/** A real CAS for tests: a temporary data directory, a free loopback port, real mTLS clients. */
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CasStartOptions, type RunningCas, startCas } from "../../src/cas/start.ts";
import { CasClient } from "../../src/client/cas-client.ts";
import { spkiHash } from "../../src/crypto/keys.ts";
import { selfSignedP256 } from "../../src/crypto/x509.ts";

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

export async function startTestCas(options: Partial<CasStartOptions> = {}, dataDir?: string): Promise<TestCas> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "cloister-cas-test-"));
  const running = await startCas({ dataDir: dir, listen: "127.0.0.1:0", ...options });
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
