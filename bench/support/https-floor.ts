/**
 * Node's floor for bench/attest-throughput: a bare node:https server with the CAS's TLS settings
 * (TLS 1.3 only, a P-256 certificate, a client certificate asked for and not required) that
 * answers the attestation flow's two requests with canned answers of the CAS's sizes — no
 * verification, no policy, no certificate, no JWE. What the runtimes' flows cost there is what
 * HTTP and TLS in Node cost by themselves on this machine, measured in the same run as the CAS.
 *
 *   node bench/support/https-floor.ts NONCE_JSON_BYTES CONFIGURATION_JSON_BYTES
 * prints "listening PORT" once it is.
 */
import { createServer } from "node:https";
import { selfSignedP256 } from "../../src/crypto/self-signed.ts";

const [challengeBytes, configurationBytes] = process.argv.slice(2).map(Number) as [number, number];
/** A JSON body of `bytes` bytes with one string member `name`: "A"s, then `suffix`. */
const canned = (name: string, bytes: number, suffix = "") => {
  const filler = Math.max(0, bytes - JSON.stringify({ [name]: suffix }).length);
  return JSON.stringify({ [name]: "A".repeat(filler) + suffix });
};
const answers: Record<string, string> = {
  "/v1/attestation/challenge": canned("nonce", challengeBytes),
  // Five dot-separated parts, as a compact JWE has: the load generator checks that much.
  "/v1/attestation": canned("configuration", configurationBytes, ".B.C.D.E"),
};
const { keyPem, certificatePem } = await selfSignedP256("floor", 1);
const server = createServer(
  {
    key: keyPem,
    cert: certificatePem,
    minVersion: "TLSv1.3",
    maxVersion: "TLSv1.3",
    requestCert: true,
    rejectUnauthorized: false,
    keepAliveTimeout: 30_000,
  },
  (request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      // Parsed, as any server must before it can answer.
      JSON.parse(Buffer.concat(chunks).toString());
      const body = answers[request.url ?? ""] ?? "{}";
      response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      response.end(body);
    });
  },
);
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === "object" && address ? address.port : 0}\n`);
});
process.on("SIGTERM", () => process.exit(0));
