/**
 * NodeTool's agent nodes: `nodetool.agents.Agent` (a model that may call tools, in a loop, streaming its answer),
 * `Summarizer`, `ResearchAgent` (structured results, one output per dynamic output) and
 * `anthropic.agents.ClaudeAgent` (the same loop on an Anthropic model). Every model call goes through the agent's
 * providers (agent/integrations/providers.ts) with the tools in agent/nodes/agent-tools.ts; a tool that cannot
 * be offered here (files, a shell, a browser) fails the node naming it.
 *
 * Events: the reply's text streams as `chunk` events (the last a `done` one with how the reply ended, as the LLM
 * nodes); each tool call and its result is a `log_update` ("tool call NAME {args}", "tool result NAME: …").
 * Nodes wired to an Agent or ClaudeAgent by control edges are its tools when the engine offers them on the context
 * (`controlledNodes`, agent/nodes/agent-tools.ts). An `image` (and an `audio`) input goes with the user's turn, as
 * the LLM nodes send them. Differences from NodeTool: no threads (`thread_id`), and `text` is the final
 * answer once (NodeTool also sends the text of turns that end in tool calls).
 */
import {
  NodeError,
  type Emission,
  type GeneratorNodeDef,
  type NodeContext,
  type NodeInputs,
  type ProcessNodeDef,
} from "../engine/types.js";
import type { ChatMessage, ChatRequest, ProviderName, ToolCall } from "../integrations/index.js";
import { controlTools, resolveTools, type AgentTool } from "./agent-tools.js";
import { inputMedia, messagesOf, modelOf, userMessage, userTurn } from "./llm.js";
import { asBool, asInt, asList, asText, enumProp, prop } from "./util.js";

/** Most model turns an Agent, Summarizer or ResearchAgent takes (each tool round is one). */
const MAX_AGENT_TURNS = 25;
/** Longest tool result sent back to the model (a search page can be large). */
const MAX_TOOL_RESULT_CHARS = 100_000;

export interface AgentRun {
  provider: ProviderName;
  model: string;
  system: string;
  messages: ChatMessage[];
  tools: AgentTool[];
  maxTokens: number;
  maxTurns: number;
}

/** A tool's result as the text the model reads. */
function resultText(v: unknown): string {
  const text = typeof v === "string" ? v : (JSON.stringify(v) ?? "null");
  return text.length > MAX_TOOL_RESULT_CHARS ? `${text.slice(0, MAX_TOOL_RESULT_CHARS)}… (cut)` : text;
}

/** Runs one call; a tool's own failure goes back to the model as `{"error": …}` (it may try again), as NodeTool. */
async function runTool(ctx: NodeContext, tools: AgentTool[], call: ToolCall): Promise<string> {
  ctx.log(`tool call ${call.name} ${JSON.stringify(call.args)}`);
  const tool = tools.find((t) => t.name === call.name);
  let text: string;
  if (!tool)
    text = resultText({ error: `no tool named "${call.name}"; the tools are ${tools.map((t) => t.name).join(", ")}` });
  else {
    try {
      text = resultText(await tool.run(call.args, ctx));
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      text = resultText({ error: err instanceof Error ? err.message : String(err) });
    }
  }
  ctx.log(`tool result ${call.name}: ${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}`);
  return text;
}

/**
 * The agent loop: the model answers, streaming its text as chunks; while it asks for tools they run and their
 * results go back to it. Yields the text pieces of every turn; returns the last turn's text.
 */
export async function* agentLoop(ctx: NodeContext, run: AgentRun): AsyncGenerator<string, string> {
  const { streamChat } = await import("../integrations/providers.js");
  const messages = [...run.messages];
  const specs = run.tools.map((t) => ({ name: t.name, description: t.description, parameters: t.inputSchema }));
  for (let turn = 1; turn <= run.maxTurns; turn++) {
    const req: ChatRequest = {
      provider: run.provider,
      model: run.model,
      system: run.system,
      messages,
      maxTokens: run.maxTokens,
      ...(specs.length > 0 ? { tools: specs } : {}),
      signal: ctx.signal,
    };
    let text = "";
    let calls: ToolCall[] = [];
    for await (const piece of streamChat(req)) {
      if (piece.type === "text") {
        text += piece.text;
        ctx.chunk(piece.text);
        yield piece.text;
        continue;
      }
      const { type: _end, ...metadata } = piece;
      calls = piece.tool_calls ?? [];
      if (calls.length === 0) ctx.chunk("", { done: true, metadata });
    }
    if (calls.length === 0) return text;
    messages.push({ role: "assistant", content: text, tool_calls: calls });
    for (const call of calls) {
      messages.push({
        role: "tool",
        tool_call_id: call.id,
        name: call.name,
        content: await runTool(ctx, run.tools, call),
      });
    }
  }
  throw new NodeError(`the model still asked for tools after ${run.maxTurns} turns`);
}

