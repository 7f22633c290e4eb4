/**
 * A submit that failed half-way — the record and the Idempotency-Key were written, then the gateway or NATS
 * went away before the `queued` event and the dispatch — must not leave the retry with a job that never runs:
 * the retry answers with the first job and makes sure it is queued (copies of anything the first request did
 * store are dropped by message id). A key whose first request died before writing its job at all is taken over by
 * a retry once it is older than any submit lives (`idempotencyOrphanMs`). A submit whose dispatch the server
 * refuses answers 503 and leaves its job failed, never queued forever, and its key free for the retry. A submit
 * whose record the bucket refuses (the `queued` event and the dispatch go out before it) ends its watchers with
 * `failed`, and the agent ends the dispatch that has no record.
 */
import t, { type Test as Tap } from "tap";
import { startGateway, type GatewayOptions } from "../../gateway/index.js";
import { createHash } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { KV_JOBS, STREAM_JOBS, jobKeys, type JobRecord } from "../../protocol/index.js";
import { WsClient, api, readStream } from "../helpers/clients.js";
import { readJobLog } from "../helpers/history.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

/** A stack with one agent and a saved workflow "hello", and the jobs bucket on a test connection. */
async function helloStack(t: Tap, gateway: GatewayOptions = {}) {
  const s = await startStack(t, { agents: 1, gateway });
  await api(s.url, "PUT", "/api/workflows/hello", {
    graph: {
      nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "greeting", value: "hi" } }],
      edges: [],
    },
  });
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  return { s, kv: await new Kvm(nc).open(KV_JOBS) };
}

/** The key under which the gateway stores an Idempotency-Key of workflow "hello". */
const helloKey = (key: string) =>
  jobKeys.idempotency(
    createHash("sha256")
      .update("hello\0" + key)
      .digest("hex")
      .slice(0, 40),
  );

/** A `queued` record of workflow "hello", as a submit writes it (created now unless `over` says otherwise). */
const queuedRecord = (id: string, over: Partial<JobRecord> = {}): JobRecord => ({
  v: 1,
  id,
  workflow_id: "hello",
  status: "queued",
  pool: "cpu",
  attempt: 0,
  agent_id: null,
  params: {},
  created_at: new Date().toISOString(),
  started_at: null,
  finished_at: null,
  timeout_s: null,
  error: null,
  outputs: null,
  idempotency_key: null,
  ...over,
});

t.test("half-submit - an idempotent retry of a submit that stopped after the record runs that job, once", async (t) => {
  const { s, kv } = await helloStack(t);

  // The state a gateway leaves when it dies right after writing the record and the key.
  const jobId = "01halfsubmit00000000000000";
  const key = "client-retry-1";
  const rec = queuedRecord(jobId, { idempotency_key: key });
  await kv.create(helloKey(key), jobId);
  await kv.create(jobKeys.record(jobId), JSON.stringify(rec));

  const retry = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
  t.equal(retry.body.job_id, jobId, "the retry answers with the first job");
  const done = await check(
    async () => {
      const r = await api(s.url, "GET", `/api/jobs/${jobId}`);
      return r.body.status === "completed" ? r.body : null;
    },
    15_000,
    { name: "the job runs" },
  );
  t.same(done.outputs, { greeting: ["hi"] }, "and completes");
  t.equal(done.attempt, 1, "once");

  // A second retry changes nothing: no second run, one queued event, one terminal event.
  const again = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
  t.equal(again.body.job_id, jobId);
  const events = (await readStream(`${s.url}/api/jobs/${jobId}/events?after=0`)).events;
  t.equal(events.filter((e) => e.type === "job_update" && e.status === "queued").length, 1, "one queued event");
  t.equal(events.filter((e) => e.type === "job_update" && e.status === "completed").length, 1, "one terminal event");
  t.equal(events[0]?.status, "queued", "the history starts with it (a resume sees it whole)");
});

