/**
 * Hostile input never takes the agent down: a node that spins its CPU is ended by cancel, timeout and a lost lease
 * within 2 s (its worker thread terminated) while the agent keeps heartbeating and running other jobs; a pattern
 * built to backtrack runs in linear time; what nodes build is capped by settings the errors name; the test nodes
 * exist only on an agent started with --test-nodes.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { KV_JOBS, jobKeys, type JobRecord } from "../../protocol/index.js";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { startAgentProc } from "../helpers/procs.js";
import { runOver, spinGraph, submit, terminal } from "../helpers/strategy-jobs.js";

/** One node of `type` with `data`, its `output` wired to an Output named "out". */
const oneNode = (type: string, data: Record<string, unknown>) => ({
  nodes: [
    { id: "n", type, data },
    { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
  ],
  edges: [{ id: "e", source: "n", sourceHandle: "output", target: "o", targetHandle: "value" }],
});
const outOf = (events: { type?: string; result?: unknown }[]) =>
  (terminal(events as never).result as { out?: unknown[] } | undefined)?.out?.[0];
const errorOf = (events: unknown[]) =>
  String((terminal(events as never).error as { message?: string } | undefined)?.message ?? "");

type AgentEntry = { id: string; heartbeat_at: string; running_jobs: string[] };
const agentsOf = async (url: string) => (await api(url, "GET", "/api/agents")).body.agents as AgentEntry[];

/** Waits until the spin node of `jobId` says it is spinning (its thread is then held). */
const spinning = (ws: WsClient, jobId: string) =>
  check(
    () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))) ?? null,
    20_000,
    { name: `job ${jobId} spinning` },
  );

t.test(
  "hostile input - a CPU-bound node is cancelled and times out within 2 s, on the default strategy; the agent heartbeats and runs another job meanwhile",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "2", "--heartbeat-ms", "200"] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    const spinId = await submit(ws, spinGraph(600));
    await spinning(ws, spinId);
    t.equal(
      ws.events(spinId).find((e) => e.type === "job_update" && e.status === "running")?.strategy,
      "threaded",
      "a job that asks for nothing runs on a thread",
    );
    // While the node holds its thread: the registration keeps moving, and a second job runs to its end.
    const before = (await agentsOf(s.url))[0]!.heartbeat_at;
    await check(async () => ((await agentsOf(s.url))[0]!.heartbeat_at > before ? true : null), 5_000, {
      name: "a heartbeat during the spin",
    });
    t.pass("the agent heartbeats while a node spins");
    const other = await runOver(ws, oneNode("nodetool.text.ToUppercase", { text: "still here" }), undefined, 10_000);
    t.equal(terminal(other.events).status, "completed", "another job runs to completion meanwhile");
    t.equal(outOf(other.events), "STILL HERE");

    const asked = Date.now();
    await ws.request("cancel_job", { job_id: spinId });
    const end = await check(() => terminal(ws.events(spinId)) ?? null, 10_000, { name: "spin cancelled" });
    const took = Date.now() - asked;
    t.equal(end.status, "cancelled", "the spinning job ends cancelled");
    t.ok(took < 2_000, `within 2 s of the cancel (${took} ms)`);

    // A timeout takes the same path: stop, then terminate. (4 s: time for a runner to start on a loaded machine.)
    const r = await ws.request("run_job", { graph: spinGraph(600), params: {}, timeout_s: 4 });
    const timedId = String((r.result as { job_id: string }).job_id);
    const timedEnd = await check(() => terminal(ws.events(timedId)) ?? null, 20_000, { name: "spin timed out" });
    t.equal(timedEnd.status, "timed_out", "the spinning job times out");
    const events = ws.events(timedId);
    t.ok(
      events.some((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
      "its node was spinning",
    );
    // The timeout counts from the graph's start, just before the agent's `running` update.
    const ranMs =
      Number(timedEnd.ts) - Number(events.find((e) => e.type === "job_update" && e.status === "running")?.ts);
    t.ok(ranMs < 4_000 + 8_000, `ended soon after its timeout (${Math.round(ranMs)} ms after it started)`);
    t.equal(s.agents[0]!.stderr().includes("crashed"), false, "nothing crashed in the agent");
  },
);

