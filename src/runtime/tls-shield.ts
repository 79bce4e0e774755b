/**
 * The TLS shield: TLS for programs that speak plain TCP, terminated and originated in the
 * runtime (inside the TEE), so that plaintext never crosses the host's network. Inbound: a
 * TLS 1.3 listener with the service's (or a named) certificate, optionally requiring client
 * certificates from a CA, forwarding plaintext to the program's local port. Outbound: a local
 * plaintext listener whose connections leave as mutual TLS, the remote verified against a CA.
 */
import { X509Certificate } from "node:crypto";
import { createServer as createTcpServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from "node:tls";
import type { Configuration } from "../protocol/attestation.ts";

export interface ShieldKeys {
  /** The service certificate's key (K) and chain, used where the policy names no certificate. */
  readonly serviceKeyPem: string;
  readonly serviceChainPem: string;
}

export interface RunningShields {
  /** host:port of every listener, as bound. */
  readonly addresses: readonly string[];
  close(): Promise<void>;
}

const split = (hostPort: string) => {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(hostPort);
  if (!m) throw new Error(`bad address ${hostPort}`);
  return { host: m[1]!, port: Number(m[2]) };
};

function pipeBoth(a: Socket, b: Socket): void {
  // Request/response protocols (memcached, redis) wait on every small write: Nagle would hold them.
  a.setNoDelay(true);
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", end);
  b.on("error", end);
  a.on("close", end);
  b.on("close", end);
}

export async function startShields(
  config: Pick<Configuration, "tls" | "tls_material">,
  keys: ShieldKeys,
): Promise<RunningShields> {
  const servers: Server[] = [];
  const addresses: string[] = [];
  const material = (name: string) => {
    const m = config.tls_material[name];
    if (!m) throw new Error(`the configuration has no TLS material for ${name}`);
    return m;
  };
  const listen = (server: Server, address: string) =>
    new Promise<void>((resolve, reject) => {
      const { host, port } = split(address);
      server.once("error", reject);
      server.listen(port, host, () => {
        const a = server.address();
        addresses.push(typeof a === "object" && a ? `${host.includes(":") ? `[${host}]` : host}:${a.port}` : address);
        resolve();
      });
    });
  try {
    for (const t of config.tls.inbound) {
      const own = t.certificate ? material(t.certificate) : undefined;
      const clientCa = t.client_ca ? material(t.client_ca) : undefined;
      const clientCaCertificate = clientCa ? new X509Certificate(clientCa.certificate) : undefined;
      const server = createTlsServer(
        {
          key: own?.key ?? keys.serviceKeyPem,
          cert: own?.chain ?? keys.serviceChainPem,
          minVersion: "TLSv1.3",
          // The handshake checks the client's certificate against the CA's chain (validity, key
          // usage, a path to its root); OpenSSL takes every certificate of that chain for an
          // anchor, and a Node server does not honour partial chains — so whether the client
          // descends from the named CA itself is checked below, before anything is forwarded.
          ...(clientCa ? { requestCert: true, rejectUnauthorized: true, ca: clientCa.chain } : {}),
        },
        (client: TLSSocket) => {
          if (clientCaCertificate && !descendsFrom(client, clientCaCertificate)) {
            client.destroy();
            return;
          }
          const { host, port } = split(t.forward);
          pipeBoth(client, tcpConnect(port, host));
        },
      );
      server.on("tlsClientError", () => {}); // a failed handshake concerns that client only
      servers.push(server);
      await listen(server, t.listen);
    }
    for (const t of config.tls.outbound) {
      const ca = material(t.ca).certificate; // the named CA alone, as inbound
      const own = t.certificate ? material(t.certificate) : undefined;
      const { host, port } = split(t.connect);
      const server = createTcpServer((local: Socket) => {
        const remote = tlsConnect({
          host,
          port,
          servername: t.server_name ?? (/^[\d.]+$|:/.test(host) ? undefined : host),
          ca,
          // The named CA alone is the anchor, even an intermediate one: its issuers would
          // otherwise vouch for every other CA they signed (a Node client honours this).
          allowPartialTrustChain: true,
          key: own?.key ?? keys.serviceKeyPem,
          cert: own?.chain ?? keys.serviceChainPem,
          minVersion: "TLSv1.3",
          // Node checks the remote's certificate for server_name (or the host, DNS name or IP).
        });
        pipeBoth(local, remote);
      });
      servers.push(server);
      await listen(server, t.listen);
    }
  } catch (error) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw error;
  }
  return {
    addresses,
    close: async () => {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}

/**
 * Whether the peer's certificate descends from `ca` by signatures checked here, link by link
 * (a sibling CA under the same root passed the handshake; it does not pass this).
 */
export function descendsFrom(socket: TLSSocket, ca: X509Certificate): boolean {
  let link = socket.getPeerCertificate(true);
  for (let depth = 0; depth < 8 && link?.raw; depth++) {
    const issuer = link.issuerCertificate;
    if (!issuer?.raw || issuer === link) return false;
    const child = new X509Certificate(link.raw);
    const parent = new X509Certificate(issuer.raw);
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) return false;
    if (parent.raw.equals(ca.raw)) return true;
    link = issuer;
  }
  return false;
}
