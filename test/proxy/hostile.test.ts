/**
 * Hostile input on the public endpoint: idle WebSocket tunnels, connection floods, unknown Host names (also on the
 * HTTP→HTTPS redirect) and ambiguous upgrade or framing heads. Raw bytes over real loopback sockets.
 */
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import t from "tap";
import WebSocket from "ws";
import type { RunningProxy } from "../../proxy/index.js";
import { rawTls, startTestProxy, startUpstream, tlsOpen, waitFor } from "../helpers/tls-tools.js";
import type { TestUpstream, Teardowns } from "../helpers/tls-tools.js";

type Rig = { proxy: RunningProxy; up: TestUpstream };

async function setup(t: Teardowns, extra: Record<string, unknown> = {}): Promise<Rig> {
  const up = await startUpstream("gw");
  t.teardown(() => up.close());
  const { proxy } = await startTestProxy(t, [up.url], extra);
  return { proxy, up };
}

const statusOf = (raw: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
/** The status the proxy answers `head` with, sent over a fresh TLS connection. */
const answer = async (port: number, head: string): Promise<number> => statusOf(await rawTls(port, head));
const get = (host: string): string => `GET /echo HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

const WS_HEAD = "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

function openWs(t: Teardowns, port: number, path = "/ws"): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${path}`, { rejectUnauthorized: false });
    t.teardown(() => ws.terminate());
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

/** A plain-HTTP request to the redirect port from `localAddress`, on a connection of its own; its status. */
function plainGetFrom(port: number, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, localAddress, path: "/", headers: { host: "localhost" }, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** A plain-HTTP request to the redirect port with a given Host. */
function plainGet(port: number, host: string): Promise<{ status: number; location: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/login?next=1", headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, location: res.headers.location }));
    });
    req.on("error", reject);
    req.end();
  });
}

t.test("proxy hostile - a WebSocket tunnel with no bytes either way for wsIdleTimeoutMs is closed", async (t) => {
  const idleMs = 400;
  const { proxy, up } = await setup(t, { wsIdleTimeoutMs: idleMs });
  const silent = await openWs(t, proxy.httpsPort);
  const silentOpenedAt = Date.now();
  let closedAt = 0;
  silent.once("close", () => (closedAt = Date.now()));
  // Client → upstream every 100 ms (echoed back), and upstream → client only (a frame every millisecond).
  const chatty = await openWs(t, proxy.httpsPort);
  let echoes = 0;
  chatty.on("message", () => echoes++);
  const pinger = setInterval(() => chatty.send("ping"), 100);
  t.teardown(() => clearInterval(pinger));
  const stream = await openWs(t, proxy.httpsPort, "/ws/stream");
  let frames = 0;
  stream.on("message", () => frames++);
  const streamOpenedAt = Date.now();

  await waitFor(() => closedAt, 10_000, "idle tunnel closed");
  t.ok(closedAt - silentOpenedAt >= idleMs - 50, "not before the idle timeout");
  await waitFor(() => up.wss.clients.size === 2, 5000, "the upstream side of the idle tunnel closed too");
  // Busy tunnels outlive several idle periods.
  const busyLongEnough = (): boolean => Date.now() - streamOpenedAt > 3 * idleMs && echoes >= 12;
  await waitFor(busyLongEnough, 10_000, "three idle periods of traffic");
  t.equal(chatty.readyState, WebSocket.OPEN, "client-driven tunnel still open");
  t.equal(stream.readyState, WebSocket.OPEN, "upstream-driven tunnel still open");
  t.ok(frames > 100, "the stream kept flowing");
  // Once the pings stop, the chatty tunnel is idle too.
  clearInterval(pinger);
  await waitFor(() => chatty.readyState === WebSocket.CLOSED, 10_000, "chatty tunnel closed after its traffic stopped");
});

