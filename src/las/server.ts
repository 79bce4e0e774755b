/**
 * The LAS (local attestation service) for simulation mode: on a node, it measures a program
 * file itself and signs a simulated report binding the caller's report_data. Plain HTTP on
 * loopback: what it returns is signed, and it holds no secret but its node key.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { dirname, isAbsolute } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { z } from "zod";
import { measureFile, signSimReport } from "../attestation/sim/evidence.ts";
import { spkiHash } from "../crypto/keys.ts";

export const DEFAULT_LAS_LISTEN = "127.0.0.1:18766";

const ReportRequest = z.strictObject({
  /** The program to measure: an absolute path the LAS can read. */
  program: z.string().min(1).max(4096),
  /** 64 bytes, hex. */
  report_data: z.string().regex(/^[0-9a-fA-F]{128}$/),
});

/** The node key: made on first start (P-256, PKCS#8, 0600), then kept. */
export async function loadOrCreateNodeKey(path: string): Promise<{ key: KeyObject; created: boolean }> {
  try {
    const pem = await fs.readFile(path, "utf8");
    const stat = await fs.stat(path);
    if ((stat.mode & 0o077) !== 0) throw new Error(`${path} is readable by others; run chmod 600 ${path}`);
    return { key: createPrivateKey(pem), created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await handle.writeFile(privateKey.export({ type: "pkcs8", format: "pem" }));
  } finally {
    await handle.close();
  }
  return { key: privateKey, created: true };
}

export function buildLasServer(key: KeyObject): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 16 * 1024, requestTimeout: 10_000 });
  const id = spkiHash(key);
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/v1/key", async () => ({ las_key: id, simulated: true }));
  app.post("/v1/report", async (request, reply) => {
    const parsed = ReportRequest.safeParse(request.body);
    if (!parsed.success) {
      return reply.status(400).send({
        error: {
          code: "bad_request",
          message: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
        },
      });
    }
    const { program, report_data } = parsed.data;
    if (!isAbsolute(program))
      return reply.status(400).send({ error: { code: "bad_request", message: "program: expected an absolute path" } });
    let bytes: Buffer;
    try {
      const stat = await fs.stat(program);
      if (!stat.isFile()) throw Object.assign(new Error("not a regular file"), { code: "ENOTFILE" });
      bytes = await fs.readFile(program);
    } catch (error) {
      return reply.status(404).send({
        error: {
          code: "no_program",
          message: `cannot read ${program}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
        },
      });
    }
    return signSimReport(key, measureFile(bytes), Buffer.from(report_data, "hex"));
  });
  return app;
}

export interface RunningLas {
  readonly url: string;
  /** The node key's hash: what a CAS enrols. */
  readonly key: string;
  close(): Promise<void>;
}

export async function startLas(options: { listen: string; key: KeyObject }): Promise<RunningLas> {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(options.listen);
  if (!m) throw new Error(`--listen ${options.listen}: expected HOST:PORT such as ${DEFAULT_LAS_LISTEN}`);
  const host = m[1]!.replace(/^\[(.*)\]$/, "$1");
  const app = buildLasServer(options.key);
  await app.listen({ host, port: Number(m[2]) });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : Number(m[2]);
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    key: spkiHash(options.key),
    close: () => app.close(),
  };
}
