/**
 * A thin, safe layer over uWS requests and responses. uWS rules it keeps: copy everything out of `req` before
 * the first await, register `onAborted` before going async, never touch `res` after an abort, and cork writes
 * made outside the handler's first tick.
 */
import type { HttpRequest, HttpResponse } from "uWebSockets.js";
import { encodeJson, ErrorCode, parseJson } from "../protocol/index.js";
import { isJsonType } from "./browser.js";
import { GatewayError, log, logInternal, toWireError } from "./errors.js";

export interface Req {
  method: string;
  url: string;
  query: URLSearchParams;
  headers: Record<string, string>;
  params: string[];
  /** The first path parameter that did not decode or match its grammar (as sent, cut to 64 chars). */
  badParam?: string;
  /** Why the request's framing is ambiguous (a smuggling attempt through a proxy): answered 400, connection closed. */
  badFraming?: string;
}

/** Headers that may appear once: two of them let a proxy and this server read different requests. */
const FRAMING_HEADERS = new Set(["content-length", "transfer-encoding", "host"]);

/**
 * Records, workflows and threads run to 1 MB each: a listing's page ends early once it holds this many bytes
 * (its `next` goes on from there), so one request can neither hold gigabytes nor overrun NATS's pending limit.
 */
export const LIST_PAGE_MAX_BYTES = 8 * 1024 * 1024;

/** Resource ids (jobs, workflows, threads, assets, agents): what a KV key and a subject token both accept. */
export const ID_GRAMMAR = /^[A-Za-z0-9_=-]{1,128}$/;
/** Model ids (`/v1/models/:id`) carry `:`, `.` and `/`: printable ASCII, no spaces. */
export const MODEL_ID_GRAMMAR = /^[\x21-\x7e]{1,256}$/;

/**
 * Copies what a handler needs out of `req` (valid only until the handler returns). Never throws: a parameter that
 * does not decode or fails `grammar` leaves `badParam` set, and the route answers 400 with it.
 */
export function readReq(req: HttpRequest, paramCount: number, grammar: RegExp = ID_GRAMMAR): Req {
  const headers: Record<string, string> = {};
  let framing: string | undefined;
  req.forEach((k, v) => {
    if (k in headers && FRAMING_HEADERS.has(k)) framing ??= `more than one ${k} header`;
    headers[k] = v;
  });
  const te = headers["transfer-encoding"];
  if (te !== undefined && te.trim().toLowerCase() !== "chunked")
    framing ??= `Transfer-Encoding "${te.slice(0, 32)}" is not supported`;
  if (te !== undefined && headers["content-length"] !== undefined) framing ??= "Content-Length with Transfer-Encoding";
  const params: string[] = [];
  let badParam: string | undefined;
  for (let i = 0; i < paramCount; i++) {
    const raw = req.getParameter(i) ?? "";
    let v: string | null = null;
    try {
      v = decodeURIComponent(raw);
    } catch {
      v = null;
    }
    if (v === null || !grammar.test(v)) badParam ??= raw.slice(0, 64);
    params.push(v ?? "");
  }
  const query = new URLSearchParams(req.getQuery() ?? "");
  const r: Req = { method: req.getMethod().toUpperCase(), url: req.getUrl(), query, headers, params };
  if (badParam !== undefined) r.badParam = badParam;
  if (framing !== undefined) r.badFraming = framing;
  return r;
}

/**
 * Whether an `If-None-Match` field matches `etag` (RFC 9110 §13.1.2): `*`, or any tag of its list compared weakly
 * (a `W/` prefix ignored), as a cache or a CDN sends it.
 */