t.test("proxy hostile - past maxConnections new connections are closed at once; open ones keep working", async (t) => {
  const { proxy } = await setup(t, { maxConnections: 3, keepAliveTimeoutMs: 60_000 });
  const open: TLSSocket[] = [];
  for (let i = 0; i < 3; i++) {
    const s = await tlsOpen(proxy.httpsPort);
    t.teardown(() => s.destroy());
    open.push(s);
  }
  const started = Date.now();
  await t.rejects(tlsOpen(proxy.httpsPort), "the fourth connection is refused");
  t.ok(Date.now() - started < 2000, "promptly, not after a timeout");

  const reply = await new Promise<string>((resolve) => {
    let out = "";
    open[0]!.on("data", (d: Buffer) => {
      out += d.toString("latin1");
      if (out.includes("\r\n\r\n")) resolve(out);
    });
    open[0]!.write("GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n");
  });
  t.equal(statusOf(reply), 200, "an open connection is still served");

  open[1]!.destroy();
  const again = await waitFor(() => tlsOpen(proxy.httpsPort), 5000, "a connection accepted once one closed");
  t.teardown(() => again.destroy());
  t.equal(await answer(proxy.httpsPort, get("localhost")).catch(() => 0), 0, "cap is full again");
  again.destroy();
  t.equal(await waitFor(() => answer(proxy.httpsPort, get("localhost")), 5000, "room again"), 200);
});

