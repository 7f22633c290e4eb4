/**
 * Spare runners (agent/strategies.ts `RunnerSpares`, `warmRunners`): a `threaded` or `subprocess` job runs in a
 * thread or process started before the job was submitted, so it need not wait for one to start and load; each
 * spare serves one run and the next is started behind it (the isolation is unchanged); a spare that died while it
 * waited is not given a run; `--warm-runners 0` starts runners per job; stopping the agent ends its spares.
 */
import t, { type Test } from "tap";
import { readdirSync, readFileSync } from "node:fs";
import { RunnerSpares, runWithStrategy } from "../../agent/runners/index.js";
import { nodeCatalog, nodeLibrary } from "../../agent/nodes/index.js";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { runOver, terminal, where, whereGraph } from "../helpers/strategy-jobs.js";

/** Pids of the processes whose parent is `ppid` and that run the strategy runner. */
function runnersOf(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent === ppid && readFileSync(`/proc/${d}/cmdline`, "utf8").includes("strategy-child")) out.push(Number(d));
    } catch {
      // gone while we looked
    }
  }
  return out;
}

/** Runs whereGraph with `strategy`; where it ran, and whether its runner was there before the job was submitted. */
async function runWhere(t: Test, ws: WsClient, strategy: string) {
  const submittedAt = Date.now();
  const { events } = await runOver(ws, whereGraph(), strategy, 60_000);
  t.equal(terminal(events).status, "completed", `${strategy} job completed`, { error: terminal(events).error });
  const w = where(events);
  if (w.runner_started_at === null) throw new Error(`${strategy}: the job ran inline`);
  return { ...w, warm: w.runner_started_at < submittedAt };
}

t.test("spares - threaded and subprocess jobs run in runners started before them, each used once", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "threaded,subprocess", "--max-jobs", "2"] });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  t.equal(
    ((await api(s.url, "GET", "/api/agents")).body.agents as { capabilities: { warm_runners: number } }[])[0]
      ?.capabilities.warm_runners,
    1,
    "/api/agents shows one spare kept per strategy",
  );
  for (const strategy of ["threaded", "subprocess"]) {
    const a = await runWhere(t, ws, strategy);
    t.ok(a.warm, `${strategy}: the first job's runner was started before the job was submitted`);
    const b = await runWhere(t, ws, strategy);
    t.ok(b.warm, `${strategy}: so was the second's, started behind the first`);
    t.not(
      strategy === "threaded" ? b.thread_id : b.pid,
      strategy === "threaded" ? a.thread_id : a.pid,
      `${strategy}: a runner serves one job`,
    );
  }
  const agentPid = s.agents[0]!.proc.pid!;
  const spare = await check(() => runnersOf(agentPid)[0] ?? null, 20_000, { name: "a spare process waits" });
  process.kill(spare, "SIGKILL");
  // Reaped (not a zombie): the agent has seen it die.
  await check(() => (existsPid(spare) ? null : true), 20_000, { name: "the killed spare is gone" });
  const c = await runWhere(t, ws, "subprocess");
  t.not(c.pid, spare, "a spare that died while it waited is not given the job");
  const replaced = await check(() => runnersOf(agentPid)[0] ?? null, 20_000, { name: "a spare waits again" });
  t.not(replaced, spare, "and the dead spare was replaced");
  const d = await runWhere(t, ws, "subprocess");
  t.ok(d.warm, "the next job has a spare again");

  const waiting = await check(() => runnersOf(agentPid)[0] ?? null, 20_000, { name: "a spare waits before the stop" });
  s.agents[0]!.kill("SIGTERM");
  await check(() => (existsPid(waiting) ? null : true), 20_000, { name: "the spare ended with its agent" });
  t.pass("stopping the agent ends its spares");
});

t.test(
  "spares - a spare that dies in the instant before it is taken: its run starts again on a fresh runner",
  async (t) => {
    const spares = new RunnerSpares(["subprocess"], 1, 0);
    t.teardown(() => spares.close());
    const pid = await check(() => runnersOf(process.pid)[0] ?? null, 20_000, { name: "a spare process waits" });
    process.kill(pid, "SIGKILL");
    // Taken in this same turn: its exit has not been seen yet, so it looks alive.
    const result = await runWithStrategy(
      "subprocess",
      {
        graph: whereGraph(),
        params: {},
        library: nodeCatalog(nodeLibrary(true)),
        signal: new AbortController().signal,
        emit: () => undefined,
      },
      { memoryMb: 0, docker: null, gpus: [], label: "race", spares },
    );
    t.equal(result.status, "completed", "the run completes");
    const ranIn = (result.outputs.where?.[0] as { pid: number } | undefined)?.pid;
    t.ok(ranIn !== undefined && ranIn !== pid, "in another process than the dead spare");
  },
);

t.test("spares - with --warm-runners 0 each job's runner starts for it", async (t) => {
  const s = await startStack(t, {
    agents: 1,
    agentArgs: ["--strategies", "subprocess,threaded", "--warm-runners", "0"],
  });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  // Whether a spare waits shows in each job: a spare would have been started before it and served it (warm).
  t.equal(
    ((await api(s.url, "GET", "/api/agents")).body.agents as { capabilities: { warm_runners: number } }[])[0]
      ?.capabilities.warm_runners,
    0,
    "and /api/agents says none are kept",
  );
  t.notOk((await runWhere(t, ws, "subprocess")).warm, "subprocess: started for its job");
  t.notOk((await runWhere(t, ws, "threaded")).warm, "threaded: started for its job");
});

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
