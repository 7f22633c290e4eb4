/**
 * Flow control (`nodetool.control.*`): branching, iteration and stream folds. Iterators are generators that
 * emit `output` and `index` per item; folds are streaming-input nodes that drain `input_item` until every
 * upstream has ended and then emit once.
 */
import type {
  Emission,
  GeneratorNodeDef,
  InboxItem,
  NodeContext,
  NodeDef,
  StreamingInputNodeDef,
} from "../engine/types.js";
import { asBool, asInt, asList, capList, prop, yieldToEventLoop } from "./util.js";

/**
 * Sends `value` on `if_true` or `if_false`. Only the taken branch receives anything: NodeTool's TypeScript
 * node also sends `null` down the other branch, which would wake the nodes there with a value nobody meant.
 */
export const ifNode: NodeDef = {
  kind: "process",
  type: "nodetool.control.If",
  title: "If",
  description: "Conditionally executes one of two branches based on a condition.",
  properties: [
    prop("condition", "bool", false, { description: "The condition to evaluate" }),
    prop("value", "any", [], { description: "The value to pass to the next node" }),
  ],
  outputs: [
    { name: "if_true", type: "any" },
    { name: "if_false", type: "any" },
  ],
  process: (_ctx, inputs) =>
    asBool(inputs.condition) ? { if_true: inputs.value ?? null } : { if_false: inputs.value ?? null },
};

/** Emits each item on `output` with its position on `index`. */
async function* iterate(ctx: NodeContext, items: readonly unknown[], limit: number): AsyncGenerator<Emission> {
  const cap = limit >= 0 ? Math.min(limit, items.length) : items.length;
  for (let index = 0; index < cap; index++) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    yield { handle: "output", value: items[index] };
    yield { handle: "index", value: index };
    if ((index + 1) % 1024 === 0) await yieldToEventLoop();
  }
}

const ITEM_OUTPUTS = [
  { name: "output", type: "any" },
  { name: "index", type: "int" },
];

/** Iterates `input_list`; `limit` ≥ 0 caps how many items are emitted. */
export const forEach: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.control.ForEach",
  title: "For Each",
  description: "Iterate over a list and emit each item sequentially, with its index.",
  properties: [
    prop("input_list", "list", [], { description: "The list of items to iterate over." }),
    prop("limit", "int", -1, { description: "Maximum number of items to emit. -1 (default) emits the full list." }),
  ],
  outputs: ITEM_OUTPUTS,
  generate: (ctx, inputs) => iterate(ctx, asList(inputs.input_list), asInt(inputs.limit ?? -1, "limit")),
};

/** Streams a hand-picked list of items (NodeTool's "Asset Collection"). */
export const collection: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.control.Collection",
  title: "Asset Collection",
  description: "A curated collection of items. Streams each item one at a time for downstream processing.",
  properties: [prop("items", "list", [])],
  outputs: ITEM_OUTPUTS,
  generate: (ctx, inputs) => iterate(ctx, asList(inputs.items), -1),
};

/** Values that arrived on `input_item`, in arrival order. */
async function drain(ctx: NodeContext, inbox: AsyncIterable<InboxItem>): Promise<unknown[]> {
  const items: unknown[] = [];
  for await (const { handle, value } of inbox) {
    if (handle !== "input_item") continue;
    capList(ctx.limits, items.length + 1, "the collected list");
    items.push(value);
  }
  return items;
}

/** Gathers every item of the stream into one list, emitted when the stream ends. */
export const collect: StreamingInputNodeDef = {
  kind: "streaming-input",
  type: "nodetool.control.Collect",
  title: "Collect",
  description: "Collect items until the end of the stream and return them as a list.",
  properties: [prop("input_item", "any", [], { description: "The input item to collect." })],
  outputs: [{ name: "output", type: "list[any]" }],
  consume: async (ctx, _inputs, inbox) => ({ output: await drain(ctx, inbox) }),
};

/** Counts the items of the stream, emitted when the stream ends. */
export const count: StreamingInputNodeDef = {
  kind: "streaming-input",
  type: "nodetool.control.Count",
  title: "Count",
  description: "Emit the total number of items when the stream ends.",
  properties: [
    prop("input_item", "any", null, { description: "Streaming input — items are counted but not forwarded." }),
  ],
  outputs: [{ name: "output", type: "int" }],
  consume: async (_ctx, _inputs, inbox) => {
    let n = 0;
    for await (const { handle } of inbox) if (handle === "input_item") n++;
    return { output: n };
  },
};

/** Passes its input through unchanged (a layout aid). */
export const reroute: NodeDef = {
  kind: "process",
  type: "nodetool.control.Reroute",
  title: "Reroute",
  description: "Pass data through unchanged for tidier workflow layouts.",
  properties: [prop("input_value", "any", [], { description: "Value to pass through unchanged" })],
  outputs: [{ name: "output", type: "any" }],
  process: (_ctx, inputs) => ({ output: inputs.input_value ?? null }),
};

export const CONTROL_NODES: readonly NodeDef[] = [ifNode, forEach, collection, collect, count, reroute];