/** One HTTPS exchange over a connection from `localAddress` (any 127.x address is this host's loopback). */
async function whoamiFrom(port: number, localAddress: string): Promise<number> {
  const s = await tlsOpen(port, { localAddress });
  const raw = await new Promise<string>((resolve) => {
    let out = "";
    s.on("data", (d: Buffer) => {
      out += d.toString("latin1");
      if (out.includes("\r\n\r\n")) resolve(out);
    });
    s.write("GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  });
  s.destroy();
  return statusOf(raw);
}

t.test(
  "proxy hostile - one client address holds at most maxConnectionsPerIp; other addresses and open ones are served",
  async (t) => {
    const { proxy } = await setup(t, { maxConnections: 100, maxConnectionsPerIp: 4, keepAliveTimeoutMs: 60_000 });
    const held: TLSSocket[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await tlsOpen(proxy.httpsPort, { localAddress: "127.0.0.2" });
      t.teardown(() => s.destroy());
      held.push(s);
    }
    const started = Date.now();
    await t.rejects(tlsOpen(proxy.httpsPort, { localAddress: "127.0.0.2" }), "a fifth from 127.0.0.2 is closed");
    t.ok(Date.now() - started < 2000, "promptly, not after a timeout");
    t.equal(await whoamiFrom(proxy.httpsPort, "127.0.0.3"), 200, "another address is served");
    const text = await proxy.metrics.getSingleMetricAsString("nodeway_proxy_connections_refused_total");
    t.match(text, /reason="per_ip"[^}]*} [1-9]/, "the refusal is counted");
    held[0]!.destroy();
    t.equal(
      await waitFor(() => whoamiFrom(proxy.httpsPort, "127.0.0.2").catch(() => 0), 5000, "room for 127.0.0.2 again"),
      200,
      "once one of its connections closed, the address is served again",
    );
    // The port-80 listener counts on its own: four held from 127.0.0.4, a fifth is closed.
    for (let i = 0; i < 4; i++) {
      const s = await new Promise<Socket>((resolve, reject) => {
        const c = connect({ host: "127.0.0.1", port: proxy.httpPort, localAddress: "127.0.0.4" }, () => resolve(c));
        c.once("error", reject);
      });
      t.teardown(() => s.destroy());
    }
    const plain = await plainGetFrom(proxy.httpPort, "127.0.0.4").catch(() => 0);
    t.equal(plain, 0, "plain HTTP: a fifth connection from one address gets no answer");
    t.equal(await plainGetFrom(proxy.httpPort, "127.0.0.3"), 308, "plain HTTP from another address is answered");
  },
);

t.test("proxy hostile - trusted proxies have no per-address cap", async (t) => {
  const { proxy } = await setup(t, { maxConnectionsPerIp: 2, trustedProxies: ["127.0.0.5"] });
  const held: TLSSocket[] = [];
  for (let i = 0; i < 6; i++) {
    const s = await tlsOpen(proxy.httpsPort, { localAddress: "127.0.0.5" });
    t.teardown(() => s.destroy());
    held.push(s);
  }
  t.equal(await whoamiFrom(proxy.httpsPort, "127.0.0.5"), 200, "a seventh from the trusted balancer is served");
});

t.test("proxy hostile - a request for a Host not served gets 421 and never reaches the upstream", async (t) => {
  const { proxy, up } = await setup(t);
  for (const host of ["evil.example", "localhost.evil.example", "internal:8080", "10.0.0.1"]) {
    const raw = await rawTls(proxy.httpsPort, `GET /echo HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.equal(statusOf(raw), 421, `Host: ${host}`);
    t.match(raw, /PROXY_ERR_MISDIRECTED/);
  }
  for (const host of ["evil.example/x", "user@localhost", "local host", ""]) {
    t.equal(await answer(proxy.httpsPort, get(host)), 400, `malformed Host ${JSON.stringify(host)}`);
  }
  const ws = `GET /ws HTTP/1.1\r\nHost: evil.example\r\n${WS_HEAD}Upgrade: websocket\r\n\r\n`;
  t.equal(await answer(proxy.httpsPort, ws), 421, "WebSocket upgrade for an unknown host");
  t.equal(up.seen.length, 0, "nothing reached the upstream");
  // Served: the configured name (any case, port, trailing dot) and loopback literals, since localhost is served.
  for (const host of ["localhost", "LocalHost:8443", "localhost.", "127.0.0.1:443", "[::1]:8443"]) {
    t.equal(await answer(proxy.httpsPort, get(host)), 200, `Host: ${host}`);
  }
});

t.test("proxy hostile - configured names and *.wildcards are served, loopback only with localhost", async (t) => {
  const { proxy, up } = await setup(t, { domain: ["app.example.test", "*.tenants.example.test"] });
  const status = (host: string): Promise<number> => answer(proxy.httpsPort, get(host));
  t.equal(await status("app.example.test"), 200);
  t.equal(await status("acme.tenants.example.test"), 200);
  t.equal(await status("a.b.tenants.example.test"), 421, "one label only");
  t.equal(await status("example.test"), 421);
  t.equal(await status("127.0.0.1"), 421, "no loopback literal when localhost is not served");
  t.equal(up.seen.length, 2);
});

t.test("proxy hostile - the HTTP redirect never sends a client to a Host the proxy does not serve", async (t) => {
  const { proxy } = await setup(t);
  const evil = await plainGet(proxy.httpPort, "evil.example");
  t.equal(evil.status, 421);
  t.equal(evil.location, undefined, "no Location");
  const good = await plainGet(proxy.httpPort, "LOCALHOST:80");
  t.equal(good.status, 308);
  t.equal(good.location, `https://localhost:${proxy.httpsPort}/login?next=1`);
  const v6 = await plainGet(proxy.httpPort, "[::1]");
  t.equal(v6.location, `https://[::1]:${proxy.httpsPort}/login?next=1`);
});

t.test("proxy hostile - ambiguous upgrades and framing are refused with 400 before the upstream", async (t) => {
  const { proxy, up } = await setup(t);
  const ws = (fields: string): string => `GET /ws HTTP/1.1\r\nHost: localhost\r\n${WS_HEAD}${fields}\r\n`;
  const post = (fields: string, body: string): string =>
    `POST /echo HTTP/1.1\r\nHost: localhost\r\n${fields}\r\n${body}`;
  const cases: Record<string, string> = {
    "two Upgrade fields": ws("Upgrade: websocket\r\nUpgrade: h2c\r\n"),
    "Upgrade: websocket twice": ws("Upgrade: websocket\r\nUpgrade: websocket\r\n"),
    "an Upgrade list": ws("Upgrade: websocket, h2c\r\n"),
    "two WebSocket keys": ws("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nUpgrade: websocket\r\n"),
    "two WebSocket versions": ws("Sec-WebSocket-Version: 8\r\nUpgrade: websocket\r\n"),
    "an HTTP/1.0 upgrade": ws("Upgrade: websocket\r\n").replace("HTTP/1.1", "HTTP/1.0"),
    "an upgrade with a chunked body": `${ws("Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n")}0\r\n\r\n`,
    "two equal Content-Length": post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
    "a Content-Length list": post("Content-Length: 3, 3\r\n", "abc"),
    "TE before CL": post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n"),
    "TE twice": post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
  };
  for (const [name, head] of Object.entries(cases)) t.equal(await answer(proxy.httpsPort, head), 400, name);
  t.same(up.seen, [], "nothing reached the upstream");
  t.equal(await answer(proxy.httpsPort, ws("Upgrade: websocket\r\n")), 101, "a plain upgrade still goes through");
});