export function etagMatches(field: string | undefined, etag: string): boolean {
  if (field === undefined) return false;
  const bare = etag.replace(/^W\//, "");
  return field.split(",").some((tag) => {
    const t = tag.trim();
    return t === "*" || t.replace(/^W\//, "") === bare;
  });
}

const STATUS_TEXT: Record<number, string> = {
  200: "200 OK",
  201: "201 Created",
  202: "202 Accepted",
  204: "204 No Content",
  206: "206 Partial Content",
  304: "304 Not Modified",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  405: "405 Method Not Allowed",
  409: "409 Conflict",
  413: "413 Payload Too Large",
  415: "415 Unsupported Media Type",
  416: "416 Range Not Satisfiable",
  421: "421 Misdirected Request",
  429: "429 Too Many Requests",
  500: "500 Internal Server Error",
  502: "502 Bad Gateway",
  503: "503 Service Unavailable",
  504: "504 Gateway Timeout",
  507: "507 Insufficient Storage",
};

/** How long a stream's client may take nothing while its backlog is over the limit. */
const STALL_MS = 2_000;

export class Reply {
  aborted = false;
  /** The request's `Content-Type`, for a JSON body's check. */
  requestContentType: string | undefined = undefined;
  /** Headers every answer carries (CORS for a configured origin). */
  extraHeaders: Record<string, string> | null = null;
  /** A HEAD served by a GET route: every answer is written as its status and headers, without the body. */
  headOnly = false;
  /** Digest of the API token the request came with (auth on), so a reload can close a stream it revoked. */
  tokenDigest: Buffer | null = null;
  /** Where a stream of an authenticated request is listed while it runs. */
  private liveStreams: Set<Reply> | null = null;
  private streaming = false;
  private maxBacklogBytes = Number.POSITIVE_INFINITY;
  /** Bytes uWS holds for this stream because the socket would not take them (0 once it drained). */
  private backlogBytes = 0;
  private backlogSinceMs = 0;
  private awaitingDrain = false;
  /** Whether anything was written since the keep-alive last looked (SSE streams only). */
  private wrote = false;
  private readonly onAbortFns: (() => void)[] = [];
  /** Told once: the status when the status line is written, or null when the client left before it. */
  private statusFn: ((status: number | null) => void) | null = null;
  constructor(readonly res: HttpResponse) {
    res.onAborted(() => {
      this.statusWritten(null);
      this.aborted = true;
      this.liveStreams?.delete(this);
      for (const f of this.onAbortFns) f();
    });
  }

  /** Registers what is told the answer's status (the request-duration metric). */
  onStatus(fn: (status: number | null) => void): void {
    this.statusFn = fn;
  }

  private statusWritten(status: number | null): void {
    const fn = this.statusFn;
    this.statusFn = null;
    fn?.(status);
  }

  /** The request came with an accepted token; a stream it starts joins `liveStreams` until it ends. */
  authenticated(tokenDigest: Buffer, liveStreams: Set<Reply>): void {
    this.tokenDigest = tokenDigest;
    this.liveStreams = liveStreams;
  }

  /**
   * Runs `fn` when the client goes away, or at once when the reply is already over (the client left, or it was
   * ended): a follow registered after an await (the record read, the replay) must not outlive a client that left
   * during it — registered late, it was never stopped, and its listener stayed until the job ended.
   */
  onAbort(fn: () => void): void {
    if (this.aborted) {
      fn();
      return;
    }
    this.onAbortFns.push(fn);
  }

  json(status: number, body: unknown, extraHeaders?: Record<string, string>): void {
    // encodeJson: bytes at any depth become data: URIs, never a serialised Node Buffer.
    this.send(status, encodeJson(body), "application/json", extraHeaders);
  }

  send(status: number, body: string, contentType: string, extraHeaders?: Record<string, string>): void {
    if (this.aborted) return;
    if (this.streaming) {
      // The status line is gone already: an error after a stream began can only end the stream.
      this.end();
      return;
    }
    if (this.headOnly) {
      this.head(status, Buffer.byteLength(body), { "content-type": contentType, ...extraHeaders });
      return;
    }
    this.statusWritten(status);
    this.res.cork(() => {
      this.res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
      this.res.writeHeader("content-type", contentType);
      if (extraHeaders) for (const k in extraHeaders) this.res.writeHeader(k, extraHeaders[k]!);
      if (this.extraHeaders) for (const k in this.extraHeaders) this.res.writeHeader(k, this.extraHeaders[k]!);
      this.res.end(body);
    });
    this.aborted = true; // finished: nothing more may be written
  }

  error(err: unknown): void {
    const { status, body } = toWireError(err);
    if (status === 500) logInternal(err, "internal error");
    this.json(status, { error: body, ...body });
  }

  /**
   * Starts a chunked streaming response (NDJSON or SSE). A client that stops reading is closed once more than
   * `maxBacklogBytes` has waited unsent for `STALL_MS` (it resumes from its last seq), so a stalled reader cannot
   * grow our memory without bound.
   */
  startStream(contentType: string, maxBacklogBytes = Number.POSITIVE_INFINITY, keepAliveMs = 0): void {
    if (this.aborted) return;
    if (this.headOnly) {
      // A stream has no length to report; its follow stops at once (onAbort runs what it registered).
      this.empty(200, { "content-type": contentType, "cache-control": "no-cache" });
      this.finished();
      return;
    }
    this.streaming = true;
    this.statusWritten(200);
    this.liveStreams?.add(this);
    this.maxBacklogBytes = maxBacklogBytes;
    this.res.cork(() => {
      this.res.writeStatus("200 OK");
      this.res.writeHeader("content-type", contentType);
      this.res.writeHeader("cache-control", "no-cache");
      this.res.writeHeader("x-accel-buffering", "no");
      // An empty write flushes the headers so the client sees the stream open before the first event.
      this.res.write("");
    });
    if (keepAliveMs > 0) this.keepAlive(keepAliveMs);
  }

  /** Every `periodMs` without a write, an SSE comment (clients skip it): the stream is never quiet for a proxy. */
  private keepAlive(periodMs: number): void {
    this.wrote = false;
    const timer = setInterval(() => {
      if (this.aborted) clearInterval(timer);
      else if (!this.wrote) this.write(": keep-alive\n\n");
      this.wrote = false;
    }, periodMs);
    timer.unref();
  }

  /**
   * Writes to a stream; uWS buffers what the socket cannot take yet. A client that has taken nothing for
   * `STALL_MS` while more than the backlog limit waits is closed (it resumes from its last seq): a replay burst
   * to a reader that keeps up drains within milliseconds and never counts as a stall.
   * Writes are corked (one socket write for the chunk framing and the data). A corked write lands in the cork
   * buffer and reports success, but once a flush has left bytes behind, every later write first tries to send
   * those and reports failure while it cannot: backpressure shows one write late, which is all a stall needs.
   */
  write(chunk: string): void {
    if (this.aborted || !this.streaming) return;
    this.wrote = true;
    let ok = true;
    const nowMs = Date.now();
    this.res.cork(() => {
      ok = this.res.write(chunk);
    });
    if (ok && this.backlogBytes === 0) return;
    // Buffered by uWS: count it until the socket drains.
    if (this.backlogBytes === 0) this.backlogSinceMs = nowMs;
    this.backlogBytes += Buffer.byteLength(chunk);
    if (this.backlogBytes > this.maxBacklogBytes && nowMs - this.backlogSinceMs > STALL_MS) {
      // Abort the connection: onAborted stops the follow; the client resumes with Last-Event-ID / ?after=.
      this.close();
      return;
    }
    if (!this.awaitingDrain) {
      this.awaitingDrain = true;
      this.res.onWritable(() => {
        this.awaitingDrain = false;
        this.backlogBytes = 0;
        return true;
      });
    }
  }

  /** The answer to a HEAD: the status and headers a GET would get, its length reported, no body. */
  head(status: number, reportedBytes: number, extraHeaders?: Record<string, string>): void {
    if (this.aborted) return;
    this.statusWritten(status);
    this.res.cork(() => {
      this.res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
      if (extraHeaders) for (const k in extraHeaders) this.res.writeHeader(k, extraHeaders[k]!);
      if (this.extraHeaders) for (const k in this.extraHeaders) this.res.writeHeader(k, this.extraHeaders[k]!);
      // Written by hand: `endWithoutBody(n)` with n > 0 leaves uWS (20.30) waiting for n bytes of body, so the
      // connection never ends, Connection: close is not kept and a pipelined request is dropped.
      this.res.writeHeader("content-length", String(reportedBytes));
      this.res.endWithoutBody();
    });
    this.aborted = true;
  }

  /** A reply without a body (204, 304). */
  empty(status: number, extraHeaders?: Record<string, string>): void {
    if (this.aborted) return;
    this.statusWritten(status);
    this.res.cork(() => {
      this.res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
      if (extraHeaders) for (const k in extraHeaders) this.res.writeHeader(k, extraHeaders[k]!);
      this.res.endWithoutBody();
    });
    this.aborted = true;
  }

  /**
   * Sends `totalBytes` read from `source` with a Content-Length (uWS's `tryEnd`), one chunk at a time: the next is
   * read only once the socket took the last, so a slow client holds at most a chunk here. A source that ends
   * short or fails closes the connection (the status line is gone): the client sees a truncated body, never a
   * complete-looking wrong one. A client that leaves cancels the source.
   */
  async sendBytes(
    status: number,
    contentType: string,
    totalBytes: number,
    source: ReadableStream<Uint8Array>,
    extraHeaders?: Record<string, string>,
  ): Promise<void> {
    const reader = source.getReader();
    if (this.aborted) {
      void reader.cancel().catch(() => undefined);
      return;
    }
    if (this.headOnly) {
      void reader.cancel().catch(() => undefined);
      this.head(status, totalBytes, { "content-type": contentType, ...extraHeaders });
      return;
    }
    const res = this.res;
    const writeHead = () => {
      this.statusWritten(status);
      res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
      res.writeHeader("content-type", contentType);
      if (extraHeaders) for (const k in extraHeaders) res.writeHeader(k, extraHeaders[k]!);
    };
    if (totalBytes === 0) {
      void reader.cancel().catch(() => undefined);
      res.cork(() => {
        writeHead();
        res.end();
      });
      this.aborted = true;
      return;
    }
    let headWritten = false;
    let sent = 0;
    /** The pending wait for the socket to drain, woken with true when the client leaves. */
    let wake: ((finished: boolean) => void) | null = null;
    this.onAbort(() => wake?.(true));
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.aborted) {
          void reader.cancel().catch(() => undefined);
          return;
        }
        if (done) {
          if (sent < totalBytes) this.close(); // short: never let it look whole
          return;
        }
        if (sent + value.byteLength > totalBytes) {
          void reader.cancel().catch(() => undefined);
          this.close();
          return;
        }
        const startOffset = res.getWriteOffset();
        let result: [boolean, boolean] = [false, false];
        res.cork(() => {
          if (!headWritten) writeHead();
          headWritten = true;
          result = res.tryEnd(value, totalBytes);
        });
        sent += value.byteLength;
        if (result[1]) {
          this.aborted = true; // done: nothing more may be written
          void reader.cancel().catch(() => undefined);
          return;
        }
        if (!result[0]) {
          // The socket took part of the chunk: the rest goes when it drains.
          const finished = await new Promise<boolean>((resolve) => {
            wake = resolve;
            res.onWritable((offset) => {
              if (this.aborted) return true;
              const [ok, done] = res.tryEnd(value.subarray(offset - startOffset), totalBytes);
              if (done) {
                this.aborted = true;
                resolve(true);
              } else if (ok) resolve(false);
              return ok;
            });
          });
          wake = null;
          if (finished) {
            void reader.cancel().catch(() => undefined);
            return;
          }
        }
      }
    } catch (err) {
      if (!headWritten) throw err;
      log.warn(`a download stopped part way: ${(err as Error).message}`);
      this.close();
    }
  }

  /** The answer is complete with no stream behind it: what waits on the client's leaving runs now. */
  private finished(): void {
    const fns = this.onAbortFns.splice(0);
    for (const f of fns) f();
  }

  /** Drops the connection (a stream whose token was revoked): onAborted runs, stopping its follow. */
  close(): void {
    if (this.aborted) return;
    this.statusWritten(null);
    this.aborted = true;
    this.liveStreams?.delete(this);
    this.res.close();
  }

  end(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.liveStreams?.delete(this);
    this.res.cork(() => {
      this.res.end();
    });
  }
}

