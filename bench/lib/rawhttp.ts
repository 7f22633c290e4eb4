/**
 * A keep-alive HTTP/1.1 client connection on a raw socket (TCP or TLS), for latency measurements whose client
 * must cost next to nothing: one pre-built request, responses parsed only as far as the status line and
 * `Content-Length`. `https.request` made ~a dozen objects per request (ClientRequest, IncomingMessage, streams,
 * parser state) and its own GC and JIT pauses showed up as the proxy's p99 (a client-side 100 ms run of
 * event-loop gaps matched the worst samples of one round, while the proxy's loop had none).
 * One request in flight per connection; anything but a `Content-Length` body is reported as an error. A server
 * that ends a connection (`Connection: close`, nginx after `keepalive_requests`) leaves it `closed`: the caller
 * opens another, as a keep-alive agent would.
 */
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

export interface RawHttpResult {
  /** -1 when the connection failed (`error` says how). */
  status: number;
  bodyBytes: number;
  error?: string;
}

export class RawHttpConn {
  busy = false;
  closed = false;
  private buf: Buffer | null = null;
  /** Settles the request in flight; a failed connection settles it with status -1. */
  private done: ((r: RawHttpResult) => void) | null = null;
  private constructor(
    private readonly sock: Socket,
    private readonly request: Buffer,
  ) {}

  static open(url: string): Promise<RawHttpConn> {
    const u = new URL(url);
    const tls = u.protocol === "https:";
    const port = Number(u.port || (tls ? 443 : 80));
    const request = Buffer.from(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`, "latin1");
    return new Promise((res, rej) => {
      const sock = tls
        ? tlsConnect({ host: u.hostname, port, servername: "localhost", rejectUnauthorized: false })
        : netConnect({ host: u.hostname, port });
      sock.setNoDelay(true);
      const c = new RawHttpConn(sock, request);
      sock.once(tls ? "secureConnect" : "connect", () => res(c));
      sock.once("error", (e) => {
        c.fail(e);
        rej(e);
      });
      sock.on("close", () => c.fail(new Error("connection closed")));
      sock.on("data", (d: Buffer) => c.feed(d));
    });
  }

  /** Sends the request; resolves with the response's status and body size. */
  get(): Promise<RawHttpResult> {
    if (this.busy || this.closed)
      return Promise.resolve({
        status: -1,
        bodyBytes: 0,
        error: this.closed ? "connection closed" : "connection busy",
      });
    this.busy = true;
    return new Promise((res) => {
      this.done = res;
      this.sock.write(this.request);
    });
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }

  private fail(e: Error): void {
    this.closed = true;
    const d = this.done;
    this.done = null;
    this.busy = false;
    d?.({ status: -1, bodyBytes: 0, error: e.message });
  }

  private feed(d: Buffer): void {
    const buf = this.buf === null ? d : Buffer.concat([this.buf, d]);
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) {
      this.buf = buf;
      return;
    }
    const head = buf.toString("latin1", 0, end);
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (m === null) return this.fail(new Error(`response without Content-Length: ${head.split("\r\n")[0]}`));
    const length = Number(m[1]);
    const total = end + 4 + length;
    if (buf.length < total) {
      this.buf = buf;
      return;
    }
    if (buf.length > total) return this.fail(new Error("bytes after the response (one request in flight)"));
    this.buf = null;
    this.busy = false;
    if (/\r\nconnection:\s*close/i.test(head)) this.close();
    const done = this.done;
    this.done = null;
    done?.({ status, bodyBytes: length });
  }
}