t.test(
  "hostile input - a lost lease ends a CPU-bound run within 2 s: the agent's slot is free for the next job",
  async (t) => {
    // A short ack_wait makes the lease checks frequent (every second) without changing what they do.
    const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "1"], gateway: { ackWaitMs: 3_000 } });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const kv = await new Kvm(nc).open(KV_JOBS);

    const spinId = await submit(ws, spinGraph(600));
    await spinning(ws, spinId);
    const nextId = await submit(ws, oneNode("nodetool.text.ToUppercase", { text: "next" }));
    // Another attempt took the job over and finished it: this agent's attempt has lost its lease.
    const entry = (await kv.get(jobKeys.record(spinId)))!;
    const rec = JSON.parse(entry.string()) as JobRecord;
    const lostAt = Date.now();
    await kv.update(
      jobKeys.record(spinId),
      JSON.stringify({ ...rec, attempt: rec.attempt + 1, status: "cancelled", finished_at: new Date().toISOString() }),
      entry.revision,
    );
    // The slot is free once the next job starts: measured then, not at its end (its own run is not the stop's time).
    await check(
      () => ws.events(nextId).some((e) => e.type === "job_update" && e.status === "running") || null,
      10_000,
      { name: "the next job started" },
    );
    const freedMs = Date.now() - lostAt;
    const next = await check(() => terminal(ws.events(nextId)) ?? null, 10_000, { name: "the next job ran" });
    t.equal(next.status, "completed", "the one slot came free: the next job completed");
    // The lease check runs every ack_wait / 3 (1 s); then the run has 1 s of grace before its thread is terminated.
    // The bound is loose for a loaded 2-core CI machine; the spin would otherwise hold the slot for 600 s.
    t.ok(freedMs < 15_000, `the spinning run was ended and its slot taken (${freedMs} ms after the takeover)`);
    t.match(s.agents[0]!.stderr(), /lease lost/, "the agent says why it stopped");
  },
);

t.test(
  "hostile input - a pattern built to backtrack runs in linear time; one RE2 cannot express fails naming the construct",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    // A first job loads the runner's modules (the regex engine among them): what follows measures matching alone.
    const warm = await runOver(
      ws,
      oneNode("nodetool.text.RegexMatch", { text: "warm", pattern: "w" }),
      undefined,
      20_000,
    );
    t.same(outOf(warm.events), ["w"]);
    const evil = `${"a".repeat(34)}!`;
    for (const [type, pattern, want] of [
      ["nodetool.text.RegexValidate", "^(a+)+$", false],
      ["nodetool.text.RegexMatch", "(a+)+$", []],
      ["nodetool.text.RegexMatch", "^(a|aa)+!", [evil]],
    ] as const) {
      const r = await runOver(ws, oneNode(type, { text: evil, pattern }), undefined, 20_000);
      t.equal(terminal(r.events).status, "completed", `${pattern}: completed`);
      t.same(outOf(r.events), want, `${pattern} on a×34 + "!": the right answer`);
      // A backtracking engine needs ~2^34 steps here (hours). Timed by the node's own updates, stamped by the agent:
      // the runner's start on a busy machine is not the regex's business.
      const at = (status: string) =>
        Number(r.events.find((e) => e.type === "node_update" && e.node_id === "n" && e.status === status)?.ts);
      const took = at("completed") - at("running");
      t.ok(took >= 0 && took < 500, `${pattern}: the node ran ${took.toFixed(1)} ms`);
    }
    const rep = await runOver(
      ws,
      oneNode("nodetool.text.RegexReplace", { text: "a1 b22", pattern: "(?P<d>\\d+)", replacement: "<$1>" }),
    );
    t.equal(outOf(rep.events), "a<1> b<22>", "Python named groups and $1 still work");

    for (const [pattern, construct] of [
      ["(a)\\1", /backreferences/],
      ["a(?=b)", /lookahead/],
      ["(?<!a)b", /lookbehind/],
      ["(?P<x>a)(?P=x)", /named backreferences/],
    ] as const) {
      const r = await runOver(ws, oneNode("nodetool.text.RegexMatch", { text: "ab", pattern }));
      t.equal(terminal(r.events).status, "failed", `${pattern}: the node fails`);
      t.match(errorOf(r.events), construct, `${pattern}: the error names the construct`);
      t.match(errorOf(r.events), /linear-time engine \(RE2\)/);
    }
  },
);

