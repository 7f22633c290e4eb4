/**
 * GPUs for `gpu`-pool runs (agent/gpus.ts): with `gpusPerRun` each run is given GPUs of its own, which a
 * `subprocess` run sees as `CUDA_VISIBLE_DEVICES`, and the agent pulls a `gpu` job only while that many are free,
 * so a job waits queued rather than share a device; runs of other pools are not held back and get none. No GPU is
 * needed: the ids are configured, and what is checked is what each run is told.
 */
import t from "tap";
import { GpuGroups } from "../../agent/gpus.js";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { runNodeway } from "../helpers/procs.js";
import { startStack } from "../helpers/stack.js";
import { submit, terminal } from "../helpers/strategy-jobs.js";

t.test("gpus - groups of gpusPerRun, handed out and given back; 0 shares them all", async (t) => {
  const g = new GpuGroups(["0", "1", "2", "3", "4"], 2);
  t.same(g.unused, ["4"], "an id that makes no whole group is never given");
  t.equal(g.available, 2);
  const a = g.take();
  const b = g.take();
  t.same(
    [a, b],
    [
      ["0", "1"],
      ["2", "3"],
    ],
    "each run its own",
  );
  t.equal(g.available, 0);
  t.throws(() => g.take(), /no GPUs free/, "none left: the agent must not have pulled");
  g.give(a);
  t.same(g.take(), ["0", "1"], "a run's GPUs go to the next one");

  const shared = new GpuGroups(["0", "1"], 0);
  t.equal(shared.available, Number.POSITIVE_INFINITY, "0: no limit");
  t.same(
    [shared.take(), shared.take()],
    [
      ["0", "1"],
      ["0", "1"],
    ],
    "every run gets them all",
  );
  t.same(new GpuGroups([], 0).take(), [], "no GPUs: none given");
});

/** Where the run is (its GPUs) at once, then a Sleep of `seconds`: the job runs on with its GPUs held. */
const holdGraph = (seconds: number) => ({
  nodes: [
    { id: "w", type: "nodeway.test.Whereabouts", data: {} },
    { id: "out", type: "nodetool.output.Output", data: { name: "where" } },
    { id: "sleep", type: "nodeway.test.Sleep", data: { seconds } },
  ],
  edges: [{ id: "e1", source: "w", sourceHandle: "output", target: "out", targetHandle: "value" }],
});
/** The GPUs the job's Whereabouts node saw, once it has reported (undefined before). */
const gpusOf = (events: Msg[]) => {
  const out = events.find((e) => e.type === "output_update" && e.node_id === "out");
  return out ? ((out.value as { gpus: string | null }).gpus ?? "none") : undefined;
};
const statusOf = (events: Msg[]) => events.filter((e) => e.type === "job_update").at(-1)?.status;

t.test("gpus - each gpu-pool run gets GPUs of its own; a third job waits for one while cpu jobs run on", async (t) => {
  const s = await startStack(t, {
    agents: 1,
    agentArgs: [
      "--strategies",
      "subprocess",
      "--pools",
      "cpu,gpu",
      "--gpus",
      "0,1",
      "--gpus-per-run",
      "1",
      "--max-jobs",
      "4",
    ],
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const listed = (await api(s.url, "GET", "/api/agents")).body.agents as { capabilities: { run_gpus?: unknown } }[];
  t.same(
    listed[0]?.capabilities.run_gpus,
    { ids: ["0", "1"], per_run: 1 },
    "/api/agents shows the GPUs runs get, and how many each",
  );
  const first = await submit(ws, holdGraph(8), "subprocess", "gpu");
  const second = await submit(ws, holdGraph(8), "subprocess", "gpu");
  const seen = await check(
    () => {
      const a = gpusOf(ws.events(first));
      const b = gpusOf(ws.events(second));
      return a && b ? [a, b] : null;
    },
    30_000,
    { name: "two gpu runs reported their GPUs" },
  );
  t.same([...seen].sort(), ["0", "1"], "two runs at once, one GPU each");

  const third = await submit(ws, holdGraph(0), "subprocess", "gpu");
  const cpu = await submit(ws, holdGraph(0), "subprocess", "cpu");
  const cpuEnd = await check(() => terminal(ws.events(cpu)) ?? null, 30_000, { name: "cpu job ended" });
  t.equal(cpuEnd.status, "completed", "a cpu job runs while the GPUs are taken: the agent has slots");
  t.equal(gpusOf(ws.events(cpu)), "none", "and is told of no GPU");
  t.equal(statusOf(ws.events(first)), "running", "(the first gpu job still holds its GPU)");
  t.equal(statusOf(ws.events(third)), "queued", "the third gpu job waits queued, not sharing a GPU");

  const firstEnd = await check(() => terminal(ws.events(first)) ?? null, 30_000, { name: "first gpu job ended" });
  t.equal(firstEnd.status, "completed");
  const thirdEnd = await check(() => terminal(ws.events(third)) ?? null, 30_000, { name: "third gpu job ended" });
  t.equal(thirdEnd.status, "completed", "then it runs");
  t.ok(["0", "1"].includes(String(gpusOf(ws.events(third)))), "on a GPU a finished run gave back");
  t.equal(
    (await check(() => terminal(ws.events(second)) ?? null, 30_000, { name: "second gpu job ended" })).status,
    "completed",
  );
});

t.test("gpus - an agent asked for more GPUs a run than it has does not start, saying so", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const a = runNodeway(["agent", "--nats", s.ns.url, "--pools", "gpu", "--gpus", "0", "--gpus-per-run", "2"]);
  t.teardown(() => a.kill("SIGKILL"));
  await check(() => (a.proc.exitCode !== null ? true : null), 30_000, { name: "agent exited" });
  t.not(a.proc.exitCode, 0, "it exits with an error");
  t.match(
    a.stderr(),
    /gpusPerRun: asks for 2 GPUs a run; this agent has 1 to give \(0\)/,
    "naming the setting and the GPUs it has",
  );
});
