/**
 * Structured output from a language model (`nodetool.generators.*`), through the agent's providers as the LLM nodes
 * call them. `ListGenerator` and `DataGenerator` parse the reply as it streams and send each item (list item, table
 * row) along their edges the moment it is complete, then (DataGenerator) the whole table; the others parse the
 * whole reply. An empty model is the deployment's default (filled in before the job reaches the agent) or fails
 * naming it (llm.ts `modelOf`).
 */
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "../engine/types.js";
import type { ChatRequest } from "../integrations/index.js";
import { modelOf } from "./llm.js";
import { asInt, asText, capList, prop } from "./util.js";

const MODEL = prop(
  "model",
  "language_model",
  { type: "language_model", provider: "empty", id: "", name: "" },
  { description: "The model to use." },
);
const maxTokens = (dflt: number, max: number) => prop("max_tokens", "int", dflt, { min: 1, max });

/** The reply's text pieces as the provider streams them. */
async function* replyText(ctx: NodeContext, inputs: NodeInputs, system: string, user: string): AsyncGenerator<string> {
  const model = modelOf(inputs.model);
  const limit = asInt(inputs.max_tokens ?? 4096, "max_tokens");
  if (limit < 1) throw new NodeError(`max_tokens must be ≥ 1, got ${limit}`);
  const req: ChatRequest = {
    provider: model.provider,
    model: model.id,
    system,
    messages: [{ role: "user", content: user }],
    maxTokens: limit,
    signal: ctx.signal,
  };
  const { streamChat } = await import("../integrations/providers.js");
  for await (const piece of streamChat(req)) if (piece.type === "text") yield piece.text;
}

async function wholeReply(ctx: NodeContext, inputs: NodeInputs, system: string, user: string): Promise<string> {
  let text = "";
  for await (const piece of replyText(ctx, inputs, system, user)) text += piece;
  return text;
}

const joinPrompt = (prompt: string, input: string) => (prompt && input ? `${prompt}\n\n${input}` : prompt || input);

// ---- ListGenerator -----------------------------------------------------------------------------------------------

const LIST_SYSTEM = `You are an assistant that generates lists.
If the user asks for a specific number of items, generate that many.
Wrap each item in <LIST_ITEM> tags. Content inside can span multiple lines.
Example:
User: Generate 3 movie titles
Assistant:
<LIST_ITEM>The Dark Knight</LIST_ITEM>
<LIST_ITEM>Inception</LIST_ITEM>
<LIST_ITEM>The Matrix</LIST_ITEM>`;

const OPEN = "<LIST_ITEM>";
const CLOSE = "</LIST_ITEM>";

/** Cuts `<LIST_ITEM>…</LIST_ITEM>` items out of text that arrives in pieces; `push` returns the items it completes. */
export class ListItemParser {
  private buf = "";
  push(piece: string): string[] {
    this.buf += piece;
    const items: string[] = [];
    for (;;) {
      const start = this.buf.indexOf(OPEN);
      if (start < 0) {
        // Keep only what may be the start of a tag split across pieces.
        this.buf = this.buf.slice(Math.max(0, this.buf.length - OPEN.length));
        return items;
      }
      const end = this.buf.indexOf(CLOSE, start + OPEN.length);
      if (end < 0) {
        this.buf = this.buf.slice(start);
        return items;
      }
      const raw = this.buf.slice(start + OPEN.length, end);
      items.push(raw.replace(/\*\*/g, "").replace(/\s+/g, " ").trim());
      this.buf = this.buf.slice(end + CLOSE.length);
    }
  }
}

