/** Fixed values (`nodetool.constant.*`): each outputs its `value` property on `output`. */
import type { NodeDef, ProcessNodeDef } from "../engine/types.js";
import { asBool, asDict, asInt, asList, asNumber, asText, output, prop } from "./util.js";

function constant(
  name: string,
  title: string,
  description: string,
  type: string,
  outType: string,
  dflt: unknown,
  read: (v: unknown) => unknown,
): ProcessNodeDef {
  return {
    kind: "process",
    type: `nodetool.constant.${name}`,
    title,
    description,
    properties: [prop("value", type, dflt)],
    outputs: output(outType),
    process: (_ctx, inputs) => ({ output: read(inputs.value) }),
  };
}

/** A fixed string. */
export const constString = constant(
  "String",
  "String",
  "Represents a string constant in the workflow.",
  "str",
  "str",
  "",
  asText,
);
/** A fixed integer. */
export const constInteger = constant(
  "Integer",
  "Integer",
  "Represents an integer constant in the workflow.",
  "int",
  "int",
  0,
  (v) => asInt(v ?? 0, "value"),
);
/** A fixed decimal number. */
export const constFloat = constant(
  "Float",
  "Float",
  "Represents a floating-point number constant in the workflow.",
  "float",
  "float",
  0,
  (v) => asNumber(v ?? 0, "value"),
);
/** A fixed boolean. */
export const constBool = constant(
  "Bool",
  "Bool",
  "Represents a boolean constant in the workflow.",
  "bool",
  "bool",
  false,
  asBool,
);
/** A fixed list. */
export const constList = constant(
  "List",
  "List",
  "Represents a list constant in the workflow.",
  "list",
  "list[any]",
  [],
  asList,
);
/** A fixed list of strings. */
export const constTextList = constant(
  "TextList",
  "Text List",
  "Represents a list of text strings in the workflow.",
  "list[str]",
  "list[str]",
  [],
  (v) => asList(v).map(asText),
);
/** A fixed dictionary. */
export const constDict = constant(
  "Dict",
  "Dict",
  "Represents a dictionary constant in the workflow.",
  "dict",
  "dict[str, any]",
  {},
  asDict,
);

export const CONSTANT_NODES: readonly NodeDef[] = [
  constString,
  constInteger,
  constFloat,
  constBool,
  constList,
  constTextList,
  constDict,
];
