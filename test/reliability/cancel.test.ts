/**
 * Cancel, timeout and duplicate submits: cancel while queued / running /
 * finished / twice through DELETE …/run, POST /api/jobs/{id}/cancel and WS cancel_job; `timeout_s`; the same
 * Idempotency-Key sent N times at once.
 */
import t from "tap";
import { jetstreamManager } from "@nats-io/jetstream";
import { STREAM_JOBS, poolConsumer } from "../../protocol/index.js";
import { History, readJobLog } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import {
  RecWs,
  api,
  assertHistory,
  check,
  getJob,
  natsConn,
  putWorkflow,
  readEvents,
  sleepWorkflow,
  startAgent,
  startGateway,
  startNats,
  stats,
  summaryAtEnd,
  tokensWorkflow,
  waitJob,
  type Msg,
} from "./lib.js";

t.comment(`nats-server ${natsServerVersion()}`);
summaryAtEnd(t);

const updates = (c: RecWs, jobId: string, status?: string) =>
  c
    .messages()
    .filter((m) => m.job_id === jobId && m.type === "job_update" && (status === undefined || m.status === status));

t.test("cancel - a queued job becomes cancelled at once and never starts when an agent appears", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  await putWorkflow(gw.url, "tok", tokensWorkflow(20, 1_000));
  const h = new History().tokens("tok", 20);
  const c = await RecWs.open(gw.url, h.client("watcher"));
  const jobId = await c.run("tok");
  t.equal((await getJob(gw.url, jobId)).status, "queued", "no agent: the job waits");
  const res = await api(gw.url, "DELETE", `/api/workflows/tok/run?job_id=${jobId}`);
  t.equal(res.status, 200, "DELETE …/run answers 200");
  t.match(res.body, { job_id: jobId, status: "cancelled" }, "and says cancelled");
  t.match(
    await getJob(gw.url, jobId),
    { status: "cancelled", attempt: 0, error: { code: "JOB_ERR_CANCELLED" } },
    "the record is cancelled at once",
  );
  await c.waitTerminal(jobId, 5_000);
  t.match(updates(c, jobId).at(-1), { status: "cancelled" }, "the client sees job_update cancelled");
  // An agent appears: it must skip the cancelled job and run the next one.
  const a = await startAgent(t, ns.url, ["--max-jobs", "1"]);
  const next = await c.run("tok");
  await c.waitTerminal(next);
  t.match(await getJob(gw.url, next), { status: "completed", agent_id: a.id }, "the agent runs the following job");
  const nc = await natsConn(t, ns.url);
  const jsm = await jetstreamManager(nc);
  let ci: unknown = null;
  await check(
    async () => {
      const i = await jsm.consumers.info(STREAM_JOBS, poolConsumer("cpu"));
      ci = i;
      return i.num_pending === 0 && i.num_ack_pending === 0;
    },
    10_000,
    { name: "job queue drained" },
  ).catch((err: Error) => {
    t.comment(JSON.stringify(ci), a.stderr());
    throw err;
  });
  const log = await readJobLog(nc, jobId);
  t.same(
    log.stored.map((e) => `${e.type}:${e.status ?? ""}:${e.attempt}`).filter((s) => !s.startsWith("job_update:queued")),
    ["job_update:cancelled:0"],
    "the cancelled job never started: no event of any attempt",
  );
  t.match(await getJob(gw.url, jobId), { status: "cancelled", attempt: 0, agent_id: null }, "its record is unchanged");
  await c.close();
  stats.jobs += 2;
  await assertHistory(t, h, ns.url, "queued-cancel history");
});

