/**
 * Workflow inputs and outputs (`nodetool.input.*`, `nodetool.output.*`) and the editor's base nodes
 * (Preview, Comment, Group). An input node takes the run's param named by its `name`, falling back to its own
 * `value`; the gateway has already checked the param against the `value` property's type, so the coercions
 * here matter for runs that bypass it and for values saved in the graph.
 */
import { NodeError, type NodeContext, type NodeDef, type NodeInputs, type ProcessNodeDef } from "../engine/types.js";
import { mediaRefOf, type PropertyMetadata } from "../../protocol/index.js";
import { asBool, asNumber, asText, enumProp, output, prop } from "./util.js";

const NAME = prop("name", "str", "", { description: "The parameter name for the workflow." });
const DESCRIPTION = prop("description", "str", "", { description: "The description of the input for the workflow." });

/** The param named by the node's `name` if the run supplied one, else the node's `value`. */
function paramOrValue(ctx: NodeContext, inputs: NodeInputs): unknown {
  const raw = ctx.data.name ?? inputs.name;
  const name = typeof raw === "string" ? raw.trim() : "";
  if (name !== "" && Object.hasOwn(ctx.params, name)) return ctx.params[name];
  return inputs.value;
}

function paramLabel(ctx: NodeContext, inputs: NodeInputs): string {
  const raw = ctx.data.name ?? inputs.name;
  return typeof raw === "string" && raw !== "" ? `param "${raw}"` : "value";
}

/** Clamps to `min`/`max` when they are set (NodeTool's defaults are 0 and 99999). */
function clamp(n: number, inputs: NodeInputs): number {
  const min = inputs.min === null || inputs.min === undefined ? -Infinity : asNumber(inputs.min, "min");
  const max = inputs.max === null || inputs.max === undefined ? Infinity : asNumber(inputs.max, "max");
  return Math.min(max, Math.max(min, n));
}

/** A list of strings from an array, a JSON array text, or comma-separated text (as the gateway coerces). */
function stringList(value: unknown, label: string): string[] {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value.map(asText);
  if (typeof value === "string") {
    if (value.trim().startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(value);
        if (Array.isArray(parsed)) return parsed.map(asText);
      } catch {
        // not JSON: fall through to comma splitting
      }
    }
    return value === "" ? [] : value.split(",");
  }
  throw new NodeError(`${label} must be a list of strings, got ${asText(value)}`);
}

function inputNode(
  type: string,
  title: string,
  description: string,
  valueProp: PropertyMetadata,
  extra: PropertyMetadata[],
  outType: string,
  read: (v: unknown, ctx: NodeContext, inputs: NodeInputs) => unknown,
): ProcessNodeDef {
  return {
    kind: "process",
    type,
    title,
    description,
    properties: [NAME, valueProp, DESCRIPTION, ...extra],
    outputs: output(outType),
    process: (ctx, inputs) => ({ output: read(paramOrValue(ctx, inputs), ctx, inputs) }),
  };
}

/** Text param; `max_length` > 0 truncates, as NodeTool's StringInput does. */
export const stringInput = inputNode(
  "nodetool.input.StringInput",
  "String Input",
  "Accepts a string value as a parameter for workflows.",
  prop("value", "str", ""),
  [
    prop("max_length", "int", 0, {
      min: 0,
      max: 100000,
      description: "Maximum number of characters allowed. Use 0 for unlimited.",
    }),
    enumProp(
      "line_mode",
      ["single_line", "multi_line"],
      "single_line",
      "Whether the UI renders a single-line or multiline input.",
    ),
  ],
  "str",
  (v, _ctx, inputs) => {
    const s = asText(v);
    const max =
      inputs.max_length === undefined || inputs.max_length === null ? 0 : asNumber(inputs.max_length, "max_length");
    return max > 0 && s.length > max ? s.slice(0, max) : s;
  },
);

/** Whole-number param clamped to `min`/`max`. */
export const integerInput = inputNode(
  "nodetool.input.IntegerInput",
  "Integer Input",
  "Accepts an integer (whole number) as a parameter for workflows, clamped to min and max.",
  prop("value", "int", 0),
  [prop("min", "int", 0), prop("max", "int", 99999)],
  "int",
  (v, ctx, inputs) => {
    const label = paramLabel(ctx, inputs);
    const n = asNumber(v, label);
    if (!Number.isInteger(n)) throw new NodeError(`${label} must be an integer, got ${n}`);
    return clamp(n, inputs);
  },
);

/** Decimal param clamped to `min`/`max`. */
export const floatInput = inputNode(
  "nodetool.input.FloatInput",
  "Float Input",
  "Accepts a floating-point number as a parameter for workflows, clamped to min and max.",
  prop("value", "float", 0),
  [prop("min", "float", 0), prop("max", "float", 99999)],
  "float",
  (v, ctx, inputs) => clamp(asNumber(v, paramLabel(ctx, inputs)), inputs),
);

/** True/false param; "true"/"false" text is accepted. */
export const booleanInput = inputNode(
  "nodetool.input.BooleanInput",
  "Boolean Input",
  "Accepts a boolean (true/false) value as a parameter for workflows.",
  prop("value", "bool", false),
  [],
  "bool",
  (v) => asBool(v),
);

