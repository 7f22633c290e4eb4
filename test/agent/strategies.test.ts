/**
 * Execution strategies: a job runs where its strategy says — `threaded` in a worker thread of the
 * agent, `subprocess` in a child process — with its events streamed as for `inline`; the agent's policy caps
 * what a job asks for (more isolation if that is all it offers, never less); a node that ignores its signal is
 * stopped by terminating its thread or killing its process; a runner that dies fails its job with a clear code
 * and leaves the agent serving.
 */
import t from "tap";
import { compileAgentConfig } from "../../agent/index.js";
import { runnerMessageProblem } from "../../agent/runners/index.js";
import { pickStrategy } from "../../protocol/index.js";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import {
  allocGraph,
  runOver,
  running,
  spinGraph,
  terminal,
  where,
  whereGraph as whereWith,
} from "../helpers/strategy-jobs.js";

const whereGraph = whereWith();

const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const pidThread = (w: { pid: number; thread_id: number }) => ({ pid: w.pid, thread_id: w.thread_id });

t.test(
  "strategies - the policy caps what a job asks for: more isolation when that is all there is, never less",
  async (t) => {
    t.same(
      pickStrategy(undefined, ["subprocess", "inline"]),
      { strategy: "subprocess" },
      "no request: the agent's first",
    );
    t.same(pickStrategy("inline", ["inline", "threaded"]), { strategy: "inline" }, "offered: as asked");
    t.same(
      pickStrategy("inline", ["subprocess"]),
      { strategy: "subprocess" },
      "inline on a subprocess-only agent: subprocess",
    );
    t.same(
      pickStrategy("threaded", ["inline", "subprocess"]),
      { strategy: "subprocess" },
      "the weakest offered that isolates at least as much",
    );
    const r = pickStrategy("subprocess", ["inline", "threaded"]);
    t.ok("refused" in r, "more isolation than offered: refused");
    if ("refused" in r) t.match(r.refused, /"subprocess".*offers "inline", "threaded"/);
    t.ok(
      "refused" in pickStrategy("docker", ["inline", "threaded", "subprocess"]),
      "docker is never given as something weaker",
    );

    t.throws(() => compileAgentConfig({ strategies: ["chroot"] }), /unknown strategy "chroot"/);
    t.same(
      compileAgentConfig({}).strategies,
      ["threaded"],
      "a worker thread by default: a node that holds it can be ended",
    );
  },
);

t.test(
  "strategies - a runner may send only what a graph emits, and results in the shape the agent records",
  async (t) => {
    const ok: unknown[] = [
      { type: "started" },
      { type: "event", event: { type: "chunk", node_id: "n", content_type: "text", content: "x", done: false } },
      { type: "event", event: { type: "edge_update", edge_id: "e", status: "active", counter: 1 } },
      { type: "done", result: { status: "completed", outputs: { text: ["a"] } } },
      {
        type: "done",
        result: { status: "failed", outputs: {}, error: { node_id: "n", node_type: "t", message: "m" } },
      },
      { type: "done", result: { status: "cancelled", outputs: {}, reason: "stop" } },
      { type: "thrown", unknownNode: null, message: "boom" },
      { type: "thrown", unknownNode: { nodeId: "n", nodeType: "x.Y" }, message: "unknown" },
    ];
    for (const m of ok) t.equal(runnerMessageProblem(m), null, `accepted: ${JSON.stringify(m).slice(0, 80)}`);
    const bad: [unknown, RegExp][] = [
      [null, /not an object/],
      [
        { type: "event", event: { type: "job_update", status: "completed" } },
        /a "job_update" event, which a graph does not emit/,
      ],
      [{ type: "event", event: { type: "error", message: "x" } }, /"error" event, which a graph does not emit/],
      [{ type: "event", event: { type: "notification", node_id: "n" } }, /"notification" event/],
      [{ type: "event", event: { type: "chunk", content: "x" } }, /"chunk" event without the node it is about/],
      [{ type: "event", event: { type: "edge_update", node_id: "n" } }, /without the edge/],
      [{ type: "event", event: "chunk" }, /not an object with a type/],
      [{ type: "done", result: { status: "completed" } }, /without outputs/],
      [{ type: "done", result: { status: "completed", outputs: { text: "a" } } }, /without outputs/],
      [{ type: "done", result: { status: "failed", outputs: {} } }, /none of completed, cancelled, failed/],
      [{ type: "done", result: { status: "running", outputs: {} } }, /none of completed, cancelled, failed/],
      [{ type: "thrown", unknownNode: "n", message: "m" }, /without its message/],
      [{ type: "thrown" }, /without its message/],
      [{ type: "result" }, /none of started, event, done, thrown/],
    ];
    for (const [m, why] of bad) t.match(runnerMessageProblem(m), why, `refused: ${JSON.stringify(m)}`);
  },
);

