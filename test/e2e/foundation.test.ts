import t from "tap";
import { api, readStream, WsClient, isTerminalMsg, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { natsServerVersion } from "../helpers/nats-server.js";

const TEXT_WF = {
  name: "text",
  graph: {
    nodes: [
      { id: "in", type: "nodetool.input.StringInput", data: { name: "name", value: "world" } },
      { id: "fmt", type: "nodetool.text.FormatText", data: { template: "Hello, {{ name|upper }}!" } },
      { id: "out", type: "nodetool.output.Output", data: { name: "greeting" } },
    ],
    edges: [
      { id: "e1", source: "in", sourceHandle: "output", target: "fmt", targetHandle: "name" },
      { id: "e2", source: "fmt", sourceHandle: "output", target: "out", targetHandle: "value" },
    ],
  },
};
const TOKENS_WF = {
  name: "tokens",
  graph: {
    nodes: [
      { id: "tok", type: "nodeway.test.Tokens", data: { count: 12, rate: 2000 } },
      { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [{ id: "e1", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
  },
};

/** What must be identical across transports: the event sequence without ids, seqs and times. */
function shape(events: Msg[]): string[] {
  return events
    .filter((e) => typeof e.type === "string" && e.type !== "rpc_response")
    .map((e) =>
      [e.type, e.node_id ?? "", e.status ?? "", typeof e.content === "string" ? e.content : "", e.edge_id ?? ""].join(
        "|",
      ),
    );
}

t.comment(`nats-server: ${natsServerVersion()}`);

t.test(
  "foundation - workflows run over NDJSON, SSE and /ws (JSON and msgpack) with identical events and outputs",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    for (const [id, wf] of [
      ["text", TEXT_WF],
      ["tokens", TOKENS_WF],
    ] as const) {
      const put = await api(s.url, "PUT", `/api/workflows/${id}`, wf);
      t.equal(put.status, 200, `${id} saved`);
    }
    const runs: Record<string, Msg[][]> = { text: [], tokens: [] };
    const params = { text: { name: "ada" }, tokens: {} } as Record<string, Record<string, unknown>>;
    for (const id of ["text", "tokens"]) {
      const nd = await readStream(`${s.url}/api/workflows/${id}/run?stream=true`, {
        method: "POST",
        body: JSON.stringify({ params: params[id] }),
      });
      t.equal(nd.status, 200, `${id} NDJSON 200`);
      runs[id]!.push(nd.events);
      const sse = await readStream(`${s.url}/api/workflows/${id}/run?stream=true`, {
        method: "POST",
        body: JSON.stringify({ params: params[id] }),
        sse: true,
      });
      t.equal(sse.status, 200, `${id} SSE 200`);
      t.same(
        sse.ids,
        sse.events.map((e) => String(e.seq)),
        `${id} SSE ids are the event seqs`,
      );
      runs[id]!.push(sse.events);
      for (const enc of ["json", "msgpack"] as const) {
        const ws = await WsClient.open(s.url, enc);
        const r = await ws.request("run_job", { workflow_id: id, params: params[id] });
        const jobId = String((r.result as Msg).job_id);
        await ws.waitTerminal(jobId);
        runs[id]!.push(ws.events(jobId));
        await ws.close();
      }
    }
    for (const id of ["text", "tokens"]) {
      const shapes = runs[id]!.map(shape);
      for (let i = 1; i < shapes.length; i++)
        t.same(shapes[i], shapes[0], `${id}: transport ${i} has the same event sequence as NDJSON`);
      for (const evs of runs[id]!) {
        const seqs = evs.map((e) => e.seq as number);
        t.same(
          seqs,
          [...seqs].sort((a, b) => a - b),
          `${id}: seqs increase`,
        );
        t.ok(isTerminalMsg(evs[evs.length - 1]!), `${id}: ends with the terminal job_update`);
      }
    }
    const textEnd = runs.text![0]!.at(-1)!;
    t.same(textEnd.result, { greeting: ["Hello, ADA!"] }, "text output");
    const tokEnd = runs.tokens![0]!.at(-1)!;
    const expected = Array.from({ length: 12 }, (_, i) => `tok${i} `).join("");
    t.same(tokEnd.result, { text: [expected] }, "tokens output is the joined text");
    const chunks = runs.tokens![0]!.filter((e) => e.type === "chunk" && e.content !== "").map((e) => e.content);
    t.same(
      chunks,
      Array.from({ length: 12 }, (_, i) => `tok${i} `),
      "one chunk per token, in order",
    );

    const waited = await api(s.url, "POST", "/api/workflows/text/run?wait=true", { params: { name: "bo" } });
    t.equal(waited.status, 200);
    t.match(
      waited.body,
      { status: "completed", outputs: { greeting: ["Hello, BO!"] }, error: null },
      "wait=true returns the outputs",
    );
    const queued = await api(s.url, "POST", "/api/workflows/text/run", { params: {} });
    t.equal(queued.status, 202, "without stream or wait: 202");
    t.type(queued.body.job_id, "string");
  },
);

t.test("foundation - two agents share a pool and jobs spread across both", async (t) => {
  const s = await startStack(t, { agents: 2, agentArgs: ["--max-jobs", "1"] });
  await api(s.url, "PUT", "/api/workflows/slow", {
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 0.3 } }], edges: [] },
  });
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push(String((await api(s.url, "POST", "/api/workflows/slow/run", {})).body.job_id));
  const records = await check(
    async () => {
      const recs = await Promise.all(ids.map(async (id) => (await api(s.url, "GET", `/api/jobs/${id}`)).body));
      return recs.every((r) => r.status === "completed") ? recs : null;
    },
    30_000,
    { name: "all jobs completed" },
  );
  const agentsUsed = new Set(records.map((r) => r.agent_id));
  t.equal(agentsUsed.size, 2, "both agents ran jobs");
  t.ok(
    records.every((r) => r.attempt === 1),
    "each ran once",
  );
  const agents = await api(s.url, "GET", "/api/agents");
  t.equal((agents.body.agents as Msg[]).length, 2, "GET /api/agents lists both");
  t.match((agents.body.agents as Msg[])[0], {
    id: String,
    name: String,
    state: String,
    pools: ["cpu"],
    capabilities: { max_jobs: 1 },
    running_jobs: Array,
  });
});

