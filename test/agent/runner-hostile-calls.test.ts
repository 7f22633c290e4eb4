/**
 * A runner that floods the agent with host calls: each `call` of a remote node is a child job queued on the fleet
 * (of an `inAgent` node, a ComfyUI run). A graph runs a node one invocation at a time, so a runner may have one
 * call in flight per node; one that asks again before the answer is stopped and its run fails. Without that, 50
 * calls sent at once became 50 child jobs at once.
 */
import t from "tap";
import { RunnerCrashedError, runOnChannel, runWithStrategy } from "../../agent/runners/index.js";
import { nodeCatalog } from "../../agent/nodes/index.js";
import { check } from "../helpers/check.js";
import { workerChannel } from "../helpers/worker-channel.js";

/** A channel to a thread that answers the run message with `n` calls of node `r` at once, then idles. */
function floodingChannel(n: number) {
  return workerChannel(
    `for (let call = 1; call <= ${n}; call++) parentPort.postMessage({ type: "call", call, node_id: "r", inputs: {} })`,
  );
}

/** A remote node `r` whose runs (child jobs) take 100 ms each, counted. */
function countedRemote() {
  const seen = { running: 0, most: 0, runs: 0 };
  const remote = {
    nodeIds: new Set(["r"]),
    run: async () => {
      seen.runs++;
      seen.most = Math.max(seen.most, ++seen.running);
      await new Promise((r) => setTimeout(r, 100));
      seen.running--;
      return { output: ["HI"] };
    },
  };
  return { seen, remote };
}

const graph = {
  nodes: [{ id: "r", type: "nodetool.text.ToUppercase", data: { text: "hi" } }],
  edges: [],
};

t.test("runner hostile calls - 50 calls of one node at once: one child job, and the runner is stopped", async (t) => {
  const { seen, remote } = countedRemote();
  const { ch, exitedSoon } = floodingChannel(50);
  t.teardown(() => ch.kill());
  let err: unknown = null;
  let settled = false;
  void runOnChannel(
    { graph, params: {}, library: nodeCatalog(), signal: new AbortController().signal, emit: () => undefined, remote },
    ch,
    0,
  ).then(
    () => (settled = true),
    (e: unknown) => ((err = e), (settled = true)),
  );
  // Ended, or (without the rule) every call started while the runner idles.
  await check(() => settled || seen.runs === 50 || null, 20_000, { name: "run ended or every call started" });
  t.ok(err instanceof RunnerCrashedError, "the run fails RunnerCrashedError");
  t.match(
    String((err as Error | null)?.message),
    /asked the agent to run node "r" again before its last call/,
    "saying why",
  );
  t.equal(seen.runs, 1, `${seen.runs} child job(s) started (50 before)`);
  await exitedSoon();
});

t.test("runner hostile calls - a node fired five times calls the agent five times, one after another", async (t) => {
  const { seen, remote } = countedRemote();
  const list = {
    nodes: [
      { id: "each", type: "nodetool.control.ForEach", data: { input_list: ["a", "b", "c", "d", "e"] } },
      { id: "r", type: "nodetool.text.ToUppercase", data: {} },
    ],
    edges: [{ id: "e", source: "each", sourceHandle: "output", target: "r", targetHandle: "text" }],
  };
  const result = await runWithStrategy(
    "threaded",
    {
      graph: list,
      params: {},
      library: nodeCatalog(),
      signal: new AbortController().signal,
      emit: () => undefined,
      remote,
    },
    { memoryMb: 0, gpus: [], docker: null, label: "calls", spares: null },
  );
  t.equal(result.status, "completed", "the run completes");
  t.equal(seen.runs, 5, "one call per value");
  t.equal(seen.most, 1, "never two at once");
});
