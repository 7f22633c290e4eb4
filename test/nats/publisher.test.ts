/**
 * The one event publisher (nats/publisher.ts) against a real nats-server: the envelope and message id it puts on
 * every event, its size check, its retry under one id, and a job's queue through the outbox.
 */
import t from "tap";
import { jetstreamManager } from "@nats-io/jetstream";
import { decodeMsgpack, eventMsgId, jobUpdate, subjects, type JobEvent } from "../../protocol/index.js";
import { AckedPublisher, EventPublisher, Outbox, PayloadTooLargeError, connectTool } from "../../nats/index.js";
import { NatsServer } from "../helpers/nats-server.js";

async function setup(t: { teardown(fn: () => unknown): void }) {
  const ns = await NatsServer.start();
  const nc = await connectTool(ns.url, "publisher-test");
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "EV", subjects: [subjects.eventsAll()], duplicate_window: 60_000_000_000 });
  const acked = new AckedPublisher(nc);
  t.teardown(async () => {
    acked.close();
    await nc.close();
    await ns.stop();
  });
  return { nc, jsm, acked };
}

/** Every stored message of the events stream: its decoded body and its message id. */
async function stored(jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<{ ev: JobEvent; id: string }[]> {
  const n = (await jsm.streams.info("EV")).state.messages;
  const out: { ev: JobEvent; id: string }[] = [];
  for (let seq = 1; out.length < n; seq++) {
    const m = await jsm.streams.getMessage("EV", { seq });
    if (m) out.push({ ev: decodeMsgpack(m.data) as JobEvent, id: m.header.get("Nats-Msg-Id") });
  }
  return out;
}

t.test(
  "publisher - stamps the envelope and the message id; a second publish under one id is a duplicate",
  async (t) => {
    const { nc, jsm, acked } = await setup(t);
    const pub = new EventPublisher(nc, acked);
    const src = { jobId: "job1", workflowId: "wf1", attempt: 0 };
    const ack = await pub.publishEvent(src, 1, jobUpdate.queued(3, "cpu"));
    t.equal(ack.duplicate, false);
    t.equal((await pub.publishEvent(src, 1, jobUpdate.queued(3, "cpu"))).duplicate, true, "same id: deduplicated");
    const [first] = await stored(jsm);
    t.match(first, {
      id: eventMsgId("job1", 0, 1),
      ev: {
        type: "job_update",
        status: "queued",
        pool: "cpu",
        queue_position: 3,
        job_id: "job1",
        workflow_id: "wf1",
        attempt: 0,
      },
    });
    t.type(first!.ev.ts, "number", "with the producer's time");
  },
);

t.test("publisher - a body over max_payload is refused before anything is sent", async (t) => {
  const { nc, jsm, acked } = await setup(t);
  const pub = new EventPublisher(nc, acked);
  const big = "x".repeat(pub.limitBytes + 1);
  const err = await pub
    .publishEvent({ jobId: "j", workflowId: "w", attempt: 1 }, 1, {
      type: "log_update",
      node_id: "n",
      node_name: "n",
      content: big,
      severity: "info",
    })
    .catch((e: unknown) => e);
  t.ok(err instanceof PayloadTooLargeError, "PayloadTooLargeError");
  t.ok((err as PayloadTooLargeError).bytes > (err as PayloadTooLargeError).limitBytes, "saying by how much");
  t.equal((await jsm.streams.info("EV")).state.messages, 0, "nothing stored");
});

t.test("publisher - a failed publish is retried under the same id, then gives up", async (t) => {
  const { nc, jsm, acked } = await setup(t);
  const pub = new EventPublisher(nc, acked);
  await jsm.streams.delete("EV"); // every try is refused: no stream listens
  const retried: string[] = [];
  const retry = { timeoutMs: 500, retries: 2, pauseMs: 10, onRetry: (e: Error) => retried.push(e.message) };
  const err = await pub
    .publishEvent({ jobId: "j", workflowId: "w", attempt: 1 }, 0, jobUpdate.ended("failed", null, "x"), retry)
    .catch((e: unknown) => e);
  t.match(err, { name: "PublishError" }, "rejects after the last try");
  t.equal(retried.length, 2, "two retries after the first try");
});

t.test("publisher - a job's queue numbers its events 1, 2, … and they are stored in order", async (t) => {
  const { nc, jsm, acked } = await setup(t);
  const outbox = new Outbox(nc, acked, { maxBytes: 1 << 20, maxAgeMs: 10_000 });
  t.teardown(() => outbox.close());
  const pub = new EventPublisher(nc, acked, outbox);
  const q = pub.queue(
    { jobId: "job2", workflowId: "wf", attempt: 2 },
    (why) => t.fail(why),
    () => undefined,
  );
  for (let i = 0; i < 5; i++) q.push(q.encode({ type: "node_progress", node_id: "n", progress: i, total: 5 }));
  t.equal(q.count, 5);
  await q.settled();
  const all = await stored(jsm);
  t.same(
    all.map((m) => m.id),
    [1, 2, 3, 4, 5].map((n) => eventMsgId("job2", 2, n)),
    "ids in order",
  );
  t.same(
    all.map((m) => (m.ev as { progress: number }).progress),
    [0, 1, 2, 3, 4],
    "events in order",
  );
  t.match(all[0]!.ev, { job_id: "job2", workflow_id: "wf", attempt: 2 });
  t.throws(
    () =>
      new EventPublisher(nc, acked).queue(
        { jobId: "x", workflowId: "w", attempt: 1 },
        () => undefined,
        () => undefined,
      ),
    /no outbox/,
  );
});