t.test("cancel - a running job ends cancelled and its agent stops (no chunk after the terminal event)", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  const a = await startAgent(t, ns.url, ["--max-jobs", "1"]);
  await putWorkflow(gw.url, "tok", tokensWorkflow(1_000, 100));
  await putWorkflow(gw.url, "short", tokensWorkflow(5, 1_000));
  const h = new History().tokens("tok", 1_000).tokens("short", 5);
  const c = await RecWs.open(gw.url, h.client("watcher"));
  const jobId = await c.run("tok");
  await check(() => c.messages().filter((m) => m.job_id === jobId && m.type === "chunk").length >= 20, 20_000, {
    name: "20 chunks",
  });
  const cancelledAt = Date.now();
  const r = await c.request("cancel_job", { job_id: jobId });
  t.match(
    r.result,
    { job_id: jobId, status: "running", message: "Job cancellation requested" },
    "WS cancel_job answers: cancellation requested",
  );
  await c.waitTerminal(jobId, 10_000);
  t.match(
    updates(c, jobId).at(-1),
    { status: "cancelled", attempt: 1 },
    `the job ends cancelled (${Date.now() - cancelledAt} ms after the request)`,
  );
  t.match(
    await getJob(gw.url, jobId),
    { status: "cancelled", error: { code: "JOB_ERR_CANCELLED" } },
    "the record is cancelled",
  );
  // The agent's one slot is free again once the run stopped: the next job runs on it.
  const next = await c.run("short");
  await c.waitTerminal(next);
  t.match(
    await getJob(gw.url, next),
    { status: "completed", agent_id: a.id },
    "the agent is free and runs the next job",
  );
  const nc = await natsConn(t, ns.url);
  const log = await readJobLog(nc, jobId);
  const after = log.stored.filter((e) => e.seq > log.terminal!.seq);
  t.same(
    after.map((e) => e.type),
    [],
    "nothing was published for the job after its terminal event",
  );
  const chunks = log.stored.filter((e) => e.type === "chunk").length;
  t.ok(chunks < 1_000, `the run stopped early (${chunks} of 1000 chunks)`);
  await c.close();
  stats.jobs += 2;
  await assertHistory(t, h, ns.url, "running-cancel history");
});

t.test("cancel - a finished job answers its final state with 200, and cancelling twice is idempotent", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  await startAgent(t, ns.url, ["--max-jobs", "1"]);
  await putWorkflow(gw.url, "short", tokensWorkflow(5, 1_000));
  await putWorkflow(gw.url, "long", sleepWorkflow(30));
  const h = new History().tokens("short", 5);
  const c = await RecWs.open(gw.url, h.client("watcher"));

  const done = await c.run("short");
  await c.waitTerminal(done);
  for (const [method, path] of [
    ["POST", `/api/jobs/${done}/cancel`],
    ["DELETE", `/api/workflows/short/run?job_id=${done}`],
  ] as const) {
    const res = await api(gw.url, method, path);
    t.equal(res.status, 200, `${method} cancel of a finished job: 200`);
    t.match(res.body, { job_id: done, status: "completed", message: "job is completed" }, "answers the final state");
  }
  const ws = await c.request("cancel_job", { job_id: done });
  t.match(ws.result, { status: "completed" }, "WS cancel_job of a finished job answers its final state");
  t.match(await getJob(gw.url, done), { status: "completed" }, "the record is unchanged");

  // Twice, concurrently, while running: both answer 200, one terminal event.
  const running = await c.run("long");
  await waitJob(gw.url, running, (j) => j.status === "running");
  const both = await Promise.all([
    api(gw.url, "POST", `/api/jobs/${running}/cancel`),
    api(gw.url, "POST", `/api/jobs/${running}/cancel`),
    c.request("cancel_job", { job_id: running }),
  ]);
  t.same(
    both.slice(0, 2).map((b) => b.status),
    [200, 200],
    "both REST cancels answer 200",
  );
  t.notOk(both[2].error, "WS cancel_job answers without error");
  await c.waitTerminal(running, 10_000);
  const again = await api(gw.url, "POST", `/api/jobs/${running}/cancel`);
  t.match(
    again,
    { status: 200, body: { status: "cancelled", message: "job is cancelled" } },
    "a cancel after the end answers cancelled, 200",
  );

  // Twice while queued (no free slot: the agent is busy with a long job).
  const blocker = await c.run("long");
  await waitJob(gw.url, blocker, (j) => j.status === "running");
  const queued = await c.run("short");
  const q = await Promise.all([
    api(gw.url, "DELETE", `/api/workflows/short/run`, { job_id: queued }),
    api(gw.url, "POST", `/api/jobs/${queued}/cancel`),
  ]);
  t.same(
    q.map((x) => [x.status, x.body.status]),
    [
      [200, "cancelled"],
      [200, "cancelled"],
    ],
    "two cancels of a queued job: both 200 cancelled",
  );
  await c.waitTerminal(queued, 5_000);
  await api(gw.url, "POST", `/api/jobs/${blocker}/cancel`);
  await c.waitTerminal(blocker, 10_000);

  const nc = await natsConn(t, ns.url);
  for (const j of [running, queued]) {
    const log = await readJobLog(nc, j);
    t.equal(
      log.stored.filter((e) => e.type === "job_update" && e.status === "cancelled").length,
      1,
      `one cancelled event stored for ${j === running ? "the running" : "the queued"} job`,
    );
  }
  t.equal((await api(gw.url, "POST", `/api/jobs/nope/cancel`)).status, 404, "cancelling an unknown job is 404");
  await c.close();
  stats.jobs += 4;
  await assertHistory(t, h, ns.url, "cancel-twice history");
});

