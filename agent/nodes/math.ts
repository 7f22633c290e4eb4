/**
 * Arithmetic (`lib.math.*`, formerly `nodetool.math.*`, accepted as aliases). As in NodeTool's TypeScript
 * nodes, results follow JavaScript number semantics: dividing by zero gives ±Infinity (0/0 and x % 0 give NaN)
 * rather than an error, and `%` keeps the sign of the dividend. JSON carries those values as `null`.
 */
import { NodeError, type NodeDef, type NodeInputs, type ProcessNodeDef } from "../engine/types.js";
import type { PropertyMetadata } from "../../protocol/index.js";
import { asNumber, enumProp, output, prop } from "./util.js";

function mathNode(
  name: string,
  title: string,
  description: string,
  properties: PropertyMetadata[],
  fn: (inputs: NodeInputs) => number,
): ProcessNodeDef {
  return {
    kind: "process",
    type: `lib.math.${name}`,
    aliases: [`nodetool.math.${name}`],
    title,
    description,
    properties,
    outputs: output("float"),
    process: (_ctx, inputs) => ({ output: fn(inputs) }),
  };
}

const num = (inputs: NodeInputs, key: string) => asNumber(inputs[key], key);

/** A + B. */
export const add = mathNode(
  "Add",
  "Add",
  "Adds two numbers together.",
  [prop("a", "float", 0), prop("b", "float", 0)],
  (i) => num(i, "a") + num(i, "b"),
);
/** A − B. */
export const subtract = mathNode(
  "Subtract",
  "Subtract",
  "Subtracts B from A.",
  [prop("a", "float", 0), prop("b", "float", 0)],
  (i) => num(i, "a") - num(i, "b"),
);
/** A × B. */
export const multiply = mathNode(
  "Multiply",
  "Multiply",
  "Multiplies two numbers together.",
  [prop("a", "float", 0), prop("b", "float", 0)],
  (i) => num(i, "a") * num(i, "b"),
);
/** A ÷ B; B = 0 gives ±Infinity (NaN for 0/0), as in NodeTool. */
export const divide = mathNode(
  "Divide",
  "Divide",
  "Divides A by B to calculate the quotient.",
  [prop("a", "float", 0), prop("b", "float", 1)],
  (i) => num(i, "a") / num(i, "b"),
);
/** A mod B with the sign of A; B = 0 gives NaN, as in NodeTool. */
export const modulus = mathNode(
  "Modulus",
  "Modulus",
  "Computes A modulo B to find the remainder after division.",
  [prop("a", "float", 0), prop("b", "float", 1)],
  (i) => num(i, "a") % num(i, "b"),
);
/** base ^ exponent. */
export const power = mathNode(
  "Power",
  "Power",
  "Raises base to the given exponent.",
  [prop("base", "float", 0), prop("exponent", "float", 1)],
  (i) => num(i, "base") ** num(i, "exponent"),
);
/** √x (NaN for negative x). */
export const sqrt = mathNode("Sqrt", "Sqrt", "Computes the square root of x.", [prop("x", "float", 0)], (i) =>
  Math.sqrt(num(i, "x")),
);

const OPERATIONS = {
  negate: (x: number) => -x,
  absolute: Math.abs,
  square: (x: number) => x * x,
  cube: (x: number) => x * x * x,
  square_root: Math.sqrt,
  cube_root: Math.cbrt,
  sine: Math.sin,
  cosine: Math.cos,
  tangent: Math.tan,
  arcsin: Math.asin,
  arccos: Math.acos,
  arctan: Math.atan,
  log: Math.log,
} as const satisfies Record<string, (x: number) => number>;
type Operation = keyof typeof OPERATIONS;

/** One unary function chosen by `operation`. */
export const mathFunction = mathNode(
  "MathFunction",
  "Math Function",
  "Performs a selected unary math operation on an input.",
  [prop("input", "float", 0), enumProp("operation", Object.keys(OPERATIONS), "negate", "Unary operation to perform")],
  (i) => {
    const op = String(i.operation ?? "negate");
    if (!Object.hasOwn(OPERATIONS, op))
      throw new NodeError(`unsupported operation ${JSON.stringify(op)}; one of ${Object.keys(OPERATIONS).join(", ")}`);
    return OPERATIONS[op as Operation](num(i, "input"));
  },
);

export const MATH_NODES: readonly NodeDef[] = [add, subtract, multiply, divide, modulus, power, sqrt, mathFunction];
