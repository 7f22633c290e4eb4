/**
 * The request path: header hygiene, HTTP forwarding and WebSocket tunnelling.
 *
 * Plain HTTP goes to the upstream through `upstream-http.ts`, a lean keep-alive HTTP/1.1 client (it replaced
 * undici's `Pool.dispatch`, which had replaced `http.request` and `http-proxy-3`'s `web()`): this is the hot path
 * the benchmark compares with nginx in requests per proxy CPU-second, and the client hands us the upstream's
 * status, header fields and body pieces as callbacks, with no request or response object and no stream pipe per
 * request. The outgoing header list is built in one pass over `rawHeaders`. WebSocket upgrades go through
 * `http-proxy-3`'s `ws()`, which handles the 101 hand-off and the bidirectional pipe.
 *
 * Hygiene rules (reliability S10, RFC 9110 §7.6.1, RFC 9112 §6.1):
 * - hop-by-hop headers, and every header named in `Connection`, are removed in both directions;
 * - a request with both `Content-Length` and `Transfer-Encoding`, or a `Transfer-Encoding` other than `chunked`,
 *   is rejected with 400 (Node's parser rejects most of these already; the check here is the backstop);
 * - the body's framing is the client's: a chunked body is re-sent chunked (an unframed body would reach the upstream
 *   as a second, smuggled request), a declared one with its length (Node's parser holds the body to it);
 * - more than one `Host`, or one that is not a plain host name, is refused with 400 (RFC 9112 §3.2); a `Host` the
 *   proxy does not serve gets 421 and is never forwarded (the upstream builds links from it: cache and password-reset
 *   poisoning); `Expect` is answered here (the front sends the `100 Continue`) and not forwarded;
 * - a WebSocket upgrade needs HTTP/1.1 and exactly one `Upgrade: websocket`, at most one key and version: with two,
 *   what the proxy checked would not be what the upstream reads; an idle tunnel closes after `wsIdleTimeoutMs`;
 * - `X-Forwarded-*`, `Forwarded` and `X-Real-IP` from the client are dropped unless the peer is a trusted proxy;
 *   `X-Forwarded-For/Proto/Host` are then set (appended to, for trusted peers).
 */
