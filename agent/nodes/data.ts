/** Table operations on NodeTool's dataframe (`nodetool.data.*`): import, convert, filter, select, slice. */
import { NodeError, type NodeDef } from "../engine/types.js";
import {
  compileCondition,
  dataframeFromCsv,
  dataframeFromRecords,
  dataframeOf,
  recordsOf,
  type Dataframe,
} from "./dataframe.js";
import { folderPrefix, readTextValue, saveFile, timestampedName } from "./files.js";
import { asInt, asList, asText, capList, capStringLength, output, parseJsonText, prop } from "./util.js";

const DF = { type: "dataframe", uri: "", asset_id: null, data: null, columns: null };
const dfProp = (name: string, description: string) => prop(name, "dataframe", DF, { description });

export const importCsv: NodeDef = {
  kind: "process",
  type: "nodetool.data.ImportCSV",
  title: "Import CSV",
  description: "Convert CSV string to dataframe.",
  properties: [prop("csv_data", "str", "", { description: "String input of CSV formatted text." })],
  outputs: output("dataframe"),
  process: async (ctx, inputs) => {
    const text = await readTextValue(ctx, inputs.csv_data, "csv_data");
    capStringLength(ctx.limits, text.length, "the CSV text");
    return { output: dataframeFromCsv(text, ctx.limits.listMaxItems) };
  },
};

export const fromList: NodeDef = {
  kind: "process",
  type: "nodetool.data.FromList",
  title: "From List",
  description: "Convert list of dicts to dataframe.",
  properties: [prop("values", "list", [], { description: "List of values to be converted, each a row." })],
  outputs: output("dataframe"),
  process: (_ctx, inputs) => {
    const rows = asList(inputs.values).map((v) => {
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new NodeError("List must contain dicts.");
      const row: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (x !== null && typeof x === "object" && !Array.isArray(x)) row[k] = (x as { value?: unknown }).value;
        else if (["number", "string", "boolean"].includes(typeof x)) row[k] = x;
        else row[k] = x === null ? null : JSON.stringify(x);
      }
      return row;
    });
    return { output: dataframeFromRecords(rows) };
  },
};

export const jsonToDataframe: NodeDef = {
  kind: "process",
  type: "nodetool.data.JSONToDataframe",
  title: "Convert JSON to DataFrame",
  description: "Transforms a JSON string (a list of objects) into a dataframe.",
  properties: [prop("text", "str", "", { description: "JSON text: a list of objects" })],
  outputs: output("dataframe"),
  process: async (ctx, inputs) => {
    const rows = jsonRows(await readTextValue(ctx, inputs.text, "text"));
    if (!Array.isArray(rows) || !rows.every((r) => r !== null && typeof r === "object" && !Array.isArray(r)))
      throw new NodeError("the JSON must be a list of objects, one per row");
    capList(ctx.limits, rows.length, "the JSON's rows");
    return { output: dataframeFromRecords(rows as Record<string, unknown>[]) };
  },
};

/** JSON text, or JSON Lines (one object a line, as pandas' `read_json(lines=True)` reads): a list for JSON Lines. */
function jsonRows(text: string): unknown {
  try {
    return parseJsonText(text, "text");
  } catch (err) {
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length < 2 || !lines.every((l) => /^\s*(\uFEFF)?\{/.test(l))) throw err;
    return lines.map((l, i) => parseJsonText(l, `text line ${i + 1}`));
  }
}

export const toList: NodeDef = {
  kind: "process",
  type: "nodetool.data.ToList",
  title: "To List",
  description: "Convert dataframe to list of dictionaries.",
  properties: [dfProp("dataframe", "The input dataframe to convert.")],
  outputs: output("list[dict]"),
  process: (_ctx, inputs) => ({ output: recordsOf(dataframeOf(inputs.dataframe)) }),
};

function columnIndex(df: Dataframe, name: string): number {
  const i = df.columns.findIndex((c) => c.name === name);
  if (i < 0) throw new NodeError(`no column "${name}" (columns: ${df.columns.map((c) => c.name).join(", ")})`);
  return i;
}

