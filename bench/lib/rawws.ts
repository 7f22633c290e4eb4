/**
 * A minimal WebSocket client on a raw TCP socket, for thousands of subscribers in one process: handshake, then
 * server frames are parsed just enough to count them (payloads are handed out only when asked). Client frames
 * are masked with a zero key (valid per RFC 6455 and free to apply).
 */
import { connect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

export class RawWs {
  frames = 0;
  closed = false;
  private pending: Buffer | null = null;
  onFrame: ((opcode: number, payload: Buffer) => void) | null = null;
  private constructor(private readonly sock: Socket) {}

  /** `tls`: over TLS (any certificate accepted: the benchmarks' proxies are self-signed). */
  static open(port: number, path: string, protocol?: string, tls = false, localAddress?: string): Promise<RawWs> {
    return new Promise((res, rej) => {
      const sock = tls
        ? tlsConnect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false }).setNoDelay(true)
        : connect({ host: "127.0.0.1", port, noDelay: true, ...(localAddress ? { localAddress } : {}) });
      const ws = new RawWs(sock);
      let head = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        sock.off("data", onData);
        const status = head.subarray(0, head.indexOf("\r\n")).toString();
        if (!/ 101 /.test(status)) {
          sock.destroy();
          return rej(new Error(`upgrade refused: ${status}`));
        }
        sock.on("data", (b: Buffer) => ws.feed(b));
        const rest = head.subarray(end + 4);
        if (rest.length) ws.feed(rest);
        res(ws);
      };
      sock.on("data", onData);
      sock.once("error", (e) => {
        ws.closed = true;
        rej(e);
      });
      sock.on("close", () => (ws.closed = true));
      sock.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
          (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") +
          "\r\n",
      );
    });
  }

  private feed(d: Buffer): void {
    const buf = this.pending ? Buffer.concat([this.pending, d]) : d;
    let off = 0;
    while (buf.length - off >= 2) {
      const b0 = buf[off]!;
      const b1 = buf[off + 1]!;
      let len = b1 & 0x7f;
      let h = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        h = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        h = 10;
      }
      if (buf.length - off < h + len) break;
      const op = b0 & 0x0f;
      if (op === 0x9) this.send(0xa, buf.subarray(off + h, off + h + len));
      else if (op === 0x8) this.closed = true;
      else {
        this.frames++;
        if (this.onFrame) this.onFrame(op, buf.subarray(off + h, off + h + len));
      }
      off += h + len;
    }
    this.pending = off < buf.length ? Buffer.from(buf.subarray(off)) : null;
  }

  send(opcode: number, payload: Uint8Array | string): void {
    const p = typeof payload === "string" ? Buffer.from(payload) : payload;
    const n = p.length;
    const head =
      n < 126
        ? Buffer.from([0x80 | opcode, 0x80 | n])
        : n < 65536
          ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255])
          : null;
    if (!head) throw new Error("frame too large for this client");
    this.sock.write(Buffer.concat([head, Buffer.alloc(4), p]));
  }

  destroy(): void {
    this.closed = true;
    this.sock.destroy();
  }

  /** Ends the connection with a reset: no TIME_WAIT is left holding the client's port. */
  reset(): void {
    this.closed = true;
    this.sock.resetAndDestroy();
  }
}