import { STATUS_CODES, type ClientRequest, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { createProxyServer } from "http-proxy-3";
import { ProxyErrorCode, assertNever, closingAnswer, type UpstreamError } from "./errors.js";
import { formatAccessLine } from "./access-log.js";
import type { ProxyConfig } from "./config.js";
import type { ProxyEvent } from "./events.js";
import { hostName } from "./hosts.js";
import type { ProxyMetrics } from "./metrics.js";
import type { Upstream, UpstreamPool } from "./upstreams.js";
import type { Exchange, ResponseHandler } from "./upstream-http.js";
import type { FrontRequest, FrontResponse } from "./front.js";

/** RFC 9110 §7.6.1 plus the non-standard ones seen in the wild. Lower-case. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
  "http2-settings",
]);

/** Headers only a trusted proxy may set; from anyone else they are dropped (they would let a client pick its IP). */
function isForwardingHeader(lower: string): boolean {
  return lower.startsWith("x-forwarded-") || lower === "forwarded" || lower === "x-real-ip";
}

/** Failures to reach an upstream at all: it is gone (WebSocket tunnels; HTTP reads the client's error code). */
const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
/** A connection the upstream closed under one request: it may be gone, or may have refused that request. */
const CLOSE_ERRORS: ReadonlySet<string> = new Set(["ECONNRESET", "EPIPE"]);

/**
 * The gateway (uWebSockets.js 20.30) reads at most 48 fields and drops a request with more, unanswered. The proxy
 * adds three `X-Forwarded-*` and a framing field: a request with more than 44 of its own gets 431 here instead.
 */
const MAX_FORWARDED_FIELDS = 44;

/** Fields a `Connection` list may not remove: the proxy's own checks and the body's framing rest on them. */
const NOT_HOP_BY_HOP: ReadonlySet<string> = new Set(["host", "content-length"]);

/**
 * Requests that may be sent again when a kept-alive upstream connection turned out closed before any answer
 * (nginx's `proxy_next_upstream error` rule since 1.9.13: idempotent methods only, RFC 9110 §9.2.2), and then only
 * without a body, which has been consumed.
 */
const IDEMPOTENT: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

export interface ForwardDeps {
  readonly config: Readonly<ProxyConfig>;
  readonly pool: UpstreamPool;
  /** Returns true for peers in `trustedProxies`; `null` when nobody is trusted. */
  readonly isTrusted: ((peer: string) => boolean) | null;
  /** Access-log sink, `null` when the access log is off. */
  readonly log: ((line: string) => void) | null;
  readonly emit: (e: ProxyEvent) => void;
  /** True for a host name (from `hostName`) this proxy serves. */
  readonly servesHost: (name: string) => boolean;
  readonly metrics: ProxyMetrics;
}

/** What the forwarder's handlers read: its deps and what is derived from them once. */
interface Ctx extends ForwardDeps {
  /** The `Strict-Transport-Security` value, null when HSTS is off. */
  readonly hsts: string | null;
  readonly maxBody: number;
}

/** The handlers `startProxy` wires to the front and to port 80's server. */
export interface Forwarder {
  onRequest: (req: FrontRequest, res: FrontResponse) => void;
  onUpgrade: (req: FrontRequest, socket: TLSSocket, head: Buffer) => void;
  /** Port 80's parse errors (Node's server there); the HTTPS front answers its own. */
  onClientError: (err: NodeJS.ErrnoException, socket: Duplex) => void;
  /** A request the front refused before it was routed (400, 408, 417, 431, 501): one access-log line. */
  onRefused: (peer: string, status: number) => void;
  close: () => void;
}

/**
 * Why header hygiene refuses a request: malformed or ambiguous (400), body too large (413), host not served (421),
 * more fields than the gateway reads (431).
 */
type RequestRefusal = 400 | 413 | 421 | 431;
/** The result of header hygiene: outgoing headers as a flat `[name, value, …]` list, or an HTTP error status. */
type Built = Framed | RequestRefusal;
/** Outgoing headers and the body's framing: chunked, or `contentLength` bytes (-1 when none was declared). */
interface Framed {
  headers: string[];
  chunked: boolean;
  contentLength: number;
}

/**
 * The fields named in `Connection` (lower-case), which go with it (RFC 9110 §7.6.1); found before the copy since
 * `Connection` may come last. Null when there are none (the common case). `Host` and `Content-Length` are never
 * among them: `Connection: host` dropped the Host the proxy had checked, and the upstream then saw its own address.
 */
function namedInConnection(raw: readonly string[]): Set<string> | null {
  let named: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 10 && name.toLowerCase() === "connection") {
      for (const token of raw[i + 1]!.split(",")) {
        const t = token.trim().toLowerCase();
        if (t !== "" && !HOP_BY_HOP.has(t) && !NOT_HOP_BY_HOP.has(t)) (named ??= new Set()).add(t);
      }
    }
  }
  return named;
}

/**
 * One pass over `rawHeaders`. `upgrade` keeps `Connection: Upgrade` + `Upgrade` for WebSocket hand-off.
 * Returns a status code (400/413/421) for requests that must be refused.
 */