/** One of `options`; anything else fails the run naming the value and the options. */
export const selectInput = inputNode(
  "nodetool.input.SelectInput",
  "Select Input",
  "Accepts a selection from a predefined set of options as a parameter for workflows.",
  prop("value", "str", "", { description: "The currently selected value." }),
  [
    prop("options", "list[str]", [], { description: "The list of available options to choose from." }),
    prop("enum_type_name", "str", "", {
      description: "The enum type name this select corresponds to (for type matching).",
    }),
  ],
  "str",
  (v, ctx, inputs) => {
    const value = asText(v);
    const options = stringList(inputs.options, "options");
    // An empty option list constrains nothing (NodeTool's default is []).
    if (options.length > 0 && !options.includes(value)) {
      throw new NodeError(
        `${paramLabel(ctx, inputs)}: ${JSON.stringify(value)} is not one of the options ${JSON.stringify(options)}`,
      );
    }
    return value;
  },
);

/** List-of-strings param. */
export const stringListInput = inputNode(
  "nodetool.input.StringListInput",
  "String List Input",
  "Accepts a list of strings as a parameter for workflows.",
  prop("value", "list[str]", [], { description: "The list of strings to use as input." }),
  [],
  "list[str]",
  (v, ctx, inputs) => stringList(v, paramLabel(ctx, inputs)),
);

/** List-of-texts param (same shape as StringListInput). */
export const textListInput = inputNode(
  "nodetool.input.TextListInput",
  "Text List Input",
  "Accepts a list of text strings as a parameter for workflows.",
  prop("value", "list[str]", [], { description: "The list of text strings to use as input." }),
  [],
  "list[str]",
  (v, ctx, inputs) => stringList(v, paramLabel(ctx, inputs)),
);

/**
 * A media param (NodeTool's ImageInput, AudioInput, VideoInput, DocumentInput): a reference to the file, an
 * uploaded asset (`asset://<id>`, see `POST /api/assets`) or a URL, passed on as `{type, uri, asset_id?}`. The
 * gateway has checked the reference and that its asset exists.
 */
function mediaInput(kind: "image" | "audio" | "video" | "document", title: string): ProcessNodeDef {
  return inputNode(
    `nodetool.input.${title.replace(/ /g, "")}`,
    title,
    `Accepts a reference to ${kind === "image" ? "an" : "a"} ${kind} asset as a parameter for workflows.`,
    prop(
      "value",
      kind,
      { type: kind, uri: "", asset_id: null, data: null },
      { description: `The ${kind} to use as input.` },
    ),
    [],
    kind,
    (v, ctx, inputs) => {
      const ref = mediaRefOf(v, kind);
      if (!ref)
        throw new NodeError(
          `${paramLabel(ctx, inputs)} must be ${kind === "image" || kind === "audio" ? "an" : "a"} ${kind} reference (asset://<id>, http(s):// or data: URI), got ${asText(v).slice(0, 120)}`,
        );
      return ref;
    },
  );
}
export const imageInput = mediaInput("image", "Image Input");
export const audioInput = mediaInput("audio", "Audio Input");
export const videoInput = mediaInput("video", "Video Input");
export const documentInput = mediaInput("document", "Document Input");

/** The legacy typed output nodes; all behave as the generic Output. */
const LEGACY_OUTPUTS = [
  "StringOutput",
  "TextOutput",
  "IntegerOutput",
  "FloatOutput",
  "BooleanOutput",
  "ListOutput",
  "DictionaryOutput",
  "ImageOutput",
  "AudioOutput",
  "VideoOutput",
  "DocumentOutput",
  "DataframeOutput",
  "ArrayOutput",
  "ImageListOutput",
  "AudioListOutput",
  "VideoListOutput",
  "TextListOutput",
  "StringListOutput",
  "ChunkOutput",
];

/** Records every value reaching `value` as the run's output under `name`; the engine does the recording. */
export const outputNode: NodeDef = {
  kind: "output",
  type: "nodetool.output.Output",
  aliases: LEGACY_OUTPUTS.map((n) => `nodetool.output.${n}`),
  title: "Output",
  description: "Generic output node for any type: every value it receives becomes a workflow output under its name.",
  properties: [
    prop("name", "str", "", { description: "The parameter name for the workflow." }),
    prop("value", "any", null, { description: "The value of the output." }),
    prop("description", "str", "", { description: "The description of the output for the workflow." }),
  ],
  outputs: output("any"),
};

/** Shows a value in the editor (a `preview_update` event) and sends nothing on. */
export const preview: NodeDef = {
  kind: "process",
  type: "nodetool.workflows.base_node.Preview",
  title: "Preview",
  description: "Preview values inside the workflow graph.",
  properties: [prop("value", "any", null), prop("name", "str", "")],
  outputs: [],
  process: (ctx, inputs) => {
    ctx.preview(inputs.value ?? null);
    return {};
  },
};

/** Editor note; removed before a run. */
export const comment: NodeDef = {
  kind: "ignored",
  type: "nodetool.workflows.base_node.Comment",
  title: "Comment",
  description: "A note on the canvas; it does not run.",
  properties: [prop("comment", "any", []), prop("comment_color", "str", "#f0f0f0")],
  outputs: [],
};

/** Editor grouping frame; removed before a run. */
export const group: NodeDef = {
  kind: "ignored",
  type: "nodetool.workflows.base_node.Group",
  aliases: ["nodetool.workflows.base_node.GroupNode"],
  title: "Group",
  description: "A frame grouping nodes on the canvas; it does not run.",
  properties: [],
  outputs: [],
};

export const INPUT_OUTPUT_NODES: readonly NodeDef[] = [
  stringInput,
  integerInput,
  floatInput,
  booleanInput,
  selectInput,
  stringListInput,
  textListInput,
  imageInput,
  audioInput,
  videoInput,
  documentInput,
  outputNode,
  preview,
  comment,
  group,
];
