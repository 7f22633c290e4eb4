/**
 * The WebSocket fan-out on a real uWebSockets.js app: the event hub hands on events as soon as it starts, before
 * the gateway listens, and uWS crashes the process (SIGSEGV, 20.30) when `numSubscribers` or `publish` is called
 * on an app that has no WebSocket route yet. So the fan-out must be safe from the moment it exists. Without that
 * this file dies instead of passing.
 */
import t from "tap";
import { decodeEventHead, encodeMsgpack } from "../../protocol/index.js";
import { compileGatewayConfig } from "../../gateway/config.js";
import { Delivery } from "../../gateway/event-hub.js";
import { WsHub } from "../../gateway/ws.js";
import { loadUws } from "../../gateway/uws.js";

const ev = {
  type: "chunk",
  node_id: "n",
  content_type: "text",
  content: "tok",
  done: false,
  attempt: 1,
  job_id: "01JDQ7ZK3M8X4V5N6P7Q8R9S0T",
  workflow_id: "wf",
  ts: 1,
};

t.test("ws fan-out - an event handed on before the gateway listens is published without crashing uWS", async (t) => {
  const { uws } = loadUws();
  const app = uws.App();
  // publish needs the app only; the rest of the gateway stays out of this.
  const unused = {} as never;
  const hub = new WsHub(
    app,
    compileGatewayConfig({ natsUrl: "nats://127.0.0.1:4222" }),
    unused,
    unused,
    unused,
    unused,
    unused,
    unused,
  );
  const bytes = encodeMsgpack(ev);
  const { head, ev: whole } = decodeEventHead(bytes);
  hub.publish(ev.job_id, Delivery.of(head, whole, 1, bytes));
  t.equal(app.numSubscribers(`j/${ev.job_id}/m`), 0, "uWS answers for the job's topic: the process lives");
});