t.test("cancel - timeout_s ends a run timed_out and stops its work", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  const a = await startAgent(t, ns.url, ["--max-jobs", "1"]);
  await putWorkflow(gw.url, "long", sleepWorkflow(30));
  await putWorkflow(gw.url, "tok", tokensWorkflow(1_000, 100));
  await putWorkflow(gw.url, "short", tokensWorkflow(5, 1_000));
  const h = new History().tokens("tok", 1_000).tokens("short", 5);
  // Over REST with a stream: the stream ends with timed_out.
  const started = Date.now();
  const s = await readEvents(`${gw.url}/api/workflows/long/run?stream=true`, {
    method: "POST",
    body: { timeout_s: 1 },
    sse: false,
    log: h.client("rest"),
    timeoutMs: 20_000,
  });
  const elapsed = Date.now() - started;
  t.match(
    s.events.at(-1),
    { type: "job_update", status: "timed_out" },
    `the streamed run ends timed_out (${elapsed} ms)`,
  );
  t.ok(elapsed >= 1_000 && elapsed < 10_000, "after about timeout_s");
  const id1 = String(s.events[0]!.job_id);
  t.match(
    await getJob(gw.url, id1),
    { status: "timed_out", timeout_s: 1, error: { code: "JOB_ERR_TIMEOUT" } },
    "the record is timed_out",
  );
  // Over WS on a token stream: no chunk after the terminal event.
  const c = await RecWs.open(gw.url, h.client("ws"));
  const id2 = await c.run("tok", { timeout_s: 0.5 });
  await c.waitTerminal(id2, 10_000);
  t.match(updates(c, id2).at(-1), { status: "timed_out" }, "WS run_job with timeout_s ends timed_out");
  const next = await c.run("short");
  await c.waitTerminal(next);
  t.match(await getJob(gw.url, next), { status: "completed", agent_id: a.id }, "the agent is free again");
  const nc = await natsConn(t, ns.url);
  const log = await readJobLog(nc, id2);
  t.same(
    log.stored.filter((e) => e.seq > log.terminal!.seq).map((e) => e.type),
    [],
    "nothing published after timed_out",
  );
  t.ok(log.stored.filter((e) => e.type === "chunk").length < 1_000, "the token run was stopped early");
  t.equal(
    (await api(gw.url, "POST", "/api/workflows/long/run", { timeout_s: -1 })).status,
    400,
    "a negative timeout_s is a 400",
  );
  await c.close();
  stats.jobs += 3;
  await assertHistory(t, h, ns.url, "timeout history");
});

