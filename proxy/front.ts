/**
 * The client half of the proxy's request path: HTTP/1.1 on each TLS socket, parsed by Node's own llhttp parser
 * and answered by a lean writer, with no `node:http` server in between.
 *
 * Why: Node's HTTP server (a request and a response object per request, their streams and events) costs the
 * proxy enough CPU per request to put it under its ≥ 0.4× nginx goal (`bench/front-proto.ts`). The parser is the
 * one Node's server runs
 * (`HTTPParser` of `_http_common`, llhttp in strict mode): the request smuggling defences are the same as before
 * (CL with TE, conflicting lengths, bad chunk sizes, obs-fold, bare CR/LF, invalid tokens, head over the limit
 * all end the connection with a 4xx here). Its binding is Node-internal and reached through `llhttp.ts` only, which
 * checks its shape once at start-up, so a Node that changed it fails loudly instead of mis-parsing.
 *
 * What Node's server did that this does instead (same defaults):
 * - keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`; the
 *   connection closes after the response to a request that asked to, and after any error answer of ours;
 * - pipelined requests are answered in order: the next waits (its body buffered, the socket paused) until the
 *   previous response is written;
 * - `Expect: 100-continue` gets `100 Continue` before the body is read, any other expectation `417`;
 * - an HTTP/1.1 request without `Host` gets 400 (RFC 9112 §3.2);
 * - timeouts: a head must arrive within `headersTimeoutMs` (60 s), a whole request within `requestTimeoutMs`
 *   (300 s), both answered 408; an idle kept-alive connection closes after `keepAliveTimeoutMs` (5 s);
 * - response framing: the upstream's length when it gave one; otherwise chunked for HTTP/1.1 clients and
 *   delimited by the close for HTTP/1.0 ones; no body for HEAD, 204 and 304.
 * - `Date` on every response that comes without one.
 */
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { closingAnswer } from "./errors.js";
import { checkRequestParser, newRequestParser, type RequestParser } from "./llhttp.js";

export interface FrontLimits {
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** One request as parsed. `body` is null when the request has none (no length, or length 0, and not chunked). */
export interface FrontRequest {
  readonly method: string;
  /** The request target as sent (llhttp has checked its characters). */
  readonly url: string;
  /** Header fields as `[name, value, …]`, in order, as received. */
  readonly rawHeaders: readonly string[];
  /** "1.0" or "1.1". */
  readonly httpVersion: string;
  readonly peer: string;
  /** The body, streamed with backpressure (the socket pauses while it is not read); null without one. */
  readonly body: Readable | null;
}

type Handlers = {
  onRequest: (req: FrontRequest, res: FrontResponse) => void;
  /** A WebSocket (or other) upgrade: the socket is handed over, with the bytes that came after the head. */
  onUpgrade: (req: FrontRequest, socket: TLSSocket, head: Buffer) => void;
  /** A request refused before it reached `onRequest` (status 400, 408, 417 or 431), for the access log. */
  onRefused: (peer: string, status: number) => void;
};

/** What may follow the status code on a status line (RFC 9112 §4: HTAB, SP, VCHAR, obs-text). */
const STATUS_TEXT_OK = /^[\t\x20-\x7e\x80-\xff]*$/;
const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";

let dateSecond = -1;
let dateText = "";
/** The current time as an HTTP date, made at most once a second. */
function httpDate(): string {
  const nowMs = Date.now();
  const second = Math.floor(nowMs / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(nowMs).toUTCString();
  }
  return dateText;
}

/**
 * The answer to one request. The head goes out with the first body piece (one TLS record for a small response),
 * or at once through `flushHead()` for a stream.
 */
export class FrontResponse {
  statusCode = 0;
  headersSent = false;
  /** Everything of the response was handed to the socket. */
  finished = false;
  private head: string | null = null;
  private chunked = false;
  private bodiless = false;
  private closeFn: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly conn: FrontConnection,
    /** HEAD: a head only, whatever the upstream's framing says. */
    private readonly isHead: boolean,
  ) {}

