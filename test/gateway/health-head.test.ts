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