t.test("cancel - the same Idempotency-Key sent 10 times at once creates one job", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  await startAgent(t, ns.url, ["--max-jobs", "2"]);
  await putWorkflow(gw.url, "tok", tokensWorkflow(50, 500));
  const key = `key-${Date.now()}`;
  const res = await Promise.all(
    Array.from({ length: 10 }, () =>
      api(gw.url, "POST", "/api/workflows/tok/run", { params: {} }, { "idempotency-key": key }),
    ),
  );
  t.same([...new Set(res.map((r) => r.status))], [202], "every request answers 202");
  const ids = new Set(res.map((r) => String(r.body.job_id)));
  t.equal(ids.size, 1, "all name the same job");
  const jobId = [...ids][0]!;
  // Later retries, plain and streamed, still name it; the stream shows that job's events.
  const retry = await api(gw.url, "POST", "/api/workflows/tok/run", { params: {} }, { "idempotency-key": key });
  t.equal(retry.body.job_id, jobId, "a later retry names the same job");
  const h = new History().tokens("tok", 50);
  const streams = await Promise.all(
    [0, 1].map((i) =>
      readEvents(`${gw.url}/api/workflows/tok/run?stream=true`, {
        method: "POST",
        body: { params: {} },
        headers: { "idempotency-key": key },
        sse: i === 1,
        log: h.client(`stream${i}`),
      }),
    ),
  );
  for (const s of streams)
    t.ok(s.events.length > 0 && s.events.every((e) => e.job_id === jobId), "a streamed retry streams the same job");
  await waitJob(gw.url, jobId, (j) => j.status === "completed");
  const list = await api(gw.url, "GET", "/api/jobs?workflow_id=tok");
  t.same(
    (list.body.jobs as Msg[]).map((j) => j.id),
    [jobId],
    "the workflow has exactly one job",
  );
  const nc = await natsConn(t, ns.url);
  const log = await readJobLog(nc, jobId);
  t.equal(log.stored.filter((e) => e.type === "job_update" && e.status === "running").length, 1, "it ran once");
  const other = await api(
    gw.url,
    "POST",
    "/api/workflows/tok/run",
    { params: {} },
    { "idempotency-key": `${key}-other` },
  );
  t.not(other.body.job_id, jobId, "another key makes another job");
  await waitJob(gw.url, String(other.body.job_id), (j) => j.status === "completed");
  stats.jobs += 2;
  await assertHistory(t, h, ns.url, "idempotent-submit history");
});

t.test("cancel - a cancel sent while the agent is cut off from NATS stops the job once it is back", async (t) => {
  const { CutProxy } = await import("../client/cut-proxy.js");
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  // The agent reaches NATS through a link the test cuts; the gateway's own link stays up.
  const link = await CutProxy.start(ns.url.replace(/^nats:/, "http:"));
  t.teardown(() => link.stop());
  await startAgent(t, `nats://127.0.0.1:${link.port}`);
  await putWorkflow(gw.url, "sleep", sleepWorkflow(60));
  const started = await api(gw.url, "POST", "/api/workflows/sleep/run", { params: {} });
  const jobId = String(started.body.job_id);
  await check(async () => (await getJob(gw.url, jobId)).status === "running", 20_000, { name: "running" });
  await link.cut();
  const res = await api(gw.url, "POST", `/api/jobs/${jobId}/cancel`);
  t.equal(res.status, 200, "the gateway takes the cancel");
  await link.restore();
  // The core-NATS cancel message went nowhere; the agent must learn it from the record once back.
  const end = await check(
    async () => {
      const j = await getJob(gw.url, jobId);
      return j.status !== "running" ? j : null;
    },
    20_000,
    { name: "the job ended after the link came back" },
  );
  t.match(end, { status: "cancelled", error: { code: "JOB_ERR_CANCELLED" } }, "cancelled, not left to run its 60 s");
});
