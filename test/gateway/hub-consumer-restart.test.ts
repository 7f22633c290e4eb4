/**
 * The hub's consumer replaced while its successor is still being made, against a real nats-server. A server
 * starts delivering as soon as it has made a consumer; on a busy or newly elected stream leader the answer to the
 * create request can come after the first deliveries (seen on a 3-node cluster when the NW_EVENTS leader was
 * killed: 8 of 1,492 events never reached clients). Here the create's answer is held back on purpose, so the
 * deliveries always come first. Every stored event must still reach the hub's subscribers, once, in order.
 */
import t from "tap";
import type { JetStreamManager } from "@nats-io/jetstream";
import { STREAM_EVENTS, encodeMsgpack, newId, subjects } from "../../protocol/index.js";
import { compileGatewayConfig } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { EventHub } from "../../gateway/event-hub.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";

/** How long the create request's answer is held back after the server has made the consumer. */
const ANSWER_LATE_MS = 400;

/** `jsm` whose consumer creates answer late; `beforeCreate` runs once, before the first create reaches the server. */
function lateAnswers(jsm: JetStreamManager, beforeCreate: () => Promise<void>): JetStreamManager {
  let first = true;
  const consumers = new Proxy(jsm.consumers, {
    get(target, p, recv) {
      if (p !== "add") return Reflect.get(target, p, recv);
      return async (...args: Parameters<JetStreamManager["consumers"]["add"]>) => {
        if (first) {
          first = false;
          await beforeCreate();
        }
        const info = await target.add(...args);
        await new Promise((r) => setTimeout(r, ANSWER_LATE_MS));
        return info;
      };
    },
  });
  return new Proxy(jsm, { get: (target, p, recv) => (p === "consumers" ? consumers : Reflect.get(target, p, recv)) });
}

t.test(
  "hub consumer restart - a gap read again while the consumer is still opening loses no later event",
  async (t) => {
    const ns = await NatsServer.start();
    t.teardown(() => ns.stop());
    const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
    t.teardown(() => n.nc.close());
    const jobId = newId();
    const base = { job_id: jobId, workflow_id: "wf", ts: 1, attempt: 1 };
    const chunk = (i: number) => ({ type: "chunk", node_id: "n", content_type: "text", content: `t${i}`, done: false });
    const publish = async (i: number) =>
      (await n.js.publish(subjects.jobEvents(jobId), encodeMsgpack({ ...base, ...chunk(i) }))).seq;
    const published: number[] = [];
    // Between the hub reading the stream's position and its consumer existing, three events are stored and the
    // first is removed (retention): the consumer's first delivery skips a seq, which the hub reads again for.
    const jsm = lateAnswers(n.jsm, async () => {
      const removed = await publish(0);
      published.push(await publish(1), await publish(2));
      await n.jsm.streams.deleteMessage(STREAM_EVENTS, removed, false);
    });
    const got: number[] = [];
    const logs: string[] = [];
    const hub = new EventHub(
      n,
      jsm,
      (_job, d) => got.push(d.seq),
      (l) => logs.push(l),
      0,
    );
    await hub.start();
    t.teardown(() => hub.stop());
    for (let i = 3; i < 10; i++) published.push(await publish(i));
    await check(() => hub.lastSeq >= published.at(-1)!, 20_000, { name: "the hub reaches the last event" });
    t.same(got, published, "every stored event once, in stream order");
    t.ok(
      logs.some((l) => /were not delivered/.test(l)),
      "the hub did read again after the skipped seq",
    );
  },
);
