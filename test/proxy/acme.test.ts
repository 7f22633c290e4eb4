/**
 * ACME end to end against Pebble (reliability S11): issuance over HTTP-01, renewal at a third of the lifetime,
 * the CA going down during renewal, nonce rejection, on-demand issuance limited to the allow-list and the ask hook,
 * and capped in names and in orders per minute.
 */
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import t from "tap";
import { compileProxyConfig, startProxy, type ProxyEvent, type RunningProxy } from "../../proxy/index.js";
import { startPebble, type Pebble } from "../helpers/pebble.js";
import { freePort, peerCertificate, startUpstream, tempDir, waitFor, type Teardowns } from "../helpers/tls-tools.js";

const DOMAIN = "nodeway-acme.example.com";
const YEAR_MS = 365 * 86_400_000;

interface Rig {
  pebble: Pebble;
  proxy: RunningProxy;
  events: ProxyEvent[];
  certDir: string;
  /** Shifts the proxy's clock (renewal timing is decided against it). */
  clock: { offsetMs: number };
}

async function rig(
  t: Teardowns,
  opts: { env?: Record<string, string>; proxy?: Record<string, unknown> } = {},
): Promise<Rig> {
  const httpPort = await freePort();
  const pebble = await startPebble({ httpPort, env: opts.env });
  t.teardown(() => pebble.close());
  const up = await startUpstream("gw");
  t.teardown(() => up.close());
  const store = await tempDir("nodeway-proxy-acme-");
  t.teardown(store.cleanup);
  const events: ProxyEvent[] = [];
  const clock = { offsetMs: 0 };
  const proxy = await startProxy(
    compileProxyConfig({
      upstream: [up.url],
      domain: [DOMAIN],
      email: "ops@example.com",
      tls: "acme",
      host: "127.0.0.1",
      httpsPort: 0,
      httpPort,
      acmeDirectoryUrl: pebble.directoryUrl,
      acmeCaBundleFile: pebble.caBundleFile,
      certDir: store.dir,
      acmeRetryMinMs: 200,
      acmeRetryMaxMs: 1000,
      ...opts.proxy,
    }),
    { onEvent: (e) => events.push(e), accessLog: () => undefined, now: () => Date.now() + clock.offsetMs },
  );
  t.teardown(() => proxy.stop());
  return { pebble, proxy, events, certDir: store.dir, clock };
}

/** The certificate served for `name`, verified against Pebble's current root (so a fallback cert fails). */
async function servedCert(r: Rig, name = DOMAIN) {
  const root = await r.pebble.root();
  return peerCertificate(r.proxy.httpsPort, name, { ca: root, rejectUnauthorized: true });
}

t.test("proxy acme - issues a certificate over HTTP-01 and serves it for the domain", async (t) => {
  const r = await rig(t);
  await waitFor(
    () => r.events.some((e) => e.type === "cert.installed" && e.source === "acme"),
    30_000,
    "issued certificate",
  );
  const cert = await servedCert(r);
  t.match(cert.subjectaltname, `DNS:${DOMAIN}`);
  const ca = new URL(r.pebble.directoryUrl).host.replace(/:/g, "_");
  const keyMode = (await stat(join(r.certDir, "acme", ca, DOMAIN, "key.pem"))).mode & 0o777;
  const accountMode = (await stat(join(r.certDir, "acme", ca, "account.key"))).mode & 0o777;
  const dirMode = (await stat(join(r.certDir, "acme", ca, DOMAIN))).mode & 0o777;
  t.equal(keyMode.toString(8), "600", "certificate key 0600");
  t.equal(accountMode.toString(8), "600", "account key 0600");
  t.equal(dirMode.toString(8), "700", "directories 0700");
});

t.test(
  "proxy acme - renews once a third of the lifetime is left and serves the new certificate without restart",
  async (t) => {
    const r = await rig(t);
    await waitFor(() => r.proxy.certificates().length === 1, 30_000, "issued certificate");
    const first = await servedCert(r);
    await r.proxy.checkCertificates();
    t.equal(
      r.events.filter((e) => e.type === "cert.installed").length,
      1,
      "no renewal while most of the lifetime is left",
    );
    // Pebble certificates live 5 years: 4 years on, less than a third is left.
    r.clock.offsetMs = 4 * YEAR_MS;
    await r.proxy.checkCertificates();
    const second = await waitFor(
      async () => {
        const c = await servedCert(r);
        return c.serialNumber !== first.serialNumber ? c : null;
      },
      30_000,
      "renewed certificate",
    );
    t.not(second.serialNumber, first.serialNumber);
    t.match(second.subjectaltname, `DNS:${DOMAIN}`);
  },
);