export const listGenerator: NodeDef = {
  kind: "generator",
  type: "nodetool.generators.ListGenerator",
  title: "List Generator",
  description: "LLM Agent to create a stream of strings based on a user prompt; each item is sent as it is written.",
  properties: [
    MODEL,
    prop("prompt", "str", "", { description: "The user prompt" }),
    prop("input_text", "str", "", { description: "The input text to be analyzed by the agent." }),
    maxTokens(4096, 100_000),
  ],
  providerProperty: "model",
  outputs: [
    { name: "item", type: "str" },
    { name: "index", type: "int" },
  ],
  async *generate(ctx, inputs) {
    const parser = new ListItemParser();
    let index = 0;
    const user = joinPrompt(asText(inputs.prompt), asText(inputs.input_text));
    for await (const piece of replyText(ctx, inputs, LIST_SYSTEM, user)) {
      for (const item of parser.push(piece)) {
        yield { handle: "item", value: item };
        yield { handle: "index", value: index++ };
      }
    }
    if (index === 0)
      throw new NodeError(
        "ListGenerator did not find any <LIST_ITEM> tags in the response: the model must wrap each item in <LIST_ITEM>...</LIST_ITEM>",
      );
  },
};

// ---- DataGenerator -----------------------------------------------------------------------------------------------

/** NodeTool's ColumnDef: a name and a data type ("int", "float", "string", "datetime", "object"). */
export interface ColumnDef {
  name: string;
  data_type: string;
  description?: string;
}

/** The columns of a RecordType (`{type: "record_type", columns}`) or a plain list of them. */
export function columnsOf(v: unknown, what = "columns"): ColumnDef[] {
  const list = Array.isArray(v) ? v : (v as { columns?: unknown } | null)?.columns;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new NodeError(`${what} must be a record type: {"columns": [{name, data_type}]}`);
  return list.map((c, i) => {
    const col = c as { name?: unknown; data_type?: unknown; description?: unknown };
    if (typeof col?.name !== "string" || col.name === "") throw new NodeError(`${what}[${i}] has no name`);
    return { name: col.name, data_type: typeof col.data_type === "string" ? col.data_type : "string" };
  });
}

/** A table cell as its column's type, as NodeTool converts it ("None", "null", "n/a" and "" are null). */
export function cellValue(type: string | undefined, text: string): unknown {
  if (text === "" || ["none", "null", "n/a"].includes(text.toLowerCase())) return null;
  const t = (type ?? "").toLowerCase();
  if (t.includes("int")) return /^[-+]?\d+$/.test(text) ? Number.parseInt(text, 10) : text;
  if (t.includes("float") || t.includes("number")) return Number.isFinite(Number(text)) ? Number(text) : text;
  if (t.includes("bool")) return ["true", "yes", "1", "on"].includes(text.toLowerCase());
  return text;
}

const cellsOf = (line: string) =>
  line
    .trim()
    .replace(/^\||\|$/g, "")
    .split("|")
    .map((c) => c.trim());

/** A markdown table arriving in pieces: `push` returns the data rows it completes (header and rule skipped). */
export class TableRowParser {
  private buf = "";
  private headers: string[] | null = null;
  private ruled = false;
  constructor(private readonly columns: ColumnDef[]) {}
  push(piece: string, end = false): Record<string, unknown>[] {
    this.buf += piece;
    const lines = this.buf.split("\n");
    this.buf = end ? "" : lines.pop()!;
    const rows: Record<string, unknown>[] = [];
    for (const line of lines) {
      const row = this.line(line.trim());
      if (row) rows.push(row);
    }
    return rows;
  }
  private line(line: string): Record<string, unknown> | null {
    if (line === "" || !line.includes("|")) return null;
    if (!this.headers) {
      this.headers = cellsOf(line).filter((h) => h !== "");
      return null;
    }
    if (!this.ruled && /^\|?\s*:?-{2,}/.test(line)) {
      this.ruled = true;
      return null;
    }
    const cells = cellsOf(line);
    if (cells.length !== this.headers.length) return null;
    const row: Record<string, unknown> = {};
    this.headers.forEach((h, i) => {
      row[h] = cellValue(this.columns.find((c) => c.name === h)?.data_type, cells[i]!);
    });
    return row;
  }
}

