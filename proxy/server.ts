/**
 * `startProxy`: wires the certificate manager, the upstream pool and the forwarder to two listeners.
 *
 * - HTTPS (`httpsPort`): a `node:tls` server (TLS 1.2+/intermediate ciphers, SNI per host) whose sockets the HTTP
 *   front of `front.ts` reads: HSTS, HTTP and WebSocket proxying.
 * - HTTP (`httpPort`): Node's HTTP server, not a hot path: answers `/.well-known/acme-challenge/<token>` and
 *   redirects everything else to HTTPS with 308 (method and body preserved, RFC 9110 §15.4.9), like Caddy's
 *   automatic redirects, for served hosts only (421 otherwise: an unknown Host is never echoed into `Location`).
 *
 * Each listener accepts at most `maxConnections` sockets (TLS handshakes and tunnels included); past it Node closes
 * new ones at accept, before any JavaScript object exists for them, and open ones are untouched. One client address
 * holds at most `maxConnectionsPerIp` of them (trusted proxies excepted); past it a new one is closed at once.
 *
 * The process must never die because of a peer: every socket gets an error listener before anything else can
 * happen to it; parse errors are answered by the front on HTTPS and by `onClientError` on HTTP.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import { createLogger, type Registry } from "../obs/index.js";
import { stdoutAccessLog } from "./access-log.js";
import { CertManager, type CertificateInfo } from "./cert-manager.js";
import { TLS_POSTURE } from "./certs.js";
import { type ProxyConfig, trustedProxyMatcher } from "./config.js";
import { assertNever, closingAnswer, ProxyError, ProxyErrorCode } from "./errors.js";
import type { ProxyEvent, ProxyHooks } from "./events.js";
import { createForwarder, type Forwarder } from "./forward.js";
import { Front } from "./front.js";
import { hostAuthority, hostName } from "./hosts.js";
import { ProxyMetrics } from "./metrics.js";
import { PeerLimit } from "./peer-limit.js";
import { UpstreamPool, type UpstreamHealth } from "./upstreams.js";

/** A started proxy. `stop()` is the only way to end it; it is idempotent. */
export interface RunningProxy {
  /** The bound HTTPS port (useful when `httpsPort` was 0). */
  readonly httpsPort: number;
  /** The bound HTTP (redirect + ACME challenge) port. */
  readonly httpPort: number;
  /** Closes both listeners, every client and upstream socket, and stops timers. */
  stop(): Promise<void>;
  /** Runs a certificate maintenance pass now (renewals due, changed operator files) and waits for it. */
  checkCertificates(): Promise<void>;
  /** Installed certificates. */
  certificates(): CertificateInfo[];
  /** Runs one round of active health checks now and waits for it. */
  checkUpstreams(): Promise<void>;
  /** Upstream health as the router sees it. */
  upstreams(): UpstreamHealth[];
  /** The proxy's metrics (request latency by upstream and status class, refusals, upstream health). */
  readonly metrics: Registry;
}

type LogLevel = "info" | "warn" | "error";

/** How an event reads in the log: its level and one sentence. */
function describeEvent(e: ProxyEvent): { level: LogLevel; msg: string } {
  switch (e.type) {
    case "proxy.listening":
      return { level: "info", msg: `listening on https port ${e.httpsPort}, http port ${e.httpPort}` };
    case "cert.installed":
      return { level: "info", msg: `certificate for ${e.name} installed (${e.source}), valid until ${e.notAfter}` };
    case "cert.renew_failed":
      return {
        level: "error",
        msg: `certificate for ${e.name} not obtained: ${e.message}; retry in ${Math.round(e.retryInMs / 1000)} s`,
      };
    case "cert.rejected":
      return { level: "warn", msg: `certificate for ${e.name} rejected: ${e.message}` };
    case "upstream.down":
      return { level: "warn", msg: `upstream ${e.origin} down: ${e.reason}` };
    case "upstream.up":
      return { level: "info", msg: `upstream ${e.origin} up` };
    case "proxy.error":
      return { level: "error", msg: `${e.where}: ${e.message}` };
    default:
      return assertNever(e, "proxy event");
  }
}

/** The default `onEvent`: each event as one line of the proxy's log, its fields kept as data. */
function logEvents(): (e: ProxyEvent) => void {
  const log = createLogger("proxy");
  return (e) => {
    const { level, msg } = describeEvent(e);
    log[level](e, msg);
  };
}

