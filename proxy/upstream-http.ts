/**
 * HTTP/1.1 to one upstream over kept-alive connections: the client half of the proxy's request path.
 *
 * Why not undici, which this replaced: in `bench/front-proto.ts` the same Node https front relayed 1.3× the
 * requests per CPU-second with a bare keep-alive client as with undici's `Pool.dispatch` (0.36× vs 0.29× nginx,
 * 2026-12-01 20:30), and the throughput goal (≥ 0.4× nginx) is out of reach with a quarter of every request spent
 * in a general-purpose client: its request object and header validation, the WASM parser's callbacks, and
 * per-request timers. A proxy's upstream leg needs little of that: the request was already parsed and checked by
 * Node's server (method, target and field values are valid), and what comes back is parsed here, once, strictly.
 *
 * Strict means: a response that is not well-formed HTTP/1.1 (RFC 9112) ends its exchange with
 * `PROXY_ERR_UPSTREAM_PROTOCOL` and closes its connection instead of being guessed at: a bad status line, a field
 * line without a name, obs-fold, control bytes, bare LF line ends, `Content-Length` together with
 * `Transfer-Encoding` or with conflicting values, a malformed chunk, a head or trailer section over its limit, or a
 * `101` nobody asked for. Anything the upstream sends past the end of a response closes the connection after it
 * (there is no pipelining, so those bytes cannot belong to anything).
 *
 * Connections: one exchange at a time each, most recently used first (the warmest, least likely to be at the end of
 * the upstream's keep-alive), closed after `keepAliveMs` idle or sooner when the upstream's `Keep-Alive: timeout=`
 * says so, and not reused after `Connection: close`, an HTTP/1.0 answer, a body delimited by the close, or a
 * request body the upstream did not read to its end. No header or body timeouts: SSE streams and long polls stay
 * open as long as both ends want; a dead upstream shows up as a connection error.
 */
import { connect, type Socket } from "node:net";
import type { Readable } from "node:stream";
import { assertNever, ProxyErrorCode, UpstreamError } from "./errors.js";

export interface ResponseHandler {
  /**
   * The status line and the header fields, as `[name, value, …]` in the order received (latin1, values trimmed).
   * Return false when the response cannot be relayed: the exchange is then abandoned, with no further callback.
   */
  onHead(status: number, statusText: string, headers: string[]): boolean;
  /** A piece of the body (a view into the received bytes). Return false to stop reading until `resume()`. */
  onData(chunk: Buffer): boolean;
  /** The response is complete. */
  onEnd(): void;
  /** The exchange failed. At most once, never after `onEnd`, never after `abort()`. */
  onError(err: UpstreamError): void;
}

export interface OutgoingRequest {
  readonly method: string;
  /** The request target as the client sent it (Node's parser has checked it). */
  readonly path: string;
  /**
   * Header fields as `[name, value, …]`, without hop-by-hop fields and without framing (`Content-Length`,
   * `Transfer-Encoding`): the framing is written here from `body`. `Host` is added when missing.
   */
  readonly headers: readonly string[];
  /**
   * The body to stream: `length` bytes, or chunked when `length` is null (each piece is framed as it comes). The
   * stream is read, never destroyed: an abandoned exchange only stops reading it.
   */
  readonly body: { readonly stream: Readable; readonly length: number | null } | null;
}

export interface Exchange {
  /** Ends the exchange from our side: its connection is closed and no callback follows. */
  abort(): void;
  /** Reads from the upstream again after `onData` returned false. */
  resume(): void;
}

/** Limits on what an upstream may send that is not body. */
export const RESPONSE_LIMITS = {
  /** Status line and header fields, up to and including the empty line (Node's server allows 16 KiB in). */
  headBytes: 64 * 1024,
  /** One chunk-size line, extensions included. */
  chunkLineBytes: 4 * 1024,
  /** The whole trailer section. */
  trailerBytes: 16 * 1024,
} as const;

/** What the parser found in a response head. */
export interface ResponseHead {
  status: number;
  statusText: string;
  headers: string[];
  /** The connection may carry another exchange after this response (version, `Connection`, framing). */
  keepAlive: boolean;
  /** From `Keep-Alive: timeout=<s>`, or null. */
  keepAliveTimeoutS: number | null;
}