t.test(
  "strategies - threaded and subprocess runs stream their events and say where they ran; inline runs in the agent",
  async (t) => {
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "inline,threaded,subprocess", "--max-jobs", "4"],
    });
    const agentPid = s.agents[0]!.proc.pid!;
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());

    const inline = await runOver(ws, whereGraph, "inline");
    t.equal(terminal(inline.events).status, "completed", "inline completed");
    t.same(pidThread(where(inline.events)), { pid: agentPid, thread_id: 0 }, "inline: the agent's main thread");

    const threaded = await runOver(ws, whereGraph, "threaded");
    t.equal(terminal(threaded.events).status, "completed", "threaded completed");
    t.equal(where(threaded.events).pid, agentPid, "threaded: in the agent's process");
    t.not(where(threaded.events).thread_id, 0, "on another thread");

    const sub = await runOver(ws, whereGraph, "subprocess");
    t.equal(terminal(sub.events).status, "completed", "subprocess completed");
    t.not(where(sub.events).pid, agentPid, "subprocess: in another process");
    // Killed when its run settles; the agent reaps it a moment later (a zombie still answers signal 0).
    await check(() => (!pidAlive(where(sub.events).pid) ? true : null), 5_000, {
      name: "subprocess runner gone once the job is over",
    });
    t.pass("which is gone once the job is over");

    for (const [name, run] of [
      ["inline", inline],
      ["threaded", threaded],
      ["subprocess", sub],
    ] as const) {
      t.equal(running(run.events)?.strategy, name, `${name}: the running update names the strategy`);
    }
    for (const [name, run] of [
      ["threaded", threaded],
      ["subprocess", sub],
    ] as const) {
      const tokens = run.events.filter((e) => e.type === "chunk" && !e.done).map((e) => e.content);
      t.same(tokens, ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "], `${name}: every token streamed, in order`);
      t.same(
        (terminal(run.events).result as { text: string[] }).text,
        ["tok0 tok1 tok2 tok3 tok4 "],
        `${name}: outputs as inline`,
      );
      const kinds = new Set(run.events.map((e) => e.type));
      t.ok(kinds.has("node_update") && kinds.has("output_update"), `${name}: node and output updates arrive too`);
      t.same(
        run.events.map((e) => e.attempt).filter((a) => a !== 1 && a !== 0),
        [],
        `${name}: events carry the attempt`,
      );
    }
  },
);

t.test(
  "strategies - a node that ignores cancel is stopped by ending its thread or process; the agent keeps serving",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "subprocess,threaded", "--max-jobs", "4"] });
    const agentPid = s.agents[0]!.proc.pid!;
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    for (const strategy of ["subprocess", "threaded"]) {
      const r = await ws.request("run_job", { graph: spinGraph(120), params: {}, execution_strategy: strategy });
      const jobId = String((r.result as { job_id: string }).job_id);
      const log = await check(
        () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
        20_000,
        { name: `${strategy} spin started` },
      );
      const [, pid, thread] = /pid (\d+) thread (\d+)/.exec(String(log.content))!.map(Number);
      if (strategy === "subprocess") t.not(pid, agentPid, "the spin runs in a child process");
      else t.ok(pid === agentPid && thread !== 0, "the spin runs on a worker thread of the agent");
      const asked = Date.now();
      await ws.request("cancel_job", { job_id: jobId });
      const end = await check(() => terminal(ws.events(jobId)), 20_000, { name: `${strategy} spin cancelled` });
      t.equal(end.status, "cancelled", `${strategy}: the spinning job ends cancelled`);
      t.ok(Date.now() - asked < 15_000, `${strategy}: within the grace period, not after the node's 120 s`);
      if (strategy === "subprocess")
        await check(() => (!pidAlive(pid!) ? true : null), 5_000, { name: "spinning process killed" });
    }
    // The agent was never blocked: a job right after completes.
    const after = await runOver(ws, whereGraph, "subprocess");
    t.equal(terminal(after.events).status, "completed", "the agent runs the next job");
  },
);

