/**
 * The proxy's HTTP/1.1 front (proxy/front.ts): what Node's https server used to do for it — keep-alive rules,
 * pipelining, Expect, Host, timeouts, response framing — over raw TLS sockets, byte for byte.
 */
import t from "tap";
import type { RunningProxy } from "../../proxy/index.js";
import {
  rawTls,
  rawUpstream,
  startTestProxy,
  startUpstream,
  tlsOpen,
  waitFor,
  type TestUpstream,
  type Teardowns,
} from "../helpers/tls-tools.js";

async function setup(
  t: Teardowns,
  extra: Record<string, unknown> = {},
  upstreamUrl?: string,
): Promise<{ proxy: RunningProxy; up: TestUpstream | null; lines: string[] }> {
  let up: TestUpstream | null = null;
  if (upstreamUrl === undefined) {
    up = await startUpstream("gw");
    t.teardown(() => up!.close());
  }
  const { proxy, lines } = await startTestProxy(t, [upstreamUrl ?? up!.url], extra);
  return { proxy, up, lines };
}

const statuses = (raw: string): number[] => [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

/** Opens a TLS connection and collects what comes back; `closed` resolves when the proxy ends it. */
async function conversation(
  port: number,
): Promise<{ send: (s: string) => void; text: () => string; closed: Promise<void>; destroy: () => void }> {
  const s = await tlsOpen(port);
  let out = "";
  s.on("data", (d: Buffer) => (out += d.toString("latin1")));
  const closed = new Promise<void>((r) => s.once("close", () => r()));
  s.on("error", () => undefined);
  return { send: (x) => s.write(x), text: () => out, closed, destroy: () => s.destroy() };
}

t.test("proxy front - pipelined requests are answered in order on one connection", async (t) => {
  const { proxy, up } = await setup(t);
  const raw = await rawTls(
    proxy.httpsPort,
    ["/a", "/b", "/c"].map((p) => `GET ${p} HTTP/1.1\r\nHost: localhost\r\n\r\n`).join(""),
  );
  t.same(statuses(raw), [200, 200, 200]);
  const urls = [...raw.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1]);
  t.same(urls, ["/a", "/b", "/c"], "each response follows its request's order");
  t.same(
    up!.seen.map((s) => s.url),
    ["/a", "/b", "/c"],
  );
});

