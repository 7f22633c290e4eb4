/**
 * What one client's requests may do to the proxy and to everyone behind it (found by an adversarial probe):
 *   - a request the upstream closes its connection on (uWS does so for heads it will not read) is that request's
 *     502, not the upstream's ejection: one small request took the gateway out for every user;
 *   - `Connection: host` / `Connection: content-length` cannot remove the fields the proxy's checks rest on;
 *   - fields uWS would drop the request for (a `_` in a name, too many fields) are dealt with here;
 *   - a client that pipelines requests and reads no answers is not answered ahead (the proxy's memory grew with it);
 *   - a TCP connection that never starts its TLS handshake is closed within the head timeout, not Node's 120 s.
 */
import { connect } from "node:net";
import t from "tap";
import {
  httpsGet,
  rawTls,
  rawUpstream,
  startTestProxy,
  startUpstream,
  tlsOpen,
  waitFor,
  type TestUpstream,
  type Teardowns,
} from "../helpers/tls-tools.js";

async function proxyFor(t: Teardowns, up: TestUpstream, extra: Record<string, unknown> = {}) {
  return startTestProxy(t, [up.url], { healthIntervalMs: 60_000, ...extra });
}

async function upstream(t: Teardowns): Promise<TestUpstream> {
  const u = await startUpstream("gw");
  t.teardown(() => u.close());
  return u;
}

t.test("one request - an upstream that closes one request's connection stays in service", async (t) => {
  const up = await upstream(t);
  const { proxy, events } = await proxyFor(t, up);
  for (let i = 0; i < 3; i++) t.equal((await httpsGet(proxy.httpsPort, "/drop")).status, 502, "that request: 502");
  for (let i = 0; i < 5; i++) t.equal((await httpsGet(proxy.httpsPort, "/whoami")).status, 200, "the next are served");
  t.notOk(
    events.some((e) => e.type === "upstream.down"),
    "and the upstream was never ejected",
  );
  t.ok(
    proxy.upstreams().every((u) => u.healthy),
    "it is healthy",
  );
});

t.test("one request - Connection cannot remove Host or Content-Length", async (t) => {
  const up = await upstream(t);
  const { proxy } = await proxyFor(t, up);
  const foreign = await rawTls(
    proxy.httpsPort,
    "GET /whoami HTTP/1.1\r\nHost: attacker.example\r\nConnection: host\r\n\r\n",
  );
  t.match(foreign, /^HTTP\/1\.1 421 /, "a Host the proxy does not serve is refused, named in Connection or not");
  const twice = await rawTls(
    proxy.httpsPort,
    "GET /whoami HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\nConnection: host\r\n\r\n",
  );
  t.match(twice, /^HTTP\/1\.1 400 /, "two Hosts: 400");
  const posted = await rawTls(
    proxy.httpsPort,
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
  );
  t.match(posted, /^HTTP\/1\.1 200 /);
  t.equal(up.seen.find((s) => s.url === "/echo")?.body, "hello", "the body reached the upstream whole");
  const bare = await rawTls(proxy.httpsPort, "GET /whoami HTTP/1.0\r\n\r\n");
  t.match(bare, /^HTTP\/1\.1 400 /, "HTTP/1.0 without Host: 400 (the upstream would see its own address)");
});

t.test("one request - fields uWS would drop the request for: '_' names are left out, too many get 431", async (t) => {
  const up = await upstream(t);
  const { proxy, events } = await proxyFor(t, up);
  const r = await httpsGet(proxy.httpsPort, "/fields", { headers: { X_Api_Key: "abc", "x-kept": "1" } });
  t.equal(r.status, 200);
  const seen = up.seen.find((s) => s.url === "/fields")!;
  t.equal(seen.headers.x_api_key, undefined, "a name with '_' is not forwarded (as nginx does)");
  t.equal(seen.headers["x-kept"], "1");
  const many: Record<string, string> = {};
  for (let i = 0; i < 60; i++) many[`x-f${i}`] = "v";
  t.equal((await httpsGet(proxy.httpsPort, "/many", { headers: many })).status, 431, "60 fields: 431");
  t.notOk(
    up.seen.some((s) => s.url === "/many"),
    "never sent on",
  );
  t.equal((await httpsGet(proxy.httpsPort, "/whoami")).status, 200, "and the upstream serves on");
  t.notOk(events.some((e) => e.type === "upstream.down"));
});

t.test("one request - a client that pipelines and reads no answers is not answered ahead", async (t) => {
  const up = await upstream(t);
  const { proxy } = await proxyFor(t, up);
  const s = await tlsOpen(proxy.httpsPort);
  t.teardown(() => s.destroy());
  s.pause();
  // Small answers: each arrives in one read from the upstream, so only the client's socket can hold them back.
  const requests = 3_000;
  s.write("GET /16k HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(requests));
  const bigs = () => up.seen.filter((x) => x.url === "/16k").length;
  await waitFor(() => bigs() >= 1, 5_000, "the first request reaches the upstream");
  // Settled: the count has not moved for half a second (each answer is 1 MiB the client does not take).
  let last = -1;
  let sinceMs = Date.now();
  await waitFor(
    () => {
      if (bigs() !== last) [last, sinceMs] = [bigs(), Date.now()];
      return Date.now() - sinceMs > 500 ? true : null;
    },
    20_000,
    "the upstream stops being asked",
  );
  t.ok(bigs() < requests / 4, `the proxy asked the upstream for ${bigs()} of ${requests} answers while none was read`);
  let bytes = 0;
  let statuses = 0;
  let tail = "";
  s.on("data", (d: Buffer) => {
    bytes += d.length;
    const text = tail + d.toString("latin1");
    statuses += (text.match(/HTTP\/1\.1 200 OK/g) ?? []).length;
    tail = text.slice(-14); // shorter than a status line: none counted twice, none split across reads missed
  });
  s.resume();
  await waitFor(() => (statuses === requests ? true : null), 60_000, "every answer once the client reads");
  t.equal(bigs(), requests, "all of them were answered in the end");
  t.ok(bytes > requests * 16_384, "with their bodies");
});

t.test(
  "one request - a connection that never starts its TLS handshake is closed within the head timeout",
  async (t) => {
    const up = await upstream(t);
    const { proxy } = await proxyFor(t, up, { headersTimeoutMs: 1_000 });
    const started = Date.now();
    const closed = await new Promise<number>((resolve) => {
      const sock = connect(proxy.httpsPort, "127.0.0.1");
      sock.on("error", () => undefined);
      sock.on("close", () => resolve(Date.now() - started));
      setTimeout(() => sock.destroy(), 30_000).unref();
    });
    t.ok(closed < 5_000, `closed after ${closed} ms`);
  },
);

t.test(
  "one request - a request answered before its body came gets no second answer when the body stalls",
  async (t) => {
    const url = await rawUpstream(t, () => "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
    const { proxy } = await startTestProxy(t, [url], { requestTimeoutMs: 1_000 });
    const s = await tlsOpen(proxy.httpsPort);
    t.teardown(() => s.destroy());
    let text = "";
    s.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const closed = new Promise((r) => s.on("close", r));
    s.write("POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789");
    await closed;
    t.equal(
      (text.match(/HTTP\/1\.1 \d{3}/g) ?? []).join(","),
      "HTTP/1.1 404",
      "the upstream's answer, and no 408 after it",
    );
  },
);
