/**
 * `HEAD /health` answers what `GET /health` answers: 200 while NATS is there, 503 while it is away (the client
 * reconnecting, not closed) — a load balancer probing with HEAD must not keep sending traffic to a gateway
 * that cannot serve it. The length a HEAD reports is the length of the GET's body.
 */
import t from "tap";
import { startGateway } from "../../gateway/index.js";
import { NatsServer } from "../helpers/nats-server.js";
import { check } from "../helpers/check.js";

const probe = async (url: string, method: "GET" | "HEAD") => {
  const r = await fetch(`${url}/health`, { method });
  return { status: r.status, length: r.headers.get("content-length"), body: await r.text() };
};

t.test("health - HEAD and GET /health agree, with NATS up and with NATS stopped", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const gw = await startGateway({ natsUrl: ns.url, port: 0 });
  t.teardown(() => gw.stop());

  const get = await probe(gw.url, "GET");
  const head = await probe(gw.url, "HEAD");
  t.equal(get.status, 200, "GET: healthy");
  t.equal(head.status, 200, "HEAD: healthy");
  t.equal(head.body, "", "HEAD has no body");
  t.equal(Number(head.length), Buffer.byteLength(get.body), "HEAD reports the GET's length");

  await ns.kill9();
  await check(async () => ((await probe(gw.url, "GET")).status === 503 ? true : null), 15_000, {
    name: "GET answers 503 once NATS is gone",
  });
  const away = await probe(gw.url, "HEAD");
  t.equal(away.status, 503, "HEAD answers 503 too while NATS is away");
  t.equal(away.body, "");

  await ns.restart();
  await check(async () => ((await probe(gw.url, "GET")).status === 200 ? true : null), 30_000, {
    name: "GET healthy again",
  });
  t.equal((await probe(gw.url, "HEAD")).status, 200, "and HEAD with it");
});

/** Raw bytes on one connection; resolves with what came back once the server closed it, or null after 5 s open. */
async function rawUntilClosed(url: string, bytes: string): Promise<string | null> {
  const { connect } = await import("node:net");
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(bytes));
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, 5_000);
    s.on("data", (d) => (text += d.toString("latin1")));
    s.on("error", reject);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
  });
}

t.test(
  "health - a HEAD answer ends its response: Connection: close closes, a kept-alive connection serves the next",
  async (t) => {
    const ns = await NatsServer.start();
    t.teardown(() => ns.stop());
    const gw = await startGateway({ natsUrl: ns.url, port: 0 });
    t.teardown(() => gw.stop());
    const host = new URL(gw.url).host;
    const head = (close: boolean) =>
      `HEAD /health HTTP/1.1\r\nHost: ${host}\r\n${close ? "Connection: close\r\n" : ""}\r\n`;
    const one = await rawUntilClosed(gw.url, head(true));
    t.not(one, null, "Connection: close: the server closes the connection after the answer");
    t.match(one, /^HTTP\/1\.1 200 OK\r\n/);
    // Keep-alive: a second HEAD on the same connection, sent once the first is answered.
    const { connect } = await import("node:net");
    const u = new URL(gw.url);
    const sock = connect(Number(u.port), u.hostname, () => sock.write(head(false)));
    let text = "";
    let sentSecond = false;
    sock.on("data", (d) => {
      text += d.toString("latin1");
      if (!sentSecond && text.endsWith("\r\n\r\n")) {
        sentSecond = true;
        sock.write(head(true));
      }
    });
    const closed = new Promise((r) => sock.on("close", r));
    await check(() => text.match(/HTTP\/1\.1 200 OK/g)?.length === 2, 5_000, { name: "two answers on one connection" });
    const lengths = [...text.matchAll(/content-length: (\d+)/gi)].map((m) => Number(m[1]));
    t.ok(lengths.length === 2 && lengths.every((n) => n > 0), `each reports the GET's length (${lengths})`);
    await closed;
    t.pass("and the connection closes after the one that asked");
  },
);