t.test(
  "half-submit - an Idempotency-Key whose first request died before writing its job is taken over by a retry once old enough",
  async (t) => {
    const orphanMs = 3_000;
    const { s, kv } = await helloStack(t, { idempotencyOrphanMs: orphanMs });

    // The state a gateway leaves when it dies right after storing the key: a key naming a job that was never written.
    const key = "client-retry-orphan";
    const ghost = "01halfsubmitghost000000000";
    const storedMs = Date.now();
    await kv.create(helloKey(key), ghost);

    const early = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
    const answeredMs = Date.now() - storedMs;
    if (answeredMs < orphanMs) {
      t.equal(
        early.status,
        409,
        "while the key is young, the retry is told the first request may still be creating it",
      );
      t.match(early.body, { code: "GW_ERR_CONFLICT" });
    } else {
      const why = `answered ${answeredMs} ms after the key was stored, past ${orphanMs} ms (machine too slow)`;
      void t.skip(`the young-key retry is told 409: ${why}`, async () => undefined);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, storedMs + orphanMs - Date.now())));
    const retry = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
    t.equal(retry.status, 202, "once the key is older than idempotencyOrphanMs, a retry creates the job");
    const jobId = retry.body.job_id as string;
    t.not(jobId, ghost, "a new job, not the one never written");
    const done = await check(
      async () => {
        const r = await api(s.url, "GET", `/api/jobs/${jobId}`);
        return r.body.status === "completed" ? r.body : null;
      },
      15_000,
      { name: "the job runs" },
    );
    t.same(done.outputs, { greeting: ["hi"] });
    const again = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
    t.equal(again.body.job_id, jobId, "later retries name the job that took the key over");
  },
);

t.test(
  "half-submit - a dispatch the jobs stream refuses: 503 with the job id, the job ends failed (never left queued, never run), and a retry with the same key makes a new job",
  async (t) => {
    const { s } = await helloStack(t);
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const jobsStream = (await jsm.streams.info(STREAM_JOBS)).config;
    // A real refusal by the server: every dispatch is now larger than the stream accepts; KV and events still work.
    await jsm.streams.update(STREAM_JOBS, { ...jobsStream, max_msg_size: 32 });

    const key = "refused-1";
    const first = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
    t.equal(first.status, 503, "the client is told the submit failed");
    t.equal(first.body.code, "GW_ERR_UNAVAILABLE");
    t.match(first.body.message, /could not be queued/, `and why (${first.body.message})`);
    const jobId = first.body.job_id as string;
    t.ok(jobId, "the answer names the job it abandoned");

    const rec = (await api(s.url, "GET", `/api/jobs/${jobId}`)).body;
    t.equal(rec.status, "failed", "the job is failed, not queued forever");
    t.equal((rec.error as { code?: string } | null)?.code, "JOB_ERR_NOT_QUEUED");
    const events = (await readStream(`${s.url}/api/jobs/${jobId}/events?after=0`)).events;
    t.same(
      events.map((e) => `${e.type}:${e.status}`),
      ["job_update:queued", "job_update:failed"],
      "watchers saw it queued, then end",
    );

    // The stream takes dispatches again; the client retries with the same key.
    await jsm.streams.update(STREAM_JOBS, { ...jobsStream });
    const retry = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} }, { "idempotency-key": key });
    t.equal(retry.status, 202, "the retry is accepted");
    t.not(retry.body.job_id, jobId, "as a new job (the key was released with the failed one)");
    const done = await check(
      async () => {
        const r = await api(s.url, "GET", `/api/jobs/${retry.body.job_id as string}`);
        return r.body.status === "completed" ? r.body : null;
      },
      15_000,
      { name: "the retried job runs" },
    );
    t.same(done.outputs, { greeting: ["hi"] });
    t.equal((await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status, "failed", "the abandoned job never ran");
  },
);