/** The named tools and those of the nodes wired to this one by control edges (when the engine offers them). */
function withControlTools(ctx: NodeContext, named: AgentTool[]): AgentTool[] {
  return [...named, ...controlTools(ctx, named)];
}

/** A loop's pieces along `chunk`, then its answer on `text` (NodeTool's streaming agents). */
async function* emitted(loop: AsyncGenerator<string, string>): AsyncGenerator<Emission> {
  for (;;) {
    const next = await loop.next();
    if (next.done) {
      yield { handle: "text", value: next.value };
      return;
    }
    yield { handle: "chunk", value: next.value };
  }
}

/** A max_tokens input, checked. */
function maxTokensOf(inputs: NodeInputs, dflt: number): number {
  const n = asInt(inputs.max_tokens ?? dflt, "max_tokens");
  if (n < 1 || n > 1_000_000) throw new NodeError(`max_tokens must be in [1, 1000000], got ${n}`);
  return n;
}

const MODEL_PROP = prop(
  "model",
  "language_model",
  { type: "language_model", provider: "empty", id: "", name: "" },
  {
    description:
      'The model; empty: the deployment\'s default (--default-model), e.g. {"provider": "openai", "id": "gpt-4o-mini"}.',
  },
);
const IMAGE_PROP = prop(
  "image",
  "image",
  { type: "image", uri: "", asset_id: null, data: null },
  {
    description: "An image to analyze (not supported here yet: leave empty).",
  },
);
const AUDIO_PROP = prop(
  "audio",
  "audio",
  { type: "audio", uri: "", asset_id: null, data: null },
  {
    description: "Audio to analyze (not supported here yet: leave empty).",
  },
);

// ---- Agent ------------------------------------------------------------------------------------------------------

const DEFAULT_AGENT_SYSTEM =
  "You are a helpful assistant. Use the tools you are given when they help; answer clearly and concisely.";

/** The answer streams on `chunk`, whole on `text`, then (with dynamic outputs) each of its fields on its handle. */
export const agent: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.agents.Agent",
  title: "Agent",
  description:
    "Generate natural language responses using LLM providers, calling tools when the model asks, and stream the output.",
  properties: [
    MODEL_PROP,
    prop("system", "str", DEFAULT_AGENT_SYSTEM, { description: "The system prompt for the LLM." }),
    prop("prompt", "str", "", { description: "The prompt for the LLM." }),
    prop("tools", "list", [], {
      description: `Tools to enable, [{"type": "tool_name", "name": "calculator"}]; a tool this fleet cannot offer fails the node.`,
    }),
    IMAGE_PROP,
    AUDIO_PROP,
    prop("history", "list", [], { description: "Earlier messages, [{role, content}], sent before the prompt." }),
    prop("thread_id", "str", "", { description: "Persistent threads are not supported here: leave empty." }),
    prop("max_tokens", "int", 8192, { min: 1, max: 100_000 }),
  ],
  providerProperty: "model",
  outputs: [
    { name: "text", type: "str" },
    { name: "chunk", type: "chunk" },
    { name: "thinking", type: "chunk" },
    { name: "audio", type: "audio" },
  ],
  async *generate(ctx, inputs) {
    if (asText(inputs.thread_id ?? "") !== "")
      throw new NodeError(`"thread_id": persistent threads are not supported here`);
    const model = modelOf(inputs.model);
    const prompt = asText(inputs.prompt ?? "");
    // As NodeTool: the user's turn is always sent, an empty prompt included (a graph feeding it "" still asks).
    const media = await inputMedia(ctx, inputs);
    const messages: ChatMessage[] = [
      ...messagesOf(inputs.history, "history"),
      ...messagesOf(inputs.messages),
      userMessage(prompt, media),
    ];
    const wanted = outputSchemaOf(ctx);
    const run: AgentRun = {
      provider: model.provider,
      model: model.id,
      system: asText(inputs.system ?? "") + (wanted ? answerAsJson(wanted.schema) : ""),
      messages,
      tools: withControlTools(ctx, resolveTools(asList(inputs.tools))),
      maxTokens: maxTokensOf(inputs, 8192),
      maxTurns: MAX_AGENT_TURNS,
    };
    let answer = "";
    for await (const e of emitted(agentLoop(ctx, run))) {
      if (e.handle === "text") answer = e.value as string;
      yield e;
    }
    // With dynamic outputs the answer is structured: each field also goes out on its own handle.
    if (wanted) for (const [k, v] of Object.entries(fieldsOf(answer, wanted.names))) yield { handle: k, value: v };
  },
};

