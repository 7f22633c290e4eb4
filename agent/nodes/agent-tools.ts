/**
 * Tools the agent nodes (agent/nodes/agents.ts) may offer a model, by the name NodeTool gives them (`ToolName`,
 * `{"type": "tool_name", "name": "google_search"}`). Only tools that are safe to run on a shared agent are here:
 * pure ones (arithmetic, text), `browser` (a public page's text, fetched under the same outbound policy as the
 * HTTP nodes: no private addresses) and those other node modules register (web search through the `search.*`
 * nodes, `registerAgentTool`). A tool asked for that is not registered (`browser`, `read_file`, …) fails the node naming
 * it: an agent must not reach files or arbitrary URLs for a model.
 */
import type { PropertyMetadata } from "../../protocol/index.js";
import { RE2JS } from "re2js";
import { NodeError, type ControlledNode, type NodeContext } from "../engine/types.js";

export type { ControlledNode };
import { bodyText, safeFetch } from "./outbound.js";

/** A tool a model may call: its result goes back to the model as text (JSON for anything but a string). */
export interface AgentTool {
  /** `[a-zA-Z0-9_-]{1,64}`, as every provider requires. */
  name: string;
  description: string;
  /** JSON Schema of the arguments (an object schema). */
  inputSchema: Record<string, unknown>;
  run(args: Record<string, unknown>, ctx: NodeContext): Promise<unknown> | unknown;
}

const TOOLS = new Map<string, AgentTool>();
/** Node type → the tool it offers when wired to an agent by a control edge (NodeTool's node tools). */
const NODE_TOOLS = new Map<string, string>();

/** Adds a tool (a search module registers its own); a second tool under one name is a programming error. */
export function registerAgentTool(tool: AgentTool, opts: { nodeTypes?: readonly string[] } = {}): void {
  if (TOOLS.has(tool.name)) throw new Error(`agent tool "${tool.name}" is registered twice`);
  TOOLS.set(tool.name, tool);
  for (const t of opts.nodeTypes ?? []) NODE_TOOLS.set(t, tool.name);
}

/** The names of every tool the agents offer, sorted. */
export function offeredTools(): string[] {
  return [...TOOLS.keys()].sort();
}

/** The tool a node type offers when controlled by an agent, if any. */
export function toolOfNodeType(nodeType: string): AgentTool | undefined {
  const name = NODE_TOOLS.get(nodeType);
  return name === undefined ? undefined : TOOLS.get(name);
}

/** A tool's name in NodeTool's `ToolName` form or as a plain string. */
export function toolNameOf(v: unknown): string {
  if (typeof v === "string") return v;
  const name = (v as { name?: unknown } | null)?.name;
  if (typeof name === "string") return name;
  throw new NodeError(`a tool must be named, as {"type": "tool_name", "name": "…"}; got ${JSON.stringify(v)}`);
}

/** The tools named in `names` (duplicates and empty names dropped); one not offered fails naming it. */
export function resolveTools(names: readonly unknown[]): AgentTool[] {
  const out = new Map<string, AgentTool>();
  for (const v of names) {
    const name = toolNameOf(v).trim();
    if (name === "" || out.has(name)) continue;
    const tool = TOOLS.get(name);
    if (!tool) {
      throw new NodeError(
        `tool "${name}" is not offered by this fleet's agents (they offer: ${offeredTools().join(", ") || "none"})`,
      );
    }
    out.set(name, tool);
  }
  return [...out.values()];
}

// ---- node tools (control edges) ----------------------------------------------------------------------------

/** The nodes the engine says this agent controls (none where it offers none). */
export function controlledNodesOf(ctx: NodeContext): readonly ControlledNode[] {
  return ctx.controlledNodes ?? [];
}

/** A title as a tool name: snake_case of its letters and digits, at most 64 characters (NodeTool's rule). */
export function toolNameOfTitle(title: string): string {
  const snake = title
    .replace(/[^a-zA-Z0-9]/g, "_")
    .replace(/([a-z])([A-Z])/g, "$1_$2")
    .toLowerCase()
    .replace(/_+/g, "_")
    .replace(/^_|_$/g, "");
  return (snake || "control_node").slice(0, 64);
}

/** JSON Schema of a property a model can fill (text, numbers, flags, lists, dicts, enums); null for others. */
function schemaOfProperty(p: PropertyMetadata): Record<string, unknown> | null {
  const base = { ...(p.description ? { description: p.description } : {}) };
  const simple: Record<string, string> = { str: "string", int: "integer", float: "number", bool: "boolean" };
  if (simple[p.type]) return { type: simple[p.type], ...base };
  if (p.type === "list") return { type: "array", ...base };
  if (p.type === "dict") return { type: "object", ...base };
  if (p.type === "enum" && p.values) return { type: "string", enum: p.values, ...base };
  return null;
}

/** A controlled node as a tool: its fillable properties are the arguments, its outputs the result. */
export function controlTool(node: ControlledNode, taken: ReadonlySet<string>): AgentTool {
  let name = toolNameOfTitle(node.title);
  if (taken.has(name)) name = toolNameOfTitle(`${node.title}_${node.nodeId}`);
  const properties: Record<string, unknown> = {};
  for (const p of node.properties) {
    const schema = schemaOfProperty(p);
    if (schema) properties[p.name] = schema;
  }
  return {
    name,
    description: node.description || `Run ${node.title}`,
    inputSchema: { type: "object", properties },
    run: async (args) => {
      const outputs = await node.run(args);
      const keys = Object.keys(outputs);
      return keys.length === 1 ? outputs[keys[0]!] : outputs;
    },
  };
}