t.test(
  "proxy acme - CA down during renewal: old certificate still served, alert raised, retry succeeds later",
  async (t) => {
    const r = await rig(t);
    await waitFor(() => r.proxy.certificates().length === 1, 30_000, "issued certificate");
    const oldRoot = await r.pebble.root();
    const first = await peerCertificate(r.proxy.httpsPort, DOMAIN, { ca: oldRoot, rejectUnauthorized: true });
    await r.pebble.stop();
    r.clock.offsetMs = 4 * YEAR_MS;
    await r.proxy.checkCertificates();
    const failed = await waitFor(
      () => r.events.find((e) => e.type === "cert.renew_failed"),
      10_000,
      "renewal failure event",
    );
    t.match(failed, { type: "cert.renew_failed", name: DOMAIN, code: "PROXY_ERR_ACME", stillServing: true });
    const during = await peerCertificate(r.proxy.httpsPort, DOMAIN, { ca: oldRoot, rejectUnauthorized: true });
    t.equal(during.serialNumber, first.serialNumber, "old certificate still served while the CA is down");
    await waitFor(
      () => r.events.filter((e) => e.type === "cert.renew_failed").length >= 2,
      10_000,
      "a backed-off retry",
    );

    await r.pebble.start();
    const renewed = await waitFor(
      async () => {
        const c = await servedCert(r).catch(() => null);
        return c !== null && c.serialNumber !== first.serialNumber ? c : null;
      },
      30_000,
      "certificate renewed after the CA came back",
    );
    t.match(renewed.subjectaltname, `DNS:${DOMAIN}`);
    t.equal(r.proxy.certificates()[0]!.failures, 0, "failure count reset");
  },
);

t.test("proxy acme - issuance succeeds with Pebble rejecting half of all nonces", async (t) => {
  const r = await rig(t, { env: { PEBBLE_WFE_NONCEREJECT: "50" } });
  await waitFor(
    () => r.events.some((e) => e.type === "cert.installed" && e.source === "acme"),
    60_000,
    "issued certificate",
  );
  const cert = await servedCert(r);
  t.match(cert.subjectaltname, `DNS:${DOMAIN}`);
});

t.test("proxy acme - on-demand issuance happens only for hosts on the allow-list", async (t) => {
  const r = await rig(t, { proxy: { domain: [], onDemandAllow: ["*.ondemand.example.com"] } });
  const cert = await servedCert(r, "app.ondemand.example.com");
  t.match(cert.subjectaltname, "DNS:app.ondemand.example.com", "issued during the first handshake");
  const other = await peerCertificate(r.proxy.httpsPort, "evil.example.net");
  t.notMatch(other.subjectaltname ?? "", /evil\.example\.net/, "no certificate for a host off the list");
  t.notOk(r.events.some((e) => e.type === "cert.installed" && e.name === "evil.example.net"));
  const deeper = await peerCertificate(r.proxy.httpsPort, "a.b.ondemand.example.com");
  t.notMatch(deeper.subjectaltname ?? "", /a\.b\.ondemand/, "the wildcard allows one label only");
});

/** An on-demand ask hook: answers 200 for `approved` names, 403 for others, and records every `domain` asked. */
async function askHook(t: Teardowns, approved: readonly string[]): Promise<{ url: string; asked: string[] }> {
  const asked: string[] = [];
  const server = createServer((req, res) => {
    const domain = new URL(req.url ?? "/", "http://x").searchParams.get("domain") ?? "";
    asked.push(domain);
    res.writeHead(approved.includes(domain) ? 200 : 403).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/check?token=t1`, asked };
}

const issuedNames = (r: Rig): string[] =>
  r.events.flatMap((e) => (e.type === "cert.installed" && e.source === "acme" ? [e.name] : [])).sort();

t.test("proxy acme - on-demand names need the ask hook's 2xx (and the allow-list, when both are set)", async (t) => {
  const hook = await askHook(t, ["good.ask.example.com"]);
  const r = await rig(t, { proxy: { domain: [], onDemandAllow: ["*.ask.example.com"], onDemandAsk: hook.url } });
  const good = await servedCert(r, "good.ask.example.com");
  t.match(good.subjectaltname, "DNS:good.ask.example.com", "approved: issued during the first handshake");
  const refused = await peerCertificate(r.proxy.httpsPort, "evil.ask.example.com");
  t.notMatch(refused.subjectaltname ?? "", /evil\.ask/, "refused by the hook: no certificate");
  await peerCertificate(r.proxy.httpsPort, "evil.ask.example.com");
  await peerCertificate(r.proxy.httpsPort, "off.list.example.net");
  t.same(hook.asked, ["good.ask.example.com", "evil.ask.example.com"], "once per name, never for a name off the list");
  t.same(issuedNames(r), ["good.ask.example.com"]);
});

t.test("proxy acme - a flood of allowed SNI names issues at most onDemandMaxNames certificates", async (t) => {
  const r = await rig(t, { proxy: { domain: [], onDemandAllow: ["*.flood.example.com"], onDemandMaxNames: 2 } });
  const names = Array.from({ length: 8 }, (_, i) => `n${i}.flood.example.com`);
  await Promise.all(names.map((n) => peerCertificate(r.proxy.httpsPort, n)));
  t.equal(issuedNames(r).length, 2, "two names issued");
  const late = await peerCertificate(r.proxy.httpsPort, "late.flood.example.com");
  t.notMatch(late.subjectaltname ?? "", /late\.flood/, "a name past the cap gets none, later too");
  t.equal(r.proxy.certificates().length, 2);
});

t.test("proxy acme - a flood of allowed SNI names places at most acmeOrdersPerMinute orders", async (t) => {
  const r = await rig(t, { proxy: { domain: [], onDemandAllow: ["*.rate.example.com"], acmeOrdersPerMinute: 1 } });
  const names = Array.from({ length: 6 }, (_, i) => `n${i}.rate.example.com`);
  await Promise.all(names.map((n) => peerCertificate(r.proxy.httpsPort, n)));
  await r.proxy.checkCertificates(); // a maintenance pass does not retry throttled on-demand names either
  t.equal(issuedNames(r).length, 1, "one order in the minute");
  t.notOk(
    r.events.some((e) => e.type === "cert.renew_failed"),
    "throttling is not reported as a failure",
  );
});