// ---- Summarizer -------------------------------------------------------------------------------------------------

const DEFAULT_SUMMARY_SYSTEM = `You are an expert summarizer. Write a clear, accurate and concise summary in Markdown.
1. Keep only the most important information.
2. Stay factual: add nothing, change nothing.
3. Use clear, direct language.`;

export const summarizer: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.agents.Summarizer",
  title: "Summarizer",
  description: "Generate concise summaries of text content using LLM providers, streaming the summary as it comes.",
  properties: [
    prop("system_prompt", "str", DEFAULT_SUMMARY_SYSTEM, { description: "The system prompt for the summarizer." }),
    MODEL_PROP,
    prop("text", "str", "", { description: "The text to summarize." }),
    IMAGE_PROP,
    AUDIO_PROP,
  ],
  providerProperty: "model",
  outputs: [
    { name: "text", type: "str" },
    { name: "chunk", type: "chunk" },
  ],
  async *generate(ctx, inputs) {
    const media = await inputMedia(ctx, inputs);
    const model = modelOf(inputs.model);
    const text = asText(inputs.text ?? "");
    if (text.trim() === "") throw new NodeError(`"text" is empty: nothing to summarize`);
    const run: AgentRun = {
      provider: model.provider,
      model: model.id,
      system: asText(inputs.system_prompt ?? ""),
      messages: userTurn(text, media),
      tools: [],
      maxTokens: maxTokensOf(inputs, 4096),
      maxTurns: 1,
    };
    yield* emitted(agentLoop(ctx, run));
  },
};

// ---- ResearchAgent ----------------------------------------------------------------------------------------------

/** NodeTool's TypeMetadata of a dynamic output → the JSON Schema of its value. */
export function schemaOfType(t: unknown): Record<string, unknown> {
  const meta = (t ?? {}) as { type?: unknown; type_args?: unknown[] };
  const args = Array.isArray(meta.type_args) ? meta.type_args : [];
  switch (meta.type) {
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
      return { type: "array", ...(args[0] ? { items: schemaOfType(args[0]) } : {}) };
    case "dict":
      return { type: "object" };
    default:
      return {};
  }
}

/** The JSON Schema of the object a node's dynamic outputs ask for (each one required), or null when none. */
export function outputSchemaOf(ctx: NodeContext): { names: string[]; schema: Record<string, unknown> } | null {
  const slots = ctx.dynamicOutputs;
  const names = Object.keys(slots);
  if (names.length === 0) return null;
  const properties = Object.fromEntries(names.map((n) => [n, schemaOfType(slots[n])]));
  return { names, schema: { type: "object", additionalProperties: false, properties, required: names } };
}

/** The system prompt's last paragraph when a structured answer is wanted. */
const answerAsJson = (schema: Record<string, unknown>) =>
  `\n\nWhen you are done, answer with only a JSON object matching this JSON Schema:\n${JSON.stringify(schema)}`;

/** The answer's fields, one per dynamic output (absent ones null). */
function fieldsOf(text: string, names: readonly string[]): Record<string, unknown> {
  const result = jsonObjectIn(text);
  return Object.fromEntries(names.map((n) => [n, result[n] ?? null]));
}

