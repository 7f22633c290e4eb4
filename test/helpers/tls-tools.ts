/**
 * Test tools for the proxy: polling with a deadline, free ports, a test CA (node-forge), upstream gateways that
 * speak HTTP, SSE and WebSocket, and raw TLS clients for byte-exact requests.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate, type TLSSocket } from "node:tls";
import forge from "node-forge";
import { WebSocketServer } from "ws";
import { compileProxyConfig, startProxy, type ProxyEvent, type RunningProxy } from "../../proxy/index.js";

/** The part of a tap `Test` the helpers need: somewhere to register cleanup. */
export interface Teardowns {
  teardown(fn: () => unknown): void;
}

/** A proxy under test, its events and access-log lines as they come, and its certificate store. */
export interface TestProxy {
  readonly proxy: RunningProxy;
  readonly events: ProxyEvent[];
  readonly lines: string[];
  readonly certDir: string;
}

/**
 * A proxy with a self-signed certificate (a temp store) on loopback and ephemeral ports, in front of `upstreams`;
 * `extra` overrides any setting. Stopped and removed at teardown.
 */
export async function startTestProxy(
  t: Teardowns,
  upstreams: readonly string[],
  extra: Record<string, unknown> = {},
): Promise<TestProxy> {
  const store = await tempDir("nodeway-proxy-test-");
  t.teardown(store.cleanup);
  const events: ProxyEvent[] = [];
  const lines: string[] = [];
  const proxy = await startProxy(
    compileProxyConfig({
      upstream: [...upstreams],
      tls: "self-signed",
      host: "127.0.0.1",
      httpsPort: 0,
      httpPort: 0,
      certDir: store.dir,
      ...extra,
    }),
    { onEvent: (e) => events.push(e), accessLog: (l) => lines.push(l) },
  );
  t.teardown(() => proxy.stop());
  return { proxy, events, lines, certDir: store.dir };
}

/**
 * A raw upstream (bare sockets, no HTTP server) answering every request head with `answer(path, method)` — for
 * framings and malformed responses Node's server never sends; `/health` gets a plain 200. Bodies are not read.
 * Returns its origin.
 */
export async function rawUpstream(t: Teardowns, answer: (path: string, method: string) => string): Promise<string> {
  const server = createNetServer((s) => {
    s.on("error", () => undefined);
    let buf = "";
    s.on("data", (d) => {
      buf += d.toString("latin1");
      let end: number;
      while ((end = buf.indexOf("\r\n\r\n")) >= 0) {
        const [method, path] = buf.slice(0, end).split(" ") as [string, string];
        buf = buf.slice(end + 4);
        s.write(path === "/health" ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" : answer(path, method));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Polls `fn` until it returns a truthy value; rejects after `timeoutMs` naming what was awaited. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, name: string): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${name}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A port that was free a moment ago (bind 0, read, close). For configs that cannot take port 0 (Pebble's). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return (await freePorts(1, host))[0]!;
}

/** `n` distinct free ports: all are held open while picking, so the kernel cannot hand out one twice. */
export async function freePorts(n: number, host = "127.0.0.1"): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createNetServer());
  await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.listen(0, host, r))));
  const ports = servers.map((srv) => (srv.address() as AddressInfo).port);
  await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  return ports;
}

/** A temp dir removed by the returned cleanup. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------------------------
// A tiny CA

export interface TestCa {
  readonly certPem: string;
  /** Issues a leaf for `names`, optionally with a given validity and key, signed by this CA. */
  issue(
    names: string[],
    opts?: { notBefore?: Date; notAfter?: Date; clientAuth?: boolean },
  ): { certPem: string; keyPem: string; chainPem: string };
}

function forgeKeyPair(): { keyPem: string; publicKey: forge.pki.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const fk = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { keyPem, privateKey: fk, publicKey: forge.pki.setRsaPublicKey(fk.n, fk.e) };
}

