/**
 * A `run_job` sent again with the same `job_id` (the client's name for the run; its socket dropped before the
 * answer came) finds the first run's job instead of starting a twin, and the new socket follows that job from its
 * first event. Over a real gateway, NATS and agent.
 */
import t from "tap";
import { WsClient, api, readStream, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

const graph = {
  nodes: [
    { id: "tok", type: "nodeway.test.Tokens", data: { count: 30, rate: 60 } },
    { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
  ],
  edges: [{ id: "e1", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
};

const run = (ws: WsClient, jobId: string) => ws.request("run_job", { workflow_id: "tok", job_id: jobId });
const jobOf = (reply: Msg) => String((reply.result as { job_id?: string } | undefined)?.job_id);

t.test("ws run retry - run_job again with the same job_id follows the first run's job, not a twin", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/tok", { graph });

  const first = await WsClient.open(s.url, "msgpack");
  const jobId = jobOf(await run(first, "client-run-7f3a"));
  first.terminate(); // the client never saw its answer, say: it sends the same run again
  const again = await WsClient.open(s.url, "json");
  t.teardown(() => again.close());
  t.equal(jobOf(await run(again, "client-run-7f3a")), jobId, "the retry is answered with the first job");
  const end = await again.waitTerminal(jobId, 30_000);
  t.equal(end.status, "completed");
  t.match(
    again.messages.find((m) => m.type === "job_resumed"),
    { job_id: jobId },
    "the retrying socket resumed the job",
  );
  const seqs = again.events(jobId).map((m) => Number(m.seq));
  const stored = (await readStream(`${s.url}/api/jobs/${jobId}/events?after=0`)).events.map((m) => Number(m.seq));
  t.same(seqs, stored, "it got the job's every event from the first, once, in order");
  const list = await api(s.url, "GET", "/api/jobs?workflow_id=tok");
  t.equal((list.body.jobs as unknown[]).length, 1, "one job ran, not two");

  const other = jobOf(await run(again, "client-run-other"));
  t.not(other, jobId, "another job_id is another run");
  const plain = jobOf(await again.request("run_job", { workflow_id: "tok" }));
  t.not(plain, other, "and a run without one is always new");
  await check(
    async () => ((await api(s.url, "GET", "/api/jobs?workflow_id=tok")).body.jobs as unknown[]).length === 3,
    10_000,
    { name: "three jobs listed" },
  );
});

/** A workflow with one string input `text`, output as it is. */
const echo = {
  nodes: [
    { id: "in", type: "nodetool.input.StringInput", data: { name: "text", value: "" } },
    { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
  ],
  edges: [{ id: "e1", source: "in", sourceHandle: "output", target: "out", targetHandle: "value" }],
};

t.test(
  "ws run retry - a key sent again with another request is refused, not answered with the first job",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    await api(s.url, "PUT", "/api/workflows/tok", { graph });
    t.equal((await api(s.url, "PUT", "/api/workflows/echo", { graph: echo })).status, 200);
    const post = (body: Record<string, unknown>) =>
      api(s.url, "POST", "/api/workflows/echo/run", body, { "idempotency-key": "order-42" });
    const first = await post({ params: { text: "a" }, timeout_s: 60 });
    t.equal(first.status, 202, "the first request makes a job");
    const again = await post({ timeout_s: 60, params: { text: "a" } });
    t.equal(again.body.job_id, first.body.job_id, "the same request again (keys in another order): the first job");
    const other = await post({ params: { text: "b" }, timeout_s: 60 });
    t.equal(other.status, 422, "other params under the same key: 422");
    t.match(other.body, {
      code: "GW_ERR_IDEMPOTENCY_MISMATCH",
      message: `this Idempotency-Key was first sent with a different request (job ${first.body.job_id}): a retry must send the same graph, params and options, a new request a new key`,
    });
    t.equal((await post({ params: { text: "a" }, timeout_s: 5 })).status, 422, "another timeout: 422");
    t.equal((await post({ params: { text: "a" } })).status, 422, "no timeout (the default): 422");

    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const jobId = jobOf(await run(ws, "client-run-9"));
    const fewer = graph.nodes.map((n) => (n.id === "tok" ? { ...n, data: { count: 5, rate: 60 } } : n));
    const twin = await ws.request("run_job", {
      workflow_id: "tok",
      graph: { ...graph, nodes: fewer },
      job_id: "client-run-9",
    });
    t.match(twin.error, { code: "GW_ERR_IDEMPOTENCY_MISMATCH" }, "run_job, same job_id, another graph: refused");
    const same = await ws.request("run_job", { job_id: "client-run-9", workflow_id: "tok", params: {} });
    t.equal(jobOf(same), jobId, "the same run again (params {} as none): the first job");
  },
);

t.test("ws run retry - a job_id that is no short string is refused", async (t) => {
  const s = await startStack(t, { agents: 0 });
  await api(s.url, "PUT", "/api/workflows/tok", { graph: { nodes: [], edges: [] } });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  for (const bad of ["", "x".repeat(257), 42]) {
    const r = await ws.request("run_job", { workflow_id: "tok", job_id: bad });
    t.match(r.error, { code: "PROTO_ERR_SHAPE" }, `job_id ${JSON.stringify(bad).slice(0, 20)} refused`);
  }
});
