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

/** 600 KiB that Split makes 153,601 items of (the last comma leaves an empty one). */
const ITEMS600 = "abc,".repeat(150 * 1024);

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

    // 600 KiB in, 1.2 MiB of list out of one node: its output_update is over the limit.
    const listOf = (src: string) => ({
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: src } },
        { id: "cat", type: "nodetool.text.Concat", data: {} },
        { id: "split", type: "nodetool.text.Split", data: { delimiter: "," } },
        { id: "out", type: "nodetool.output.Output", data: { name: "items" } },
      ],
      edges: [
        { id: "e1", source: "c", sourceHandle: "output", target: "cat", targetHandle: "a" },
        { id: "e2", source: "c", sourceHandle: "output", target: "cat", targetHandle: "b" },
        { id: "e3", source: "cat", sourceHandle: "output", target: "split", targetHandle: "text" },
        { id: "e4", source: "split", sourceHandle: "output", target: "out", targetHandle: "value" },
      ],
    });
    const doubled = await run(listOf(ITEMS600));
    t.equal(doubled.end.status, "failed", "the job fails rather than lose its output");
    t.equal((doubled.end.error as { code: string }).code, "JOB_ERR_OUTPUT_TOO_LARGE");
    t.match(
      (doubled.end.error as { message: string }).message,
      /the output_update of node "out" is \d{7} bytes; NATS carries at most \d+/,
      "naming the event, its size and the limit",
    );
    const rec1 = await api(s.url, "GET", `/api/jobs/${doubled.jobId}`);
    t.equal(rec1.body.status, "failed", "the record says so too");

    // Two lists of 600 KiB: each event fits, the record holding both does not.
    const two = await run({
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: ITEMS600 } },
        { id: "split", type: "nodetool.text.Split", data: { delimiter: "," } },
        { id: "a", type: "nodetool.output.Output", data: { name: "a" } },
        { id: "b", type: "nodetool.output.Output", data: { name: "b" } },
      ],
      edges: [
        { id: "e0", source: "c", sourceHandle: "output", target: "split", targetHandle: "text" },
        { id: "e1", source: "split", sourceHandle: "output", target: "a", targetHandle: "value" },
        { id: "e2", source: "split", sourceHandle: "output", target: "b", targetHandle: "value" },
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
      two.events.filter((e) => e.type === "output_update" && (e.value as unknown[]).length === ITEMS600.length / 4 + 1)
        .length,
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

t.test("output limits - a long text output (a fetched page, a document's text) arrives as a text asset", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const text = `${"é".repeat(150 * 1024)}${"x".repeat(300 * 1024)}`; // 600 KiB of UTF-8, 2-byte characters in it
  const r = await ws.request("run_job", {
    graph: {
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: text } },
        { id: "cat", type: "nodetool.text.Concat", data: {} },
        { id: "out", type: "nodetool.output.Output", data: { name: "page" } },
        { id: "len", type: "nodetool.text.Length", data: {} },
        { id: "n", type: "nodetool.output.Output", data: { name: "n" } },
      ],
      edges: [
        { id: "e1", source: "c", sourceHandle: "output", target: "cat", targetHandle: "a" },
        { id: "e2", source: "c", sourceHandle: "output", target: "cat", targetHandle: "b" },
        { id: "e3", source: "cat", sourceHandle: "output", target: "out", targetHandle: "value" },
        { id: "e4", source: "cat", sourceHandle: "output", target: "len", targetHandle: "text" },
        { id: "e5", source: "len", sourceHandle: "output", target: "n", targetHandle: "value" },
      ],
    },
    params: {},
  });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await ws.waitTerminal(jobId, 60_000);
  t.equal(end.status, "completed", "the job completes");
  const rec = await api(s.url, "GET", `/api/jobs/${jobId}`);
  const ref = (rec.body.outputs as { page: [Record<string, unknown>] }).page[0];
  t.match(ref, { type: "text", content_type: "text/plain; charset=utf-8", size: Buffer.byteLength(text) * 2 });
  t.same((rec.body.outputs as { n: number[] }).n, [text.length * 2], "the graph's own nodes had the whole text");
  const live = ws.events(jobId).find((e) => e.type === "output_update" && e.node_id === "out");
  t.same(live?.value, ref, "the live output_update carries the same reference");
  const res = await fetch(`${s.url}/api/assets/${ref.asset_id}/content`);
  t.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
  t.ok((await res.text()) === text + text, "the asset holds the text, every character");
  const short = await ws.request("run_job", {
    graph: {
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: { value: "x".repeat(200 * 1024) } },
        { id: "out", type: "nodetool.output.Output", data: { name: "t" } },
      ],
      edges: [{ id: "e", source: "c", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
    params: {},
  });
  const shortId = String((short.result as { job_id: string }).job_id);
  await ws.waitTerminal(shortId, 30_000);
  const shortRec = await api(s.url, "GET", `/api/jobs/${shortId}`);
  t.equal((shortRec.body.outputs as { t: string[] }).t[0]!.length, 200 * 1024, "text under 256 KiB stays inline");
});

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
