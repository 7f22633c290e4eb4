/**
 * The one guard every HTTP route passes: nothing thrown, synchronously or not, leaves a uWS callback (an exception
 * there ends the process). Before a handler runs, a request passes the Host check (DNS rebinding), the Origin
 * check for requests that change things (cross-site pages), then the API token.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from "uWebSockets.js";
import { ErrorCode } from "../../protocol/index.js";
import { bearerToken, peerOf, refusalBody, type AuthResult, type RefusalLog, type TokenCheck } from "../auth.js";
import { BrowserPolicy } from "../browser.js";
import type { GatewayConfig } from "../config.js";
import { GatewayError, badRequest, log, logInternal, toWireError } from "../errors.js";
import { Reply, readReq, type Req } from "../http.js";
import type { Handler } from "./context.js";
import { statusClass, type GatewayMetrics } from "./metrics.js";

export type Method = "get" | "post" | "put" | "del";

export interface RouteOptions {
  /** Answers without a token (`/health`). */
  open?: boolean;
  /** What path parameters must match (resource ids unless given). */
  grammar?: RegExp;
}

/** A HEAD route's handler: it answers with a status and headers only. */
export type HeadHandler = (req: Req, reply: Reply) => Promise<void>;

type Refusal = Extract<AuthResult, { ok: false }>;

/** A registered route as its guard sees it: `label` names it in the duration metric ("GET /api/jobs/:id"). */
interface RouteSpec {
  paramCount: number;
  label: string;
  opts: RouteOptions;
}

/** A GET route, kept until the fallbacks give it its HEAD. */
interface GetRoute {
  pattern: string;
  handler: Handler;
  spec: RouteSpec;
}

const paramCountOf = (pattern: string): number => (pattern.match(/:/g) ?? []).length;

const WRONG_HOST = "this gateway does not answer for that Host (see allowedHosts)";
const WRONG_ORIGIN = "requests from this Origin are not allowed (see allowedOrigins)";
const SEND_BEARER = "send Authorization: Bearer <token>";

export class Router {
  /** Event streams opened with a token, while they run: a reload closes those whose token it revoked. */
  readonly tokenStreams = new Set<Reply>();
  private readonly browser: BrowserPolicy;
  /** GET routes whose HEAD is the GET answered without its body (all but those given a HEAD of their own). */
  private readonly getRoutes: GetRoute[] = [];
  private readonly ownHeads = new Set<string>();

  constructor(
    private readonly app: TemplatedApp,
    private readonly config: Readonly<GatewayConfig>,
    private readonly auth: TokenCheck,
    private readonly refusals: RefusalLog,
    private readonly metrics: GatewayMetrics,
  ) {
    this.browser = new BrowserPolicy(config, () => auth.enabled);
  }

  /** Registers `handler` for `method pattern` behind the guard. */
  route(method: Method, pattern: string, handler: Handler, opts: RouteOptions = {}): void {
    const label = `${method === "del" ? "DELETE" : method.toUpperCase()} ${pattern}`;
    this.register(method, pattern, handler, { paramCount: paramCountOf(pattern), label, opts });
  }

  /** A collection's route with and without its trailing slash (NodeTool's clients send both). */
  collection(method: "get" | "post", pattern: string, handler: Handler): void {
    const spec: RouteSpec = { paramCount: 0, label: `${method.toUpperCase()} ${pattern}`, opts: {} };
    this.register(method, pattern, handler, spec);
    this.register(method, `${pattern}/`, handler, spec);
  }

  private register(method: Method, pattern: string, handler: Handler, spec: RouteSpec): void {
    const router = this;
    this.app[method](pattern, function guardedRoute(res: HttpResponse, req: HttpRequest) {
      router.serve(res, req, handler, spec, false);
    });
    if (method === "get") this.getRoutes.push({ pattern, handler, spec });
  }

  /** HEAD on each GET route: the same guard and handler, its answer's status and headers without the body. */
  private registerGetHeads(): void {
    const router = this;
    for (const { pattern, handler, spec } of this.getRoutes) {
      if (this.ownHeads.has(pattern)) continue;
      const headSpec: RouteSpec = { ...spec, label: spec.label.replace(/^GET /, "HEAD ") };
      this.app.head(pattern, function guardedGetHead(res: HttpResponse, req: HttpRequest) {
        router.serve(res, req, handler, headSpec, true);
      });
    }
  }

