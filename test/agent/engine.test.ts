import t from "tap";
import { runGraph, type EngineEvent } from "../../agent/engine/engine.js";
import { nodeCatalog, nodeLibrary } from "../../agent/nodes/index.js";
import type { Graph } from "../../protocol/index.js";

const library = nodeCatalog(nodeLibrary(true));
const e = (id: string, source: string, target: string, targetHandle: string, sourceHandle = "output") => ({
  id,
  source,
  sourceHandle,
  target,
  targetHandle,
});

async function run(graph: Graph, params: Record<string, unknown> = {}, signal = new AbortController().signal) {
  const events: EngineEvent[] = [];
  const result = await runGraph({ graph, params, library, signal, emit: (ev) => events.push(ev) });
  return { result, events };
}

t.test("engine - input nodes take run params by name and outputs collect every value by Output name", async (t) => {
  const { result } = await run(
    {
      nodes: [
        { id: "a", type: "nodetool.input.IntegerInput", data: { name: "a", value: 1 } },
        { id: "b", type: "nodetool.input.IntegerInput", data: { name: "b", value: 2 } },
        { id: "add", type: "lib.math.Add", data: {} },
        { id: "out", type: "nodetool.output.Output", data: { name: "sum" } },
      ],
      edges: [e("1", "a", "add", "a"), e("2", "b", "add", "b"), e("3", "add", "out", "value")],
    },
    { a: 40 },
  );
  t.same(result, { status: "completed", outputs: { sum: [42] } });
});

t.test("engine - the old nodetool.math names run the same nodes", async (t) => {
  const { result } = await run({
    nodes: [
      { id: "m", type: "nodetool.math.Multiply", data: { a: 6, b: 7 } },
      { id: "out", type: "nodetool.output.Output", data: { name: "x" } },
    ],
    edges: [e("1", "m", "out", "value")],
  });
  t.same(result.outputs, { x: [42] });
});

t.test(
  "engine - generator values stream along edges and on_any fires once per new value (combine-latest)",
  async (t) => {
    const { result, events } = await run({
      nodes: [
        { id: "seq", type: "nodetool.list.GenerateSequence", data: { start: 0, stop: 3, step: 1 } },
        { id: "k", type: "nodetool.constant.Integer", data: { value: 10 } },
        { id: "add", type: "lib.math.Add", data: {} },
        { id: "out", type: "nodetool.output.Output", data: { name: "sums" } },
      ],
      edges: [e("1", "seq", "add", "a"), e("2", "k", "add", "b"), e("3", "add", "out", "value")],
    });
    t.same(result.outputs, { sums: [10, 11, 12] });
    t.ok(
      events.some((ev) => ev.type === "edge_update" && ev.status === "completed" && ev.counter === 3),
      "edge counter reported",
    );
  },
);

t.test("engine - a sequence past 2^53 ends after its count (a step there does not move a float)", async (t) => {
  const { result } = await run({
    nodes: [
      { id: "seq", type: "nodetool.list.GenerateSequence", data: { start: 2 ** 53, stop: 2 ** 53 + 2, step: 1 } },
      { id: "out", type: "nodetool.output.Output", data: { name: "xs" } },
    ],
    edges: [e("1", "seq", "out", "value")],
  });
  t.equal((result.outputs as { xs: unknown[] }).xs.length, 2, "two values, then the end");
});

t.test("engine - zip_all pairs values in arrival order instead of combining the latest", async (t) => {
  const { result } = await run({
    nodes: [
      { id: "s1", type: "nodetool.list.GenerateSequence", data: { start: 0, stop: 3, step: 1 } },
      { id: "s2", type: "nodetool.list.GenerateSequence", data: { start: 100, stop: 103, step: 1 } },
      { id: "add", type: "lib.math.Add", data: {}, sync_mode: "zip_all" },
      { id: "out", type: "nodetool.output.Output", data: { name: "z" } },
    ],
    edges: [e("1", "s1", "add", "a"), e("2", "s2", "add", "b"), e("3", "add", "out", "value")],
  });
  t.same(result.outputs, { z: [100, 102, 104] });
});

t.test(
  "engine - a property fed by an edge is dropped from data, dynamic inputs accept undeclared handles",
  async (t) => {
    const { result } = await run({
      nodes: [
        { id: "who", type: "nodetool.constant.String", data: { value: "edge" } },
        {
          id: "fmt",
          type: "nodetool.text.FormatText",
          data: { template: "{{ who }}/{{ fixed }}", who: "data-value-ignored" },
          dynamic_properties: { fixed: "dyn" },
        },
        { id: "out", type: "nodetool.output.Output", data: { name: "t" } },
      ],
      edges: [e("1", "who", "fmt", "who"), e("2", "fmt", "out", "value")],
    });
    t.same(result.outputs, { t: ["edge/dyn"] });
  },
);