/** Makes a CA whose leaves are accepted by Node clients that trust `certPem`. */
export function createTestCa(commonName = "Nodeway Test CA"): TestCa {
  const ca = forgeKeyPair();
  const caCert = forge.pki.createCertificate();
  caCert.publicKey = ca.publicKey;
  caCert.serialNumber = `01${randomBytes(8).toString("hex")}`;
  caCert.validity.notBefore = new Date(Date.now() - 3600_000);
  caCert.validity.notAfter = new Date(Date.now() + 10 * 365 * 86400_000);
  const attrs = [{ name: "commonName", value: commonName }];
  caCert.setSubject(attrs);
  caCert.setIssuer(attrs);
  caCert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  caCert.sign(ca.privateKey, forge.md.sha256.create());
  const caPem = forge.pki.certificateToPem(caCert);
  return {
    certPem: caPem,
    issue(names, opts = {}) {
      const leaf = forgeKeyPair();
      const cert = forge.pki.createCertificate();
      cert.publicKey = leaf.publicKey;
      cert.serialNumber = `02${randomBytes(8).toString("hex")}`;
      cert.validity.notBefore = opts.notBefore ?? new Date(Date.now() - 3600_000);
      cert.validity.notAfter = opts.notAfter ?? new Date(Date.now() + 30 * 86400_000);
      cert.setSubject([{ name: "commonName", value: names[0] ?? "leaf" }]);
      cert.setIssuer(caCert.subject.attributes);
      cert.setExtensions([
        { name: "basicConstraints", cA: false },
        { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
        { name: "extKeyUsage", serverAuth: true, ...(opts.clientAuth ? { clientAuth: true } : {}) },
        {
          name: "subjectAltName",
          altNames: names.map((n) => (/^[\d.]+$|:/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })),
        },
      ]);
      cert.sign(ca.privateKey, forge.md.sha256.create());
      const certPem = forge.pki.certificateToPem(cert);
      return { certPem, keyPem: leaf.keyPem, chainPem: certPem + caPem };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream gateways

/** What a test upstream saw of one request. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly rawHeaders: string[];
  readonly body: string;
}

export interface TestUpstream {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly seen: SeenRequest[];
  /** When false, `/health` answers 503. */
  healthy: boolean;
  /** Open SSE responses, to push events from the test. */
  readonly sse: Set<ServerResponse>;
  /** Open WebSocket connections, server side. */
  readonly wss: WebSocketServer;
  /** Graceful stop. */
  close(): Promise<void>;
  /** Abrupt death: every socket destroyed at once, like a killed process. */
  kill(): Promise<void>;
}

/**
 * An HTTP + WebSocket server standing in for a gateway:
 * `/health` → 200 (503 when `healthy` is false), `/whoami` → its name, `/echo` → JSON of what it saw,
 * `/sse` → an open `text/event-stream` the test writes to via `sse`, `/big` → a 1 MiB body.
 * A WebSocket echoes every message prefixed with the upstream's name.
 */
export async function startUpstream(name: string): Promise<TestUpstream> {
  const seen: SeenRequest[] = [];
  const sse = new Set<ServerResponse>();
  const sockets = new Set<Socket>();
  const state = { healthy: true };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      if (req.url !== "/health")
        seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          body,
        });
      if (req.url === "/health") {
        res.writeHead(state.healthy ? 200 : 503, { "content-type": "text/plain" }).end(state.healthy ? "ok" : "down");
      } else if (req.url === "/whoami") {
        res.writeHead(200, { "content-type": "text/plain" }).end(name);
      } else if (req.url === "/sse") {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.flushHeaders(); // a real gateway sends the head at once; Node would wait for the first write
        sse.add(res);
        res.on("close", () => sse.delete(res));
      } else if (req.url === "/drop") {
        // What uWS does with a request it will not read: the connection closes, unanswered.
        req.socket.destroy();
      } else if (req.url === "/16k") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": 16_384 }).end("x".repeat(16_384));
      } else if (req.url === "/big") {
        res
          .writeHead(200, { "content-type": "application/octet-stream", "content-length": 1 << 20 })
          .end(Buffer.alloc(1 << 20, 97));
      } else if (req.url?.startsWith("/hop")) {
        res
          .writeHead(200, {
            "content-type": "text/plain",
            connection: "keep-alive, X-Secret",
            "x-secret": "internal",
            "keep-alive": "timeout=5",
          })
          .end("hop");
      } else {
        res
          .writeHead(200, { "content-type": "application/json" })
          .end(JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, body }));
      }
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    seen.push({
      method: req.method ?? "",
      url: req.url ?? "",
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: "",
    });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("message", (data) => ws.send(`${name}:${data.toString()}`));
      ws.on("error", () => undefined);
      // `/ws/stream`: a frame every millisecond until the socket closes, like a token stream in full flow.
      if (req.url?.startsWith("/ws/stream")) {
        const tick = setInterval(() => ws.send(`${name}:${Date.now()}`), 1);
        ws.on("close", () => clearInterval(tick));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const up: TestUpstream = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    get healthy() {
      return state.healthy;
    },
    set healthy(v: boolean) {
      state.healthy = v;
    },
    sse,
    wss,
    async close() {
      if (closed) return;
      closed = true;
      for (const c of wss.clients) c.terminate();
      wss.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
    async kill() {
      await up.close();
    },
  };
  return up;
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

export interface SimpleResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** An HTTPS request that accepts any certificate (the TLS tests check certificates separately). */
export function httpsGet(
  port: number,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; servername?: string } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port,
        path,
        method: opts.method ?? "GET",
        headers: opts.headers,
        rejectUnauthorized: false,
        servername: opts.servername ?? "localhost",
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Opens a TLS connection and resolves once the handshake is done (or rejects with the handshake error). */
/** `localAddress` picks the client address (any 127.x is this host's loopback). */
export function tlsOpen(port: number, opts: ConnectionOptions & { localAddress?: string } = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false, ...opts });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** The leaf certificate the server presents for `servername`. */
export async function peerCertificate(
  port: number,
  servername: string,
  opts: ConnectionOptions = {},
): Promise<PeerCertificate> {
  const s = await tlsOpen(port, { servername, ...opts });
  const cert = s.getPeerCertificate();
  s.destroy();
  return cert;
}

/**
 * Writes `payload` as is over TLS and collects what comes back until the server closes, or `idleMs` pass without
 * data once something has arrived, or `firstByteMs` pass with nothing at all (a loaded CI box can be slow to answer,
 * so silence before the first byte is given much longer). For smuggling tests, where the exact bytes matter.
 */
export async function rawTls(port: number, payload: string, idleMs = 300, firstByteMs = 5000): Promise<string> {
  const s = await tlsOpen(port);
  return new Promise((resolve) => {
    let out = "";
    let timer = setTimeout(done, firstByteMs);
    function done(): void {
      clearTimeout(timer);
      s.destroy();
      resolve(out);
    }
    s.on("data", (d: Buffer) => {
      out += d.toString();
      clearTimeout(timer);
      timer = setTimeout(done, idleMs);
    });
    s.on("close", done);
    s.on("error", done);
    s.write(payload);
  });
}