  private serve(res: HttpResponse, req: HttpRequest, handler: Handler, spec: RouteSpec, headOnly: boolean): void {
    const { paramCount, label, opts } = spec;
    this.metrics.requests.inc();
    let reply: Reply | null = null;
    try {
      reply = this.timedReply(res, label);
      reply.headOnly = headOnly;
      const r = readReq(req, paramCount, opts.grammar);
      reply.requestContentType = r.headers["content-type"];
      if (this.config.accessLog) log.info(`${r.method} ${r.url}`); // the path only: a query may carry a token
      const cors = this.browser.corsHeaders(r.headers["origin"]);
      if (cors) reply.extraHeaders = cors;
      if (r.badFraming !== undefined) {
        reply.json(400, { code: ErrorCode.GW_ERR_BAD_REQUEST, message: r.badFraming }, { connection: "close" });
        return;
      }
      if (compressedBody(r, reply)) return;
      if (!this.admit(r, reply, opts.open === true)) return;
      if (r.badParam !== undefined) throw badRequest(`malformed id in the path: ${JSON.stringify(r.badParam)}`);
      // Called in this tick (a body must be asked for before the handler returns).
      const answering = reply;
      handler(r, answering, res).catch((err: unknown) => answering.error(err));
    } catch (err) {
      if (reply) reply.error(err);
      else res.writeStatus("500 Internal Server Error").end();
    }
  }

  /**
   * Registers a HEAD route behind the same checks (Host, token unless `open`). A HEAD answer has no body: a
   * refusal or an error is its status alone (a body would desynchronise a keep-alive connection through a proxy).
   */
  head(pattern: string, handler: HeadHandler, opts: RouteOptions = {}): void {
    const spec: RouteSpec = { paramCount: paramCountOf(pattern), label: `HEAD ${pattern}`, opts };
    this.ownHeads.add(pattern);
    const router = this;
    this.app.head(pattern, function guardedHead(res: HttpResponse, req: HttpRequest) {
      router.serveHead(res, req, handler, spec);
    });
  }

