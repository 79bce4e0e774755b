/**
 * The least HTTP/1.1 client over TLS that bench/attest-throughput's runtimes need: JSON POSTs, one
 * at a time per connection, keep-alive, responses with a Content-Length (what Fastify sends).
 * Why not node:https: the load generator shares the machine's two cores with the CAS, and
 * node:https's request and response objects cost it about as much CPU per flow as everything
 * else a runtime does (evidence, keys); what the CAS receives is the same request either way.
 */
import { connect, type SecureContext, type TLSSocket } from "node:tls";

export interface Http1Response {
  readonly status: number;
  readonly body: Buffer;
}

const HEADER_END = Buffer.from("\r\n\r\n");

/** One keep-alive TLS connection; `post` waits for the previous answer before sending. */
export class Http1Connection {
  readonly #socket: TLSSocket;
  readonly #host: string;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #waiting: { resolve: (r: Http1Response) => void; reject: (e: Error) => void } | undefined;
  #closed: Error | undefined;

  private constructor(socket: TLSSocket, host: string) {
    this.#socket = socket;
    this.#host = host;
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      this.#answer();
    });
    const close = (error?: Error) => {
      this.#closed ??= error ?? new Error("the connection closed");
      this.#waiting?.reject(this.#closed);
      this.#waiting = undefined;
    };
    socket.on("error", close);
    socket.on("close", () => close());
  }

  /** A TLS 1.3 connection to host:port (the CAS's certificate is not checked: a benchmark). */
  static open(host: string, port: number, secureContext: SecureContext): Promise<Http1Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, secureContext, rejectUnauthorized: false, minVersion: "TLSv1.3" }, () => {
        socket.off("error", reject);
        resolve(new Http1Connection(socket, `${host}:${port}`));
      });
      socket.once("error", reject);
    });
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  post(path: string, json: unknown): Promise<Http1Response> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#waiting) return Promise.reject(new Error("one request at a time on a connection"));
    const body = Buffer.from(JSON.stringify(json));
    const head = `POST ${path} HTTP/1.1\r\nHost: ${this.#host}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    return new Promise<Http1Response>((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#socket.write(Buffer.concat([Buffer.from(head, "latin1"), body]));
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  /** Answer the waiting request once its whole response has arrived. */
  #answer(): void {
    const data = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    this.#chunks = [data];
    const headerEnd = data.indexOf(HEADER_END);
    if (headerEnd < 0) return;
    const head = data.toString("latin1", 0, headerEnd);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) {
      this.#fail(new Error(`a response without Content-Length: ${head.split("\r\n")[0]}`));
      return;
    }
    const end = headerEnd + HEADER_END.length + Number(length[1]);
    if (data.length < end) return;
    const status = Number(head.slice(9, 12));
    const body = data.subarray(headerEnd + HEADER_END.length, end);
    this.#chunks = data.length > end ? [data.subarray(end)] : [];
    this.#buffered = data.length - end;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting) waiting.resolve({ status, body });
    else this.#fail(new Error("a response nobody asked for"));
  }

  #fail(error: Error): void {
    this.#closed = error;
    this.#waiting?.reject(error);
    this.#waiting = undefined;
    this.#socket.destroy();
  }
}

/**
 * At most `size` connections, opened as needed and kept: a request takes an idle one, or opens
 * one while fewer than `size` are open, or waits for one (as node:https's Agent with maxSockets).
 */
export class Http1Pool {
  readonly #host: string;
  readonly #port: number;
  readonly #secureContext: SecureContext;
  readonly #size: number;
  readonly #idle: Http1Connection[] = [];
  readonly #queue: { resolve: (c: Http1Connection) => void; reject: (e: Error) => void }[] = [];
  #open = 0;

  constructor(host: string, port: number, secureContext: SecureContext, size: number) {
    this.#host = host;
    this.#port = port;
    this.#secureContext = secureContext;
    this.#size = size;
  }

  async post(path: string, json: unknown): Promise<Http1Response> {
    const connection = await this.#take();
    try {
      return await connection.post(path, json);
    } finally {
      this.#give(connection);
    }
  }

  close(): void {
    for (const c of this.#idle) c.close();
    this.#idle.length = 0;
  }

  async #take(): Promise<Http1Connection> {
    for (let c = this.#idle.pop(); c; c = this.#idle.pop()) {
      if (!c.closed) return c;
      this.#open--;
    }
    if (this.#open < this.#size) {
      this.#open++;
      try {
        return await Http1Connection.open(this.#host, this.#port, this.#secureContext);
      } catch (error) {
        this.#open--;
        throw error;
      }
    }
    return new Promise((resolve, reject) => this.#queue.push({ resolve, reject }));
  }

  #give(connection: Http1Connection): void {
    const next = this.#queue.shift();
    if (connection.closed) {
      this.#open--;
      // A waiter gets a connection of its own instead.
      if (next) this.#take().then(next.resolve, next.reject);
      return;
    }
    if (next) next.resolve(connection);
    else this.#idle.push(connection);
  }
}
