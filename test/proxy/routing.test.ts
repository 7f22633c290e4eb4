import { request as httpsRequest } from "node:https";
import type { IncomingMessage } from "node:http";
import t from "tap";
import WebSocket from "ws";
import type { ProxyEvent, RunningProxy } from "../../proxy/index.js";
import {
  httpsGet,
  startTestProxy,
  startUpstream,
  waitFor,
  type TestUpstream,
  type Teardowns,
} from "../helpers/tls-tools.js";

async function proxyFor(
  t: Teardowns,
  ups: TestUpstream[],
  extra: Record<string, unknown> = {},
): Promise<{ proxy: RunningProxy; lines: string[]; events: ProxyEvent[] }> {
  return startTestProxy(
    t,
    ups.map((u) => u.url),
    extra,
  );
}

async function twoUpstreams(t: Teardowns): Promise<[TestUpstream, TestUpstream]> {
  const a = await startUpstream("gw-a");
  t.teardown(() => a.close());
  const b = await startUpstream("gw-b");
  t.teardown(() => b.close());
  return [a, b];
}

function openWs(port: number, protocols?: string[]): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, protocols, { rejectUnauthorized: false });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function nextMessage(ws: WebSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once("message", (d) => resolve(d.toString()));
    ws.once("close", () => reject(new Error("closed")));
  });
}

/** Opens a streaming GET and exposes chunks as they arrive. */
function openStream(
  port: number,
  path: string,
): Promise<{ res: IncomingMessage; chunks: string[]; ended: Promise<"complete" | "cut"> }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: "127.0.0.1", port, path, rejectUnauthorized: false, servername: "localhost", agent: false },
      (res) => {
        const chunks: string[] = [];
        res.on("data", (d: Buffer) => chunks.push(d.toString()));
        const ended = new Promise<"complete" | "cut">((r) => {
          res.on("end", () => r(res.complete ? "complete" : "cut"));
          res.on("error", () => r("cut"));
          res.on("close", () => r(res.complete ? "complete" : "cut"));
        });
        resolve({ res, chunks, ended });
      },
    );
    req.on("error", reject);
    req.end();
  });
}

t.test("proxy routing - round-robins HTTP requests over two healthy upstreams", async (t) => {
  const [a, b] = await twoUpstreams(t);
  const { proxy } = await proxyFor(t, [a, b]);
  const names: string[] = [];
  for (let i = 0; i < 6; i++) names.push((await httpsGet(proxy.httpsPort, "/whoami")).body);
  t.equal(names.filter((n) => n === "gw-a").length, 3);
  t.equal(names.filter((n) => n === "gw-b").length, 3);
  t.not(names[0], names[1], "consecutive requests alternate");
});

t.test("proxy routing - proxies a WebSocket upgrade and messages both ways", async (t) => {
  const [a] = await twoUpstreams(t);
  const { proxy } = await proxyFor(t, [a]);
  const ws = await openWs(proxy.httpsPort);
  t.teardown(() => ws.terminate());
  const reply = nextMessage(ws);
  ws.send("hello");
  t.equal(await reply, "gw-a:hello");
  const seen = a.seen.find((s) => s.url === "/ws")!;
  t.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
  t.equal(seen.headers["x-forwarded-proto"], "https");
});

t.test("proxy routing - access log redacts bearer subprotocols and api_key query values", async (t) => {
  const [a] = await twoUpstreams(t);
  const { proxy, lines } = await proxyFor(t, [a]);
  const ws = await openWs(proxy.httpsPort, ["bearer.s3cr3t-token"]);
  ws.close();
  await httpsGet(proxy.httpsPort, "/v1/models?api_key=sk-live-123&x=1", {
    headers: { authorization: "Bearer sk-live-456" },
  });
  await waitFor(() => lines.length >= 2, 5000, "two access-log lines");
  const text = lines.join("\n");
  t.notMatch(text, /s3cr3t|sk-live/);
  t.match(text, /bearer\.\[REDACTED\]/);
  t.match(text, /api_key=\[REDACTED\]&x=1/);
  t.match(text, /"GET \/ws" 101/);
});