/**
 * Starts the proxy described by a compiled config (see `compileProxyConfig`).
 * Resolves once both ports listen and any self-signed or operator certificate is loaded; ACME certificates are
 * obtained in the background (watch `certificates()` or the `cert.installed` event).
 * @throws CertificateError for unusable operator files; ProxyError `PROXY_ERR_LISTEN` when a port cannot be bound
 */
export async function startProxy(config: Readonly<ProxyConfig>, hooks: ProxyHooks = {}): Promise<RunningProxy> {
  const emit = hooks.onEvent ?? logEvents();
  const sink = config.accessLog
    ? hooks.accessLog !== undefined
      ? { write: hooks.accessLog, flush: () => undefined }
      : stdoutAccessLog()
    : null;

  const certs = new CertManager(config, hooks.now ?? Date.now, emit);
  await certs.start();

  const pool = new UpstreamPool(config.upstream, { path: config.healthPath, timeoutMs: config.healthTimeoutMs, emit });
  const metrics = new ProxyMetrics(pool.list, hooks.metrics);
  const isTrusted = trustedProxyMatcher(config.trustedProxies);
  const forwarder = createForwarder({
    config,
    pool,
    isTrusted,
    log: sink !== null ? sink.write : null,
    emit,
    servesHost: (name) => certs.servesHost(name),
    metrics,
  });

  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on("error", noop);
    socket.once("close", () => sockets.delete(socket));
  };
  /** Each listener's accept: tracked, then closed at once when its address is at `maxConnectionsPerIp`. */
  const accepting = (): ((socket: Socket) => void) => {
    const limit = new PeerLimit(config.maxConnectionsPerIp, isTrusted);
    return (socket) => {
      track(socket);
      if (limit.admit(socket)) return;
      metrics.connectionRefused("per_ip");
      socket.destroy();
    };
  };
  const { https, front } = httpsListener(config, certs, forwarder, track, accepting());
  let boundHttpsPort = 0;
  const http = httpListener(config, certs, forwarder, accepting(), () => boundHttpsPort);
  try {
    boundHttpsPort = await listen(https, config.host, config.httpsPort);
    await listen(http, config.host, config.httpPort);
  } catch (err) {
    certs.stop();
    https.close();
    http.close();
    front.close();
    forwarder.close();
    throw err;
  }
  const boundHttpPort = (http.address() as AddressInfo).port;
  pool.start(config.healthIntervalMs);
  emit({ type: "proxy.listening", httpsPort: boundHttpsPort, httpPort: boundHttpPort });

  let stopping: Promise<void> | null = null;
  return {
    httpsPort: boundHttpsPort,
    httpPort: boundHttpPort,
    stop(): Promise<void> {
      stopping ??= (async () => {
        certs.stop();
        pool.stop();
        const closed = Promise.all([closeServer(https), closeServer(http)]);
        for (const s of sockets) s.destroy();
        front.close();
        forwarder.close();
        await closed;
        sink?.flush();
      })();
      return stopping;
    },
    checkCertificates: () => certs.check(),
    certificates: () => certs.certificates(),
    checkUpstreams: () => pool.checkNow(),
    upstreams: () => pool.snapshot(),
    metrics: metrics.registry,
  };
}

/** HTTPS: a TLS server with our own HTTP/1.1 front on each socket (front.ts: why not `node:https`). */
/** The longest a TLS handshake may take (a real client's takes a few round trips). */
const TLS_HANDSHAKE_MAX_MS = 10_000;

