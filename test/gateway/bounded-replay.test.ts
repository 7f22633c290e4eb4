/**
 * Bounded memory per client: a resume reads a job's stored events from just after its `after` seq, a batch at a
 * time, never the whole history into one array, with the same fenced, no-gap, no-duplicate result; and the
 * events stream carries the configured caps (bytes, events per job), also on a stream that already existed.
 */
import t from "tap";
import { headers } from "@nats-io/transport-node";
import {
  STREAM_EVENTS,
  encodeJson,
  encodeMsgpack,
  eventMsgId,
  jobKeys,
  newId,
  subjects,
} from "../../protocol/index.js";
import { ErrorCode } from "../../protocol/errors.js";
import { jobEventBudget } from "../../protocol/streams.js";
import { compileGatewayConfig, startGateway } from "../../gateway/index.js";
import { connectNats, type NatsParts } from "../../gateway/nats.js";
import { EventHub, type Delivery } from "../../gateway/event-hub.js";
import { NatsServer } from "../helpers/nats-server.js";

const EVENTS = 3_000;
const BATCH = 100;

/** Publishes a job's history: queued (attempt 0), running (1), chunks, a stale attempt-0 update near the end, completed. */
async function publishJob(n: NatsParts, jobId: string): Promise<{ seq: number; stale: boolean }[]> {
  const base = { job_id: jobId, workflow_id: "wf", ts: 1 };
  const evs: Record<string, unknown>[] = [
    { type: "job_update", status: "queued", attempt: 0, pool: "cpu", ...base },
    { type: "job_update", status: "running", attempt: 1, ...base },
  ];
  for (let i = 0; evs.length < EVENTS - 1; i++) {
    if (i === EVENTS - 60) evs.push({ type: "job_update", status: "queued", attempt: 0, queue_position: 1, ...base });
    else
      evs.push({
        type: "chunk",
        node_id: "n",
        content_type: "text",
        content: `tok${i} `,
        done: false,
        attempt: 1,
        ...base,
      });
  }
  evs.push({ type: "job_update", status: "completed", attempt: 1, result: {}, ...base });
  const out: { seq: number; stale: boolean }[] = [];
  for (let i = 0; i < evs.length; i += 500) {
    const acks = await Promise.all(
      evs.slice(i, i + 500).map((ev, k) => {
        const h = headers();
        h.set("Nats-Msg-Id", eventMsgId(jobId, ev.attempt as number, i + k));
        return n.js.publish(subjects.jobEvents(jobId), encodeMsgpack(ev), { headers: h });
      }),
    );
    for (const [k, a] of acks.entries()) out.push({ seq: a.seq, stale: i + k > 1 && evs[i + k]!.attempt === 0 });
  }
  return out;
}

async function drain(
  hub: EventHub,
  jobId: string,
  after: number,
): Promise<{ count: number; seqs: number[]; batches: number[]; ended: boolean }> {
  const r = await hub.openReplay(jobId, after);
  const seqs: number[] = [];
  const batches: number[] = [];
  for (let b: Delivery[] = await r.next(); b.length > 0; b = await r.next()) {
    batches.push(b.length);
    for (const d of b) seqs.push(d.seq);
  }
  return { count: r.count, seqs, batches, ended: r.ended };
}