t.test(
  "hostile input - a huge range, join or replacement fails the node, naming the setting; a smaller cap is honoured",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--node-string-max-bytes", "1000000"] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    const seq = await runOver(
      ws,
      oneNode("nodetool.list.GenerateSequence", { start: 0, stop: 1e12, step: 1 }),
      undefined,
      20_000,
    );
    t.equal(terminal(seq.events).status, "failed", "a range of 10^12 fails");
    t.match(errorOf(seq.events), /1000000000000 items, over the agent's nodeListMaxItems \(1000000\)/);
    t.notOk(
      seq.events.some((e) => e.type === "edge_update" || e.type === "output_update"),
      "before its first value, not after a million",
    );

    // A replacement that multiplies the text: 10,000 × 1,000 characters.
    const rep = await runOver(
      ws,
      oneNode("nodetool.text.Replace", { text: "x".repeat(10_000), old: "x", new: "y".repeat(1_000) }),
    );
    t.equal(terminal(rep.events).status, "failed");
    t.match(
      errorOf(rep.events),
      /over the agent's nodeStringMaxBytes \(1000000\)/,
      "names the setting, at the value this agent set",
    );
    const join = await runOver(ws, {
      nodes: [
        {
          id: "n",
          type: "nodetool.text.FormatText",
          data: { template: "{{ v }}".repeat(2_000), v: "z".repeat(1_000) },
        },
        { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
      ],
      edges: [{ id: "e", source: "n", sourceHandle: "output", target: "o", targetHandle: "value" }],
    });
    t.equal(terminal(join.events).status, "failed", "a template repeating a value past the cap fails");
    t.match(errorOf(join.events), /nodeStringMaxBytes/);
    const ok = await runOver(ws, oneNode("nodetool.text.Replace", { text: "x".repeat(100), old: "x", new: "yy" }));
    t.equal(outOf(ok.events), "y".repeat(200), "below the cap, as before");
  },
);

t.test(
  "hostile input - without --test-nodes the agent offers no nodeway.test.* node, and a workflow using one is refused",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const a = await startAgentProc(s.ns.url, ["--name", "prod", "--test-nodes", "false"]);
    t.teardown(() => a.kill("SIGKILL"));
    const types = await check(
      async () => {
        const list = (await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as { node_type: string }[];
        return Array.isArray(list) && list.length > 0 ? list.map((n) => n.node_type) : null;
      },
      20_000,
      { name: "the catalog is listed" },
    );
    t.ok(types.includes("nodetool.text.Concat"), "the production nodes are there");
    t.same(
      types.filter((n) => n.startsWith("nodeway.test.")),
      [],
      "no test node is",
    );
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const refused = await ws.request("run_job", { graph: spinGraph(1), params: {} }).then(
      (r) => r,
      (err: unknown) => err,
    );
    t.match(
      JSON.stringify(refused),
      /GRAPH_ERR_UNKNOWN_NODE_TYPE|unknown node type "nodeway\.test\.Spin"/,
      "a workflow with one is refused as an unknown node type",
    );
  },
);