t.test(
  "strategies - a runner process that dies fails its job (JOB_ERR_RUNNER_CRASHED); a strategy the agent lacks fails clearly",
  async (t) => {
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline,subprocess"] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());

    const r = await ws.request("run_job", { graph: spinGraph(120), params: {}, execution_strategy: "subprocess" });
    const jobId = String((r.result as { job_id: string }).job_id);
    const log = await check(
      () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
      20_000,
      { name: "spin started" },
    );
    const pid = Number(/pid (\d+)/.exec(String(log.content))![1]);
    process.kill(pid, "SIGKILL"); // what the OOM killer does
    const end = await check(() => terminal(ws.events(jobId)), 20_000, { name: "crashed job ended" });
    t.equal(end.status, "failed", "the job fails");
    t.equal((end.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED");
    t.match(
      (end.error as { message: string }).message,
      /subprocess .* ended before it finished \(signal SIGKILL\)/,
      "saying how",
    );

    const lacking = await runOver(ws, whereGraph, "threaded");
    t.equal(
      terminal(lacking.events).status,
      "completed",
      "threaded on an inline+subprocess agent runs (in a subprocess)",
    );
    t.not(where(lacking.events).pid, s.agents[0]!.proc.pid, "capped up to subprocess");
    t.equal(running(lacking.events)?.strategy, "subprocess", "and its running update says so");

    const s2 = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline"] });
    const ws2 = await WsClient.open(s2.url, "json");
    t.teardown(() => ws2.close());
    const early = await ws2.request("run_job", { graph: whereGraph, params: {}, execution_strategy: "subprocess" });
    t.match(
      early.error,
      {
        code: "GW_ERR_BAD_REQUEST",
        message: /no live agent of pool "cpu" can run the "subprocess" strategy \(they offer "inline"\)/,
      },
      "subprocess where the pool's agents offer only inline: refused at submit",
    );
    const bogus = await ws2.request("run_job", { graph: whereGraph, params: {}, execution_strategy: "chroot" });
    t.match(
      bogus.error,
      {
        code: "PROTO_ERR_SHAPE",
        message: /"data.execution_strategy" must be "inline", "threaded", "subprocess" or "docker"/,
      },
      "an unknown strategy is refused at submit",
    );
  },
);

t.test(
  "strategies - in a pool that mixes policies, an agent that pulls a job it cannot isolate fails it, never runs it weaker",
  async (t) => {
    // One subprocess agent, kept busy (one slot), and one inline-only agent: the gateway accepts a subprocess job (the
    // pool can run it), the free inline agent pulls it and must refuse it.
    const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "subprocess", "--max-jobs", "1"] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const busy = await ws.request("run_job", { graph: spinGraph(60), params: {} });
    const busyId = String((busy.result as { job_id: string }).job_id);
    await check(() => ws.events(busyId).find((e) => e.type === "log_update"), 20_000, {
      name: "subprocess agent busy",
    });
    t.teardown(() => ws.request("cancel_job", { job_id: busyId }).catch(() => undefined));
    const { startAgentProc } = await import("../helpers/procs.js");
    const inlineAgent = await startAgentProc(s.ns.url, ["--name", "inline-only", "--strategies", "inline"]);
    t.teardown(() => inlineAgent.kill("SIGKILL"));
    const refused = await runOver(ws, whereGraph, "subprocess");
    const e = terminal(refused.events);
    t.equal(e.status, "failed", "failed, not run inline");
    t.equal((e.error as { code: string }).code, "JOB_ERR_STRATEGY_UNAVAILABLE");
    t.match((e.error as { message: string }).message, /asks for the "subprocess" strategy; this agent offers "inline"/);
    t.notOk(
      refused.events.some((ev) => ev.type === "node_update"),
      "no node ran",
    );
    t.equal(
      (await api(s.url, "GET", `/api/jobs/${refused.jobId}`)).body.agent_id,
      inlineAgent.id,
      "it was the inline agent that refused it",
    );
  },
);

t.test("strategies - a subprocess run does not outlive its agent, even one whose node holds its loop", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "subprocess"] });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const r = await ws.request("run_job", { graph: spinGraph(120), params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  const log = await check(
    () => ws.events(jobId).find((e) => e.type === "log_update" && /spinning in pid/.test(String(e.content))),
    20_000,
    { name: "spin started" },
  );
  const pid = Number(/pid (\d+)/.exec(String(log.content))![1]);
  t.ok(pidAlive(pid), "the spinning child runs");
  s.agents[0]!.proc.kill("SIGKILL"); // no clean-up runs in the agent
  await s.agents[0]!.exited;
  await check(() => (!pidAlive(pid) ? true : null), 5_000, { name: "orphaned runner gone" });
  t.pass("the child killed itself once its agent was gone (its node never looked)");
});

t.test(
  "strategies - a run past its heap limit (jobMemoryMb) dies alone: its job fails, the agent and the next job are fine",
  async (t) => {
    t.throws(() => compileAgentConfig({ jobMemoryMb: -1 }), /jobMemoryMb: must be an integer ≥ 0/);
    t.equal(compileAgentConfig({ jobMemoryMb: "64" as never }).jobMemoryMb, 64, "from the environment's string form");
    const s = await startStack(t, {
      agents: 1,
      agentArgs: ["--strategies", "subprocess,threaded", "--job-memory-mb", "48"],
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    for (const strategy of ["subprocess", "threaded"]) {
      const big = await runOver(ws, allocGraph(400), strategy, 60_000);
      const e = terminal(big.events);
      t.equal(e.status, "failed", `${strategy}: 400 MiB under a 48 MiB limit fails`);
      t.equal((e.error as { code: string }).code, "JOB_ERR_RUNNER_CRASHED", `${strategy}: as a dead runner`);
      t.match((e.error as { message: string }).message, /memory limit is 48 MiB/, `${strategy}: naming the limit`);
      const small = await runOver(ws, allocGraph(8), strategy);
      t.same(terminal(small.events).result, { mb: [8] }, `${strategy}: 8 MiB fits, and the agent runs it`);
    }
    t.equal(s.agents[0]!.proc.exitCode, null, "the agent is alive");
  },
);