t.test("bounded replay - a resume reads the tail after its seq in batches, fenced, exactly once", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
  t.teardown(() => n.nc.close());
  const jobId = newId();
  const stored = await publishJob(n, jobId);
  const admitted = stored.filter((s) => !s.stale).map((s) => s.seq);
  // No replay cache (cacheBytes 0): every replay reads JetStream.
  const hub = new EventHub(
    n,
    n.jsm,
    () => undefined,
    () => undefined,
    0,
    Number.POSITIVE_INFINITY,
    BATCH,
  );

  const after = admitted[admitted.length - 250]!;
  const tail = admitted.filter((s) => s > after);
  let read = hub.replayMessagesRead;
  const late = await drain(hub, jobId, after);
  t.same(late.seqs, tail, "exactly the admitted events after the seq, in order (the stale update fenced off)");
  t.equal(late.count, tail.length, "the header's count is what follows");
  t.ok(late.ended, "the replay reaches the terminal event");
  read = hub.replayMessagesRead - read;
  t.ok(read <= 2 * (tail.length + 1), `read ${read} stored events for a ${tail.length}-event tail of ${stored.length}`);
  t.ok(Math.max(...late.batches) <= BATCH, `no batch holds more than ${BATCH} (${late.batches.join(",")})`);

  read = hub.replayMessagesRead;
  const whole = await drain(hub, jobId, 0);
  t.same(whole.seqs, admitted, "from 0: the whole fenced history");
  t.ok(Math.max(...whole.batches) <= BATCH, "a whole history too comes a batch at a time");
  t.equal(hub.replayBatchPeak, BATCH, "the most events one batch held");
  t.ok(hub.replayMessagesRead - read <= 2 * stored.length, "each stored event read at most twice (count, then send)");

  const atEnd = await drain(hub, jobId, admitted.at(-1)!);
  t.same([atEnd.count, atEnd.seqs, atEnd.ended], [0, [], true], "resumed at the terminal event: nothing, ended");
  const small = await drain(hub, jobId, admitted.at(-5)!);
  t.same(small.seqs, admitted.slice(-4), "a short tail in one batch");
  t.same(
    (await hub.replay(jobId, after)).events.map((d) => d.seq),
    tail,
    "the whole-array replay agrees",
  );
});

t.test("bounded replay - GET /api/jobs/:id/events?after=N over a real gateway streams exactly the tail", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const gw = await startGateway({ natsUrl: ns.url, port: 0, replayCacheBytes: 0 });
  t.teardown(() => gw.stop());
  const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
  t.teardown(() => n.nc.close());
  const jobId = newId();
  const rec = {
    v: 1,
    id: jobId,
    workflow_id: "wf",
    status: "completed",
    pool: "cpu",
    attempt: 1,
    agent_id: null,
    params: {},
    created_at: new Date().toISOString(),
    started_at: null,
    finished_at: null,
    timeout_s: null,
    error: null,
    outputs: {},
    idempotency_key: null,
  };
  await n.jobsKv.put(jobKeys.record(jobId), encodeJson(rec));
  const stored = await publishJob(n, jobId);
  const admitted = stored.filter((s) => !s.stale).map((s) => s.seq);
  for (const back of [1_500, 3, 1]) {
    const after = admitted[admitted.length - back]!;
    const res = await fetch(`${gw.url}/api/jobs/${jobId}/events?after=${after}`);
    t.equal(res.status, 200);
    const lines = (await res.text())
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { seq?: number });
    t.same(
      lines.map((l) => l.seq),
      admitted.filter((s) => s > after),
      `after the ${back}th-last event: exactly the rest`,
    );
  }
});

t.test("bounded replay - NW_EVENTS gets the byte and per-job caps, updated on an existing stream", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const a = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
  t.teardown(() => a.nc.close());
  let cfg = (await a.jsm.streams.info(STREAM_EVENTS)).config;
  t.same(
    [cfg.max_bytes, cfg.max_msgs_per_subject],
    [4 * 1024 ** 3, 100_000],
    "defaults: 4 GiB, 100,000 events per job",
  );
  const b = await connectNats(
    compileGatewayConfig({ natsUrl: ns.url, eventsMaxBytes: 64 * 1024 * 1024, eventsMaxPerJob: 500 }),
    () => undefined,
  );
  t.teardown(() => b.nc.close());
  cfg = (await b.jsm.streams.info(STREAM_EVENTS)).config;
  t.same(
    [cfg.max_bytes, cfg.max_msgs_per_subject],
    [64 * 1024 * 1024, 500],
    "a gateway with other caps updates the stream",
  );
  t.throws(
    () => compileGatewayConfig({ natsUrl: ns.url, eventsMaxPerJob: 0 }),
    /eventsMaxPerJob/,
    "a bad cap stops start-up, named",
  );
  t.equal(
    jobEventBudget(500),
    500 - 256,
    "an agent's budget leaves room for the gateway's updates and the terminal one",
  );
  t.equal(ErrorCode.JOB_ERR_TOO_MANY_EVENTS, "JOB_ERR_TOO_MANY_EVENTS");
});