t.test(
  "half-submit - a record the jobs bucket refuses: the submitter is told, its watch sees queued then failed, and the dispatch stored before the record never runs",
  async (t) => {
    const { s } = await helloStack(t);
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const bucket = `KV_${KV_JOBS}`;
    const cfg = (await jsm.streams.info(bucket)).config;
    // A real refusal: a job record (~350 B of JSON) is now larger than the bucket takes; the `queued` event
    // and the dispatch (other streams) are still stored.
    await jsm.streams.update(bucket, { ...cfg, max_msg_size: 128 });

    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const res = await ws.request("run_job", { workflow_id: "hello" });
    await jsm.streams.update(bucket, { ...cfg });
    const err = res.error as { code?: string; message?: string; job_id?: string } | undefined;
    t.equal(err?.code, "GW_ERR_UNAVAILABLE", "the submitter is told the submit failed");
    t.match(err?.message, /could not be queued/, `and why (${err?.message})`);
    const jobId = String(err?.job_id);
    const end = await ws.waitTerminal(jobId, 10_000);
    t.equal(end.status, "failed", "the watch that saw `queued` ends: without a record the job can never run");
    const agent = s.agents[0]!;
    await check(
      () => new RegExp(`job ${jobId}: attempt 1 ends the job message: no job record`).test(agent.stderr()),
      20_000,
      { name: "the agent ends the dispatch" },
    );
    const log = await readJobLog(nc, jobId);
    t.same(
      log.stored.map((e) => `${e.type}:${e.status}:${e.attempt}`),
      ["job_update:queued:0", "job_update:failed:0"],
      "nothing ran: the stored history is queued, failed",
    );
    t.equal((await api(s.url, "GET", `/api/jobs/${jobId}`)).status, 404, "and no record was ever stored");
  },
);

t.test(
  "half-submit - a gateway starting ends queued jobs whose dispatch never reached NW_JOBS, and only those",
  async (t) => {
    const { s, kv } = await helloStack(t);
    const old = new Date(Date.now() - 5 * 60_000).toISOString();
    // Left by a gateway that died mid-submit five minutes ago: a record, no dispatch.
    const orphan = "01orphansubmit000000000000";
    await kv.create(jobKeys.record(orphan), JSON.stringify(queuedRecord(orphan, { created_at: old })));
    // Mid-submit right now on another gateway: too young to judge.
    const young = "01youngsubmit0000000000000";
    await kv.create(jobKeys.record(young), JSON.stringify(queuedRecord(young)));
    // Queued for five minutes in a pool no agent serves, its dispatch waiting in NW_JOBS: it must stay queued.
    const waiting = String(
      (await api(s.url, "POST", "/api/workflows/hello/run", { params: {}, requirements: { pool: "nobody" } })).body
        .job_id,
    );
    const e = await kv.get(jobKeys.record(waiting));
    await kv.update(
      jobKeys.record(waiting),
      JSON.stringify({ ...JSON.parse(e!.string()), created_at: old }),
      e!.revision,
    );

    const gw2 = await startGateway({ natsUrl: s.ns.url, port: 0 });
    t.teardown(() => gw2.stop());
    const ended = await check(
      async () => {
        const r = await api(gw2.url, "GET", `/api/jobs/${orphan}`);
        return r.body.status === "failed" ? r.body : null;
      },
      15_000,
      { name: "the orphan ends" },
    );
    t.match(ended.error, { code: "JOB_ERR_NOT_QUEUED", message: /never reached NW_JOBS/ }, "failed, saying why");
    const events = (await readStream(`${gw2.url}/api/jobs/${orphan}/events?after=0`)).events;
    t.match(events.at(-1), { type: "job_update", status: "failed" }, "a watcher gets its terminal event");
    t.equal(
      (await api(gw2.url, "GET", `/api/jobs/${waiting}`)).body.status,
      "queued",
      "a job whose dispatch waits stays queued",
    );
    t.equal(
      (await api(gw2.url, "GET", `/api/jobs/${young}`)).body.status,
      "queued",
      "a job younger than a submit may take stays queued",
    );
  },
);