function buildRequestHeaders(
  req: FrontRequest,
  proto: string,
  trusted: boolean,
  maxBodyBytes: number,
  upgrade: boolean,
  servesHost: (name: string) => boolean,
): Built {
  const raw = req.rawHeaders;
  const n = raw.length;
  const named = namedInConnection(raw);
  const out: string[] = [];
  let te: string | null = null;
  let contentLength = -1;
  let host = "";
  let hosts = 0;
  let xff: string | null = null;
  let xfProto: string | null = null;
  let xfHost: string | null = null;
  let upgradeTo = "websocket";
  for (let i = 0; i < n; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === "transfer-encoding") te = te === null ? value : `${te}, ${value}`;
      else if (lower === "upgrade") upgradeTo = value;
      continue;
    }
    if (named?.has(lower)) continue;
    // As nginx does by default: uWS drops a request with `_` in a field name, unanswered.
    if (lower.includes("_")) continue;
    if (lower.charCodeAt(0) === 120 /* x */ || lower === "forwarded") {
      if (isForwardingHeader(lower)) {
        if (!trusted) continue;
        // From a trusted proxy: keep its view, folded into the single values we emit below.
        if (lower === "x-forwarded-for") {
          xff = xff === null ? value : `${xff}, ${value}`;
          continue;
        }
        if (lower === "x-forwarded-proto") {
          xfProto ??= value;
          continue;
        }
        if (lower === "x-forwarded-host") {
          xfHost ??= value;
          continue;
        }
      }
    } else if (lower === "content-length") {
      // llhttp already refused conflicting duplicates. Not copied: the upstream client writes the framing.
      if (contentLength < 0) contentLength = Number(value);
      continue;
    } else if (lower === "host") {
      if (hosts++ > 0) return 400;
      host = value;
    } else if (lower === "expect") {
      continue;
    }
    out.push(name, value);
  }
  // Without a Host the upstream would be sent its own address, which it always answers for.
  if (hosts !== 1) return 400;
  const name = hostName(host);
  if (name === null) return 400;
  if (!servesHost(name)) return 421;
  if (out.length / 2 > MAX_FORWARDED_FIELDS) return 431;
  let chunked = false;
  if (te !== null) {
    // RFC 9112 §6.1: with both, a proxy must not forward the message as is; the safe answer is to refuse it.
    if (contentLength >= 0) return 400;
    if (te.trim().toLowerCase() !== "chunked") return 400;
    chunked = true;
  }
  if (contentLength > maxBodyBytes) return 413;
  if (upgrade) out.push("Connection", "Upgrade", "Upgrade", upgradeTo);
  const peer = req.peer;
  out.push(
    "X-Forwarded-For",
    xff === null ? peer : `${xff}, ${peer}`,
    "X-Forwarded-Proto",
    xfProto ?? proto,
    "X-Forwarded-Host",
    xfHost ?? host,
  );
  return { headers: out, chunked, contentLength };
}

/**
 * Response headers minus hop-by-hop ones (and those the upstream named in `Connection`) and minus the framing, plus
 * HSTS. The fields are latin1 strings, as on the wire (RFC 9110 §5.5), and go back the same way. `contentLength`:
 * the upstream's, null when it gave none (the front then frames the body itself).
 */
function buildResponseHeaders(
  raw: readonly string[],
  hsts: string | null,
): { headers: string[]; contentLength: number | null } {
  const n = raw.length;
  const named = namedInConnection(raw);
  const out: string[] = [];
  let contentLength: number | null = null;
  let hasHsts = false;
  for (let i = 0; i < n; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (named?.has(lower)) continue;
    if (lower === "content-length") {
      // The upstream client's parser has refused a malformed or conflicting one.
      contentLength = Number(raw[i + 1]!);
      continue;
    }
    if (lower === "strict-transport-security") hasHsts = true;
    out.push(name, raw[i + 1]!);
  }
  if (hsts !== null && !hasHsts) out.push("Strict-Transport-Security", hsts);
  return { headers: out, contentLength };
}

function sendError(
  res: FrontResponse,
  status: number,
  code: ProxyErrorCode,
  hsts: string | null,
  close: boolean,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `{"code":"${code}","status":${status}}\n`;
  const headers = ["Content-Type", "application/json"];
  if (hsts !== null) headers.push("Strict-Transport-Security", hsts);
  res.writeHead(status, STATUS_CODES[status] ?? "", headers, body.length, close);
  res.end(body);
}

/** The value of the first field named `lower` (lower-case), or undefined. */
function fieldValue(raw: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.length === lower.length && raw[i]!.toLowerCase() === lower) return raw[i + 1]!;
  return undefined;
}

/** Exactly one `Upgrade`, and it says `websocket`; at most one `Sec-WebSocket-Key` and `Sec-WebSocket-Version`. */
function plainWebSocketUpgrade(raw: readonly string[]): boolean {
  let upgrades = 0;
  let keys = 0;
  let versions = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (lower === "upgrade") {
      if (++upgrades > 1 || raw[i + 1]!.trim().toLowerCase() !== "websocket") return false;
    } else if (lower === "sec-websocket-key") {
      if (++keys > 1) return false;
    } else if (lower === "sec-websocket-version") {
      if (++versions > 1) return false;
    }
  }
  return upgrades === 1;
}

const noop = (): void => undefined;