t.test("proxy routing - SSE events pass through one by one, not buffered", async (t) => {
  const [a] = await twoUpstreams(t);
  const { proxy } = await proxyFor(t, [a]);
  const s = await openStream(proxy.httpsPort, "/sse");
  t.teardown(() => s.res.destroy());
  t.equal(s.res.headers["content-type"], "text/event-stream", "headers arrive before any event");
  await waitFor(() => a.sse.size === 1, 5000, "upstream SSE response");
  const upstreamRes = [...a.sse][0]!;
  for (let i = 1; i <= 3; i++) {
    upstreamRes.write(`data: ${i}\n\n`);
    // Each event must reach the client before the next one is even produced.
    await waitFor(() => s.chunks.join("").includes(`data: ${i}\n\n`), 2000, `event ${i}`);
  }
  t.pass("three events arrived individually");
});

t.test("proxy routing - an upstream killed mid-stream cuts the client's stream and gets ejected", async (t) => {
  const [a, b] = await twoUpstreams(t);
  const { proxy, events } = await proxyFor(t, [a, b], { healthIntervalMs: 60_000 });
  const s = await openStream(proxy.httpsPort, "/sse");
  await waitFor(() => a.sse.size + b.sse.size === 1, 5000, "upstream SSE response");
  const victim = a.sse.size === 1 ? a : b;
  const survivor = victim === a ? b : a;
  [...victim.sse][0]!.write("data: 1\n\n");
  await waitFor(() => s.chunks.length > 0, 2000, "first event");
  await victim.kill();
  t.equal(await s.ended, "cut", "client sees a truncated stream, not a complete response");
  await waitFor(() => events.some((e) => e.type === "upstream.down" && e.origin === victim.url), 5000, "ejection");
  for (let i = 0; i < 4; i++) t.equal((await httpsGet(proxy.httpsPort, "/whoami")).body, survivor.name);
});

t.test(
  "proxy routing - an in-flight WebSocket is closed when its upstream dies, and a reconnect lands on the other",
  async (t) => {
    const [a, b] = await twoUpstreams(t);
    const { proxy } = await proxyFor(t, [a, b], { healthIntervalMs: 100 });
    const ws = await openWs(proxy.httpsPort);
    const first = nextMessage(ws);
    ws.send("x");
    const who = (await first).split(":")[0];
    const victim = who === "gw-a" ? a : b;
    const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
    await victim.kill();
    t.ok(await closed, "client socket closed");
    await waitFor(
      () => proxy.upstreams().some((u) => u.origin === victim.url && !u.healthy),
      5000,
      "victim marked down",
    );
    const again = await openWs(proxy.httpsPort);
    t.teardown(() => again.terminate());
    const reply = nextMessage(again);
    again.send("y");
    t.equal(await reply, `${victim === a ? "gw-b" : "gw-a"}:y`);
  },
);

t.test("proxy routing - a dead upstream gives a fast 502, then 503 once ejected", async (t) => {
  const a = await startUpstream("gw-a");
  const { proxy } = await proxyFor(t, [a], { healthIntervalMs: 60_000 });
  t.equal((await httpsGet(proxy.httpsPort, "/whoami")).status, 200);
  await a.kill();
  const started = Date.now();
  const res = await httpsGet(proxy.httpsPort, "/whoami");
  t.equal(res.status, 502);
  t.match(JSON.parse(res.body), { code: "PROXY_ERR_UPSTREAM" });
  t.ok(Date.now() - started < 1000, "502 within a second");
  t.equal(res.headers["strict-transport-security"], "max-age=31536000", "HSTS on the proxy's own errors too");
  const next = await httpsGet(proxy.httpsPort, "/whoami");
  t.equal(next.status, 503);
  t.match(JSON.parse(next.body), { code: "PROXY_ERR_NO_UPSTREAM" });
});

t.test("proxy routing - active health checks eject an unhealthy upstream and bring it back", async (t) => {
  const [a, b] = await twoUpstreams(t);
  const { proxy } = await proxyFor(t, [a, b], { healthIntervalMs: 50 });
  a.healthy = false;
  await waitFor(() => proxy.upstreams().find((u) => u.origin === a.url)?.healthy === false, 5000, "gw-a ejected");
  for (let i = 0; i < 4; i++) t.equal((await httpsGet(proxy.httpsPort, "/whoami")).body, "gw-b");
  a.healthy = true;
  await waitFor(() => proxy.upstreams().every((u) => u.healthy), 5000, "gw-a back");
  const names = new Set<string>();
  for (let i = 0; i < 4; i++) names.add((await httpsGet(proxy.httpsPort, "/whoami")).body);
  t.same([...names].sort(), ["gw-a", "gw-b"]);
});