/** A JSON object in a model's answer: a ```json fence, the whole text, or its outermost braces. */
export function jsonObjectIn(text: string): Record<string, unknown> {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(text)?.[1];
  const start = text.indexOf("{");
  const end = text.lastIndexOf("}");
  for (const candidate of [fenced, text, start >= 0 && end > start ? text.slice(start, end + 1) : undefined]) {
    if (candidate === undefined) continue;
    try {
      const v: unknown = JSON.parse(candidate.trim());
      if (v !== null && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      /* the next candidate */
    }
  }
  throw new NodeError(`the model's answer is not a JSON object: ${text.slice(0, 200)}`);
}

const DEFAULT_RESEARCH_SYSTEM = `You are a research assistant. Use the tools you have to gather information about the
objective, check it against more than one source where you can, and then give your findings.`;

export const researchAgent: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.agents.ResearchAgent",
  title: "Research Agent",
  description:
    "Autonomous research agent: gathers information with its tools and returns structured results, one output per dynamic output.",
  properties: [
    prop("objective", "str", "", { description: "The research objective or question to investigate." }),
    MODEL_PROP,
    prop("system_prompt", "str", DEFAULT_RESEARCH_SYSTEM, { description: "How the agent should research." }),
    prop(
      "tools",
      "list",
      [
        { type: "tool_name", name: "google_search" },
        { type: "tool_name", name: "browser" },
      ],
      { description: "Tools to research with; one this fleet cannot offer fails the node." },
    ),
    prop("max_tokens", "int", 8192, { min: 1, max: 100_000 }),
  ],
  providerProperty: "model",
  outputs: [],
  process: async (ctx, inputs) => {
    const model = modelOf(inputs.model);
    const objective = asText(inputs.objective ?? "");
    if (objective.trim() === "") throw new NodeError("Provide a research objective");
    const wanted = outputSchemaOf(ctx);
    if (!wanted) throw new NodeError("Define at least one output field for research results");
    const system = asText(inputs.system_prompt ?? "") + answerAsJson(wanted.schema);
    const loop = agentLoop(ctx, {
      provider: model.provider,
      model: model.id,
      system,
      messages: [{ role: "user", content: objective }],
      tools: resolveTools(asList(inputs.tools)),
      maxTokens: maxTokensOf(inputs, 8192),
      maxTurns: MAX_AGENT_TURNS,
    });
    let next = await loop.next();
    while (!next.done) next = await loop.next();
    return fieldsOf(next.value, wanted.names);
  },
};

// ---- ClaudeAgent ------------------------------------------------------------------------------------------------

const PERMISSION_MODES = ["default", "acceptEdits", "plan", "bypassPermissions"] as const;

export const claudeAgent: GeneratorNodeDef = {
  kind: "generator",
  type: "anthropic.agents.ClaudeAgent",
  title: "Claude Agent",
  description:
    "Run Claude as an agent with tool use (an Anthropic agent loop); built-in SDK tools that reach files or a shell are refused.",
  properties: [
    prop("prompt", "str", "", { description: "The task or question for the Claude agent to work on." }),
    MODEL_PROP,
    prop("system_prompt", "str", "", { description: "Optional system prompt to guide the agent's behavior." }),
    prop("max_turns", "int", 20, { min: 1, max: 100, description: "Maximum number of turns the agent can take." }),
    prop("allowed_tools", "list", ["Read", "Write", "Bash"], {
      description:
        "Built-in Claude Agent SDK tools (Read, Write, Bash, …): they reach the agent's files and shell, so any listed here fails the node; leave empty.",
    }),
    enumProp("permission_mode", PERMISSION_MODES, "acceptEdits", "Permission mode for tool usage."),
    prop("use_claude_credentials", "bool", false, {
      description: "Ignored here: the agent's ANTHROPIC_API_KEY is used.",
    }),
  ],
  providerProperty: "model",
  outputs: [
    { name: "text", type: "str" },
    { name: "chunk", type: "chunk" },
  ],
  async *generate(ctx, inputs) {
    const prompt = asText(inputs.prompt ?? "");
    if (prompt.trim() === "") throw new NodeError("Prompt is required");
    const builtins = asList(inputs.allowed_tools)
      .map((t) => asText(t))
      .filter((t) => t !== "");
    if (builtins.length > 0)
      throw new NodeError(
        `ClaudeAgent's built-in tools ${builtins.join(", ")} are not offered here (they reach the agent's files and shell): empty "allowed_tools"`,
      );
    const model = modelOf(inputs.model);
    if (model.provider !== "anthropic")
      throw new NodeError(`ClaudeAgent runs Anthropic models; "model" names ${model.provider}:${model.id}`);
    const turns = asInt(inputs.max_turns ?? 20, "max_turns");
    if (turns < 1 || turns > 100) throw new NodeError(`max_turns must be in [1, 100], got ${turns}`);
    if (asBool(inputs.use_claude_credentials))
      ctx.log("use_claude_credentials is ignored: the agent's ANTHROPIC_API_KEY is used");
    const run: AgentRun = {
      provider: model.provider,
      model: model.id,
      system: asText(inputs.system_prompt ?? ""),
      messages: [{ role: "user", content: prompt }],
      tools: withControlTools(ctx, []),
      maxTokens: 8192,
      maxTurns: turns,
    };
    yield* emitted(agentLoop(ctx, run));
  },
};

export const AGENT_NODES = [agent, summarizer, researchAgent, claudeAgent];