/** The error code of a request refused by header hygiene. */
function refusalCode(status: RequestRefusal): ProxyErrorCode {
  switch (status) {
    case 400:
      return ProxyErrorCode.PROXY_ERR_BAD_REQUEST;
    case 413:
      return ProxyErrorCode.PROXY_ERR_BODY_TOO_LARGE;
    case 421:
      return ProxyErrorCode.PROXY_ERR_MISDIRECTED;
    case 431:
      return ProxyErrorCode.PROXY_ERR_BAD_REQUEST;
    default:
      return assertNever(status, "refusal status");
  }
}

function isTrusted(ctx: Ctx, peer: string): boolean {
  return ctx.isTrusted?.(peer) ?? false;
}

/** A request answered by the proxy itself, never routed: counted, and one access-log line. */
function answeredHere(
  ctx: Ctx,
  peer: string | undefined,
  method: string,
  url: string,
  status: number,
  ms: number,
  subprotocols?: string,
): void {
  ctx.metrics.requestRefused(status);
  if (ctx.log !== null) ctx.log(formatAccessLine(peer, method, url, status, ms, null, subprotocols));
}

/** Builds the request, upgrade and client-error handlers of the two listeners. */
export function createForwarder(deps: ForwardDeps): Forwarder {
  const { config } = deps;
  const ctx: Ctx = {
    ...deps,
    hsts: config.hstsMaxAgeSeconds > 0 ? `max-age=${config.hstsMaxAgeSeconds}` : null,
    maxBody: config.maxBodyBytes,
  };
  const tunnels = createTunnels(config.wsIdleTimeoutMs, config.wsUpgradeTimeoutMs);
  return {
    onRequest: (req, res) => onRequest(ctx, req, res),
    onUpgrade: (req, socket, head) => onUpgrade(ctx, tunnels, req, socket, head),
    onClientError: (err, socket) => onClientError(ctx, err, socket),
    onRefused: (peer, status) => answeredHere(ctx, peer, "-", "-", status, 0),
    close: () => tunnels.close(),
  };
}

function onRequest(ctx: Ctx, req: FrontRequest, res: FrontResponse): void {
  const start = performance.now();
  req.body?.on("error", noop); // client went away mid-body: handled by the response's close
  const built = buildRequestHeaders(req, "https", isTrusted(ctx, req.peer), ctx.maxBody, false, ctx.servesHost);
  if (typeof built === "number") {
    sendError(res, built, refusalCode(built), ctx.hsts, true);
    req.body?.resume();
    answeredHere(ctx, req.peer, req.method, req.url, built, performance.now() - start);
    return;
  }
  forward(ctx, req, res, built, start, false);
}

/** Sends the request to the next healthy upstream (503 with none); `isRetry`: its second and last try. */
function forward(
  ctx: Ctx,
  req: FrontRequest,
  res: FrontResponse,
  framed: Framed,
  start: number,
  isRetry: boolean,
): void {
  const u = ctx.pool.pick();
  if (u === null) {
    sendError(res, 503, ProxyErrorCode.PROXY_ERR_NO_UPSTREAM, ctx.hsts, false);
    req.body?.resume();
    answeredHere(ctx, req.peer, req.method, req.url, 503, performance.now() - start);
    return;
  }
  new Forwarding(ctx, req, res, framed, start, isRetry, u).send();
}

/** One try of one request on one upstream: relays the upstream's answer to the front's response. */
class Forwarding implements ResponseHandler {
  private finished = false;
  /**
   * Set when we cut the upstream request ourselves (client left, body too large, a head we cannot relay): the
   * exchange then ends with no callback, and nothing counts against the upstream.
   */
  private abandoned = false;
  private exchange: Exchange | null = null;
  private readonly hasBody: boolean;

  constructor(
    private readonly ctx: Ctx,
    private readonly req: FrontRequest,
    private readonly res: FrontResponse,
    private readonly framed: Framed,
    private readonly start: number,
    private readonly isRetry: boolean,
    private readonly u: Upstream,
  ) {
    this.hasBody = framed.chunked || framed.contentLength > 0;
  }

  send(): void {
    const { req, framed } = this;
    this.u.active++;
    // One close callback per response: a retry's replaces the first try's (whose exchange is over), so the
    // access-log line is written once, by the try that answered.
    this.res.onClose(this.onResponseClose);
    const body =
      this.hasBody && req.body !== null
        ? { stream: req.body, length: framed.chunked ? null : framed.contentLength }
        : null;
    this.exchange = this.u.client.request({ method: req.method, path: req.url, headers: framed.headers, body }, this);
    if (framed.chunked) this.limitChunkedBody(req.body!);
  }

