/**
 * Security properties of the proxy (reliability S10): smuggling, hop-by-hop headers, forwarding headers, limits.
 * Requests are written byte for byte over raw TLS sockets so nothing in a client library normalises them first.
 */
import t from "tap";
import { compileProxyConfig, startProxy, type RunningProxy } from "../../proxy/index.js";
import {
  httpsGet,
  rawTls,
  rawUpstream,
  startTestProxy,
  startUpstream,
  tempDir,
  type TestUpstream,
  type Teardowns,
} from "../helpers/tls-tools.js";

async function setup(
  t: Teardowns,
  extra: Record<string, unknown> = {},
): Promise<{ proxy: RunningProxy; up: TestUpstream; lines: string[] }> {
  const up = await startUpstream("gw");
  t.teardown(() => up.close());
  const { proxy, lines } = await startTestProxy(t, [up.url], extra);
  return { proxy, up, lines };
}

const statusOf = (raw: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);

t.test(
  "proxy security - rejects a request with both Content-Length and Transfer-Encoding (CL.TE) with 400",
  async (t) => {
    const { proxy, up } = await setup(t);
    const raw = await rawTls(
      proxy.httpsPort,
      "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    t.equal(statusOf(raw), 400);
    t.equal(up.seen.length, 0, "nothing reached the upstream");
  },
);

t.test("proxy security - rejects Transfer-Encoding other than chunked, and TE.CL variants, with 400", async (t) => {
  const { proxy, up } = await setup(t);
  for (const te of ["gzip", "chunked, identity", "identity"]) {
    const raw = await rawTls(
      proxy.httpsPort,
      `POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: ${te}\r\n\r\n0\r\n\r\n`,
    );
    t.equal(statusOf(raw), 400, `Transfer-Encoding: ${te}`);
  }
  const dup = await rawTls(
    proxy.httpsPort,
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
  );
  t.equal(statusOf(dup), 400, "conflicting Content-Length");
  t.equal(up.seen.length, 0);
});

t.test("proxy security - a request with two Host headers is refused with 400 (RFC 9112 §3.2)", async (t) => {
  const { proxy, up } = await setup(t);
  const raw = await rawTls(proxy.httpsPort, "GET /echo HTTP/1.1\r\nHost: localhost\r\nHost: internal.example\r\n\r\n");
  t.equal(statusOf(raw), 400);
  t.match(raw, /PROXY_ERR_BAD_REQUEST/);
  t.equal(up.seen.length, 0, "nothing reached the upstream");
});

t.test("proxy security - Expect: 100-continue is answered by the proxy and not forwarded", async (t) => {
  const { proxy, up } = await setup(t);
  const raw = await rawTls(
    proxy.httpsPort,
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
  );
  t.match(
    raw,
    /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /,
    "100 Continue from the proxy, then the upstream's answer",
  );
  t.equal(up.seen.length, 1);
  t.equal(up.seen[0]!.body, "abc");
  t.equal(up.seen[0]!.headers.expect, undefined, "Expect is not forwarded");
});

t.test("proxy security - a chunked DELETE reaches the upstream as exactly one request with its body", async (t) => {
  const { proxy, up } = await setup(t);
  // The body looks like a second request: if the proxy forwarded it unframed, the upstream would run it.
  const inner = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const chunk = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
  const raw = await rawTls(
    proxy.httpsPort,
    `DELETE /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`,
  );
  t.equal(statusOf(raw), 200);
  // A follow-up reuses the pooled upstream connection, so any bytes smuggled onto it would be parsed first.
  t.equal((await httpsGet(proxy.httpsPort, "/after")).status, 200);
  t.same(
    up.seen.map((s) => s.url),
    ["/echo", "/after"],
    "the DELETE is one request, nothing in between",
  );
  t.equal(up.seen[0]!.method, "DELETE");
  t.equal(up.seen[0]!.body, inner, "body delivered as body");
  t.notOk(up.seen.some((s) => s.url === "/smuggled"));
});

t.test("proxy security - strips hop-by-hop headers and headers named in Connection (Connection: X-Auth)", async (t) => {
  const { proxy, up } = await setup(t);
  const raw = await rawTls(
    proxy.httpsPort,
    "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, X-Auth\r\nX-Auth: admin\r\nKeep-Alive: timeout=99\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
  );
  t.equal(statusOf(raw), 200);
  const seen = up.seen[0]!;
  t.equal(seen.headers["x-auth"], undefined, "X-Auth stripped");
  t.equal(seen.headers["proxy-authorization"], undefined);
  t.equal(seen.headers.te, undefined);
  t.not(seen.headers["keep-alive"], "timeout=99");
  t.equal(seen.headers["x-kept"], "yes", "ordinary headers pass");
});

t.test("proxy security - strips hop-by-hop headers the upstream sends back", async (t) => {
  const { proxy } = await setup(t);
  const res = await httpsGet(proxy.httpsPort, "/hop");
  t.equal(res.status, 200);
  t.equal(res.headers["x-secret"], undefined, "header named in the upstream's Connection is not relayed");
  t.not(res.headers["keep-alive"], "timeout=5");
});

t.test("proxy security - overwrites a spoofed X-Forwarded-For from an untrusted peer", async (t) => {
  const { proxy, up } = await setup(t);
  const raw = await rawTls(
    proxy.httpsPort,
    "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n",
  );
  t.equal(statusOf(raw), 200);
  const h = up.seen[0]!.headers;
  t.equal(h["x-forwarded-for"], "127.0.0.1");
  t.equal(h["x-forwarded-host"], "localhost");
  t.equal(h["x-forwarded-proto"], "https");
  t.equal(h["x-real-ip"], undefined);
  t.equal(h.forwarded, undefined);
});

t.test("proxy security - keeps and appends X-Forwarded-For from a trusted proxy", async (t) => {
  const { proxy, up } = await setup(t, { trustedProxies: ["127.0.0.0/8"] });
  await rawTls(
    proxy.httpsPort,
    "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\n\r\n",
  );
  const h = up.seen[0]!.headers;
  t.equal(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
  t.equal(h["x-forwarded-host"], "app.example");
});

t.test("proxy security - refuses bodies over maxBodyBytes with 413 (declared and chunked)", async (t) => {
  const { proxy, up } = await setup(t, { maxBodyBytes: 1000 });
  const declared = await rawTls(
    proxy.httpsPort,
    `POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000\r\n\r\n${"a".repeat(2000)}`,
  );
  t.equal(statusOf(declared), 413);
  const body = "a".repeat(1500);
  const chunked = await rawTls(
    proxy.httpsPort,
    `POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
  );
  t.equal(statusOf(chunked), 413);
  t.notOk(
    up.seen.some((s) => s.body.length > 1000),
    "the upstream never got an oversized body",
  );
});

t.test("proxy security - refuses a request head over maxHeaderBytes with 431", async (t) => {
  const { proxy } = await setup(t, { maxHeaderBytes: 4096 });
  const raw = await rawTls(
    proxy.httpsPort,
    `GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"b".repeat(8000)}\r\n\r\n`,
  );
  t.equal(statusOf(raw), 431);
});

t.test("proxy security - survives garbage, aborted requests and half-sent heads, and keeps serving", async (t) => {
  const { proxy } = await setup(t);
  t.equal(statusOf(await rawTls(proxy.httpsPort, "\x00\x01GARBAGE\r\n\r\n")), 400);
  t.equal(statusOf(await rawTls(proxy.httpsPort, "GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n")), 400);
  // Both of these get no answer (the proxy waits for the rest); the client gives up and leaves.
  await rawTls(proxy.httpsPort, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc", 50, 200);
  await rawTls(proxy.httpsPort, "GET /echo HTTP/1.1\r\nHo", 50, 200);
  t.equal((await httpsGet(proxy.httpsPort, "/whoami")).body, "gw");
});

t.test("proxy security - ws:// upgrades on the plain HTTP port are refused", async (t) => {
  const { proxy } = await setup(t);
  const { connect } = await import("node:net");
  const raw = await new Promise<string>((resolve) => {
    const s = connect(proxy.httpPort, "127.0.0.1", () => {
      s.write(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      );
    });
    let out = "";
    s.on("data", (d) => (out += d));
    s.on("close", () => resolve(out));
  });
  t.equal(statusOf(raw), 400);
});

t.test(
  "proxy security - a malformed upstream response gets a 502, is not relayed, and does not eject the upstream",
  async (t) => {
    // A raw upstream: /health and /fine answer properly, the others with what a confused or hostile server sends.
    const answers: Record<string, string> = {
      "/smuggle":
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 0\r\n\r\n",
      "/fold": "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
      "/garbage": "\x16\x03\x01 not http at all\r\n\r\n",
      "/split": "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    };
    const url = await rawUpstream(t, (path) => answers[path] ?? "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine");
    const store = await tempDir("nodeway-proxy-sec-");
    t.teardown(store.cleanup);
    const proxy = await startProxy(
      compileProxyConfig({
        upstream: [url],
        tls: "self-signed",
        host: "127.0.0.1",
        httpsPort: 0,
        httpPort: 0,
        certDir: store.dir,
      }),
      {
        onEvent: () => undefined,
        accessLog: () => undefined,
      },
    );
    t.teardown(() => proxy.stop());
    for (const path of Object.keys(answers)) {
      const res = await rawTls(proxy.httpsPort, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      t.equal(statusOf(res), 502, `${path}: 502`);
      t.match(res, /PROXY_ERR_UPSTREAM/, `${path}: says it was the upstream`);
      t.notMatch(res, /X-Injected|X-A: one/, `${path}: nothing of the bad response reaches the client`);
    }
    t.ok(
      proxy.upstreams().every((u) => u.healthy),
      "the upstream is still in rotation",
    );
    t.equal((await httpsGet(proxy.httpsPort, "/fine")).body, "fine", "and keeps serving");
  },
);
