/**
 * The checks behind `NodeLimits` (agent/engine/types.ts). Nodes call `capList`, `capString`, `capDict` with the
 * size they are about to build, before building it; the engine checks every value a node outputs the same way
 * (its top level only: a nested value was built, and checked, by the node that made it).
 */
import { NodeError, type NodeLimits } from "./types.js";

/** Fails when a list of `items` items would exceed `nodeListMaxItems`. */
export function capList(limits: NodeLimits, items: number, what = "the list"): void {
  if (items > limits.listMaxItems) {
    throw new NodeError(
      `${what} would have ${items} items, over the agent's nodeListMaxItems (${limits.listMaxItems})`,
    );
  }
}

/** Fails when a string of `units` UTF-16 code units is over `nodeStringMaxBytes` (each unit is ≥ 1 UTF-8 byte). */
export function capStringLength(limits: NodeLimits, units: number, what = "the text"): void {
  if (units > limits.stringMaxBytes) {
    throw new NodeError(
      `${what} would be at least ${units} bytes, over the agent's nodeStringMaxBytes (${limits.stringMaxBytes})`,
    );
  }
}

/** Fails when `s` is over `nodeStringMaxBytes` in UTF-8; counts bytes only for a string that could be. */
export function capString(limits: NodeLimits, s: string, what = "the text"): string {
  capStringLength(limits, s.length, what);
  // A UTF-16 code unit is at most 3 UTF-8 bytes: only a string within 3× of the cap needs counting.
  if (s.length * 3 > limits.stringMaxBytes) {
    const bytes = Buffer.byteLength(s, "utf8");
    if (bytes > limits.stringMaxBytes) {
      throw new NodeError(`${what} is ${bytes} bytes, over the agent's nodeStringMaxBytes (${limits.stringMaxBytes})`);
    }
  }
  return s;
}

/** Fails when a dictionary of `keys` keys would exceed `nodeDictMaxKeys`. */
export function capDict(limits: NodeLimits, keys: number, what = "the dictionary"): void {
  if (keys > limits.dictMaxKeys) {
    throw new NodeError(`${what} would have ${keys} keys, over the agent's nodeDictMaxKeys (${limits.dictMaxKeys})`);
  }
}

/** Checks one output value's top level against the caps; `what` names it in the error. */
export function capValue(limits: NodeLimits, value: unknown, what: string): void {
  if (typeof value === "string") capString(limits, value, what);
  else if (Array.isArray(value)) capList(limits, value.length, what);
  else if (
    value !== null &&
    typeof value === "object" &&
    !ArrayBuffer.isView(value) &&
    !(value instanceof ArrayBuffer)
  ) {
    // Counted without building a key array for a small object: the common case costs nothing.
    let n = 0;
    for (const k in value) if (Object.hasOwn(value, k) && ++n > limits.dictMaxKeys) break;
    capDict(limits, n > limits.dictMaxKeys ? Object.keys(value).length : n, what);
  }
}