t.test("proxy routing - large bodies stream through intact in both directions", async (t) => {
  const [a] = await twoUpstreams(t);
  const { proxy } = await proxyFor(t, [a]);
  const big = await httpsGet(proxy.httpsPort, "/big");
  t.equal(big.body.length, 1 << 20);
  const payload = "z".repeat(300_000);
  const echo = await httpsGet(proxy.httpsPort, "/echo", {
    method: "POST",
    body: payload,
    headers: { "content-type": "text/plain" },
  });
  t.equal(JSON.parse(echo.body).body.length, payload.length);
});

t.test(
  "proxy routing - a client leaving mid-stream closes the upstream stream and does not eject the upstream",
  async (t) => {
    const [a] = await twoUpstreams(t);
    const { proxy } = await proxyFor(t, [a], { healthIntervalMs: 60_000 });
    const s = await openStream(proxy.httpsPort, "/sse");
    await waitFor(() => a.sse.size === 1, 5000, "upstream SSE response");
    s.res.destroy();
    await waitFor(() => a.sse.size === 0, 5000, "upstream saw the stream close");
    await waitFor(() => proxy.upstreams()[0]!.active === 0, 5000, "in-flight count back to 0");
    t.ok(proxy.upstreams()[0]!.healthy, "still healthy");
    t.equal((await httpsGet(proxy.httpsPort, "/whoami")).body, "gw-a");
  },
);

/**
 * An upstream that answers the first request on each connection and, keeping it alive, closes it without an
 * answer on the second: what a proxy sees when it reuses a kept-alive connection the upstream just closed. A POST
 * and `GET /dies` are closed unanswered on any connection. Health checks are answered and not counted.
 */
async function closesReusedConnections(
  t: Teardowns,
): Promise<{ url: string; connections: () => number; requests: string[] }> {
  const { createServer } = await import("node:http");
  let connections = 0;
  const requests: string[] = [];
  const perSocket = new WeakMap<object, number>();
  const server = createServer((req, res) => {
    if (req.url === "/health") {
      res.writeHead(200, { "content-length": 0, connection: "close" }).end();
      return;
    }
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    if (n === 1) connections++;
    perSocket.set(req.socket, n);
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => {
      if (n >= 2 || req.method === "POST" || req.url === "/dies") req.socket.destroy();
      else res.writeHead(200, { "content-type": "text/plain", "content-length": 2 }).end("ok");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    connections: () => connections,
    requests,
  };
}

t.test(
  "proxy routing - a GET on a kept-alive connection the upstream closed is sent again on a new one; a POST is not",
  async (t) => {
    const up = await closesReusedConnections(t);
    const { proxy } = await proxyFor(t, [{ url: up.url } as TestUpstream], { healthIntervalMs: 60_000 });
    t.equal((await httpsGet(proxy.httpsPort, "/one")).status, 200, "first request, first connection");
    const again = await httpsGet(proxy.httpsPort, "/two");
    t.equal(again.status, 200, "the reused connection failed; the retry on a new one answered");
    t.equal(up.connections(), 2);
    t.same(up.requests, ["GET /one", "GET /two", "GET /two"]);
    t.ok(proxy.upstreams()[0]!.healthy, "a retried reset does not eject the upstream");
    const dies = await httpsGet(proxy.httpsPort, "/dies");
    t.equal(dies.status, 502, "a GET that fails on a new connection too gets 502");
    t.equal(up.requests.filter((r) => r === "GET /dies").length, 2, "sent twice, not more");
    await proxy.checkUpstreams();
    t.ok(proxy.upstreams()[0]!.healthy, "back after a health check");
    const post = await httpsGet(proxy.httpsPort, "/post", {
      method: "POST",
      body: "x=1",
      headers: { "content-type": "text/plain" },
    });
    t.equal(post.status, 502);
    t.match(JSON.parse(post.body), { code: "PROXY_ERR_UPSTREAM" });
    t.same(
      up.requests.filter((r) => r.startsWith("POST")),
      ["POST /post"],
      "the POST reached the upstream once",
    );
  },
);