t.test("foundation - bad input gets a clear error naming the problem and the gateway keeps serving", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/text", TEXT_WF);
  await api(s.url, "PUT", "/api/workflows/ints", {
    graph: {
      nodes: [
        { id: "n", type: "nodetool.input.IntegerInput", data: { name: "n", value: null } },
        { id: "out", type: "nodetool.output.Output", data: { name: "n" } },
      ],
      edges: [{ id: "e", source: "n", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
  });
  const unknown = await api(s.url, "PUT", "/api/workflows/bad", {
    graph: { nodes: [{ id: "x", type: "nodetool.nope.Nothing", data: {} }], edges: [] },
  });
  t.equal(unknown.status, 400);
  t.match(
    unknown.body,
    { code: "GRAPH_ERR_UNKNOWN_NODE_TYPE", message: /nodetool\.nope\.Nothing.*"x"/ },
    "unknown node type names type and node",
  );
  const dangling = await api(s.url, "PUT", "/api/workflows/bad", {
    graph: {
      nodes: [{ id: "a", type: "nodetool.constant.String", data: {} }],
      edges: [{ id: "e9", source: "a", sourceHandle: "output", target: "ghost", targetHandle: "value" }],
    },
  });
  t.match(dangling.body, { code: "GRAPH_ERR_DANGLING_EDGE", message: /e9.*ghost/ }, "dangling edge named");
  const missing = await api(s.url, "POST", "/api/workflows/ints/run", { params: {} });
  t.equal(missing.status, 400);
  t.match(missing.body, { code: "GRAPH_ERR_MISSING_PARAM", message: /"n"/ }, "missing param named");
  const wrongType = await api(s.url, "POST", "/api/workflows/ints/run", { params: { n: "twelve" } });
  t.equal(wrongType.status, 400);
  t.match(wrongType.body, { code: "GRAPH_ERR_PARAM_TYPE", message: /"n" must be int/ }, "wrong type named");
  const unknownParam = await api(s.url, "POST", "/api/workflows/text/run", { params: { nmae: "x" } });
  t.match(
    unknownParam.body,
    { code: "GRAPH_ERR_UNKNOWN_PARAM", message: /"nmae".*"name"/ },
    "unknown param named with the known ones",
  );
  const malformed = await api(s.url, "POST", "/api/workflows/text/run", "{not json");
  t.equal(malformed.status, 400);
  t.match(malformed.body, { code: "PROTO_ERR_DECODE", message: /invalid JSON/ }, "malformed body");
  const nowf = await api(s.url, "POST", "/api/workflows/nope/run", {});
  t.equal(nowf.status, 404);
  t.match(nowf.body, { code: "GW_ERR_NOT_FOUND", message: /workflow "nope"/ }, "unknown workflow");
  const nojob = await api(s.url, "GET", "/api/jobs/01nothing");
  t.equal(nojob.status, 404, "unknown job 404");
  const big = await api(
    s.url,
    "POST",
    "/api/workflows/text/run",
    JSON.stringify({ params: { name: "x".repeat(9 * 1024 * 1024) } }),
  );
  t.equal(big.status, 413, "oversized body 413");

  const ws = await WsClient.open(s.url, "json");
  ws.sendRaw("{this is not json");
  await check(() => ws.messages.find((m) => m.type === "error" && m.code === "PROTO_ERR_DECODE"), 5_000, {
    name: "malformed frame error",
  });
  ws.sendRaw(JSON.stringify({ command: "launch_rockets", data: {} }));
  await check(
    () => ws.messages.find((m) => m.type === "error" && /unknown command "launch_rockets"/.test(String(m.message))),
    5_000,
    { name: "unknown command error" },
  );
  ws.sendRaw(Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]));
  await check(() => ws.messages.find((m) => m.code === "PROTO_ERR_TOO_LARGE"), 5_000, {
    name: "hostile msgpack error",
  });
  const bad = await ws.request("run_job", { workflow_id: "text", params: { name: 5 } });
  t.match(bad.error, { code: "GRAPH_ERR_PARAM_TYPE" }, "run_job with a wrong param answers an error");
  const ok = await ws.request("run_job", { workflow_id: "text", params: { name: "still here" } });
  const jobId = String((ok.result as Msg).job_id);
  const end = await ws.waitTerminal(jobId);
  t.equal(end.status, "completed", "the same socket still runs jobs after bad frames");
  const other = await api(s.url, "POST", "/api/workflows/text/run?wait=true", { params: { name: "z" } });
  t.equal(other.body.status, "completed", "other clients are served");
  await ws.close();
});