function dataSystem(columns: ColumnDef[]): string {
  return `You are a data generation assistant. Generate data as a markdown table.
Output ONLY a markdown table with no additional text before or after. The table must have exactly these columns in order:
${columns.map((c) => `- ${c.name} (${c.data_type})`).join("\n")}
First row is headers, second row is a separator with dashes, each following row is data. Use | to separate columns.
Numbers without quotes; "None" or empty for null values.`;
}

export const dataGenerator: NodeDef = {
  kind: "generator",
  type: "nodetool.generators.DataGenerator",
  title: "Data Generator",
  description:
    "LLM Agent to create a dataframe based on a user prompt: each record is sent as it is written, then the dataframe.",
  properties: [
    MODEL,
    prop("prompt", "str", "", { description: "The user prompt" }),
    prop("input_text", "str", "", { description: "The input text to be analyzed by the agent." }),
    maxTokens(4096, 100_000),
    prop("columns", "record_type", { type: "record_type", columns: [] }, { description: "The columns to use." }),
  ],
  providerProperty: "model",
  outputs: [
    { name: "record", type: "dict" },
    { name: "dataframe", type: "dataframe" },
    { name: "index", type: "int" },
  ],
  async *generate(ctx, inputs) {
    const columns = columnsOf(inputs.columns);
    if (columns.length === 0) throw new NodeError("Define columns for the data (columns.columns is empty)");
    const parser = new TableRowParser(columns);
    const rows: Record<string, unknown>[] = [];
    const user = `${asText(inputs.prompt)}\n\n${asText(inputs.input_text)}`;
    const pieces = replyText(ctx, inputs, dataSystem(columns), user);
    for (let next = await pieces.next(); ; next = await pieces.next()) {
      for (const row of parser.push(next.done ? "" : next.value, next.done === true)) {
        capList(ctx.limits, rows.length + 1, "the generated table");
        yield { handle: "record", value: row };
        yield { handle: "index", value: rows.length };
        rows.push(row);
      }
      if (next.done) break;
    }
    const data = rows.map((r) => columns.map((c) => r[c.name] ?? null));
    yield { handle: "dataframe", value: { type: "dataframe", columns, data } };
  },
};

// ---- StructuredOutputGenerator / ChartGenerator ------------------------------------------------------------------

/** JSON Schema of a NodeTool TypeMetadata (`{type, type_args, values}`), as NodeTool's `get_json_schema`. */
export function schemaOfType(t: unknown): Record<string, unknown> {
  const m = (t ?? {}) as { type?: unknown; type_args?: unknown; values?: unknown };
  const args = Array.isArray(m.type_args) ? m.type_args : [];
  switch (m.type) {
    case "str":
    case "text":
      return { type: "string" };
    case "int":
      return { type: "integer" };
    case "float":
      return { type: "number" };
    case "bool":
      return { type: "boolean" };
    case "list":
      return { type: "array", items: args[0] ? schemaOfType(args[0]) : {} };
    case "dict":
      return { type: "object" };
    case "enum":
      return { type: "string", enum: Array.isArray(m.values) ? m.values : [] };
    default:
      return {};
  }
}

