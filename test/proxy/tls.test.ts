import { X509Certificate } from "node:crypto";
import { request } from "node:http";
import { stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { compileProxyConfig, startProxy, type ProxyEvent } from "../../proxy/index.js";
import {
  createTestCa,
  httpsGet,
  peerCertificate,
  startTestProxy,
  startUpstream,
  tempDir,
  tlsOpen,
  waitFor,
  type Teardowns,
} from "../helpers/tls-tools.js";

async function selfSignedProxy(t: Teardowns, extra: Record<string, unknown> = {}) {
  const up = await startUpstream("gw-a");
  t.teardown(() => up.close());
  const { proxy, events, certDir } = await startTestProxy(t, [up.url], extra);
  return { proxy, up, certDir, events };
}

function plainGet(
  port: number,
  path: string,
  host = "localhost",
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers: { host }, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

t.test("proxy tls - refuses TLS 1.0 and 1.1 handshakes", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  for (const v of ["TLSv1", "TLSv1.1"] as const) {
    await t.rejects(
      tlsOpen(proxy.httpsPort, { minVersion: v, maxVersion: v, ciphers: "DEFAULT@SECLEVEL=0" }),
      `${v} refused`,
    );
  }
});

t.test("proxy tls - accepts TLS 1.2 with an ECDHE AEAD suite and TLS 1.3", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  const s12 = await tlsOpen(proxy.httpsPort, { maxVersion: "TLSv1.2" });
  t.equal(s12.getProtocol(), "TLSv1.2");
  t.match(s12.getCipher().name, /^ECDHE-(RSA|ECDSA)-(AES\d+-GCM|CHACHA20)/);
  s12.destroy();
  const s13 = await tlsOpen(proxy.httpsPort, { minVersion: "TLSv1.3" });
  t.equal(s13.getProtocol(), "TLSv1.3");
  s13.destroy();
});

t.test("proxy tls - refuses a TLS 1.2 client offering only CBC suites", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  await t.rejects(tlsOpen(proxy.httpsPort, { maxVersion: "TLSv1.2", ciphers: "AES128-SHA:ECDHE-RSA-AES128-SHA" }));
});

t.test("proxy tls - sends HSTS on proxied HTTPS responses", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  const res = await httpsGet(proxy.httpsPort, "/whoami");
  t.equal(res.status, 200);
  t.equal(res.body, "gw-a");
  t.equal(res.headers["strict-transport-security"], "max-age=31536000");
});

t.test("proxy tls - port 80 redirects to HTTPS with 308, keeping path and query", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  const res = await plainGet(proxy.httpPort, "/v1/jobs?x=1", "localhost");
  t.equal(res.status, 308);
  t.equal(res.headers.location, `https://localhost:${proxy.httpsPort}/v1/jobs?x=1`);
  const bad = await plainGet(proxy.httpPort, "/", "evil.com\r\nx: y".replace(/\r\n.*/, "@evil"));
  t.equal(bad.status, 400, "a Host that is not a plain host name is not echoed into Location");
});

t.test("proxy tls - port 80 does not redirect ACME challenge paths (404 for unknown tokens)", async (t) => {
  const { proxy } = await selfSignedProxy(t);
  const res = await plainGet(proxy.httpPort, "/.well-known/acme-challenge/unknown-token");
  t.equal(res.status, 404);
  const traversal = await plainGet(proxy.httpPort, "/.well-known/acme-challenge/..%2f..%2fetc%2fpasswd");
  t.equal(traversal.status, 404);
});

t.test(
  "proxy tls - self-signed certificate covers localhost and loopback IPs, key stored 0600 in a 0700 dir",
  async (t) => {
    const { proxy, certDir } = await selfSignedProxy(t);
    const cert = await peerCertificate(proxy.httpsPort, "localhost");
    t.match(cert.subjectaltname, /DNS:localhost/);
    t.match(cert.subjectaltname, /IP Address:127\.0\.0\.1/);
    const dirMode = (await stat(certDir)).mode & 0o777;
    const keyMode = (await stat(join(certDir, "self-signed", "localhost", "key.pem"))).mode & 0o777;
    t.equal(dirMode.toString(8), "700");
    t.equal(keyMode.toString(8), "600");
  },
);

t.test("proxy tls - self-signed certificate is reused across restarts", async (t) => {
  const { proxy, certDir, up } = await selfSignedProxy(t);
  const first = await peerCertificate(proxy.httpsPort, "localhost");
  await proxy.stop();
  const again = await startProxy(
    compileProxyConfig({
      upstream: [up.url],
      tls: "self-signed",
      host: "127.0.0.1",
      httpsPort: 0,
      httpPort: 0,
      certDir,
    }),
    { onEvent: () => undefined, accessLog: () => undefined },
  );
  t.teardown(() => again.stop());
  const second = await peerCertificate(again.httpsPort, "localhost");
  t.equal(second.serialNumber, first.serialNumber);
});

t.test(
  "proxy tls - operator files: SNI picks the certificate, and a replaced file takes effect without restart",
  async (t) => {
    const ca = createTestCa();
    const dir = await tempDir("nodeway-proxy-files-");
    t.teardown(dir.cleanup);
    const certFile = join(dir.dir, "cert.pem");
    const keyFile = join(dir.dir, "key.pem");
    const first = ca.issue(["a.example.test", "b.example.test"]);
    await writeFile(certFile, first.chainPem);
    await writeFile(keyFile, first.keyPem);
    const up = await startUpstream("gw");
    t.teardown(() => up.close());
    const events: ProxyEvent[] = [];
    const proxy = await startProxy(
      compileProxyConfig({
        upstream: [up.url],
        tls: "files",
        certFile,
        keyFile,
        host: "127.0.0.1",
        httpsPort: 0,
        httpPort: 0,
        certDir: join(dir.dir, "store"),
      }),
      { onEvent: (e) => events.push(e), accessLog: () => undefined },
    );
    t.teardown(() => proxy.stop());
    const got = await peerCertificate(proxy.httpsPort, "b.example.test", { ca: ca.certPem, rejectUnauthorized: true });
    t.equal(got.serialNumber.toLowerCase(), new X509Certificate(first.certPem).serialNumber.toLowerCase());

    // A bad replacement (key of another cert) is refused and the old one stays.
    const other = ca.issue(["a.example.test"]);
    await writeFile(certFile, first.chainPem);
    await writeFile(keyFile, other.keyPem);
    await proxy.checkCertificates();
    t.ok(
      events.some((e) => e.type === "cert.rejected"),
      "mismatched pair rejected",
    );
    const still = await peerCertificate(proxy.httpsPort, "a.example.test", {
      ca: ca.certPem,
      rejectUnauthorized: true,
    });
    t.equal(still.serialNumber, got.serialNumber);

    const next = ca.issue(["a.example.test", "b.example.test"]);
    await writeFile(keyFile, next.keyPem);
    await writeFile(certFile, next.chainPem);
    await proxy.checkCertificates();
    const swapped = await waitFor(
      async () => {
        const c = await peerCertificate(proxy.httpsPort, "a.example.test", {
          ca: ca.certPem,
          rejectUnauthorized: true,
        });
        return c.serialNumber !== got.serialNumber ? c : null;
      },
      5000,
      "the new certificate",
    );
    t.equal(swapped.serialNumber.toLowerCase(), new X509Certificate(next.certPem).serialNumber.toLowerCase());
  },
);