t.test("foundation - a failing node fails the job naming node id, type and message", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/fail", {
    graph: {
      nodes: [
        { id: "boom", type: "nodeway.test.Fail", data: { message: "kaput" } },
        { id: "out", type: "nodetool.output.Output", data: { name: "x" } },
      ],
      edges: [{ id: "e", source: "boom", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
  });
  const r = await api(s.url, "POST", "/api/workflows/fail/run?wait=true", {});
  t.equal(r.body.status, "failed");
  t.match(r.body.error, { code: "JOB_ERR_NODE_FAILED", message: /"boom".*nodeway\.test\.Fail.*kaput/ });
  const rec = await api(s.url, "GET", `/api/jobs/${String(r.body.job_id)}`);
  t.match(
    rec.body,
    { status: "failed", attempt: 1, agent_id: s.agents[0]!.id },
    "job record has status, attempt and agent",
  );
});

t.test("foundation - health, metrics, node metadata and job listing", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const h = await api(s.url, "GET", "/health");
  t.equal(h.status, 200);
  t.match(h.body, { status: "ok", nats: "connected", streams: true, agents: 1, uws: "native" });
  await api(s.url, "PUT", "/api/workflows/text", TEXT_WF);
  const done = await api(s.url, "POST", "/api/workflows/text/run?wait=true", {});
  const meta = await api(s.url, "GET", "/api/nodes/metadata");
  const list = meta.body as unknown as Msg[];
  t.ok(list.length > 50, `lists node types (${list.length})`);
  t.match(
    list.find((m) => m.node_type === "nodeway.test.Tokens"),
    { properties: [{ name: "count" }, { name: "rate" }], outputs: Array, is_streaming: true },
  );
  const jobs = await api(s.url, "GET", "/api/jobs?workflow_id=text&limit=10");
  t.equal((jobs.body.jobs as Msg[])[0]!.id, done.body.job_id, "newest job first");
  const m = await fetch(`${s.url}/metrics`).then((r) => r.text());
  t.match(m, /nodeway_jobs\{state="completed"\} 1/);
  t.match(m, /nodeway_ws_sockets_open 0/);
  t.match(m, /nodeway_events_in_total \d+/);
  const nf = await api(s.url, "GET", "/nope");
  t.equal(nf.status, 404);
  const head = await fetch(`${s.url}/health`, { method: "HEAD" });
  t.equal(head.status, 200, "HEAD /health answers without a body");
  const jobsHead = await fetch(`${s.url}/api/jobs`, { method: "HEAD" });
  t.equal(jobsHead.status, 200, "HEAD works on every GET route");
  t.equal(await jobsHead.text(), "", "without a body");
});