  onHead(status: number, statusText: string, rawHeaders: string[]): boolean {
    const { headers, contentLength } = buildResponseHeaders(rawHeaders, this.ctx.hsts);
    try {
      this.res.writeHead(status, statusText, headers, contentLength);
    } catch {
      // A head the writer refuses (a 1xx other than 101, a status text with control bytes): the upstream is
      // broken for this request, the proxy is not; answer 502 instead of throwing out of a callback.
      this.cut();
      sendError(this.res, 502, ProxyErrorCode.PROXY_ERR_UPSTREAM, this.ctx.hsts, false);
      return false;
    }
    // No length means a stream (SSE, NDJSON, long poll) or a body of unknown size: without this an SSE client
    // would wait for the first event to even see the status line.
    if (contentLength === null) this.res.flushHead();
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    // Backpressure: a slow client pauses the upstream read instead of buffering its body here.
    this.res.onDrain(this.resume);
    return false;
  }

  onEnd(): void {
    this.done();
    this.res.end();
  }

  onError(err: UpstreamError): void {
    this.done();
    const { res } = this;
    if (res.headersSent) {
      // Upstream died mid-body: cut the client off too, so it sees a truncated stream (and can resume) rather than
      // a response that looks complete.
      res.destroy();
      this.judge(err);
      return;
    }
    // A kept-alive connection the upstream closed just as we reused it: send the request once more, on another
    // connection, when that is safe (see IDEMPOTENT).
    if (!this.isRetry && !this.hasBody && err.retryable && IDEMPOTENT.has(this.req.method)) {
      forward(this.ctx, this.req, res, this.framed, this.start, true);
      return;
    }
    this.judge(err);
    sendError(res, 502, ProxyErrorCode.PROXY_ERR_UPSTREAM, this.ctx.hsts, false);
  }

  /** What a failed exchange says of the upstream: a failed connect ejects it, a closed connection makes it a suspect. */
  private judge(err: UpstreamError): void {
    if (!err.connectionLevel) return;
    if (err.code === ProxyErrorCode.PROXY_ERR_UPSTREAM_CONNECT) this.ctx.pool.markDown(this.u, err.errno ?? err.code);
    else this.ctx.pool.suspect(this.u);
  }

  private readonly resume = (): void => this.exchange?.resume();

  private readonly onResponseClose = (): void => {
    const { req, res } = this;
    // Client gone before we finished: cut the upstream exchange, so that its connection is not reused half-read.
    if (!res.finished) this.cut();
    const ms = performance.now() - this.start;
    const origin = this.u.target.origin;
    this.ctx.metrics.requestDone(origin, res.finished ? res.statusCode : null, ms / 1000);
    if (this.ctx.log !== null)
      this.ctx.log(formatAccessLine(req.peer, req.method, req.url, res.finished ? res.statusCode : 499, ms, origin));
  };

  private done(): void {
    if (this.finished) return;
    this.finished = true;
    this.u.active--;
  }

  private cut(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    this.exchange?.abort();
    this.done();
  }

  /** Chunked bodies have no declared length: they are counted against `maxBodyBytes` as they stream. */
  private limitChunkedBody(body: NonNullable<FrontRequest["body"]>): void {
    let seen = 0;
    body.on("data", (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > this.ctx.maxBody && !this.abandoned) {
        this.cut();
        // The front closes the connection once the 413 is written; destroying it here instead could drop the
        // response before it leaves. The rest of the body is read and discarded.
        sendError(this.res, 413, ProxyErrorCode.PROXY_ERR_BODY_TOO_LARGE, this.ctx.hsts, true);
        body.resume();
      }
    });
  }
}

/** No agent: an upgraded socket never returns to a pool. */
const newWsProxy = () => createProxyServer({ ws: true, xfwd: false, proxyTimeout: 0 });

/** WebSocket tunnels: http-proxy-3 does the hand-off; `upgraded` holds the client sockets that got their 101. */
interface Tunnels {
  readonly proxy: ReturnType<typeof newWsProxy>;
  readonly upgraded: WeakSet<object>;
  /** Ends every upgrade still waiting for its upstream's answer, then the proxy. */
  close(): void;
}

/** The error an upgrade ends with when its upstream is silent past `wsUpgradeTimeoutMs`. */
const UPGRADE_TIMEOUT = "NODEWAY_UPGRADE_TIMEOUT";

