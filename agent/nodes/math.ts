/**
 * Arithmetic (`lib.math.*`, formerly `nodetool.math.*`, accepted as aliases). As NodeTool's Python raises
 * (ZeroDivisionError, "math domain error", "math range error"), dividing by zero and any result that is not a
 * finite number fail the node: JSON has no NaN or Infinity, and a `null` would flow on unnoticed. Modulus is
 * Python's `%`: the result has the sign of the divisor (-7 % 3 is 2, not JavaScript's -1).
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
    process: (_ctx, inputs) => ({ output: finite(title, properties, inputs, fn(inputs)) }),
  };
}

/** `x`, or a NodeError naming the node and its inputs when it is NaN (a domain error) or ±Infinity (overflow). */
function finite(title: string, properties: PropertyMetadata[], inputs: NodeInputs, x: number): number {
  if (Number.isFinite(x)) return x;
  const args = properties.map((p) => `${p.name} = ${JSON.stringify(inputs[p.name])}`).join(", ");
  if (Number.isNaN(x)) throw new NodeError(`${title}: math domain error: no real result for ${args}`);
  throw new NodeError(`${title}: math range error: the result for ${args} is too large (${x})`);
}

/** `b`, or a NodeError when it is zero (Python's ZeroDivisionError). */
function nonZero(b: number, what: string): number {
  if (b === 0) throw new NodeError(`${what} by zero`);
  return b;
}

/** NaN (a domain error) where `ok` is false, else `x`. */
const domain = (ok: boolean, x: () => number) => (ok ? x() : Number.NaN);

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
/** A ÷ B; B = 0 fails ("division by zero"), as in NodeTool. */
export const divide = mathNode(
  "Divide",
  "Divide",
  "Divides A by B to calculate the quotient (B = 0 fails: division by zero).",
  [prop("a", "float", 0), prop("b", "float", 1)],
  (i) => num(i, "a") / nonZero(num(i, "b"), "Divide: division"),
);
/** Python's float `%`: `a - b·floor(a/b)` with the sign of `b`, computed from fmod so that it stays exact. */
function pyMod(a: number, b: number): number {
  const r = a % b;
  if (r === 0) return b < 0 ? -0 : 0;
  return r < 0 !== b < 0 ? r + b : r;
}

/** A mod B with the sign of B, as Python's `%`; B = 0 fails ("modulo by zero"), as in NodeTool. */
export const modulus = mathNode(
  "Modulus",
  "Modulus",
  "Computes A modulo B to find the remainder after division (B = 0 fails: modulo by zero).",
  [prop("a", "float", 0), prop("b", "float", 1)],
  (i) => pyMod(num(i, "a"), nonZero(num(i, "b"), "Modulus: modulo")),
);
/** base ^ exponent, as Python's math.pow: 0 to a negative power is a domain error, as is a negative base to a fraction. */
export const power = mathNode(
  "Power",
  "Power",
  "Raises base to the given exponent.",
  [prop("base", "float", 0), prop("exponent", "float", 1)],
  (i) => {
    const base = num(i, "base");
    const exponent = num(i, "exponent");
    return domain(base !== 0 || exponent >= 0, () => base ** exponent);
  },
);
/** √x; negative x fails (math domain error), as in NodeTool. */
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
  log: (x: number) => domain(x > 0, () => Math.log(x)),
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
