/**
 * Language models (NodeTool's `nodetool.llms.LLM` and `LLMStreaming`), through the agent's providers
 * (agent/integrations/providers.ts): the reply streams to clients as `chunk` events as the provider sends it; `LLM`
 * outputs the
 * whole text, `LLMStreaming` also sends each piece along its `chunk` edge. The model is NodeTool's LanguageModel
 * (`{type: "language_model", provider, id}`), or `"<provider>:<model>"` for short. Differences from NodeTool: no
 * image, audio or tool inputs yet; `messages` (earlier turns) go before `prompt`.
 */
import { LLM_PROVIDERS, isLlmProvider, languageModelOf } from "../../protocol/index.js";
import {
  NodeError,
  type GeneratorNodeDef,
  type NodeContext,
  type NodeInputs,
  type ProcessNodeDef,
} from "../engine/types.js";
import { asInt, asNumber, asText, prop } from "./util.js";
import type { ChatMessage, ChatRequest, ProviderName } from "../integrations/index.js";

function modelOf(v: unknown): { provider: ProviderName; id: string } {
  const model = languageModelOf(v);
  if (!model || !isLlmProvider(model.provider)) {
    throw new NodeError(
      `"model" must name a provider (${LLM_PROVIDERS.join(", ")}) and a model, as {"type": "language_model", "provider": "openai", "id": "gpt-4o-mini"} or "openai:gpt-4o-mini"; got ${JSON.stringify(v)}`,
    );
  }
  if (model.id.trim() === "") throw new NodeError(`"model" names provider ${model.provider} but no model id`);
  return { provider: model.provider, id: model.id };
}

function messagesOf(v: unknown): ChatMessage[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new NodeError(`"messages" must be a list of {role, content}`);
  return v.map((m, i) => {
    const o = m as { role?: unknown; content?: unknown };
    if ((o?.role !== "user" && o?.role !== "assistant") || typeof o.content !== "string")
      throw new NodeError(`messages[${i}] must be {"role": "user" | "assistant", "content": text}`);
    return { role: o.role, content: o.content };
  });
}

function request(ctx: NodeContext, inputs: NodeInputs): ChatRequest {
  const model = modelOf(inputs.model);
  const prompt = asText(inputs.prompt ?? "");
  const messages = [
    ...messagesOf(inputs.messages),
    ...(prompt !== "" ? [{ role: "user" as const, content: prompt }] : []),
  ];
  if (messages.length === 0) throw new NodeError(`"prompt" is empty and there are no "messages": nothing to send`);
  const maxTokens = asInt(inputs.max_tokens, "max_tokens");
  if (maxTokens < 1) throw new NodeError(`max_tokens must be ≥ 1, got ${maxTokens}`);
  const temperature =
    inputs.temperature === null || inputs.temperature === undefined
      ? undefined
      : asNumber(inputs.temperature, "temperature");
  if (temperature !== undefined && !(temperature >= 0 && temperature <= 2))
    throw new NodeError(`temperature must be in [0, 2], got ${temperature}`);
  const topP = inputs.top_p === null || inputs.top_p === undefined ? undefined : asNumber(inputs.top_p, "top_p");
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new NodeError(`top_p must be in (0, 1], got ${topP}`);
  const stop = inputs.stop ?? [];
  if (!Array.isArray(stop) || stop.length > 4 || !stop.every((x) => typeof x === "string" && x !== ""))
    throw new NodeError(`stop must be a list of up to 4 non-empty strings`);
  return {
    provider: model.provider,
    model: model.id,
    system: asText(inputs.system ?? ""),
    messages,
    maxTokens,
    ...(temperature !== undefined ? { temperature } : {}),
    ...(topP !== undefined ? { topP } : {}),
    ...(stop.length > 0 ? { stop: stop as string[] } : {}),
    signal: ctx.signal,
  };
}

const PROPERTIES = [
  prop(
    "model",
    "language_model",
    { type: "language_model", provider: "empty", id: "", name: "" },
    { description: 'The provider and model, e.g. {"provider": "openai", "id": "gpt-4o-mini"}.' },
  ),
  prop("system", "str", "You are a friendly assistant.", { description: "The system prompt for the LLM." }),
  prop("prompt", "str", "", { description: "The prompt for the LLM." }),
  prop("messages", "list", [], { description: "Earlier turns, [{role, content}], sent before the prompt." }),
  prop("max_tokens", "int", 4096, { min: 1, max: 1_000_000 }),
  prop("temperature", "float", null, {
    min: 0,
    max: 2,
    description: "Sampling temperature; empty: the provider's default.",
  }),
  prop("top_p", "float", null, { min: 0, max: 1, description: "Nucleus sampling; empty: the provider's default." }),
  prop("stop", "list", [], { description: "Up to four sequences that end the reply." }),
];

/**
 * The reply's pieces as the provider sends them, each also sent to clients as a chunk, then a final `done` one
 * whose `content_metadata` says how the reply ended and its token counts (what `/v1/chat/completions` reports).
 * The SDKs load when a node first calls a model, not with the library (runners start without them).
 */
async function* replyPieces(ctx: NodeContext, inputs: NodeInputs): AsyncGenerator<string> {
  const req = request(ctx, inputs);
  const { streamChat } = await import("../integrations/providers.js");
  for await (const piece of streamChat(req)) {
    if (piece.type === "text") {
      ctx.chunk(piece.text);
      yield piece.text;
    } else {
      const { type: _end, ...metadata } = piece;
      ctx.chunk("", { done: true, metadata });
    }
  }
}

export const llm: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.llms.LLM",
  title: "LLM",
  description:
    "Generate natural language responses using LLM providers (OpenAI, Anthropic, Ollama); the reply streams to clients as chunks.",
  properties: PROPERTIES,
  providerProperty: "model",
  outputs: [{ name: "text", type: "str" }],
  process: async (ctx, inputs) => {
    let text = "";
    for await (const piece of replyPieces(ctx, inputs)) text += piece;
    return { text };
  },
};

export const llmStreaming: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.llms.LLMStreaming",
  title: "LLM Streaming",
  description:
    "Generate natural language responses using LLM providers and stream each piece along the chunk output, then the whole text.",
  properties: PROPERTIES,
  providerProperty: "model",
  outputs: [
    { name: "chunk", type: "str" },
    { name: "text", type: "str" },
  ],
  async *generate(ctx, inputs) {
    let text = "";
    for await (const piece of replyPieces(ctx, inputs)) {
      text += piece;
      yield { handle: "chunk", value: piece };
    }
    yield { handle: "text", value: text };
  },
};

export const LLM_NODES = [llm, llmStreaming];
