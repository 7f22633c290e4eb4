/**
 * JSON and text serialisation and the save nodes (`nodetool.dictionary.SaveJSON`, `ToJSON`, `nodetool.text.SaveText`,
 * `lib.json.StringifyJSON`). A save writes the job's asset (NodeTool's assets folder) and tells clients with a
 * `save_update`; NodeTool's `folder` (a local directory) becomes the asset name's prefix: nothing is written on the
 * agent's disk.
 */
import { NodeError, type NodeDef } from "../engine/types.js";
import { folderPrefix, saveFile, timestampedName } from "./files.js";
import { asDict, asInt, asText, capString, output, prop } from "./util.js";

/** JSON text of `value` as Python's json.dumps(default=str) gives it: bytes as text, dates as ISO, NaN refused. */
export function toJsonText(value: unknown, indent: number | null): string {
  const replacer = (_k: string, v: unknown): unknown => {
    if (v instanceof Uint8Array) return new TextDecoder().decode(v);
    if (typeof v === "bigint") return v.toString();
    if (typeof v === "number" && !Number.isFinite(v)) throw new NodeError(`${v} cannot be written as JSON`);
    return v;
  };
  try {
    return JSON.stringify(value ?? null, replacer, indent === null || indent <= 0 ? undefined : indent) ?? "null";
  } catch (err) {
    if (err instanceof NodeError) throw err;
    throw new NodeError(`the value cannot be written as JSON: ${(err as Error).message}`);
  }
}

const indentOf = (v: unknown): number => {
  const n = asInt(v ?? 2, "indent");
  if (n < 0 || n > 16) throw new NodeError(`indent must be 0–16, got ${n}`);
  return n;
};

export const toJson: NodeDef = {
  kind: "process",
  type: "nodetool.dictionary.ToJSON",
  title: "To JSON",
  description: "Converts a dictionary to a JSON string.",
  properties: [prop("dictionary", "dict", {})],
  outputs: output("str"),
  process: (ctx, inputs) => ({ output: capString(ctx.limits, toJsonText(asDict(inputs.dictionary), null)) }),
};

export const stringifyJson: NodeDef = {
  kind: "process",
  type: "lib.json.StringifyJSON",
  title: "Stringify JSON",
  description: "Convert a value to a formatted JSON string.",
  properties: [
    prop("data", "any", {}, { description: "Data to convert to JSON" }),
    prop("indent", "int", 2, { description: "Number of spaces for indentation" }),
  ],
  outputs: output("str"),
  process: (ctx, inputs) => ({ output: capString(ctx.limits, toJsonText(inputs.data, indentOf(inputs.indent))) }),
};

const NAME_HELP = "Name of the output file; %Y %m %d %H %M %S are replaced by the date and time (UTC).";

export const saveJson: NodeDef = {
  kind: "process",
  type: "nodetool.dictionary.SaveJSON",
  title: "Save JSON",
  description: "Saves a dictionary or list as a JSON file in the job's assets; outputs the JSON text.",
  properties: [
    prop("data", "any", {}, { description: "Data to save as JSON (dict or list)" }),
    prop("folder", "str", "", { description: "Name of the output folder (a prefix of the asset's name)." }),
    prop("name", "str", "%Y-%m-%d-%H-%M-%S.json", { description: NAME_HELP }),
    prop("indent", "int", 2, { description: "JSON indentation level" }),
  ],
  outputs: output("str"),
  process: async (ctx, inputs) => {
    const text = capString(ctx.limits, toJsonText(inputs.data, indentOf(inputs.indent)));
    const name = folderPrefix(inputs.folder) + timestampedName(asText(inputs.name) || "%Y-%m-%d-%H-%M-%S.json");
    await saveFile(ctx, new TextEncoder().encode(text), name, "application/json", "json");
    return { output: text };
  },
};

export const saveText: NodeDef = {
  kind: "process",
  type: "nodetool.text.SaveText",
  title: "Save Text",
  description: "Saves input text to a file in the job's assets; outputs the text's reference.",
  properties: [
    prop("text", "str", ""),
    prop("folder", "folder", { type: "folder", asset_id: null }, { description: "Name of the output folder." }),
    prop("name", "str", "%Y-%m-%d-%H-%M-%S.txt", { description: NAME_HELP }),
  ],
  outputs: output("text"),
  process: async (ctx, inputs) => {
    const name = folderPrefix(inputs.folder) + timestampedName(asText(inputs.name) || "%Y-%m-%d-%H-%M-%S.txt");
    const contentType = /\.html?$/i.test(name) ? "text/html" : /\.md$/i.test(name) ? "text/markdown" : "text/plain";
    const ref = await saveFile(ctx, new TextEncoder().encode(asText(inputs.text)), name, contentType, "text");
    return { output: { ...ref, type: "text" } };
  },
};

export const SAVE_NODES: readonly NodeDef[] = [toJson, stringifyJson, saveJson, saveText];
