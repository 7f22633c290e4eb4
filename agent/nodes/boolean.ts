/** Logic and comparisons (`nodetool.boolean.*`). */
import { assertNever } from "../../protocol/index.js";
import { NodeError, type NodeDef } from "../engine/types.js";
import { asBool, asList, deepEqual, enumProp, output, prop } from "./util.js";

const COMPARISONS = ["==", "!=", ">", "<", ">=", "<="] as const;
const LOGICAL = ["and", "or", "xor", "nand", "nor"] as const;
type Comparison = (typeof COMPARISONS)[number];
const isComparison = (op: string): op is Comparison => (COMPARISONS as readonly string[]).includes(op);

function numeric(v: unknown): number | null {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
  return null;
}

/**
 * Compares numerically when both sides are numbers (NodeTool converts with `Number`); otherwise `==`/`!=` are
 * structural and ordering works on two strings, as Python's operators do. Ordering anything else fails.
 */
function compare(a: unknown, b: unknown, op: string): boolean {
  if (!isComparison(op))
    throw new NodeError(`unsupported comparison ${JSON.stringify(op)}; one of ${COMPARISONS.join(" ")}`);
  const na = numeric(a);
  const nb = numeric(b);
  let order: number | null = null;
  if (na !== null && nb !== null) order = na - nb;
  else if (op === "==") return deepEqual(a, b);
  else if (op === "!=") return !deepEqual(a, b);
  else if (typeof a === "string" && typeof b === "string") order = a < b ? -1 : a > b ? 1 : 0;
  if (order === null) throw new NodeError(`cannot order ${JSON.stringify(a)} and ${JSON.stringify(b)} with ${op}`);
  switch (op) {
    case "==":
      return order === 0;
    case "!=":
      return order !== 0;
    case ">":
      return order > 0;
    case "<":
      return order < 0;
    case ">=":
      return order >= 0;
    case "<=":
      return order <= 0;
    default:
      return assertNever(op, "comparison");
  }
}

/** a <op> b. */
export const compareNode: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.Compare",
  title: "Compare",
  description: "Compares two values using a specified comparison operator.",
  properties: [
    prop("a", "float", 0, { description: "First value to compare" }),
    prop("b", "float", 0, { description: "Second value to compare" }),
    enumProp("comparison", COMPARISONS, "==", "Comparison operator to use"),
  ],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({ output: compare(inputs.a, inputs.b, String(inputs.comparison ?? "==")) }),
};

/** a and/or/xor/nand/nor b. */
export const logicalOperator: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.LogicalOperator",
  title: "Logical Operator",
  description: "Performs logical operations on two boolean inputs.",
  properties: [
    prop("a", "bool", false, { description: "First boolean input" }),
    prop("b", "bool", false, { description: "Second boolean input" }),
    enumProp("operation", LOGICAL, "and", "Logical operation to perform"),
  ],
  outputs: output("bool"),
  process: (_ctx, inputs) => {
    const a = asBool(inputs.a);
    const b = asBool(inputs.b);
    const op = String(inputs.operation ?? "and");
    switch (op) {
      case "and":
        return { output: a && b };
      case "or":
        return { output: a || b };
      case "xor":
        return { output: a !== b };
      case "nand":
        return { output: !(a && b) };
      case "nor":
        return { output: !(a || b) };
      default:
        throw new NodeError(`unsupported operation ${JSON.stringify(op)}; one of ${LOGICAL.join(", ")}`);
    }
  },
};

/** not value. */
export const not: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.Not",
  title: "Not",
  description: "Performs logical NOT operation on a boolean input.",
  properties: [prop("value", "bool", false, { description: "Boolean input to negate" })],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({ output: !asBool(inputs.value) }),
};

/** if_true when condition holds, else if_false — a value choice; control.If routes instead. */
export const conditionalSwitch: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.ConditionalSwitch",
  title: "Conditional Switch",
  description: "Performs a conditional check on a boolean input and returns a value based on the result.",
  properties: [
    prop("condition", "bool", false, { description: "The condition to check" }),
    prop("if_true", "any", [], { description: "The value to return if the condition is true" }),
    prop("if_false", "any", [], { description: "The value to return if the condition is false" }),
  ],
  outputs: output("any"),
  process: (_ctx, inputs) => ({ output: (asBool(inputs.condition) ? inputs.if_true : inputs.if_false) ?? null }),
};

/** value is null. */
export const isNone: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.IsNone",
  title: "Is None",
  description: "Checks if a value is None.",
  properties: [prop("value", "any", null, { description: "The value to check for None" })],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({ output: inputs.value === null || inputs.value === undefined }),
};

/** value is in options (structural equality, as Python's `in`). */
export const isIn: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.IsIn",
  title: "Is In",
  description: "Checks if a value is present in a list of options.",
  properties: [
    prop("value", "any", [], { description: "The value to check for membership" }),
    prop("options", "list", [], { description: "The list of options to check against" }),
  ],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({
    output: Array.isArray(inputs.options) && inputs.options.some((o) => deepEqual(o, inputs.value)),
  }),
};

/** Every value is true (true for an empty list). */
export const all: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.All",
  title: "All",
  description: "Checks if all boolean values in a list are True.",
  properties: [prop("values", "list", [], { description: "List of boolean values to check" })],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({ output: asList(inputs.values).every(asBool) }),
};

/** Some value is true (false for an empty list). */
export const some: NodeDef = {
  kind: "process",
  type: "nodetool.boolean.Some",
  title: "Some",
  description: "Checks if any boolean value in a list is True.",
  properties: [prop("values", "list", [], { description: "List of boolean values to check" })],
  outputs: output("bool"),
  process: (_ctx, inputs) => ({ output: asList(inputs.values).some(asBool) }),
};

export const BOOLEAN_NODES: readonly NodeDef[] = [
  compareNode,
  logicalOperator,
  not,
  conditionalSwitch,
  isNone,
  isIn,
  all,
  some,
];