t.test("proxy front - HTTP/1.0 closes after the response unless it asked for keep-alive", async (t) => {
  // A body of known length: one of unknown length ends with the close for an HTTP/1.0 client anyway.
  const { proxy } = await setup(t, {}, await rawUpstream(t, () => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\ngw"));
  const c = await conversation(proxy.httpsPort);
  c.send("GET /whoami HTTP/1.0\r\nHost: localhost\r\n\r\n");
  await c.closed;
  t.match(c.text(), /^HTTP\/1\.1 200 OK\r\n/);
  t.match(c.text(), /\r\nConnection: close\r\n/i, "says it closes");
  t.match(c.text(), /\r\n\r\ngw$/, "with its body");

  const k = await conversation(proxy.httpsPort);
  t.teardown(k.destroy);
  k.send("GET /whoami HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
  await waitFor(() => k.text().endsWith("gw"), 5000, "first answer");
  t.match(k.text(), /\r\nConnection: keep-alive\r\n/i);
  k.send("GET /whoami HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
  await waitFor(() => statuses(k.text()).length === 2, 5000, "a second answer on the same connection");
});

t.test("proxy front - Connection: close ends the connection after its response", async (t) => {
  const { proxy, up } = await setup(t);
  const c = await conversation(proxy.httpsPort);
  c.send(
    "GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: localhost\r\n\r\n",
  );
  await c.closed;
  t.same(statuses(c.text()), [200]);
  t.notOk(
    up!.seen.some((s) => s.url === "/after"),
    "nothing after it is read",
  );
});

t.test(
  "proxy front - no Host on HTTP/1.1, CONNECT, and an unknown Expect are refused before the upstream",
  async (t) => {
    const { proxy, up, lines } = await setup(t);
    t.same(statuses(await rawTls(proxy.httpsPort, "GET /x HTTP/1.1\r\n\r\n")), [400], "no Host");
    t.same(
      statuses(await rawTls(proxy.httpsPort, "CONNECT internal:22 HTTP/1.1\r\nHost: internal:22\r\n\r\n")),
      [501],
      "CONNECT",
    );
    t.same(
      statuses(
        await rawTls(
          proxy.httpsPort,
          "POST /x HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
        ),
      ),
      [417],
      "Expect other than 100-continue",
    );
    t.same(
      statuses(await rawTls(proxy.httpsPort, "GET /x HTTP/2.0\r\nHost: localhost\r\n\r\n")),
      [400],
      "HTTP/2.0 on an HTTP/1 connection",
    );
    t.equal(up!.seen.length, 0, "nothing reached the upstream");
    t.equal(lines.filter((l) => / (400|501|417) /.test(l)).length, 4, "each refusal has its access-log line");
  },
);

t.test("proxy front - more than 32 header fields reach the upstream intact, in order", async (t) => {
  // Node's parser hands fields over in batches of 32 when a head has more.
  const { proxy, up } = await setup(t);
  const fields = Array.from({ length: 40 }, (_, i) => `X-F${i}: v${i}\r\n`).join("");
  const raw = await rawTls(
    proxy.httpsPort,
    `GET /many?q=${"z".repeat(3000)} HTTP/1.1\r\nHost: localhost\r\n${fields}\r\n`,
  );
  t.same(statuses(raw), [200]);
  const seen = up!.seen[0]!;
  t.equal(seen.url, `/many?q=${"z".repeat(3000)}`, "a long target arrives whole");
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).filter((n) => /^X-F\d+$/.test(n));
  t.same(
    names,
    Array.from({ length: 40 }, (_, i) => `X-F${i}`),
  );
  t.equal(seen.headers["x-f39"], "v39");
});

t.test("proxy front - a HEAD answer has no body and the connection goes on", async (t) => {
  const url = await rawUpstream(t, (path, method) =>
    method === "HEAD"
      ? "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
      : `HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`,
  );
  const { proxy } = await setup(t, {}, url);
  const raw = await rawTls(
    proxy.httpsPort,
    "HEAD /h HTTP/1.1\r\nHost: localhost\r\n\r\nGET /next HTTP/1.1\r\nHost: localhost\r\n\r\n",
  );
  t.same(statuses(raw), [200, 200]);
  t.match(raw, /Content-Length: 1234\r\n/, "the upstream's length is kept for HEAD");
  t.match(raw, /\r\n\r\nHTTP\/1\.1 200 OK/, "no body after the HEAD response's head");
  t.match(raw, /\r\n\r\n\/next$/);
});

t.test(
  "proxy front - a body of unknown length is chunked to HTTP/1.1 clients and delimited by the close for HTTP/1.0",
  async (t) => {
    const url = await rawUpstream(
      t,
      () => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    const { proxy } = await setup(t, {}, url);
    const v11 = await rawTls(
      proxy.httpsPort,
      "GET /s HTTP/1.1\r\nHost: localhost\r\n\r\nGET /s HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    t.same(statuses(v11), [200, 200], "the connection carries on after a chunked response");
    t.match(v11, /Transfer-Encoding: chunked\r\n/);
    t.match(v11, /\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nHTTP/);
    const c = await conversation(proxy.httpsPort);
    c.send("GET /s HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
    await c.closed;
    t.notMatch(c.text(), /Transfer-Encoding/i, "no chunked framing for HTTP/1.0");
    t.match(c.text(), /\r\nConnection: close\r\n\r\nhello world$/, "the close ends the body");
  },
);

t.test("proxy front - a slow head and a slow body get 408; an idle kept-alive connection is closed", async (t) => {
  const { proxy, up } = await setup(t, { headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 300 });
  const head = await conversation(proxy.httpsPort);
  head.send("GET /slow HTTP/1.1\r\nHost: loc");
  await head.closed;
  t.same(statuses(head.text()), [408], "head not complete in time");

  const body = await conversation(proxy.httpsPort);
  body.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc");
  await body.closed;
  t.same(statuses(body.text()), [408], "body not complete in time");

  const idle = await conversation(proxy.httpsPort);
  idle.send("GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await waitFor(() => idle.text().endsWith("0\r\n\r\n"), 5000, "the whole (chunked) answer");
  const before = Date.now();
  await idle.closed;
  t.ok(Date.now() - before >= 200, "kept open for about keepAliveTimeoutMs after the response");
  t.notOk(
    up!.seen.some((s) => s.url === "/slow"),
    "the slow head never reached the upstream",
  );
});

t.test(
  "proxy front - a client that leaves mid-request cuts the upstream exchange, and the proxy keeps serving",
  async (t) => {
    const { proxy, up, lines } = await setup(t);
    const c = await conversation(proxy.httpsPort);
    c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc");
    await waitFor(() => proxy.upstreams()[0]!.active === 1, 5000, "request forwarded");
    c.destroy();
    await waitFor(() => proxy.upstreams()[0]!.active === 0, 5000, "exchange cut");
    await waitFor(() => lines.some((l) => / 499 /.test(l)), 5000, "logged as 499");
    t.same(
      statuses(await rawTls(proxy.httpsPort, "GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")),
      [200],
    );
    t.notOk(
      up!.seen.some((s) => s.url === "/echo"),
      "the half-sent body never completed at the upstream",
    );
  },
);

t.test(
  "proxy front - a connection whose answer came before its body ended is not closed as idle while the body arrives",
  async (t) => {
    // A dead upstream answers 502 at once; the client is still sending the body, slower than keepAliveTimeoutMs.
    const { freePort } = await import("../helpers/tls-tools.js");
    const { proxy } = await setup(
      t,
      { keepAliveTimeoutMs: 150, healthIntervalMs: 60_000 },
      `http://127.0.0.1:${await freePort()}`,
    );
    const c = await conversation(proxy.httpsPort);
    t.teardown(c.destroy);
    c.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\na");
    await waitFor(() => statuses(c.text()).length === 1, 5000, "the early answer");
    for (const piece of ["b", "c", "d", "e", "f"]) {
      await new Promise((r) => setTimeout(r, 100));
      c.send(piece);
    }
    c.send("GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await waitFor(() => statuses(c.text()).length === 2, 5000, "an answer to the next request on the same connection");
    t.match(c.text(), /^HTTP\/1\.1 50[23] /, "the early answer says the upstream is down");
  },
);

t.test("proxy front - a response forwarded without Date gets one, and so do the proxy's own answers", async (t) => {
  const url = await rawUpstream(t, (path) =>
    path === "/dated"
      ? "HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 1\r\n\r\nd"
      : "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nu",
  );
  const { proxy } = await setup(t, {}, url);
  const raw = await rawTls(
    proxy.httpsPort,
    "GET /undated HTTP/1.1\r\nHost: localhost\r\n\r\nGET /dated HTTP/1.1\r\nHost: localhost\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
  );
  const heads = raw.split(/\r\n\r\n/).filter((h) => h.includes("HTTP/1.1 "));
  t.equal(heads.length, 3, "three answers");
  const dates = heads.map((h) => [...h.matchAll(/\r\nDate: ([^\r]+)/gi)].map((m) => m[1]));
  t.equal(dates[0]!.length, 1, "the undated response has one Date");
  t.ok(Math.abs(Date.parse(dates[0]![0]!) - Date.now()) < 5_000, "and it is now");
  t.same(dates[1], ["Tue, 01 Dec 2026 00:00:00 GMT"], "the upstream's Date is kept, not doubled");
  t.match(heads[2]!, /HTTP\/1\.1 400 /);
  t.equal(dates[2]!.length, 1, "the proxy's own 400 has a Date");
});
