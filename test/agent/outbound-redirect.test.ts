/**
 * Credentials a node gives for one origin (its `auth`, a cookie, an API-key header) do not follow a redirect to
 * another origin, as browsers drop Authorization there; a redirect within the origin keeps them. IPv6 forms that wrap
 * an IPv4 address (6to4, Teredo, local NAT64) and the old site-local range are refused like private addresses.
 */
import t from "tap";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

process.env.NODEWAY_HTTP_ALLOW = "127.0.0.2/32,127.0.0.3/32";
const { addressProblem, outboundPolicy, safeFetch } = await import("../../agent/nodes/outbound.js");

async function listen(server: Server, host: string): Promise<string> {
  await new Promise<void>((r) => server.listen(0, host, r));
  return `http://${host}:${(server.address() as AddressInfo).port}`;
}

t.test("outbound - credentials stay with their origin across redirects", async (t) => {
  const seen: { path: string; headers: IncomingHttpHeaders; body: string }[] = [];
  const other = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ path: req.url ?? "", headers: req.headers, body });
      res.end("ok");
    });
  });
  const otherUrl = await listen(other, "127.0.0.3");
  const first = createServer((req, res) => {
    if (req.url === "/same") return res.writeHead(302, { location: "/landing" }).end();
    if (req.url === "/landing") {
      seen.push({ path: "/landing", headers: req.headers, body: "" });
      return res.end("ok");
    }
    const code = req.url === "/307" ? 307 : 302;
    res.writeHead(code, { location: `${otherUrl}/got` }).end();
  });
  const firstUrl = await listen(first, "127.0.0.2");
  t.teardown(() => {
    other.close();
    first.close();
  });
  const headers = {
    authorization: "Bearer sekret-auth",
    cookie: "sid=sekret-cookie",
    "X-Api-Key": "sekret-header",
    "X-Session-Token": "sekret-token",
    accept: "application/json",
  };
  const signal = new AbortController().signal;
  await safeFetch(`${firstUrl}/302`, { headers, signal });
  await safeFetch(`${firstUrl}/307`, { method: "POST", headers, body: "payload", signal });
  await safeFetch(`${firstUrl}/same`, { headers, signal });
  const [to302, to307, same] = seen;
  for (const [what, hop] of [
    ["302", to302],
    ["307 POST", to307],
  ] as const) {
    t.notOk(hop?.headers.authorization, `${what}: no Authorization at the other origin`);
    t.notOk(hop?.headers.cookie, `${what}: no Cookie`);
    t.notOk(hop?.headers["x-api-key"], `${what}: no API-key header`);
    t.notOk(hop?.headers["x-session-token"], `${what}: no token header`);
    t.equal(hop?.headers.accept, "application/json", `${what}: other headers go on`);
  }
  t.equal(to307?.body, "payload", "a 307 still carries its body");
  t.equal(same?.headers.authorization, "Bearer sekret-auth", "a redirect within the origin keeps Authorization");
  t.equal(same?.headers["x-api-key"], "sekret-header", "and the API key");
});

t.test("outbound - IPv6 addresses that wrap IPv4 ones, and site-local ones, are refused", async (t) => {
  const p = outboundPolicy({});
  for (const a of [
    "2002:7f00:1::1",
    "2002:c0a8:101::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "64:ff9b:1::a00:1",
    "fec0::1",
    "100::1",
  ])
    t.ok(addressProblem(p, a), `${a} refused`);
  t.equal(addressProblem(p, "2606:4700:4700::1111"), null, "a public IPv6 address is not");
});
