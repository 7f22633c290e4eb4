/**
 * What NATS cannot carry (an event or a job record over the server's max_payload, 1 MiB by default) fails the job
 * with `JOB_ERR_OUTPUT_TOO_LARGE`, saying what and by how much, instead of the event being dropped with a log line
 * or the record write failing over and over (the job stayed `running` and ran again on each redelivery). On the
 * way in, a workflow or a job too large for one NATS message is refused 413 saying so, not 500 or 503.
 */
import t from "tap";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

const KB600 = "x".repeat(600 * 1024);

t.test(
  "output limits - an event NATS cannot carry fails the job, naming it; a record too large fails it with the events sent",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const run = async (graph: unknown) => {
      const r = await ws.request("run_job", { graph, params: {} });
      const jobId = String((r.result as { job_id: string }).job_id);
      const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
      return { jobId, end, events: ws.events(jobId) };
    };

    // 600 KiB in, 1.2 MiB out of one node: its output_update is over the limit.
    const doubled = await run({
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: KB600 } },
        { id: "cat", type: "nodetool.text.Concat", data: {} },
        { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
      ],
      edges: [
        { id: "e1", source: "c", sourceHandle: "output", target: "cat", targetHandle: "a" },
        { id: "e2", source: "c", sourceHandle: "output", target: "cat", targetHandle: "b" },
        { id: "e3", source: "cat", sourceHandle: "output", target: "out", targetHandle: "value" },
      ],
    });
    t.equal(doubled.end.status, "failed", "the job fails rather than lose its output");
    t.equal((doubled.end.error as { code: string }).code, "JOB_ERR_OUTPUT_TOO_LARGE");
    t.match(
      (doubled.end.error as { message: string }).message,
      /the output_update of node "out" is \d{7} bytes; NATS carries at most \d+/,
      "naming the event, its size and the limit",
    );
    const rec1 = await api(s.url, "GET", `/api/jobs/${doubled.jobId}`);
    t.equal(rec1.body.status, "failed", "the record says so too");

    // Two outputs of 600 KiB: each event fits, the record holding both does not.
    const two = await run({
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: KB600 } },
        { id: "a", type: "nodetool.output.Output", data: { name: "a" } },
        { id: "b", type: "nodetool.output.Output", data: { name: "b" } },
      ],
      edges: [
        { id: "e1", source: "c", sourceHandle: "output", target: "a", targetHandle: "value" },
        { id: "e2", source: "c", sourceHandle: "output", target: "b", targetHandle: "value" },
      ],
    });
    t.equal(two.end.status, "failed", "a record NATS cannot store fails the job");
    t.equal((two.end.error as { code: string }).code, "JOB_ERR_OUTPUT_TOO_LARGE");
    t.match(
      (two.end.error as { message: string }).message,
      /outputs make its record \d{7} bytes; NATS stores at most \d+.*sent as output_update events/,
      "saying so",
    );
    t.equal(
      two.events.filter((e) => e.type === "output_update" && String(e.value).length === KB600.length).length,
      2,
      "and both outputs reached the client as events",
    );
    const rec2 = await api(s.url, "GET", `/api/jobs/${two.jobId}`);
    t.same(
      [rec2.body.status, rec2.body.attempt, rec2.body.outputs],
      ["failed", 1, null],
      "ended on its first attempt, without outputs",
    );
    t.equal(s.agents[0]!.stderr().includes("crashed in the runner"), false, "nothing crashed in the agent");

    const small = await run({
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: "ok" } },
        { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
      ],
      edges: [{ id: "e", source: "c", sourceHandle: "output", target: "out", targetHandle: "value" }],
    });
    t.equal(small.end.status, "completed", "the agent runs the next job");
  },
);

t.test("output limits - a workflow or a submit too large for one NATS message is refused 413, saying so", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const graphOf = (value: string) => ({
    nodes: [
      { id: "c", type: "nodetool.constant.String", data: { value } },
      { id: "out", type: "nodetool.output.Output", data: { name: "t" } },
    ],
    edges: [{ id: "e", source: "c", sourceHandle: "output", target: "out", targetHandle: "value" }],
  });
  const big = await api(s.url, "PUT", "/api/workflows/big", { name: "big", graph: graphOf("x".repeat(1_100_000)) });
  t.equal(big.status, 413, "a workflow over the limit: 413, not 500");
  t.equal(big.body.code, "GW_ERR_BODY_TOO_LARGE");
  t.match(
    String(big.body.message),
    /the workflow is \d{7} bytes; a workflow may be at most \d+ \(NATS max_payload less headers\)/,
  );
  t.equal((await api(s.url, "GET", "/api/workflows/big")).status, 404, "and nothing was stored");

  const withInput = {
    nodes: [
      { id: "in", type: "nodetool.input.StringInput", data: { name: "blob", value: "" } },
      { id: "out", type: "nodetool.output.Output", data: { name: "t" } },
    ],
    edges: [{ id: "e", source: "in", sourceHandle: "output", target: "out", targetHandle: "value" }],
  };
  t.equal((await api(s.url, "PUT", "/api/workflows/small", { name: "small", graph: withInput })).status, 200);
  const run = await api(s.url, "POST", "/api/workflows/small/run", { params: { blob: "y".repeat(1_100_000) } });
  t.equal(
    run.status,
    413,
    "a job whose params make its dispatch too large: 413, not 503 (a retry would fail the same way)",
  );
  t.equal(run.body.code, "GW_ERR_BODY_TOO_LARGE");
  t.match(String(run.body.message), /larger than one NATS message may be/);
  const jobId = String(run.body.job_id);
  const rec = await api(s.url, "GET", `/api/jobs/${jobId}`);
  t.ok(rec.status === 404 || rec.body.status === "failed", "the job it named will never run");
});