export const extractColumn: NodeDef = {
  kind: "process",
  type: "nodetool.data.ExtractColumn",
  title: "Extract Column",
  description: "Convert dataframe column to list.",
  properties: [
    dfProp("dataframe", "The input dataframe."),
    prop("column_name", "str", "", { description: "The name of the column to be converted to a list." }),
  ],
  outputs: output("list[any]"),
  process: (_ctx, inputs) => {
    const df = dataframeOf(inputs.dataframe);
    const i = columnIndex(df, asText(inputs.column_name));
    return { output: df.data.map((row) => row[i] ?? null) };
  },
};

export const selectColumn: NodeDef = {
  kind: "process",
  type: "nodetool.data.SelectColumn",
  title: "Select Column",
  description: "Select specific columns from dataframe.",
  properties: [
    dfProp("dataframe", "a dataframe from which columns are to be selected"),
    prop("columns", "str", "", { description: "comma separated list of column names" }),
  ],
  outputs: output("dataframe"),
  process: (_ctx, inputs) => {
    const df = dataframeOf(inputs.dataframe);
    const idx = asText(inputs.columns)
      .split(",")
      .map((n) => columnIndex(df, n.trim()));
    return {
      output: {
        type: "dataframe",
        columns: idx.map((i) => df.columns[i]!),
        data: df.data.map((r) => idx.map((i) => r[i])),
      },
    };
  },
};

export const filter: NodeDef = {
  kind: "process",
  type: "nodetool.data.Filter",
  title: "Filter",
  description: "Filter dataframe based on condition, e.g. `age > 30 and name == 'John'`, `status in ['A', 'B']`.",
  properties: [
    dfProp("df", "The DataFrame to filter."),
    prop("condition", "str", "", { description: "The filtering condition, e.g. column_name > 5." }),
  ],
  outputs: output("dataframe"),
  process: (_ctx, inputs) => {
    const df = dataframeOf(inputs.df, "df");
    const condition = asText(inputs.condition);
    if (condition.trim() === "") throw new NodeError("condition is empty");
    const test = compileCondition(
      condition,
      df.columns.map((c) => c.name),
    );
    const rows = recordsOf(df);
    return { output: { ...df, data: df.data.filter((_r, i) => test(rows[i]!)) } };
  },
};

export const slice: NodeDef = {
  kind: "process",
  type: "nodetool.data.Slice",
  title: "Slice",
  description: "Slice a dataframe by rows using start and end indices (end -1: to the last row).",
  properties: [
    dfProp("dataframe", "The input dataframe to be sliced."),
    prop("start_index", "int", 0),
    prop("end_index", "int", -1),
  ],
  outputs: output("dataframe"),
  process: (_ctx, inputs) => {
    const df = dataframeOf(inputs.dataframe);
    const end = asInt(inputs.end_index, "end_index");
    return {
      output: { ...df, data: df.data.slice(asInt(inputs.start_index, "start_index"), end === -1 ? undefined : end) },
    };
  },
};

/** CSV text of a dataframe (fields quoted where they must be). */
function toCsv(df: Dataframe): string {
  const cell = (v: unknown) => {
    const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [df.columns.map((c) => cell(c.name)), ...df.data.map((r) => r.map(cell))].map((r) => r.join(",")).join("\n");
}

export const saveDataframe: NodeDef = {
  kind: "process",
  type: "nodetool.data.SaveDataframe",
  title: "Save Dataframe",
  description: "Save dataframe as a CSV file in the job's assets.",
  properties: [
    dfProp("df", "The dataframe to save."),
    prop("folder", "folder", { type: "folder", asset_id: null }, { description: "Name of the output folder." }),
    prop("name", "str", "output.csv", { description: "Name of the output file (%Y %m %d %H %M %S: date, time)." }),
  ],
  outputs: output("dataframe"),
  process: async (ctx, inputs) => {
    const df = dataframeOf(inputs.df, "df");
    const name = folderPrefix(inputs.folder) + timestampedName(asText(inputs.name) || "output.csv");
    const ref = await saveFile(ctx, new TextEncoder().encode(toCsv(df)), name, "text/csv", "dataframe");
    return { output: { ...df, uri: ref.uri, asset_id: ref.asset_id } };
  },
};

export const DATA_NODES: readonly NodeDef[] = [
  importCsv,
  fromList,
  jsonToDataframe,
  toList,
  extractColumn,
  selectColumn,
  filter,
  slice,
  saveDataframe,
];