function httpsListener(
  config: Readonly<ProxyConfig>,
  certs: CertManager,
  forwarder: Forwarder,
  track: (s: Socket) => void,
  accept: (s: Socket) => void,
): { https: TlsServer; front: Front } {
  const front = new Front(
    {
      maxHeaderBytes: config.maxHeaderBytes,
      headersTimeoutMs: config.headersTimeoutMs,
      requestTimeoutMs: config.requestTimeoutMs,
      keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    },
    { onRequest: forwarder.onRequest, onUpgrade: forwarder.onUpgrade, onRefused: forwarder.onRefused },
  );
  const initial = certs.defaultCert();
  const https: TlsServer = createTlsServer({
    ...TLS_POSTURE,
    cert: initial.certPem,
    key: initial.keyPem,
    SNICallback: certs.sniCallback,
    ALPNProtocols: ["http/1.1"],
    // Node's default is 120 s: a hundred silent sockets held a --max-connections 100 front for two minutes.
    handshakeTimeout: Math.min(config.headersTimeoutMs, TLS_HANDSHAKE_MAX_MS),
  });
  certs.onDefaultChange = (cert) => https.setSecureContext({ ...TLS_POSTURE, cert: cert.certPem, key: cert.keyPem });
  https.maxConnections = config.maxConnections;
  https.on("connection", accept);
  https.on("secureConnection", (socket: TLSSocket) => {
    track(socket);
    front.accept(socket);
  });
  // Failed handshakes (TLS 1.0 clients, scanners, wrong SNI) are normal traffic, not errors of ours.
  https.on("tlsClientError", (_err: Error, socket: Socket) => socket.destroy());
  return { https, front };
}

/** Port 80: Node's HTTP server (not a hot path) for ACME challenges and the redirect. */
function httpListener(
  config: Readonly<ProxyConfig>,
  certs: CertManager,
  forwarder: Forwarder,
  accept: (s: Socket) => void,
  httpsPort: () => number,
): HttpServer {
  const http: HttpServer = createHttpServer({ maxHeaderSize: config.maxHeaderBytes, noDelay: true }, (req, res) => {
    void handlePlainHttp(req, res, config, certs, httpsPort);
  });
  http.maxConnections = config.maxConnections;
  http.on("connection", accept);
  http.on("clientError", forwarder.onClientError);
  // An upgrade on port 80 (ws://) gets no tunnel: clients must use wss:// like everything else.
  http.on("upgrade", (_req: IncomingMessage, socket: Socket) => {
    socket.on("error", noop);
    socket.end(closingAnswer(400, "Bad Request", "WebSockets are served on https (wss://) only"));
  });
  return http;
}

/** Port 80: ACME challenges, then the HTTPS redirect. */
async function handlePlainHttp(
  req: IncomingMessage,
  res: ServerResponse,
  config: Readonly<ProxyConfig>,
  certs: CertManager,
  httpsPort: () => number,
): Promise<void> {
  req.on("error", noop);
  res.on("error", noop);
  const url = req.url ?? "/";
  const prefix = "/.well-known/acme-challenge/";
  if (url.startsWith(prefix)) {
    let answer: string | null = null;
    try {
      answer = await certs.challengeResponse(url.slice(prefix.length));
    } catch {
      answer = null;
    }
    if (answer === null) {
      res.writeHead(404, { "content-type": "text/plain", "content-length": 10 }).end("not found\n");
    } else {
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(answer) }).end(answer);
    }
    return;
  }
  // Only a plain host this proxy serves goes into Location: no header injection, no userinfo tricks, no open
  // redirect to a name an attacker put in Host.
  const name = hostName(req.headers.host ?? "");
  const status = name === null ? 400 : !certs.servesHost(name) ? 421 : !config.redirectHttp ? 404 : 0;
  if (status !== 0) {
    res.writeHead(status, { "content-type": "text/plain", "content-length": 0, connection: "close" }).end();
    return;
  }
  const port = httpsPort();
  const authority = `${hostAuthority(name!)}${port === 443 ? "" : `:${port}`}`;
  const location = `https://${authority}${url.startsWith("/") ? url : `/${url}`}`;
  res.writeHead(308, { location, "content-length": 0 }).end();
  req.resume();
}

function listen(server: NetServer, host: string | null, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new ProxyError(
          ProxyErrorCode.PROXY_ERR_LISTEN,
          `cannot listen on ${host ?? "*"}:${port}: ${err.code ?? err.message}`,
          { cause: err },
        ),
      );
    };
    server.once("error", onError);
    const done = (): void => {
      server.off("error", onError);
      // After start-up a server error must not crash the process (there is nothing useful to throw it to).
      server.on("error", noop);
      resolve((server.address() as AddressInfo).port);
    };
    if (host === null) server.listen(port, done);
    else server.listen(port, host, done);
  });
}

/** Stops listening; the caller destroys the connections (tracked: a TLS server has no `closeAllConnections`). */
function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    if ("closeAllConnections" in server) (server as HttpServer).closeAllConnections();
  });
}

const noop = (): void => undefined;