t.test(
  "engine - bypassed nodes are routed around, editor-only nodes and edges to missing nodes are dropped",
  async (t) => {
    const { result } = await run({
      nodes: [
        { id: "s", type: "nodetool.constant.String", data: { value: "abc" } },
        { id: "up", type: "nodetool.text.ToUppercase", data: {}, ui_properties: { bypassed: true } },
        { id: "c", type: "nodetool.workflows.base_node.Comment", data: { comment: "note" } },
        { id: "out", type: "nodetool.output.Output", data: { name: "t" } },
      ],
      edges: [
        e("1", "s", "up", "text"),
        e("2", "up", "out", "value"),
        e("3", "s", "ghost", "value"),
        e("4", "c", "out", "value"),
      ],
    });
    t.same(result, { status: "completed", outputs: { t: ["abc"] } });
  },
);

t.test("engine - a node error fails the run naming node id, type and message, and nothing hangs", async (t) => {
  const { result, events } = await run({
    nodes: [
      { id: "slow", type: "nodeway.test.Sleep", data: { seconds: 30 } },
      { id: "bad", type: "nodeway.test.Fail", data: { message: "broken on purpose" } },
    ],
    edges: [],
  });
  t.same(result.status, "failed");
  t.match(result, { error: { node_id: "bad", node_type: "nodeway.test.Fail", message: "broken on purpose" } });
  t.ok(events.some((ev) => ev.type === "node_update" && ev.node_id === "bad" && ev.status === "error"));
});

t.test("engine - the abort signal reaches running nodes and the run ends cancelled", async (t) => {
  const ac = new AbortController();
  const started = Date.now();
  const graph: Graph = {
    nodes: [{ id: "tok", type: "nodeway.test.Tokens", data: { count: 100000, rate: 100 } }],
    edges: [],
  };
  const events: EngineEvent[] = [];
  const chunks = () => events.filter((ev) => ev.type === "chunk").length;
  let atAbort = -1;
  setTimeout(() => {
    atAbort = chunks();
    ac.abort(new Error("user"));
  }, 100);
  const result = await runGraph({ graph, params: {}, library, signal: ac.signal, emit: (ev) => events.push(ev) });
  t.equal(result.status, "cancelled");
  t.ok(Date.now() - started < 5_000, "ended promptly");
  t.ok(atAbort > 0, `tokens streamed before the abort (${atAbort})`);
  // The run resolves once every node has settled: a token emitted after the abort would be in by now.
  t.equal(chunks(), atAbort, "no tokens after the abort");
});

t.test("engine - Tokens emits one chunk per token and outputs the joined text", async (t) => {
  const { result, events } = await run({
    nodes: [
      { id: "tok", type: "nodeway.test.Tokens", data: { count: 5, rate: 0 } },
      { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [e("1", "tok", "out", "value")],
  });
  const chunks = events
    .filter((ev): ev is Extract<EngineEvent, { type: "chunk" }> => ev.type === "chunk" && ev.content !== "")
    .map((c) => c.content);
  t.same(chunks, ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "]);
  t.same(result.outputs, { text: ["tok0 tok1 tok2 tok3 tok4 "] });
});

t.test("engine - an unknown node type is refused before anything runs", async (t) => {
  await t.rejects(run({ nodes: [{ id: "x", type: "no.such.Node", data: {} }], edges: [] }), {
    name: "UnknownNodeTypeError",
    message: /no\.such\.Node.*"x"/,
  });
});

t.test("engine - a streaming consumer waiting for item after item adds no abort listener per wait", async (t) => {
  // Each wait for the next item used to add an abort listener to the run's signal, never removed until the run
  // ended: one per item of a long stream (Node warns past 10 on one AbortSignal).
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on("warning", onWarning);
  t.teardown(() => void process.off("warning", onWarning));
  const { result } = await run({
    nodes: [
      { id: "tok", type: "nodeway.test.Tokens", data: { count: 60, rate: 2000 } },
      { id: "n", type: "nodetool.control.Count", data: {} },
      { id: "out", type: "nodetool.output.Output", data: { name: "n" } },
    ],
    edges: [e("1", "tok", "n", "input_item", "chunk"), e("2", "n", "out", "value")],
  });
  t.same(result.outputs, { n: [60] }, "every item counted");
  await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
  t.same(
    warnings.filter((w) => /MaxListeners/.test(w)),
    [],
    "no listener pile-up on the run's signal",
  );
});