interface ParserSink {
  /** Returns false to stop parsing (the exchange was abandoned). */
  head(h: ResponseHead): boolean;
  data(chunk: Buffer): void;
  end(): void;
}

enum State {
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkCr,
  ChunkLf,
  Trailers,
  UntilClose,
  Done,
}

const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1");
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5]\d\d)(?: (.*))?$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Control bytes other than HTAB, and DEL: never part of a field line (RFC 9110 §5.5). */
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;
/** The same over a whole head, where CRLF separates the lines: any other CR or LF is a bare one. */
const HEAD_CTL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?$/;
const DIGITS = /^\d{1,15}$/;

const bad = (message: string): UpstreamError =>
  new UpstreamError(ProxyErrorCode.PROXY_ERR_UPSTREAM_PROTOCOL, `upstream response: ${message}`, false, false);

/** Trims SP and HTAB only (`String.prototype.trim` would also take latin1 NBSP, which is field content). */
function trimOws(s: string, from: number): string {
  let a = from;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return s.slice(a, b);
}

/** Splits a field value into lower-case list members. */
const members = (v: string): string[] =>
  v
    .split(",")
    .map((t) => trimOws(t, 0).toLowerCase())
    .filter((t) => t !== "");

/**
 * An incremental parser of the responses on one connection, one at a time: `start()` before each request, then
 * `feed()` every received piece, however split, and `eof()` when the upstream closed. Throws `UpstreamError`.
 */
export class ResponseParser {
  private state = State.Done;
  private noBody = false;
  private pending: Buffer | null = null;
  private line = "";
  private remaining = 0;
  private trailerBytes = 0;
  /** Bytes arrived after the end of the response (nothing may follow a response on this connection). */
  trailing = false;

  constructor(private readonly sink: ParserSink) {}

  /** Expects the response to a request with `method`. */
  start(method: string): void {
    this.state = State.Head;
    this.noBody = method === "HEAD";
    this.pending = null;
    this.line = "";
    this.trailing = false;
  }

  /** The upstream closed its side: ends a response delimited by the close; anything else is incomplete. */
  eof(): boolean {
    if (this.state !== State.UntilClose) return false;
    this.finish();
    return true;
  }

  feed(chunk: Buffer): void {
    let buf = chunk;
    let pos = 0;
    while (pos < buf.length) {
      switch (this.state) {
        case State.Head: {
          const before = this.pending === null ? 0 : this.pending.length;
          if (before > 0) {
            buf = Buffer.concat([this.pending!, buf.subarray(pos)]);
            pos = 0;
            this.pending = null;
          }
          const at = buf.indexOf(CRLFCRLF, Math.max(pos, before - 3));
          if (at < 0) {
            if (buf.length - pos > RESPONSE_LIMITS.headBytes) throw bad(`head over ${RESPONSE_LIMITS.headBytes} bytes`);
            this.pending = Buffer.from(buf.subarray(pos)); // a copy: the socket's buffer is not ours to keep
            return;
          }
          if (at + 4 - pos > RESPONSE_LIMITS.headBytes) throw bad(`head over ${RESPONSE_LIMITS.headBytes} bytes`);
          const text = buf.toString("latin1", pos, at);
          pos = at + 4;
          if (!this.onHead(text)) return;
          break;
        }
        case State.Length:
          pos = this.take(buf, pos);
          if (this.remaining === 0) this.finish();
          break;
        case State.UntilClose:
          this.sink.data(pos === 0 ? buf : buf.subarray(pos));
          return;
        case State.ChunkSize:
        case State.Trailers: {
          const nl = buf.indexOf(10, pos);
          const limit =
            this.state === State.ChunkSize
              ? RESPONSE_LIMITS.chunkLineBytes
              : RESPONSE_LIMITS.trailerBytes - this.trailerBytes;
          if (nl < 0) {
            this.line += buf.toString("latin1", pos);
            if (this.line.length > limit)
              throw bad(this.state === State.ChunkSize ? "chunk-size line too long" : "trailers too long");
            return;
          }
          let line = this.line + buf.toString("latin1", pos, nl);
          pos = nl + 1;
          this.line = "";
          if (line.length > limit)
            throw bad(this.state === State.ChunkSize ? "chunk-size line too long" : "trailers too long");
          if (line.charCodeAt(line.length - 1) !== 13) throw bad("bare LF line end in the chunked body");
          line = line.slice(0, -1);
          if (this.state === State.ChunkSize) this.onChunkSize(line);
          else this.onTrailerLine(line);
          break;
        }
        case State.ChunkData:
          pos = this.take(buf, pos);
          if (this.remaining === 0) this.state = State.ChunkCr;
          break;
        case State.ChunkCr:
          if (buf[pos++] !== 13) throw bad("chunk data not followed by CRLF");
          this.state = State.ChunkLf;
          break;
        case State.ChunkLf:
          if (buf[pos++] !== 10) throw bad("chunk data not followed by CRLF");
          this.state = State.ChunkSize;
          break;
        case State.Done:
          this.trailing = true;
          return;
        default:
          assertNever(this.state, "response parser state");
      }
    }
  }