  private serveHead(res: HttpResponse, req: HttpRequest, handler: HeadHandler, spec: RouteSpec): void {
    const { paramCount, label, opts } = spec;
    this.metrics.requests.inc();
    let reply: Reply | null = null;
    const fail = (err: unknown) => {
      const { status } = toWireError(err);
      if (status === 500) logInternal(err, "internal error");
      if (reply) reply.empty(status);
      else res.writeStatus("500 Internal Server Error").endWithoutBody(0);
    };
    try {
      reply = this.timedReply(res, label);
      const r = readReq(req, paramCount, opts.grammar);
      if (!this.browser.hostAllowed(r.headers["host"])) return reply.empty(421);
      if (r.badParam !== undefined) return reply.empty(400);
      if (this.auth.enabled && opts.open !== true) {
        const a = this.httpAuth(r.headers["authorization"], r.query.has("api_key"));
        if (!a.ok) {
          this.refusals.refused(`HEAD ${r.url}`, peerOf(res), a);
          return reply.empty(401, { "www-authenticate": a.header });
        }
      }
      handler(r, reply).catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  /** The routes that answer what no other route does: other HEADs, CORS preflights, and 404s. Register last. */
  fallbacks(): void {
    const router = this;
    this.registerGetHeads();
    this.app.head("/*", function headNoRoute(res: HttpResponse, req: HttpRequest) {
      guardedFallback(res, () => router.noRoute(res, req, true));
    });
    this.app.options("/*", function corsPreflight(res: HttpResponse, req: HttpRequest) {
      guardedFallback(res, () => router.preflight(res, req));
    });
    this.app.any("/*", function noRoute(res: HttpResponse, req: HttpRequest) {
      guardedFallback(res, () => router.noRoute(res, req));
    });
  }

  private preflight(res: HttpResponse, req: HttpRequest): void {
    const reply = new Reply(res);
    const cors = this.browser.corsHeaders(req.getHeader("origin"));
    if (!cors || !this.browser.hostAllowed(req.getHeader("host"))) {
      const why = "no CORS for this origin: the gateway answers cross-origin requests only from its corsOrigins";
      return reply.error(new GatewayError(ErrorCode.GW_ERR_FORBIDDEN, why));
    }
    reply.empty(204, {
      ...cors,
      "access-control-allow-methods": "GET, POST, PUT, DELETE",
      "access-control-allow-headers": "authorization, content-type, idempotency-key, last-event-id",
      "access-control-max-age": "600",
    });
  }

  private noRoute(res: HttpResponse, req: HttpRequest, headOnly = false): void {
    const reply = new Reply(res);
    reply.headOnly = headOnly;
    const method = req.getMethod().toUpperCase();
    // The path is quoted back only as far as it is printable: it is the client's own text.
    const url = req
      .getUrl()
      .slice(0, 200)
      .replace(/[^\x20-\x7e]/g, "?");
    if (!this.browser.hostAllowed(req.getHeader("host"))) {
      return reply.json(421, { code: ErrorCode.GW_ERR_FORBIDDEN, message: WRONG_HOST });
    }
    // uWS hands `/ws` here when the request is no upgrade it accepts (no Upgrade header, a key not 24 characters).
    if (method === "GET" && url === "/ws") return this.notAnUpgrade(reply, req);
    // Without a token, no route is confirmed or denied.
    if (this.auth.enabled) {
      const a = this.httpAuth(req.getHeader("authorization"), new URLSearchParams(req.getQuery() ?? "").has("api_key"));
      if (!a.ok) return this.refuse(reply, a, `${method} ${url}`);
    }
    reply.error(new GatewayError(ErrorCode.GW_ERR_NOT_FOUND, `no route for ${method} ${url}`));
  }

  private notAnUpgrade(reply: Reply, req: HttpRequest): void {
    if (req.getHeader("upgrade").toLowerCase() !== "websocket") {
      const message = "/ws speaks WebSocket only: send Upgrade: websocket (RFC 6455)";
      return reply.json(426, { code: ErrorCode.GW_ERR_BAD_REQUEST, message }, { upgrade: "websocket" });
    }
    reply.error(new GatewayError(ErrorCode.GW_ERR_BAD_REQUEST, "Sec-WebSocket-Key must be 16 bytes in base64"));
  }

  /** A reply that reports the time to its status line under `label`. */
  private timedReply(res: HttpResponse, label: string): Reply {
    const reply = new Reply(res);
    const startedMs = performance.now();
    const seconds = this.metrics.requestSeconds;
    reply.onStatus((status) => {
      seconds.observe({ route: label, status_class: statusClass(status) }, (performance.now() - startedMs) / 1000);
    });
    return reply;
  }

  /** Whether the request may reach its handler; if not, the refusal is sent. */
  private admit(r: Req, reply: Reply, open: boolean): boolean {
    if (!this.browser.hostAllowed(r.headers["host"])) {
      reply.json(421, { code: ErrorCode.GW_ERR_FORBIDDEN, message: WRONG_HOST });
      return false;
    }
    const changes = r.method !== "GET" && r.method !== "HEAD";
    if (changes && !this.browser.originAllowed(r.headers["origin"], r.headers["host"])) {
      reply.json(403, { code: ErrorCode.GW_ERR_FORBIDDEN, message: WRONG_ORIGIN });
      return false;
    }
    if (this.auth.enabled && !open) {
      const a = this.httpAuth(r.headers["authorization"], r.query.has("api_key"));
      if (!a.ok) {
        this.refuse(reply, a, `${r.method} ${r.url}`);
        return false;
      }
      reply.authenticated(a.digest, this.tokenStreams);
    }
    return true;
  }

  /** `?api_key=` is for the WebSocket upgrade only (a URL ends up in logs and histories); the hint says so. */
  private httpAuth(authorization: string | undefined, hasQueryKey: boolean): AuthResult {
    const hint = hasQueryKey ? `?api_key= is accepted on the /ws upgrade only; ${SEND_BEARER}` : SEND_BEARER;
    return this.auth.check(bearerToken(authorization), hint);
  }

  private refuse(reply: Reply, a: Refusal, what: string): void {
    this.refusals.refused(what, peerOf(reply.res), a);
    reply.json(401, refusalBody(a), { "www-authenticate": a.header });
  }
}

/** Runs a fallback route's answer; what it throws is logged and answered 500, never left in uWS. */
function guardedFallback(res: HttpResponse, answer: () => void): void {
  try {
    answer();
  } catch (err) {
    logInternal(err, "internal error");
    try {
      res.writeStatus("500 Internal Server Error").end();
    } catch {
      /* already answered or aborted */
    }
  }
}

/**
 * Refuses a compressed request body (415): bodies are read as sent, so gzip was parsed as JSON ("Unexpected token")
 * and an upload was stored compressed and served as if it were not. The body is not read: the connection closes.
 */
function compressedBody(r: Req, reply: Reply): boolean {
  const encoding = r.headers["content-encoding"];
  if (encoding === undefined || encoding.trim().toLowerCase() === "identity") return false;
  const error = {
    code: ErrorCode.GW_ERR_UNSUPPORTED_MEDIA,
    message: `Content-Encoding "${encoding.slice(0, 32)}" is not supported: send the body uncompressed`,
  };
  reply.json(415, { error, ...error }, { connection: "close" });
  return true;
}