  /**
   * Status line and fields (without framing fields: those are written here). `contentLength` null: not known
   * (chunked to an HTTP/1.1 client, delimited by the close for HTTP/1.0). `close`: the connection ends after this
   * response. Throws `RangeError` for a status or status text it will not put on the wire.
   */
  writeHead(
    status: number,
    statusText: string,
    headers: readonly string[],
    contentLength: number | null,
    close = false,
  ): void {
    if (!Number.isInteger(status) || status < 200 || status > 999)
      throw new RangeError(`status ${status} cannot be relayed`);
    if (!STATUS_TEXT_OK.test(statusText)) throw new RangeError("status text has control characters");
    this.statusCode = status;
    let h = `HTTP/1.1 ${status} ${statusText}\r\n`;
    let hasDate = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      if (name.length === 4 && name.toLowerCase() === "date") hasDate = true;
      h += `${name}: ${headers[i + 1]!}\r\n`;
    }
    // RFC 9110 §6.6.1: a recipient with a clock appends Date to a response forwarded without one (Node's server
    // added it to every response).
    if (!hasDate) h += `Date: ${httpDate()}\r\n`;
    this.bodiless = this.isHead || status === 204 || status === 304;
    if (contentLength !== null) {
      if (status !== 204) h += `Content-Length: ${contentLength}\r\n`;
    } else if (!this.bodiless) {
      if (this.conn.http11) {
        h += "Transfer-Encoding: chunked\r\n";
        this.chunked = true;
      } else {
        close = true;
      }
    }
    if (close) this.conn.closeAfter = true;
    h += this.conn.closeAfter
      ? "Connection: close\r\n\r\n"
      : this.conn.http11
        ? "\r\n"
        : "Connection: keep-alive\r\n\r\n";
    this.head = h;
    this.headersSent = true;
  }

  /** Sends the head now (SSE, NDJSON: the client must see the status before the first event). */
  flushHead(): void {
    if (this.head === null || this.closed) return;
    this.conn.socket.write(this.head, "latin1");
    this.head = null;
  }

  /** A piece of the body; false when the socket's buffer is full (wait for `onDrain`). */
  write(chunk: Buffer): boolean {
    const s = this.conn.socket;
    if (this.closed || this.bodiless || chunk.length === 0) return !s.writableNeedDrain;
    const head = this.head;
    this.head = null;
    if (!this.chunked) {
      if (head === null) return s.write(chunk);
      s.cork();
      s.write(head, "latin1");
      const ok = s.write(chunk);
      s.uncork();
      return ok;
    }
    s.cork();
    s.write(`${head ?? ""}${chunk.length.toString(16)}\r\n`, "latin1");
    s.write(chunk);
    const ok = s.write("\r\n", "latin1");
    s.uncork();
    return ok;
  }

  /** Ends the response (with `body`, for answers of our own). */
  end(body?: string): void {
    if (this.closed || this.finished) return;
    let tail = this.head ?? "";
    this.head = null;
    if (body !== undefined && !this.bodiless) tail += body;
    if (this.chunked) tail += "0\r\n\r\n";
    if (tail !== "") this.conn.socket.write(tail, "latin1");
    this.finished = true;
    this.conn.responseDone(this);
  }

  /** Cuts the connection: the client sees a truncated response. */
  destroy(): void {
    this.conn.socket.destroy();
  }

  onDrain(fn: () => void): void {
    this.conn.socket.once("drain", fn);
  }

  /** Called once: when the response has ended, or when the connection closed before it did. */
  onClose(fn: () => void): void {
    this.closeFn = fn;
  }

  /** @internal */
  fireClose(): void {
    if (this.closed) return;
    this.closed = true;
    const fn = this.closeFn;
    this.closeFn = null;
    fn?.();
  }
}

/** A request parsed, waiting for the response before it (pipelining) or being answered. */
interface Pending {
  req: FrontRequest;
  keepAlive: boolean;
  expectContinue: boolean;
}

/** One client connection: its parser, the queue of its requests, and its timers' bookkeeping. */
class FrontConnection {
  readonly parser: RequestParser;
  http11 = true;
  /** The connection ends once the response in progress has been written. */
  closeAfter = false;
  private readonly queue: Pending[] = [];
  private active: FrontResponse | null = null;
  /** Body of the request being parsed. */
  private body: Readable | null = null;
  private bodyWantsPause = false;
  private headerChunks: string[] = [];
  private urlChunks = "";
  /** When the head now being received began (0: none in progress), and the request whose body is being read. */
  headStartMs = 0;
  requestStartMs = 0;
  idleSinceMs: number;
  private upgraded = false;
  /** The request whose body is still arriving was answered already (the upstream did not wait for the body). */
  private answeredEarly = false;
  /** A response ended while the socket still held unsent bytes: the next request waits for them to go. */
  private waitingDrain = false;
  private dead = false;
  private parserClosed = false;

