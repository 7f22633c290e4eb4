/** List basics (`nodetool.list.*`). Indices follow Python: negative counts from the end. */
import { NodeError, type GeneratorNodeDef, type NodeDef } from "../engine/types.js";
import {
  asInt,
  asList,
  asNumberList,
  asText,
  capList,
  enumProp,
  output,
  prop,
  pySlice,
  yieldToEventLoop,
} from "./util.js";

const VALUES = prop("values", "list", []);

/** Number of items. */
export const length: NodeDef = {
  kind: "process",
  type: "nodetool.list.Length",
  title: "Length",
  description: "Calculates the length of a list.",
  properties: [VALUES],
  outputs: output("int"),
  process: (_ctx, inputs) => ({ output: Array.isArray(inputs.values) ? inputs.values.length : 0 }),
};

/** values[index]; out of range fails. */
export const getElement: NodeDef = {
  kind: "process",
  type: "nodetool.list.GetElement",
  title: "Get Element",
  description: "Retrieves a single value from a list at a specific index (negative counts from the end).",
  properties: [VALUES, prop("index", "int", 0)],
  outputs: output("any"),
  process: (_ctx, inputs) => {
    if (!Array.isArray(inputs.values)) throw new NodeError("values must be a list");
    const values = inputs.values;
    const index = asInt(inputs.index, "index");
    const at = index < 0 ? values.length + index : index;
    if (at < 0 || at >= values.length)
      throw new NodeError(`list index ${index} out of range for a list of ${values.length}`);
    return { output: values[at] };
  },
};

/** values[start:stop:step] with stop = 0 meaning "to the end". */
export const slice: NodeDef = {
  kind: "process",
  type: "nodetool.list.Slice",
  title: "Slice",
  description:
    "Extracts a subset from a list using start, stop, and step indices. stop=0 slices to the end; negative indices count from the end.",
  properties: [
    prop("values", "list", [], { description: "The input list to slice." }),
    prop("start", "int", 0, { description: "Starting index (inclusive). Negative values count from end." }),
    prop("stop", "int", 0, { description: "Ending index (exclusive). 0 means slice to end of list." }),
    prop("step", "int", 1, { description: "Step between elements. Negative for reverse order." }),
  ],
  outputs: output("list[any]"),
  process: (_ctx, inputs) => ({
    output: pySlice(
      asList(inputs.values),
      asInt(inputs.start, "start"),
      asInt(inputs.stop, "stop"),
      asInt(inputs.step, "step"),
    ),
  }),
};

/** A copy of values with value added at the end. */
export const append: NodeDef = {
  kind: "process",
  type: "nodetool.list.Append",
  title: "Append",
  description: "Adds a value to the end of a list.",
  properties: [VALUES, prop("value", "any", [], { description: "The value to append to the list." })],
  outputs: output("list[any]"),
  process: (ctx, inputs) => {
    const values = asList(inputs.values);
    capList(ctx.limits, values.length + 1);
    return { output: [...values, inputs.value ?? null] };
  },
};

/** A reversed copy. */
export const reverse: NodeDef = {
  kind: "process",
  type: "nodetool.list.Reverse",
  title: "Reverse",
  description: "Inverts the order of elements in a list.",
  properties: [VALUES],
  outputs: output("list[any]"),
  process: (_ctx, inputs) => ({ output: [...asList(inputs.values)].reverse() }),
};

/**
 * A sorted copy: numbers numerically, everything else by its text. (NodeTool's TypeScript Sort uses the bare
 * `Array.prototype.sort`, which orders 10 before 9; Python's `sorted` does not.)
 */
export const sort: NodeDef = {
  kind: "process",
  type: "nodetool.list.Sort",
  title: "Sort",
  description: "Sorts the elements of a list in ascending or descending order.",
  properties: [VALUES, enumProp("order", ["ascending", "descending"], "ascending")],
  outputs: output("list[any]"),
  process: (_ctx, inputs) => {
    const sorted = [...asList(inputs.values)].sort((a, b) => {
      if (typeof a === "number" && typeof b === "number") return a - b;
      const sa = asText(a);
      const sb = asText(b);
      return sa < sb ? -1 : sa > sb ? 1 : 0;
    });
    return { output: inputs.order === "descending" ? sorted.reverse() : sorted };
  },
};

function aggregate(name: string, title: string, description: string, fn: (values: number[]) => number): NodeDef {
  return {
    kind: "process",
    type: `nodetool.list.${name}`,
    title,
    description,
    properties: [prop("values", "list", [])],
    outputs: output("float"),
    process: (_ctx, inputs) => {
      const values = asNumberList(inputs.values, "values");
      if (values.length === 0) throw new NodeError(`${title}: the list is empty`);
      return { output: fn(values) };
    },
  };
}

/** Σ values; an empty list fails, as in NodeTool. */
export const sum = aggregate("Sum", "Sum", "Calculates the sum of a list of numbers.", (v) =>
  v.reduce((a, b) => a + b, 0),
);
/** Mean of values. */
export const average = aggregate(
  "Average",
  "Average",
  "Calculates the arithmetic mean of a list of numbers.",
  (v) => v.reduce((a, b) => a + b, 0) / v.length,
);
/** Smallest value. */
export const minimum = aggregate("Minimum", "Minimum", "Finds the smallest value in a list of numbers.", (v) =>
  v.reduce((a, b) => Math.min(a, b)),
);
/** Largest value. */
export const maximum = aggregate("Maximum", "Maximum", "Finds the largest value in a list of numbers.", (v) =>
  v.reduce((a, b) => Math.max(a, b)),
);

/** Streams start, start+step, … up to (not including) stop, one value per emission. */
export const generateSequence: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.list.GenerateSequence",
  title: "Generate Sequence",
  description: "Iterates over a sequence of numbers, emitting each one.",
  properties: [prop("start", "int", 0), prop("stop", "int", 0), prop("step", "int", 1)],
  outputs: output("int"),
  async *generate(ctx, inputs) {
    const start = asInt(inputs.start, "start");
    const stop = asInt(inputs.stop, "stop");
    const step = asInt(inputs.step, "step");
    if (step === 0) throw new NodeError("step must not be 0");
    // Refused before the first value, rather than after a million of them. Counted, not stepped: past 2^53 a step
    // of 1 no longer moves a float, and the sequence would never reach `stop`.
    const count = Math.max(0, Math.ceil((stop - start) / step));
    capList(ctx.limits, count, "the sequence");
    for (let n = 0; n < count; n++) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      yield { handle: "output", value: start + n * step };
      // A long sequence must not starve the event loop (cancellation, heartbeats).
      if ((n + 1) % 1024 === 0) await yieldToEventLoop();
    }
  },
};

export const LIST_NODES: readonly NodeDef[] = [
  length,
  getElement,
  slice,
  append,
  reverse,
  sort,
  sum,
  average,
  minimum,
  maximum,
  generateSequence,
];