  /** Passes on up to `remaining` body bytes from `pos`; returns where it stopped. */
  private take(buf: Buffer, pos: number): number {
    const n = Math.min(this.remaining, buf.length - pos);
    this.remaining -= n;
    this.sink.data(buf.subarray(pos, pos + n));
    return pos + n;
  }

  private finish(): void {
    this.state = State.Done;
    this.sink.end();
  }

  /** Parses one head; returns false when the sink abandoned the exchange. */
  private onHead(text: string): boolean {
    const lines = text.split("\r\n");
    const m = STATUS_LINE.exec(lines[0]!);
    if (m === null) throw bad(`bad status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
    if (HEAD_CTL.test(text)) throw bad("control character or bare CR/LF in the head");
    const minor = m[1] === "1";
    const status = Number(m[2]);
    const headers: string[] = [];
    let length: string | null = null;
    let te: string[] | null = null;
    let connection: string[] = [];
    let keepAliveTimeoutS: number | null = null;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const c0 = line.charCodeAt(0);
      if (c0 === 32 || c0 === 9) throw bad("obsolete line folding");
      const colon = line.indexOf(":");
      const name = colon > 0 ? line.slice(0, colon) : "";
      if (!TOKEN.test(name)) throw bad(`bad field line ${JSON.stringify(line.slice(0, 80))}`);
      const value = trimOws(line, colon + 1);
      const len = name.length;
      if (len === 14 || len === 17 || len === 10) {
        const lower = name.toLowerCase();
        if (lower === "content-length") {
          for (const v of value.split(",")) {
            const t = trimOws(v, 0);
            if (!DIGITS.test(t)) throw bad(`bad Content-Length ${JSON.stringify(value.slice(0, 40))}`);
            if (length !== null && length !== t) throw bad("conflicting Content-Length values");
            length = t;
          }
        } else if (lower === "transfer-encoding") {
          (te ??= []).push(...members(value));
        } else if (lower === "connection") {
          connection = connection.concat(members(value));
        } else if (lower === "keep-alive") {
          const t = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i.exec(value);
          if (t !== null) keepAliveTimeoutS = Number(t[1]);
        }
      }
      headers.push(name, value);
    }
    if (status < 200) {
      // 1xx are interim: the final response follows on the same connection. A 101 answers an upgrade, which
      // this client never asks for.
      if (status === 101) throw bad("101 Switching Protocols to a request without Upgrade");
      return true;
    }
    let keepAlive = minor ? !connection.includes("close") : connection.includes("keep-alive");
    if (this.noBody || status === 204 || status === 304) {
      this.state = State.Done;
    } else if (te !== null) {
      if (length !== null) throw bad("both Content-Length and Transfer-Encoding");
      const chunked = te.indexOf("chunked");
      if (chunked >= 0 && (chunked !== te.length - 1 || te.lastIndexOf("chunked") !== chunked))
        throw bad("chunked is not the last transfer coding, once");
      if (chunked >= 0) this.state = State.ChunkSize;
      else {
        this.state = State.UntilClose; // RFC 9112 §6.3 (4): a response's other codings end at the close
        keepAlive = false;
      }
    } else if (length !== null) {
      this.remaining = Number(length);
      this.state = this.remaining === 0 ? State.Done : State.Length;
    } else {
      this.state = State.UntilClose;
      keepAlive = false;
    }
    const delivered = this.sink.head({ status, statusText: m[3] ?? "", headers, keepAlive, keepAliveTimeoutS });
    if (!delivered) {
      this.state = State.Done;
      return false;
    }
    if (this.state === State.Done) this.sink.end();
    return true;
  }

  private onChunkSize(line: string): void {
    const m = CHUNK_SIZE.exec(line);
    if (m === null) throw bad(`bad chunk-size line ${JSON.stringify(line.slice(0, 40))}`);
    const size = parseInt(m[1]!, 16);
    if (size === 0) {
      this.state = State.Trailers;
      this.trailerBytes = 0;
      return;
    }
    this.remaining = size;
    this.state = State.ChunkData;
  }

  private onTrailerLine(line: string): void {
    if (line === "") {
      this.finish();
      return;
    }
    this.trailerBytes += line.length + 2;
    if (this.trailerBytes > RESPONSE_LIMITS.trailerBytes) throw bad("trailers too long");
    const colon = line.indexOf(":");
    if (colon <= 0 || !TOKEN.test(line.slice(0, colon)) || CTL.test(line)) throw bad("bad trailer field line");
    // Trailer fields are dropped: Node's writer would need them declared before the body started.
  }
}

export interface UpstreamClientOptions {
  /** Idle connections close after this long (under Node's and most servers' 5 s keep-alive timeout). */
  keepAliveMs: number;
  /** A connection not accepted within this fails its exchange with `PROXY_ERR_UPSTREAM_CONNECT` (`ETIMEDOUT`). */
  connectTimeoutMs: number;
}

const DEFAULTS: UpstreamClientOptions = { keepAliveMs: 4_000, connectTimeoutMs: 10_000 };
const SWEEP_MS = 1_000;
/** Methods whose request carries a body by meaning: sent with `Content-Length: 0` when the client sent none. */
const BODY_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH"]);

class Connection {
  readonly socket: Socket;
  readonly parser: ResponseParser;
  connected = false;
  /** Has carried a complete exchange: a close before any answer may be the keep-alive race, worth one retry. */
  reused = false;
  exchange: ExchangeImpl | null = null;
  idleSinceMs = 0;
  idleLimitMs = 0;
  lastError: NodeJS.ErrnoException | null = null;
  /** Destroyed by the client's connect timeout rather than failed by the kernel. */
  connectTimedOut = false;

  constructor(socket: Socket, sink: ParserSink) {
    this.socket = socket;
    this.parser = new ResponseParser(sink);
  }
}

class ExchangeImpl implements Exchange {
  /** Ended: completed, failed or aborted. */
  over = false;
  /** Any byte of the response arrived. */
  answered = false;
  /** The request body (if any) was written to its end. */
  sent: boolean;
  head: ResponseHead | null = null;
  detachBody: (() => void) | null = null;

  constructor(
    readonly conn: Connection,
    readonly handler: ResponseHandler,
    hasBody: boolean,
  ) {
    this.sent = !hasBody;
  }

  abort(): void {
    if (this.over) return;
    this.over = true;
    this.detachBody?.();
    this.conn.exchange = null;
    this.conn.socket.destroy();
  }

  resume(): void {
    if (!this.over) this.conn.socket.resume();
  }
}

/** Kept-alive HTTP/1.1 connections to one upstream (`host`:`port`), shared by every request proxied to it. */
export class UpstreamClient {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private sweeper: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly opts: UpstreamClientOptions;
  /** `Host` for requests that came without one (an HTTP/1.0 client). */
  private readonly authority: string;

  constructor(
    private readonly host: string,
    private readonly port: number,
    opts: Partial<UpstreamClientOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
    this.authority = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  }

  /** Open connections, idle or busy (for tests and snapshots). */
  get connections(): number {
    return this.all.size;
  }

  get idleConnections(): number {
    return this.idle.length;
  }

  /** Sends `req` on an idle connection or a new one; the response comes to `handler`. */
  request(req: OutgoingRequest, handler: ResponseHandler): Exchange {
    const conn = this.closed ? null : (this.takeIdle() ?? this.open());
    if (conn === null) {
      const ex = { abort: () => undefined, resume: () => undefined };
      queueMicrotask(() =>
        handler.onError(
          new UpstreamError(ProxyErrorCode.PROXY_ERR_UPSTREAM_CONNECT, "upstream client is closed", false, false),
        ),
      );
      return ex;
    }
    const ex = new ExchangeImpl(conn, handler, req.body !== null);
    conn.exchange = ex;
    conn.parser.start(req.method);
    const socket = conn.socket;
    let head = `${req.method} ${req.path} HTTP/1.1\r\n`;
    const h = req.headers;
    let hasHost = false;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      if (name.length === 4 && name.toLowerCase() === "host") hasHost = true;
      head += `${name}: ${h[i + 1]!}\r\n`;
    }
    if (!hasHost) head += `Host: ${this.authority}\r\n`;
    const body = req.body;
    if (body === null) {
      if (BODY_METHODS.has(req.method)) head += "Content-Length: 0\r\n";
      socket.write(`${head}\r\n`, "latin1");
      return ex;
    }
    const chunked = body.length === null;
    head += chunked ? "Transfer-Encoding: chunked\r\n\r\n" : `Content-Length: ${body.length}\r\n\r\n`;
    socket.write(head, "latin1");
    this.streamBody(ex, body.stream, chunked);
    return ex;
  }

  /** Closes every connection; requests made afterwards fail at once. */
  close(): void {
    this.closed = true;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const c of this.all) c.socket.destroy();
  }

  private streamBody(ex: ExchangeImpl, stream: Readable, chunked: boolean): void {
    const socket = ex.conn.socket;
    const resume = (): void => {
      if (!ex.over) stream.resume();
    };
    const onData = (chunk: Buffer): void => {
      let ok: boolean;
      if (chunked) {
        if (chunk.length === 0) return; // a zero-size chunk would end the body
        socket.cork();
        socket.write(`${chunk.length.toString(16)}\r\n`, "latin1");
        socket.write(chunk);
        ok = socket.write("\r\n", "latin1");
        socket.uncork();
      } else {
        ok = socket.write(chunk);
      }
      // Backpressure: a slow upstream pauses the client's body instead of buffering it here.
      if (!ok) {
        stream.pause();
        socket.once("drain", resume);
      }
    };
    const onEnd = (): void => {
      detach();
      if (chunked) socket.write("0\r\n\r\n", "latin1");
      ex.sent = true;
    };
    const detach = (): void => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      socket.off("drain", resume);
      ex.detachBody = null;
      // Whatever of the body is left is read and dropped (Node's server then parses the client's next request);
      // a stream we paused would otherwise stay paused for good.
      if (!stream.readableEnded) stream.resume();
    };
    ex.detachBody = detach;
    stream.on("data", onData);
    stream.once("end", onEnd);
  }

  private takeIdle(): Connection | null {
    const now = Date.now();
    while (this.idle.length > 0) {
      const c = this.idle.pop()!;
      if (!c.socket.destroyed && now - c.idleSinceMs < c.idleLimitMs) return c;
      c.socket.destroy();
    }
    return null;
  }

  private open(): Connection {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    const conn: Connection = new Connection(socket, {
      head: (h) => this.onHead(conn, h),
      data: (chunk) => this.onData(conn, chunk),
      end: () => this.onEnd(conn),
    });
    this.all.add(conn);
    const timer = setTimeout(() => {
      if (conn.connected) return;
      conn.connectTimedOut = true;
      socket.destroy(
        Object.assign(new Error(`connect to ${this.authority} timed out after ${this.opts.connectTimeoutMs} ms`), {
          code: "ETIMEDOUT",
        }),
      );
    }, this.opts.connectTimeoutMs);
    timer.unref();
    socket.once("connect", () => {
      conn.connected = true;
      clearTimeout(timer);
    });
    socket.on("data", (chunk: Buffer) => this.onSocketData(conn, chunk));
    socket.on("end", () => {
      const ex = conn.exchange;
      // A body delimited by the close ends here; anything else still open fails in "close".
      if (ex !== null && !ex.over) {
        try {
          conn.parser.eof();
        } catch (err) {
          this.fail(conn, err as UpstreamError);
        }
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      conn.lastError = err;
    });
    socket.on("close", () => {
      clearTimeout(timer);
      this.all.delete(conn);
      const i = this.idle.indexOf(conn);
      if (i >= 0) this.idle.splice(i, 1);
      const ex = conn.exchange;
      if (ex === null || ex.over) return;
      const errno = conn.lastError?.code ?? null;
      if (!conn.connected) {
        // Our own timeout says how long it waited; the kernel's errors are named by their errno.
        const why = conn.connectTimedOut
          ? `ETIMEDOUT (no answer in ${this.opts.connectTimeoutMs} ms)`
          : (errno ?? conn.lastError?.message ?? "closed");
        this.fail(
          conn,
          new UpstreamError(
            ProxyErrorCode.PROXY_ERR_UPSTREAM_CONNECT,
            `cannot connect to ${this.authority}: ${why}`,
            true,
            false,
            errno,
            { cause: conn.lastError },
          ),
        );
      } else {
        const what = ex.answered ? "closed mid-response" : "closed before answering";
        this.fail(
          conn,
          new UpstreamError(
            ProxyErrorCode.PROXY_ERR_UPSTREAM_CLOSED,
            `upstream ${this.authority} ${what}${errno ? ` (${errno})` : ""}`,
            true,
            conn.reused && !ex.answered,
            errno,
            { cause: conn.lastError },
          ),
        );
      }
    });
    return conn;
  }

  private onSocketData(conn: Connection, chunk: Buffer): void {
    const ex = conn.exchange;
    if (ex === null || ex.over) {
      // Bytes on an idle connection belong to no request: the connection cannot be trusted any more.
      conn.socket.destroy();
      return;
    }
    ex.answered = true;
    try {
      conn.parser.feed(chunk);
    } catch (err) {
      this.fail(conn, err instanceof UpstreamError ? err : bad(String(err)));
      return;
    }
    // A response that ended in this piece: the connection goes back (or away) once its bytes were all read.
    if (conn.exchange === null && !conn.socket.destroyed) this.release(conn, ex);
  }

  // The three parser callbacks ignore a piece that arrives after the exchange was abandoned from inside a
  // handler (the parser finishes the buffer it was given).
  private onHead(conn: Connection, h: ResponseHead): boolean {
    const ex = conn.exchange;
    if (ex === null) return false;
    ex.head = h;
    if (ex.handler.onHead(h.status, h.statusText, h.headers)) return true;
    ex.abort();
    return false;
  }

  private onData(conn: Connection, chunk: Buffer): void {
    const ex = conn.exchange;
    if (ex !== null && !ex.handler.onData(chunk)) conn.socket.pause();
  }

  private onEnd(conn: Connection): void {
    const ex = conn.exchange;
    if (ex === null) return;
    ex.over = true;
    conn.exchange = null;
    ex.handler.onEnd();
    // Released by onSocketData (or at once when the close ended the body): the parser may still hold bytes.
    if (conn.socket.readableEnded) conn.socket.destroy();
  }

  private release(conn: Connection, ex: ExchangeImpl): void {
    const h = ex.head;
    const limitMs =
      h?.keepAliveTimeoutS != null
        ? Math.min(this.opts.keepAliveMs, h.keepAliveTimeoutS * 1000 - 1000)
        : this.opts.keepAliveMs;
    if (this.closed || h === null || !h.keepAlive || conn.parser.trailing || !ex.sent || limitMs <= 0) {
      ex.detachBody?.();
      conn.socket.destroy();
      return;
    }
    conn.reused = true;
    conn.idleSinceMs = Date.now();
    conn.idleLimitMs = limitMs;
    if (conn.socket.isPaused()) conn.socket.resume();
    this.idle.push(conn);
    this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS).unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const c = this.idle[i]!;
      if (now - c.idleSinceMs >= c.idleLimitMs) c.socket.destroy(); // "close" takes it off the list
    }
    if (this.idle.length === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  private fail(conn: Connection, err: UpstreamError): void {
    const ex = conn.exchange;
    conn.socket.destroy();
    if (ex === null || ex.over) return;
    ex.over = true;
    ex.detachBody?.();
    conn.exchange = null;
    ex.handler.onError(err);
  }
}