  constructor(
    readonly socket: TLSSocket,
    private readonly front: Front,
  ) {
    this.parser = newRequestParser(front.limits.maxHeaderBytes, {
      // More than 32 fields come in batches before the head completes (Node's binding flushes them early).
      onHeaders: (headers, url) => {
        for (const h of headers) this.headerChunks.push(h);
        this.urlChunks += url;
      },
      onHeadersComplete: (major, minor, headers, method, url, upgrade, keepAlive) =>
        this.onHead(major, minor, headers, method, url, upgrade, keepAlive),
      onBody: (chunk) => {
        if (!this.dead && this.body !== null && !this.body.push(chunk)) {
          this.bodyWantsPause = true;
          this.updateReading();
        }
      },
      onMessageComplete: () => {
        if (this.dead) return;
        this.body?.push(null);
        this.body = null;
        this.answeredEarly = false;
        this.requestStartMs = 0;
        // The end of a body answered early starts the idle time, not the answer.
        if (this.active === null) this.idleSinceMs = Date.now();
      },
    });
    this.idleSinceMs = Date.now();
    // No half-open connections (as Node's https server): a client's FIN ends the socket, and a response in
    // progress is cut.
    socket.on("data", this.onData);
    socket.once("close", () => this.onSocketClose());
  }

  private readonly onData = (data: Buffer): void => {
    if (this.headStartMs === 0 && this.requestStartMs === 0) this.headStartMs = this.requestStartMs = Date.now();
    const r = this.parser.execute(data);
    if (this.dead) return;
    if (typeof r !== "number") {
      // Bytes after a request that closes the connection (`Connection: close`, HTTP/1.0): not read, not an error;
      // its response still goes out.
      if (r.code === "HPE_CLOSED_CONNECTION") {
        this.socket.off("data", this.onData);
        return;
      }
      this.refuse(r.code === "HPE_HEADER_OVERFLOW" ? 431 : 400);
      return;
    }
    if (this.upgraded) {
      this.socket.off("data", this.onData);
      this.socket.pause();
      const pending = this.queue.pop()!;
      this.closeParser();
      this.front.handlers.onUpgrade(pending.req, this.socket, data.subarray(r));
    }
  };