/** The first JSON object in a reply: a ```json block, else the span from the first `{` to the last `}`. */
export function jsonObjectOf(raw: string): Record<string, unknown> | null {
  const fenced = /```json\s*([\s\S]*?)\s*```/i.exec(raw)?.[1];
  for (const candidate of [fenced, raw.slice(raw.indexOf("{"), raw.lastIndexOf("}") + 1)]) {
    if (!candidate) continue;
    try {
      const v: unknown = JSON.parse(candidate);
      if (v !== null && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // the next candidate, or none
    }
  }
  return null;
}

const STRUCTURED_SYSTEM = `You are a structured data generator focused on JSON outputs.
Produce a high-quality JSON object that matches <JSON_SCHEMA> using the guidance in <INSTRUCTIONS> and any <CONTEXT>.
Output exactly ONE fenced code block labeled json containing ONLY the JSON object, with no prose before or after.
Invent plausible, internally consistent values when not given; honor all constraints of <JSON_SCHEMA>.`;

function structuredInstructions(schema: unknown, instructions: string, context: string): string {
  const parts = [`<JSON_SCHEMA>\n${JSON.stringify(schema, null, 2)}\n</JSON_SCHEMA>`];
  if (instructions.trim()) parts.push(`<INSTRUCTIONS>\n${instructions.trim()}\n</INSTRUCTIONS>`);
  if (context.trim()) parts.push(`<CONTEXT>\n${context.trim()}\n</CONTEXT>`);
  return `\n${parts.join("\n")}\n`;
}

export const structuredOutputGenerator: NodeDef = {
  kind: "process",
  type: "nodetool.generators.StructuredOutputGenerator",
  title: "Structured Output Generator",
  description: "Generate structured JSON objects from instructions: one output per declared (dynamic) output slot.",
  properties: [
    prop("system_prompt", "str", STRUCTURED_SYSTEM, { description: "The system prompt guiding JSON generation." }),
    MODEL,
    prop("instructions", "str", "", { description: "Detailed instructions for the structured output." }),
    prop("context", "str", "", { description: "Optional context to ground the generation." }),
    maxTokens(4096, 16_384),
  ],
  providerProperty: "model",
  outputs: [],
  process: async (ctx, inputs) => {
    const slots = Object.entries(ctx.dynamicOutputs ?? {});
    if (slots.length === 0) throw new NodeError("Declare outputs for the fields you want to generate");
    const schema = {
      type: "object",
      title: "Structured Output Specification",
      additionalProperties: false,
      properties: Object.fromEntries(slots.map(([name, t]) => [name, schemaOfType(t)])),
      required: slots.map(([name]) => name),
    };
    const system =
      asText(inputs.system_prompt) +
      structuredInstructions(schema, asText(inputs.instructions), asText(inputs.context));
    const raw = await wholeReply(ctx, inputs, system, "Generate a JSON object that satisfies all requirements.");
    const obj = jsonObjectOf(raw.trim());
    if (!obj)
      throw new NodeError("StructuredOutputGenerator did not return a dictionary (no JSON object in the reply)");
    return obj;
  },
};

const CHART_SYSTEM = `You are an expert data visualization assistant creating Plotly chart configurations.
Analyze the columns and the user's request, and return a single JSON object {"data": [traces], "layout": {...},
"config": {...}} that defines the chart (trace types: scatter, bar, pie, line, histogram, box, violin, heatmap).
Include axis labels and titles in "layout". Return only the JSON object, with no other text.`;

export const chartGenerator: NodeDef = {
  kind: "process",
  type: "nodetool.generators.ChartGenerator",
  title: "Chart Generator",
  description: "LLM Agent to create Plotly chart configurations from a description and a dataframe.",
  properties: [
    MODEL,
    prop("prompt", "str", "", { description: "Natural language description of the desired chart" }),
    prop("data", "dataframe", { type: "dataframe", columns: null, data: null }, { description: "The data" }),
    maxTokens(4096, 100_000),
  ],
  providerProperty: "model",
  outputs: [{ name: "output", type: "plotly_config" }],
  process: async (ctx, inputs) => {
    const df = (inputs.data ?? {}) as { columns?: unknown; data?: unknown };
    if (!Array.isArray(df.columns)) throw new NodeError("Define columns: the chart's data has none");
    const user = `Available columns in the dataset:\n${JSON.stringify(df.columns, null, 2)}\nInput data:\n${JSON.stringify(
      df.data ?? [],
    )}\nUser request: ${asText(inputs.prompt)}`;
    const config = jsonObjectOf(await wholeReply(ctx, inputs, CHART_SYSTEM, user));
    if (!config) throw new NodeError("ChartGenerator: the model did not return a JSON chart configuration");
    return { output: { type: "plotly_config", config } };
  },
};

export const GENERATOR_NODES: readonly NodeDef[] = [
  listGenerator,
  dataGenerator,
  structuredOutputGenerator,
  chartGenerator,
];
