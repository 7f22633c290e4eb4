import t from "tap";
import {
  compileProxyConfig,
  DEV_TLS_OPTIONS,
  InvalidConfigError,
  LETS_ENCRYPT_DIRECTORY_URL,
  type ProxyOptions,
} from "../../proxy/index.js";

function rejectKey(opts: unknown): string {
  try {
    compileProxyConfig(opts as ProxyOptions);
  } catch (err) {
    if (err instanceof InvalidConfigError) return err.key;
    throw err;
  }
  throw new Error("expected InvalidConfigError");
}

t.test("proxy config - applies documented defaults and freezes the result", async (t) => {
  const c = compileProxyConfig({ upstream: ["http://127.0.0.1:8000"], domain: ["Example.com."] });
  t.equal(c.httpsPort, 443);
  t.equal(c.httpPort, 80);
  t.equal(c.tls, "acme");
  t.equal(c.acmeDirectoryUrl, LETS_ENCRYPT_DIRECTORY_URL);
  t.same(c.domain, ["example.com"]);
  t.same(c.upstream, [{ origin: "http://127.0.0.1:8000", hostname: "127.0.0.1", port: 8000 }]);
  t.equal(c.healthIntervalMs, 5000);
  t.equal(c.hstsMaxAgeSeconds, 31536000);
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.upstream) && Object.isFrozen(c.upstream[0]));
});

t.test("proxy config - rejects an unknown key, naming it", async (t) => {
  t.equal(rejectKey({ upstream: ["http://127.0.0.1:8000"], tls: "self-signed", httpsPrt: 8443 }), "httpsPrt");
});

t.test("proxy config - rejects a bad port, naming the key", async (t) => {
  const base = { upstream: ["http://127.0.0.1:8000"], tls: "self-signed" };
  t.equal(rejectKey({ ...base, httpsPort: 70000 }), "httpsPort");
  t.equal(rejectKey({ ...base, httpPort: "eighty" }), "httpPort");
  t.equal(rejectKey({ ...base, httpsPort: 1.5 }), "httpsPort");
  t.equal(rejectKey({ ...base, httpsPort: 8443, httpPort: 8443 }), "httpPort");
});

t.test("proxy config - accepts strings from flags and env for numbers, booleans and lists", async (t) => {
  const c = compileProxyConfig({
    upstream: "http://127.0.0.1:8000,http://127.0.0.1:8001",
    tls: "self-signed",
    httpsPort: "8443",
    redirectHttp: "false",
    trustedProxies: "10.0.0.0/8, 127.0.0.1",
  });
  t.equal(c.httpsPort, 8443);
  t.equal(c.redirectHttp, false);
  t.equal(c.upstream.length, 2);
  t.same(c.trustedProxies, ["10.0.0.0/8", "127.0.0.1"]);
  t.same(c.domain, ["localhost"]);
});

t.test("proxy config - rejects contradictions and malformed values, naming the key", async (t) => {
  t.equal(rejectKey({ upstream: [], tls: "self-signed" }), "upstream");
  t.equal(rejectKey({ upstream: ["https://gw:8000"], tls: "self-signed" }), "upstream");
  t.equal(rejectKey({ upstream: ["http://gw:8000/api"], tls: "self-signed" }), "upstream");
  t.equal(rejectKey({ upstream: ["http://gw:8000"] }), "domain"); // acme needs a domain
  t.equal(rejectKey({ upstream: ["http://gw:8000"], domain: ["localhost"] }), "domain"); // acme can't do localhost
  t.equal(rejectKey({ upstream: ["http://gw:8000"], tls: "files" }), "certFile");
  t.equal(rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", certFile: "/x" }), "certFile");
  t.equal(
    rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", trustedProxies: ["10.0.0.0/33"] }),
    "trustedProxies",
  );
  t.equal(
    rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", trustedProxies: ["example.com"] }),
    "trustedProxies",
  );
  t.equal(
    rejectKey({ upstream: ["http://gw:8000"], domain: ["a.example"], acmeDirectoryUrl: "http://ca/dir" }),
    "acmeDirectoryUrl",
  );
  t.equal(
    rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", onDemandAllow: ["*.example.com"] }),
    "onDemandAllow",
  );
  t.equal(rejectKey({ upstream: ["http://gw:8000"], tls: "tls13" }), "tls");
  t.equal(rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", renewalWindowRatio: 2 }), "renewalWindowRatio");
  t.equal(rejectKey({ upstream: ["http://gw:8000"], tls: "self-signed", email: "nope" }), "email");
});

t.test("proxy config - error carries the stable code PROXY_ERR_INVALID_CONFIG", async (t) => {
  t.throws(() => compileProxyConfig({ upstream: ["http://gw:8000"], tls: "self-signed", maxBodyBytes: -1 }), {
    code: "PROXY_ERR_INVALID_CONFIG",
    key: "maxBodyBytes",
  });
});

t.test("proxy config - DEV_TLS_OPTIONS compile to self-signed on 127.0.0.1:8443/8080 without HSTS", async (t) => {
  const c = compileProxyConfig({ ...DEV_TLS_OPTIONS, upstream: ["http://127.0.0.1:8000"] });
  t.match(c, {
    tls: "self-signed",
    host: "127.0.0.1",
    httpsPort: 8443,
    httpPort: 8080,
    hstsMaxAgeSeconds: 0,
    domain: ["localhost"],
  });
});

t.test("proxy config - hostile-input settings: defaults, and bad values named by key", async (t) => {
  const c = compileProxyConfig({ upstream: ["http://127.0.0.1:8000"], domain: ["example.com"] });
  t.equal(c.wsIdleTimeoutMs, 600_000);
  t.equal(c.maxConnections, 10_000);
  t.equal(c.maxConnectionsPerIp, 256);
  t.equal(c.onDemandAsk, null);
  t.equal(c.onDemandMaxNames, 1000);
  t.equal(c.acmeOrdersPerMinute, 10);
  const ask = compileProxyConfig({ upstream: ["http://127.0.0.1:8000"], onDemandAsk: "http://127.0.0.1:9/ok?x=1" });
  t.equal(ask.onDemandAsk, "http://127.0.0.1:9/ok?x=1", "an ask hook alone is enough for on-demand ACME");
  const base = { upstream: ["http://127.0.0.1:8000"], domain: ["example.com"] };
  t.equal(rejectKey({ ...base, onDemandAsk: "ftp://127.0.0.1/ask" }), "onDemandAsk");
  t.equal(rejectKey({ ...base, onDemandAsk: "http://u:p@127.0.0.1/ask" }), "onDemandAsk");
  t.equal(
    rejectKey({ upstream: ["http://127.0.0.1:8000"], tls: "self-signed", onDemandAsk: "http://127.0.0.1/a" }),
    "onDemandAsk",
  );
  t.equal(rejectKey({ ...base, maxConnections: 0 }), "maxConnections");
  t.equal(rejectKey({ ...base, maxConnectionsPerIp: 0 }), "maxConnectionsPerIp");
  t.equal(rejectKey({ ...base, wsIdleTimeoutMs: "soon" }), "wsIdleTimeoutMs");
  t.equal(rejectKey({ ...base, onDemandMaxNames: 0 }), "onDemandMaxNames");
  t.equal(rejectKey({ ...base, acmeOrdersPerMinute: 0.5 }), "acmeOrdersPerMinute");
});
