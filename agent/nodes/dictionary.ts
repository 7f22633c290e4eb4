/** Dictionaries (`nodetool.dictionary.*`). */
import type { NodeDef } from "../engine/types.js";
import { asDict, asText, capDict, output, prop } from "./util.js";

/** dictionary[key], or `default` when the key is absent. */
export const getValue: NodeDef = {
  kind: "process",
  type: "nodetool.dictionary.GetValue",
  title: "Get Value",
  description: "Retrieves a value from a dictionary using a specified key.",
  properties: [prop("dictionary", "dict", {}), prop("key", "str", ""), prop("default", "any", null)],
  outputs: output("any"),
  process: (_ctx, inputs) => {
    const dict = asDict(inputs.dictionary);
    const key = asText(inputs.key);
    return { output: Object.hasOwn(dict, key) ? dict[key] : (inputs.default ?? null) };
  },
};

/** Every input of the node (all dynamic) as one dictionary. */
export const makeDictionary: NodeDef = {
  kind: "process",
  type: "nodetool.dictionary.MakeDictionary",
  title: "Make Dictionary",
  description: "Creates a dictionary from the node's dynamic inputs, one key per input.",
  properties: [],
  outputs: output("dict[str, any]"),
  isDynamic: true,
  process: (ctx, inputs) => {
    capDict(ctx.limits, Object.keys(inputs).length);
    return { output: { ...inputs } };
  },
};

/** dict_a merged with dict_b; b wins on shared keys. */
export const combine: NodeDef = {
  kind: "process",
  type: "nodetool.dictionary.Combine",
  title: "Combine",
  description: "Merges two dictionaries, with second dictionary values taking precedence.",
  properties: [prop("dict_a", "dict", {}), prop("dict_b", "dict", {})],
  outputs: output("dict[str, any]"),
  process: (ctx, inputs) => {
    const a = asDict(inputs.dict_a);
    const b = asDict(inputs.dict_b);
    capDict(ctx.limits, Object.keys(a).length + Object.keys(b).length);
    return { output: { ...a, ...b } };
  },
};

export const DICTIONARY_NODES: readonly NodeDef[] = [getValue, makeDictionary, combine];