function createTunnels(wsIdleTimeoutMs: number, wsUpgradeTimeoutMs: number): Tunnels {
  const proxy = newWsProxy();
  proxy.on("error", noop); // errors are handled by the per-call callback; this is a guard against crashes
  const upgraded = new WeakSet<object>();
  // Upgrades sent and not answered: a stuck upstream held each client, and the proxy's stop, for good.
  const waiting = new Set<ClientRequest>();
  proxy.on("proxyReqWs", (proxyReq: ClientRequest, _req: IncomingMessage, socket: Socket) => {
    waiting.add(proxyReq);
    proxyReq.once("close", () => waiting.delete(proxyReq));
    proxyReq.setTimeout(wsUpgradeTimeoutMs, () =>
      proxyReq.destroy(Object.assign(new Error("the upstream did not answer the upgrade"), { code: UPGRADE_TIMEOUT })),
    );
    // A client that leaves before the answer takes its upstream request with it.
    socket.once("close", () => {
      if (!upgraded.has(socket)) proxyReq.destroy();
    });
    proxyReq.on("upgrade", (_res: IncomingMessage, proxySocket: Socket) => {
      waiting.delete(proxyReq);
      proxySocket.setTimeout(0); // the answer came: the tunnel's own idle timeout governs from here
      // The client may have left while the upstream was answering: http-proxy-3 would still pipe the new upstream
      // socket into the dead one, so close it here instead of relying on that pipe to notice.
      if (socket.destroyed) {
        proxySocket.destroy();
        return;
      }
      upgraded.add(socket);
      // No bytes either way for this long: the tunnel is gone (a peer vanished without a FIN) or abandoned.
      socket.setTimeout(wsIdleTimeoutMs);
      socket.once("timeout", () => socket.destroy());
      // When one side closes, http-proxy-3 only `end()`s the other. A side that was paused at that moment (the pipe
      // waits for a `drain` the dead peer never sends: any frame relayed while a client vanishes) never reads the
      // EOF, so it would never be destroyed, keeping its descriptor and heap for good. Flushing what is queued and
      // then destroying closes both.
      socket.once("close", () => proxySocket.destroySoon());
      proxySocket.once("close", () => socket.destroySoon());
    });
  });
  proxy.on("open", (proxySocket: Socket) => {
    proxySocket.on("error", noop);
  });
  const close = () => {
    for (const r of waiting) r.destroy();
    proxy.close();
  };
  return { proxy, upgraded, close };
}

/** Why an upgrade is refused before any upstream sees it. */
type UpgradeRefusal = 400 | 421 | 503;

function onUpgrade(ctx: Ctx, tunnels: Tunnels, req: FrontRequest, socket: TLSSocket, head: Buffer): void {
  socket.on("error", noop);
  const start = performance.now();
  const subprotocols = fieldValue(req.rawHeaders, "sec-websocket-protocol");
  const built = checkUpgrade(ctx, req);
  const u = typeof built === "number" ? null : ctx.pool.pick();
  if (typeof built === "number" || u === null) {
    const status = typeof built === "number" ? built : 503;
    if (socket.writable) socket.end(upgradeRefusalAnswer(status));
    else socket.destroy();
    answeredHere(ctx, req.peer, req.method, req.url, status, performance.now() - start, subprotocols);
    return;
  }
  openTunnel(ctx, tunnels, req, socket, head, built.headers, u, start, subprotocols);
}

/** The upgrade's outgoing fields, or why it is refused. */
function checkUpgrade(ctx: Ctx, req: FrontRequest): Framed | UpgradeRefusal {
  if (req.method !== "GET" || req.httpVersion !== "1.1" || !plainWebSocketUpgrade(req.rawHeaders)) return 400;
  const built = buildRequestHeaders(req, "https", isTrusted(ctx, req.peer), ctx.maxBody, true, ctx.servesHost);
  if (built === 421) return 421;
  if (typeof built === "number" || built.chunked || built.contentLength > 0) return 400;
  return built;
}