  private onHead(
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: string,
    url: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (headers === undefined) {
      headers = this.headerChunks;
      this.headerChunks = [];
    }
    if (url === undefined || url === "") {
      url = this.urlChunks;
    }
    this.urlChunks = "";
    this.headStartMs = 0;
    if (this.dead) return 0;
    let hasHost = false;
    let expect: string | null = null;
    let hasBody = false;
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!;
      if (n.length === 4 && n.toLowerCase() === "host") hasHost = true;
      else if (n.length === 6 && n.toLowerCase() === "expect") expect = headers[i + 1]!.trim().toLowerCase();
      else if (n.length === 14 && n.toLowerCase() === "content-length") hasBody ||= headers[i + 1]!.trim() !== "0";
      else if (n.length === 17 && n.toLowerCase() === "transfer-encoding") hasBody = true;
    }
    const http11 = major === 1 && minor === 1;
    if (method === "CONNECT" || major !== 1 || (minor !== 0 && minor !== 1)) {
      this.refuse(method === "CONNECT" ? 501 : 400);
      return 0;
    }
    // A tunnel after a request still being answered would interleave with its response.
    if ((http11 && !hasHost) || (upgrade && this.queue.length > 0)) {
      this.refuse(400);
      return 0;
    }
    if (expect !== null && expect !== "100-continue") {
      this.refuse(417);
      return 0;
    }
    let body: Readable | null = null;
    if (hasBody && !upgrade) {
      body = new Readable({
        read: () => {
          this.bodyWantsPause = false;
          this.updateReading();
        },
      });
      this.body = body;
    }
    const req: FrontRequest = {
      method,
      url,
      rawHeaders: headers,
      httpVersion: http11 ? "1.1" : "1.0",
      peer: this.socket.remoteAddress ?? "",
      body,
    };
    this.queue.push({ req, keepAlive, expectContinue: expect !== null && body !== null && http11 });
    if (upgrade) {
      // The rest of the bytes belong to the tunnel; llhttp stops after this head.
      this.upgraded = true;
      return 0;
    }
    if (this.queue.length === 1) this.start();
    else this.updateReading();
    return 0;
  }

  private start(): void {
    const p = this.queue[0]!;
    this.http11 = p.req.httpVersion === "1.1";
    // Its `Connection: close`, or HTTP/1.0 without keep-alive: nothing is read after it.
    if (!p.keepAlive) this.closeAfter = true;
    const res = new FrontResponse(this, p.req.method === "HEAD");
    this.active = res;
    if (p.expectContinue) this.socket.write(CONTINUE, "latin1");
    this.updateReading();
    this.front.handlers.onRequest(p.req, res);
  }

  /** @internal called by the response's `end()`. */
  responseDone(res: FrontResponse): void {
    if (this.active !== res) return;
    this.active = null;
    if (this.body !== null) this.answeredEarly = true;
    this.queue.shift();
    res.fireClose();
    if (this.closeAfter) {
      this.dead = true;
      this.socket.end();
      return;
    }
    this.idleSinceMs = Date.now();
    // A client that sends requests and reads no answers would otherwise queue answer after answer here.
    if (this.socket.writableNeedDrain) {
      this.waitingDrain = true;
      this.updateReading();
      this.socket.once("drain", this.afterDrain);
      return;
    }
    this.next();
  }

  private readonly afterDrain = (): void => {
    this.waitingDrain = false;
    if (!this.dead) this.next();
  };

  private next(): void {
    if (this.queue.length > 0) this.start();
    else this.updateReading();
  }

  /**
   * The socket reads while the request being answered is the only one, its body (if any) is wanted, and the
   * client has taken the answers before it.
   */
  private updateReading(): void {
    if (this.dead || this.upgraded) return;
    const pause = this.bodyWantsPause || this.queue.length > 1 || this.waitingDrain;
    if (pause !== this.socket.isPaused()) {
      if (pause) this.socket.pause();
      else this.socket.resume();
    }
  }

  /** Answers an error of the client's with `status` and closes: after one, request boundaries cannot be trusted. */
  refuse(status: number): void {
    if (this.dead) return;
    // Called from inside the parser's callbacks too: the parser is closed once its `execute` has returned.
    this.dead = true;
    this.socket.off("data", this.onData);
    queueMicrotask(() => this.closeParser());
    // A request being forwarded whose answer has not started (its body timed out) is given up, and answered here;
    // a response in progress cannot be followed by another: the client sees its connection end.
    const active = this.active;
    if (active !== null && !active.headersSent) {
      this.active = null;
      active.fireClose();
    }
    if (this.active === null && this.socket.writable) {
      const reason = STATUS_CODES[status] ?? "Bad Request";
      this.socket.end(
        closingAnswer(status, reason, `the request could not be read: ${reason.toLowerCase()}`),
        "latin1",
      );
      this.front.handlers.onRefused(this.socket.remoteAddress ?? "-", status);
    } else {
      this.socket.destroy();
    }
  }

  /** Ends the connection without a word (nothing more may be said on it). */
  private drop(): void {
    this.dead = true;
    this.socket.destroy();
  }

  /** Timers, checked by the front's sweep. */
  check(nowMs: number): void {
    if (this.dead || this.upgraded) return;
    const limits = this.front.limits;
    if (this.headStartMs !== 0 && nowMs - this.headStartMs >= limits.headersTimeoutMs) return this.refuse(408);
    if (this.requestStartMs !== 0 && nowMs - this.requestStartMs >= limits.requestTimeoutMs) {
      // A request already answered gets no second answer: its client would read a 408 it never asked for.
      if (this.answeredEarly) return this.drop();
      return this.refuse(408);
    }
    // Idle: nothing being answered, queued or received (a body answered early may still be arriving). While the
    // client is still taking an answer's last bytes it has the request time, not the keep-alive time.
    const idleLimitMs = this.socket.writableLength > 0 ? limits.requestTimeoutMs : limits.keepAliveTimeoutMs;
    if (
      this.active === null &&
      this.queue.length === 0 &&
      this.headStartMs === 0 &&
      this.requestStartMs === 0 &&
      nowMs - this.idleSinceMs >= idleLimitMs
    )
      this.drop();
  }

  private closeParser(): void {
    if (this.parserClosed) return;
    this.parserClosed = true;
    this.parser.close();
  }

  private onSocketClose(): void {
    this.front.connections.delete(this);
    if (!this.upgraded) this.closeParser();
    this.body?.destroy();
    this.active?.fireClose();
    this.active = null;
    for (const p of this.queue) p.req.body?.destroy();
    this.queue.length = 0;
  }
}

/** How often the front checks its connections' timers at most (Node's server: every 30 s). */
const SWEEP_MS = 1_000;

/** HTTP/1.1 over already-secured sockets: give it each `secureConnection`. */
export class Front {
  readonly connections = new Set<FrontConnection>();
  private sweeper: NodeJS.Timeout | null = null;
  /** Often enough for the shortest limit to be kept within a quarter of itself. */
  private readonly sweepMs: number;

  constructor(
    readonly limits: FrontLimits,
    readonly handlers: Handlers,
  ) {
    checkRequestParser();
    this.sweepMs = Math.max(
      5,
      Math.min(SWEEP_MS, limits.headersTimeoutMs / 4, limits.requestTimeoutMs / 4, limits.keepAliveTimeoutMs / 4),
    );
  }

  /** Takes over a TLS socket whose handshake is done. */
  accept(socket: TLSSocket): void {
    (socket as Socket).setNoDelay(true);
    this.connections.add(new FrontConnection(socket, this));
    this.sweeper ??= setInterval(() => {
      const now = Date.now();
      for (const c of this.connections) c.check(now);
    }, this.sweepMs).unref();
  }

  close(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const c of this.connections) c.socket.destroy();
  }
}