t.test("foundation - workflows CRUD, and cycles refused on save naming the nodes", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const created = await api(s.url, "POST", "/api/workflows", { name: "made", graph: TEXT_WF.graph });
  t.equal(created.status, 200);
  const id = String(created.body.id);
  t.match((await api(s.url, "GET", `/api/workflows/${id}`)).body, { id, name: "made", graph: { nodes: Array } });
  const updated = await api(s.url, "PUT", `/api/workflows/${id}`, { name: "renamed", graph: TEXT_WF.graph });
  t.equal(updated.body.name, "renamed");
  t.equal(updated.body.created_at, created.body.created_at, "created_at kept on update");
  const list = await api(s.url, "GET", "/api/workflows");
  t.ok(
    (list.body.workflows as Msg[]).some((w) => w.id === id),
    "listed",
  );
  t.equal((await api(s.url, "DELETE", `/api/workflows/${id}`)).status, 200);
  t.equal((await api(s.url, "GET", `/api/workflows/${id}`)).status, 404, "gone after delete");
  const cycle = await api(s.url, "PUT", "/api/workflows/loop", {
    graph: {
      nodes: [
        { id: "a", type: "nodetool.text.ToUppercase", data: {} },
        { id: "b", type: "nodetool.text.ToLowercase", data: {} },
      ],
      edges: [
        { id: "ab", source: "a", sourceHandle: "output", target: "b", targetHandle: "text" },
        { id: "ba", source: "b", sourceHandle: "output", target: "a", targetHandle: "text" },
      ],
    },
  });
  t.equal(cycle.status, 400);
  t.match(cycle.body, { code: "GRAPH_ERR_CYCLE", message: /"a".*"b"|"b".*"a"/ });
  const badHandle = await api(s.url, "PUT", "/api/workflows/h", {
    graph: {
      nodes: [
        { id: "c", type: "nodetool.constant.String", data: {} },
        { id: "u", type: "nodetool.text.ToUppercase", data: {} },
      ],
      edges: [{ id: "x", source: "c", sourceHandle: "output", target: "u", targetHandle: "nonsense" }],
    },
  });
  t.match(
    badHandle.body,
    { code: "GRAPH_ERR_DANGLING_EDGE", message: /unknown input "nonsense"/ },
    "edge into an undeclared handle of a non-dynamic node",
  );
  // An edge out of an output the node does not have carried nothing: the job completed without the value.
  const fromNowhere = (sourceHandle: string, target = "nodetool.output.Output", node: Record<string, unknown> = {}) =>
    api(s.url, "PUT", "/api/workflows/src", {
      graph: {
        nodes: [
          { id: "c", type: "nodetool.constant.String", data: { value: "x" }, ...node },
          { id: "o", type: target, data: { name: "out" } },
        ],
        edges: [{ id: "y", source: "c", sourceHandle, target: "o", targetHandle: "value" }],
      },
    });
  t.match(
    (await fromNowhere("nope")).body,
    {
      code: "GRAPH_ERR_DANGLING_EDGE",
      message: /edge "y" comes from unknown output "nope" of .*\(its outputs: "output"\)/,
    },
    "an edge from an undeclared output is refused, naming the outputs there are",
  );
  t.equal((await fromNowhere("output")).status, 200, "the node's own output is fine");
  t.equal(
    (await fromNowhere("nope", "nodetool.workflows.base_node.Preview")).status,
    200,
    "into a Preview: editor-only",
  );
  const dynamic = await fromNowhere("extra", "nodetool.output.Output", { dynamic_outputs: { extra: { type: "str" } } });
  t.equal(dynamic.status, 200, "one of the node's dynamic_outputs is fine");
});