function upgradeRefusalAnswer(status: UpgradeRefusal): string {
  switch (status) {
    case 400:
      return closingAnswer(400, "Bad Request", "WebSocket upgrade refused: bad request");
    case 421:
      return closingAnswer(
        421,
        "Misdirected Request",
        "WebSocket upgrade refused: misdirected request",
        ProxyErrorCode.PROXY_ERR_MISDIRECTED,
      );
    case 503:
      return closingAnswer(
        503,
        "Service Unavailable",
        "WebSocket upgrade refused: service unavailable",
        ProxyErrorCode.PROXY_ERR_NO_UPSTREAM,
      );
    default:
      return assertNever(status, "upgrade refusal status");
  }
}

/** Hands the upgrade to http-proxy-3, towards `u`, with the cleaned fields. */
function openTunnel(
  ctx: Ctx,
  tunnels: Tunnels,
  req: FrontRequest,
  socket: TLSSocket,
  head: Buffer,
  headers: readonly string[],
  u: Upstream,
  start: number,
  subprotocols: string | undefined,
): void {
  // What http-proxy-3 reads of a request (method, target, fields, version, socket); the front has no
  // IncomingMessage to give it. It copies `headers` into the upstream request: give it the cleaned set.
  const proxied = {
    method: req.method,
    url: req.url,
    headers: foldFields(headers),
    httpVersion: req.httpVersion,
    httpVersionMajor: 1,
    httpVersionMinor: req.httpVersion === "1.1" ? 1 : 0,
    socket,
    connection: socket,
  } as unknown as IncomingMessage;
  u.active++;
  socket.once("close", () => {
    u.active--;
    if (ctx.log !== null)
      ctx.log(
        formatAccessLine(
          req.peer,
          req.method,
          req.url,
          tunnels.upgraded.has(socket) ? 101 : 502,
          performance.now() - start,
          u.target.origin,
          subprotocols,
        ),
      );
  });
  tunnels.proxy.ws(
    proxied,
    socket,
    head,
    { target: { host: u.target.hostname, port: u.target.port, protocol: "http:" } },
    (err: Error) => {
      const upgraded = tunnels.upgraded.has(socket);
      const code = (err as NodeJS.ErrnoException).code ?? "";
      // Only a failure to reach the upstream says it is down: after the 101 an error belongs to this one tunnel
      // (the gateway closing a client that sent an oversize frame must not take the upstream out for everyone).
      if (!upgraded && CONNECT_ERRORS.has(code)) ctx.pool.markDown(u, code);
      else if (!upgraded && (CLOSE_ERRORS.has(code) || code === UPGRADE_TIMEOUT)) ctx.pool.suspect(u);
      // Before the 101 the client still speaks HTTP: tell it why. After it, closing the socket is the signal
      // (the client reconnects and resumes on another gateway).
      if (!upgraded && socket.writable) {
        socket.end(
          code === UPGRADE_TIMEOUT
            ? closingAnswer(
                504,
                "Gateway Timeout",
                "the upstream did not answer the WebSocket upgrade in time",
                ProxyErrorCode.PROXY_ERR_UPSTREAM_TIMEOUT,
              )
            : closingAnswer(
                502,
                "Bad Gateway",
                "the upstream did not take the WebSocket",
                "PROXY_ERR_UPSTREAM_CONNECT",
              ),
        );
      } else {
        socket.destroy();
      }
    },
  );
}

/** `[name, value, …]` as one lower-case key per field; repeats fold with ", " (RFC 9110 §5.3), Cookie's with "; ". */
function foldFields(h: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < h.length; i += 2) {
    const k = h[i]!.toLowerCase();
    out[k] = out[k] === undefined ? h[i + 1]! : `${out[k]}${k === "cookie" ? "; " : ", "}${h[i + 1]!}`;
  }
  return out;
}

/** Port 80's parse errors: Node's defaults (431 oversized head, 408 slow one, 400 malformed), always closing. */
function onClientError(ctx: Ctx, err: NodeJS.ErrnoException, socket: Duplex): void {
  socket.on("error", noop);
  if (err.code === "ECONNRESET" || !socket.writable || (socket as Socket & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  // After a parse error the byte stream cannot be trusted to hold request boundaries.
  const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  const text = status === 431 ? "Request Header Fields Too Large" : status === 408 ? "Request Timeout" : "Bad Request";
  socket.end(closingAnswer(status, text, `the request could not be read: ${text.toLowerCase()}`));
  answeredHere(ctx, (socket as Socket).remoteAddress, "-", "-", status, 0);
}