/** The tools of every node this agent controls, named apart from `others`. */
export function controlTools(ctx: NodeContext, others: readonly AgentTool[]): AgentTool[] {
  const taken = new Set(others.map((t) => t.name));
  return controlledNodesOf(ctx).map((n) => {
    const tool = controlTool(n, taken);
    taken.add(tool.name);
    return tool;
  });
}

// ---- pure tools ------------------------------------------------------------------------------------------------

/** Longest expression the calculator takes: it is linear in the text, this keeps a call small. */
const MAX_EXPRESSION_CHARS = 1_000;

/**
 * Evaluates `+ - * / % ^`, parentheses, unary minus and decimal numbers (recursive descent: no `eval`). Throws a
 * `NodeError` saying where the expression is wrong.
 */
export function evaluateArithmetic(expr: string): number {
  if (expr.length > MAX_EXPRESSION_CHARS) throw new NodeError(`expression longer than ${MAX_EXPRESSION_CHARS} chars`);
  const tokens = expr.match(/\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+|[-+*/%^()]|\S/g) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  const fail = (why: string): never => {
    throw new NodeError(`cannot evaluate ${JSON.stringify(expr)}: ${why}`);
  };
  const primary = (depth: number): number => {
    if (depth > 100) fail("nested too deeply");
    const t = tokens[i++];
    if (t === "-") return -power(depth + 1);
    if (t === "+") return power(depth + 1);
    if (t === "(") {
      const v = sum(depth + 1);
      if (tokens[i++] !== ")") fail("missing )");
      return v;
    }
    if (t === undefined || !/^[\d.]/.test(t)) fail(t === undefined ? "it ends too soon" : `unexpected "${t}"`);
    return Number(t);
  };
  const power = (depth: number): number => {
    const base = primary(depth);
    if (peek() !== "^") return base;
    i++;
    return base ** power(depth + 1);
  };
  const product = (depth: number): number => {
    let v = power(depth);
    while (peek() === "*" || peek() === "/" || peek() === "%") {
      const op = tokens[i++];
      const r = power(depth);
      v = op === "*" ? v * r : op === "/" ? v / r : v % r;
    }
    return v;
  };
  const sum = (depth: number): number => {
    let v = product(depth);
    while (peek() === "+" || peek() === "-") v = tokens[i++] === "+" ? v + product(depth) : v - product(depth);
    return v;
  };
  const v = sum(0);
  if (i < tokens.length) fail(`unexpected "${tokens[i]}"`);
  return v;
}

const calculator: AgentTool = {
  name: "calculator",
  description: "Evaluate an arithmetic expression (+ - * / % ^ and parentheses) and return its value.",
  inputSchema: {
    type: "object",
    properties: { expression: { type: "string", description: "The expression, e.g. (2 + 3) * 4" } },
    required: ["expression"],
  },
  run: (args) => {
    if (typeof args.expression !== "string") throw new NodeError(`calculator needs "expression" as text`);
    return { result: evaluateArithmetic(args.expression) };
  },
};

const textStats: AgentTool = {
  name: "text_stats",
  description: "Count the characters, words, lines and sentences of a text.",
  inputSchema: {
    type: "object",
    properties: { text: { type: "string", description: "The text to count" } },
    required: ["text"],
  },
  run: (args) => {
    const text = typeof args.text === "string" ? args.text : String(args.text ?? "");
    return {
      characters: [...text].length,
      words: text.split(/\s+/).filter(Boolean).length,
      lines: text === "" ? 0 : text.split("\n").length,
      sentences: text.split(/[.!?]+(?:\s|$)/).filter((s) => s.trim() !== "").length,
    };
  },
};

// ---- browser ----------------------------------------------------------------------------------------------------

/** Largest page the browser tool reads. */
const PAGE_MAX_BYTES = 5 * 1024 * 1024;
// RE2 (linear time whatever the page): a page is untrusted input.
const INVISIBLE = RE2JS.compile(
  "(?is)<!--.*?-->|<(?:script|style|noscript|template)\\b.*?</(?:script|style|noscript|template)\\s*>",
);
const BLOCK_END = RE2JS.compile("(?i)</?(?:p|div|br|li|tr|h[1-6]|section|article|header|footer|ul|ol|table)\\b[^>]*>");
const TAG = RE2JS.compile("<[^>]*>");
const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " " };

/** The readable text of an HTML page: no scripts, styles or tags, entities decoded, blank runs collapsed. */
export function htmlText(html: string): string {
  const visible = INVISIBLE.matcher(html).replaceAll(" ");
  const text = TAG.matcher(BLOCK_END.matcher(visible).replaceAll("\n")).replaceAll(" ");
  return text
    .replace(/&(#x[0-9a-f]{1,6}|#\d{1,7}|[a-z]{2,6});/gi, (m, e: string) => {
      if (e[0] !== "#") return ENTITIES[e.toLowerCase()] ?? m;
      const code = e[1] === "x" || e[1] === "X" ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1));
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    })
    .replace(/[ \t\r\f\v]+/g, " ")
    .replace(/ *\n[ \n]*/g, "\n")
    .trim();
}

const browser: AgentTool = {
  name: "browser",
  description: "Open a public web page (http or https URL) and return its text.",
  inputSchema: {
    type: "object",
    properties: { url: { type: "string", description: "The page's URL" } },
    required: ["url"],
  },
  run: async (args, ctx) => {
    if (typeof args.url !== "string" || args.url === "") throw new NodeError(`browser needs "url"`);
    const res = await safeFetch(args.url, { signal: ctx.signal, maxBytes: PAGE_MAX_BYTES });
    const body = bodyText(res);
    const html = /html|xml/i.test(res.headers["content-type"] ?? "");
    return { url: res.url, status: res.status, content: html ? htmlText(body) : body };
  },
};

registerAgentTool(calculator);
registerAgentTool(textStats);
registerAgentTool(browser);