t.test("foundation - SIGTERM drains an agent: its running job finishes before it exits", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/slow", {
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 1 } }], edges: [] },
  });
  const job = String((await api(s.url, "POST", "/api/workflows/slow/run", {})).body.job_id);
  await check(async () => (await api(s.url, "GET", `/api/jobs/${job}`)).body.status === "running", 10_000, {
    name: "running",
  });
  const agent = s.agents[0]!;
  const code = await agent.kill("SIGTERM");
  t.equal(code, 0, "agent exited cleanly");
  t.equal(
    (await api(s.url, "GET", `/api/jobs/${job}`)).body.status,
    "completed",
    "the running job completed before exit",
  );
});

t.test("foundation - /ws answers ping and get_status, and job listing pages with a cursor", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/text", TEXT_WF);
  const ws = await WsClient.open(s.url, "msgpack");
  const pong = await (async () => {
    ws.send({ command: "ping", data: {}, request_id: "p1" });
    return check(() => ws.messages.find((m) => m.type === "pong" && m.request_id === "p1"), 5_000, { name: "pong" });
  })();
  t.type(pong.ts, "number", "pong carries a timestamp");
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await ws.request("run_job", { workflow_id: "text", params: { name: `n${i}` } });
    ids.push(String((r.result as Msg).job_id));
  }
  for (const id of ids) await ws.waitTerminal(id);
  const st = await ws.request("get_status", { job_id: ids[0]! });
  t.match(st.result, { job_id: ids[0], status: "completed", attempt: 1, agent_id: s.agents[0]!.id });
  const page1 = await api(s.url, "GET", "/api/jobs?workflow_id=text&limit=2");
  t.same(
    (page1.body.jobs as Msg[]).map((j) => j.id),
    [ids[2], ids[1]],
    "newest first, two per page",
  );
  const page2 = await api(s.url, "GET", `/api/jobs?workflow_id=text&limit=2&cursor=${String(page1.body.next)}`);
  t.same(
    (page2.body.jobs as Msg[]).map((j) => j.id),
    [ids[0]],
    "the cursor continues where the page ended",
  );
  t.equal(page2.body.next, null, "no page after the last");
  const failedOnly = await api(s.url, "GET", "/api/jobs?status=failed");
  t.same(failedOnly.body.jobs, [], "status filter");
  const badLimit = await api(s.url, "GET", "/api/jobs?limit=-3");
  t.equal(badLimit.status, 400, "a bad limit is refused");
  await ws.close();
});

t.test("foundation - the gateway refuses uWebSockets.js's pure-JS fallback unless allowed", async (t) => {
  const { runNodeway } = await import("../helpers/procs.js");
  const { NatsServer } = await import("../helpers/nats-server.js");
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const refused = runNodeway(["gateway", "--nats", ns.url, "--port", "0"], { UWS_USE_FALLBACK: "1" });
  t.equal(await refused.exited, 1);
  t.match(refused.stderr(), /PURE-JS FALLBACK/, "says which build it found");
  t.match(refused.stderr(), /refusing to start/, "and refuses");
});