/** Reads the whole body within `maxBytes`; rejects with 413 past it (and stops reading). */
export function readBody(res: HttpResponse, reply: Reply, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    reply.onAbort(() => reject(new GatewayError(ErrorCode.GW_ERR_BAD_REQUEST, "client went away")));
    res.onData((ab, isLast) => {
      if (failed) return;
      size += ab.byteLength;
      if (size > maxBytes) {
        failed = true;
        reject(new GatewayError(ErrorCode.GW_ERR_BODY_TOO_LARGE, `request body exceeds ${maxBytes} bytes`));
        return;
      }
      // uWS reuses `ab` after this callback returns: copy it.
      chunks.push(Buffer.from(new Uint8Array(ab).slice()));
      if (isLast) resolve(Buffer.concat(chunks));
    });
  });
}

/**
 * The request body as a stream, for bodies too large to hold (asset uploads): chunks are copied out of uWS as they
 * come, and the socket is paused while `highWaterChunks` wait unread. Past `maxBytes` the stream fails with 413;
 * a client that leaves fails it too. Must be called in the handler's first tick, like `readBody`.
 */
export function bodyStream(
  res: HttpResponse,
  reply: Reply,
  maxBytes: number,
  highWaterChunks = 8,
): ReadableStream<Uint8Array> {
  let size = 0;
  let over = false;
  let paused = false;
  const canPause = typeof res.pause === "function";
  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        reply.onAbort(() => {
          if (over) return;
          over = true;
          c.error(new GatewayError(ErrorCode.GW_ERR_BAD_REQUEST, "client went away during the upload"));
        });
        res.onData((ab, isLast) => {
          if (over) return;
          size += ab.byteLength;
          if (size > maxBytes) {
            over = true;
            c.error(new GatewayError(ErrorCode.GW_ERR_BODY_TOO_LARGE, `upload exceeds ${maxBytes} bytes`));
            return;
          }
          // uWS reuses `ab` after this callback returns: copy it.
          if (ab.byteLength > 0) c.enqueue(new Uint8Array(ab.slice(0)));
          if (isLast) {
            over = true;
            c.close();
          } else if (canPause && !paused && (c.desiredSize ?? 1) <= 0) {
            paused = true;
            res.pause();
          }
        });
      },
      pull() {
        if (paused && !reply.aborted) {
          paused = false;
          res.resume();
        }
      },
    },
    { highWaterMark: highWaterChunks },
  );
}

/**
 * Parses a JSON object body; empty body → `{}`. A body, or any declared type, must be JSON: a browser sends
 * `application/json` cross-site only after a CORS preflight, so a page elsewhere cannot post here.
 */
export function jsonBody(buf: Buffer, maxBytes: number, contentType?: string): Record<string, unknown> {
  if ((buf.length > 0 || contentType) && !isJsonType(contentType)) {
    throw new GatewayError(ErrorCode.GW_ERR_UNSUPPORTED_MEDIA, `send the body as Content-Type: application/json`);
  }
  if (buf.length === 0) return {};
  const v = parseJson(buf.toString("utf8"), maxBytes);
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new GatewayError(ErrorCode.GW_ERR_BAD_REQUEST, "request body must be a JSON object");
  }
  return v as Record<string, unknown>;
}
