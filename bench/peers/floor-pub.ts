/**
 * The floor publisher (stands in for the agent in the peer chains): on `floor.start {job_id, count, rate}` it
 * emits `count` chunk events shaped like ours, paced exactly like `nodeway.test.Tokens` (token i due at
 * start + (i + 1) / rate), msgpack-encoded with `ts` = timeOrigin + now() at emit, on core NATS
 * `floor.ev.<job>` (or `subject`, when the start names one: the JetStream floors' stream), then a terminal
 * `job_update`; with `msg_id` each carries a `Nats-Msg-Id` header, as the agent's events do. `floor.stop {job_id}`
 * stops a job. It also answers
 * `floor.dispatch` requests with a `job_update running` event (the dispatch floor's worker).
 */
import { connect, headers } from "@nats-io/transport-node";
import { encodeMsgpack } from "../../protocol/index.js";

const nc = await connect({ servers: process.argv[2]! });
const stopped = new Set<string>();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(
  job_id: string,
  count: number,
  rate: number,
  subject = `floor.ev.${job_id}`,
  msgId = false,
): Promise<void> {
  const opts = (i: number) => {
    if (!msgId) return undefined;
    const h = headers();
    h.set("Nats-Msg-Id", `${job_id}:1:${i}`);
    return { headers: h };
  };
  const base = { job_id, workflow_id: "bench", attempt: 1 };
  const intervalMs = rate > 0 ? 1000 / rate : 0;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    if (stopped.has(job_id)) break;
    const waitMs = start + (i + 1) * intervalMs - performance.now();
    if (waitMs >= 1) await sleep(waitMs);
    const ev = {
      type: "chunk",
      node_id: "tokens",
      content_type: "text",
      content: `tok${i} `,
      done: false,
      ...base,
      ts: performance.timeOrigin + performance.now(),
      seq: i + 1,
    };
    nc.publish(subject, encodeMsgpack(ev), opts(i + 1));
  }
  stopped.delete(job_id);
  nc.publish(
    subject,
    encodeMsgpack({
      type: "job_update",
      status: "completed",
      ...base,
      ts: performance.timeOrigin + performance.now(),
      seq: count + 1,
    }),
    opts(count + 1),
  );
}

nc.subscribe("floor.start", {
  callback: (_e, m) => {
    const s = JSON.parse(dec.decode(m.data)) as {
      job_id: string;
      count: number;
      rate: number;
      subject?: string;
      msg_id?: boolean;
    };
    void run(s.job_id, s.count, s.rate, s.subject, s.msg_id);
  },
});
nc.subscribe("floor.stop", {
  callback: (_e, m) => {
    stopped.add((JSON.parse(dec.decode(m.data)) as { job_id: string }).job_id);
  },
});
nc.subscribe("floor.dispatch", {
  callback: (_e, m) => {
    const req = JSON.parse(dec.decode(m.data)) as { job_id?: string };
    m.respond(
      JSON.stringify({
        type: "job_update",
        status: "running",
        job_id: req.job_id ?? "x",
        workflow_id: "bench",
        attempt: 1,
        ts: performance.timeOrigin + performance.now(),
      }),
    );
  },
});
await nc.flush();
process.stdout.write("floor-pub ready\n");
