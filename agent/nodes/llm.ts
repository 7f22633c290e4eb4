/**
 * Language models (NodeTool's `nodetool.llms.LLM` and `LLMStreaming`), through the agent's providers
 * (agent/integrations/providers.ts): the reply streams to clients as `chunk` events as the provider sends it; `LLM`
 * outputs the whole text, `LLMStreaming` also sends each piece along its `chunk` edge. The model is NodeTool's
 * LanguageModel (`{type: "language_model", provider, id}`), or `"<provider>:<model>"` for short. An `image` goes
 * with the prompt as each provider's vision API takes it, and an `audio` as OpenAI's audio models take it (Anthropic's
 * and Ollama's APIs take none: such a node fails saying so). Differences from NodeTool: `messages`
 * (earlier turns) go before `prompt`; the agent loop with tools is agent/nodes/agents.ts.
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
import type { ChatAudio, ChatImage, ChatMessage, ChatRequest, ProviderName } from "../integrations/index.js";
import { isEmptyMedia, mediaBytes, plainBytes } from "./media-util.js";
import { sniffContentType } from "../assets.js";
import { audioAsMp3 } from "./video.js";
import { imageProp, openImage } from "./pillow.js";

/**
 * What a node says when its model is left empty (NodeTool saves `{"type": "language_model"}` for the user to pick)
 * and the gateway had no default to fill it with.
 */
export const NO_DEFAULT_MODEL =
  'no model is chosen and this deployment has no default model: pick one on the node, or set the gateway\'s --default-model provider:id (NODEWAY_DEFAULT_MODEL), e.g. "openai:gpt-4o-mini"';

/** An empty LanguageModel: no provider (or NodeTool's `"empty"`) and no id. */
export function isEmptyModel(v: unknown): boolean {
  if (v === null || v === undefined || v === "") return true;
  if (typeof v !== "object") return false;
  const { provider, id } = v as { provider?: unknown; id?: unknown };
  return (provider === undefined || provider === null || provider === "" || provider === "empty") && !id;
}

/** The provider and model id a node's `model` names; an empty one fails naming the default-model setting. */
export function modelOf(v: unknown): { provider: ProviderName; id: string } {
  if (isEmptyModel(v)) throw new NodeError(NO_DEFAULT_MODEL);
  const model = languageModelOf(v);
  if (!model || !isLlmProvider(model.provider)) {
    throw new NodeError(
      `"model" must name a provider (${LLM_PROVIDERS.join(", ")}) and a model, as {"type": "language_model", "provider": "openai", "id": "gpt-4o-mini"} or "openai:gpt-4o-mini"; got ${JSON.stringify(v)}`,
    );
  }
  if (model.id.trim() === "") throw new NodeError(`"model" names provider ${model.provider} but no model id`);
  return { provider: model.provider, id: model.id };
}

/** Text of a message's content: a string, or NodeTool's / OpenAI's content parts of which text ones are taken. */
function contentText(content: unknown, where: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) throw new NodeError(`${where}.content must be text or a list of content parts`);
  return content
    .map((p) => {
      const part = p as { type?: unknown; text?: unknown };
      if (part?.type === "text" && typeof part.text === "string") return part.text;
      throw new NodeError(`${where} has a "${String(part?.type)}" part: only text parts are supported`);
    })
    .join("");
}

/** One earlier turn: user or assistant text (with its tool calls), or a tool's result. */
function turnOf(m: unknown, where: string): ChatMessage {
  const o = m as { role?: unknown; content?: unknown; tool_calls?: unknown; tool_call_id?: unknown; name?: unknown };
  if (o?.role === "tool") {
    if (typeof o.tool_call_id !== "string") throw new NodeError(`${where} (a tool result) needs its "tool_call_id"`);
    const name = typeof o.name === "string" ? { name: o.name } : {};
    return { role: "tool", tool_call_id: o.tool_call_id, content: contentText(o.content, where), ...name };
  }
  if (o?.role !== "user" && o?.role !== "assistant")
    throw new NodeError(`${where} must be {"role": "user" | "assistant", "content": text}`);
  const content = contentText(o.content, where);
  if (o.role === "user" || !Array.isArray(o.tool_calls) || o.tool_calls.length === 0) return { role: o.role, content };
  const calls = o.tool_calls.map((c, j) => {
    const call = c as { id?: unknown; name?: unknown; args?: unknown };
    if (typeof call?.id !== "string" || typeof call.name !== "string")
      throw new NodeError(`${where}.tool_calls[${j}] must be {"id", "name", "args"}`);
    return { id: call.id, name: call.name, args: (call.args ?? {}) as Record<string, unknown> };
  });
  return { role: "assistant", content, tool_calls: calls };
}

/** Earlier turns (`messages`, or NodeTool's `history` of Messages); system ones are left to `system`. */
export function messagesOf(v: unknown, name = "messages"): ChatMessage[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new NodeError(`"${name}" must be a list of {role, content}`);
  return v.filter((m) => (m as { role?: unknown } | null)?.role !== "system").map((m, i) => turnOf(m, `${name}[${i}]`));
}

/** Image formats every provider's vision models take as they are; others are sent as PNG. */
const MODEL_IMAGE_FORMATS = new Set(["jpeg", "png", "gif", "webp"]);

/** What goes with the prompt in the user's turn: the `image` and `audio` inputs. */
export interface TurnMedia {
  images: ChatImage[];
  audio: ChatAudio[];
}

/** The `image` input as an image for the model's user turn (none when empty). */
async function inputImages(ctx: NodeContext, inputs: NodeInputs): Promise<ChatImage[]> {
  if (isEmptyMedia(inputs.image)) return [];
  const { img, bytes, format } = await openImage(ctx, inputs.image, '"image"');
  if (MODEL_IMAGE_FORMATS.has(format)) return [{ mime: `image/${format}`, data: bytes }];
  return [{ mime: "image/png", data: plainBytes(await img.png().toBuffer()) }];
}

/**
 * The `audio` input as the models' APIs take audio (none when empty): WAV and MP3 as they are, any other format
 * made MP3 with ffmpeg. A provider whose API takes no audio fails naming what to do instead.
 */
async function inputAudio(ctx: NodeContext, inputs: NodeInputs): Promise<ChatAudio[]> {
  if (isEmptyMedia(inputs.audio)) return [];
  const bytes = await mediaBytes(ctx, inputs.audio, "audio", '"audio"');
  const type = sniffContentType(bytes);
  if (type === "audio/wav") return [{ format: "wav", data: bytes }];
  if (type === "audio/mpeg") return [{ format: "mp3", data: bytes }];
  return [{ format: "mp3", data: await audioAsMp3(ctx, bytes) }];
}

export async function inputMedia(ctx: NodeContext, inputs: NodeInputs): Promise<TurnMedia> {
  return { images: await inputImages(ctx, inputs), audio: await inputAudio(ctx, inputs) };
}

/** The user's turn: the prompt, with its images and audio. */
export function userMessage(prompt: string, media: TurnMedia): ChatMessage {
  const { images, audio } = media;
  return {
    role: "user",
    content: prompt,
    ...(images.length > 0 ? { images } : {}),
    ...(audio.length ? { audio } : {}),
  };
}

/** The user's turn, or none when it would be empty (no prompt, no images, no audio). */
export function userTurn(prompt: string, media: TurnMedia): ChatMessage[] {
  const empty = prompt === "" && media.images.length === 0 && media.audio.length === 0;
  return empty ? [] : [userMessage(prompt, media)];
}

async function request(ctx: NodeContext, inputs: NodeInputs): Promise<ChatRequest> {
  const model = modelOf(inputs.model);
  const prompt = asText(inputs.prompt ?? "");
  const messages = [...messagesOf(inputs.messages), ...userTurn(prompt, await inputMedia(ctx, inputs))];
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
    ...functionTools(inputs),
    signal: ctx.signal,
  };
}

/**
 * `tool_specs` and `tool_choice` (a Nodeway extension, used by `/v1/chat/completions`): functions the model may
 * call that the caller runs; the calls end the reply and come out in its `done` chunk's metadata.
 */
function functionTools(inputs: NodeInputs): Pick<ChatRequest, "tools" | "toolChoice"> {
  const specs = inputs.tool_specs ?? [];
  if (!Array.isArray(specs)) throw new NodeError(`"tool_specs" must be a list of {name, description, parameters}`);
  if (specs.length === 0) return {};
  const tools = specs.map((t, i) => {
    const o = t as { name?: unknown; description?: unknown; parameters?: unknown };
    if (typeof o?.name !== "string" || o.parameters === null || typeof o.parameters !== "object")
      throw new NodeError(`tool_specs[${i}] must be {"name", "description", "parameters": JSON Schema}`);
    const description = typeof o.description === "string" ? o.description : "";
    return { name: o.name, description, parameters: o.parameters as Record<string, unknown> };
  });
  const c = inputs.tool_choice;
  const named = (c as { name?: unknown } | null)?.name;
  if (c === null || c === undefined || c === "") return { tools };
  if (c === "auto" || c === "none" || c === "required") return { tools, toolChoice: c };
  if (typeof named === "string") return { tools, toolChoice: { name: named } };
  throw new NodeError(`"tool_choice" must be "auto", "none", "required" or {"name": tool}`);
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
  imageProp("image", "An image sent with the prompt (vision models)."),
  prop(
    "audio",
    "audio",
    { type: "audio", uri: "", asset_id: null, data: null },
    {
      description: "Not sent to models here: a set one fails the node.",
    },
  ),
  prop("messages", "list", [], { description: "Earlier turns, [{role, content}], sent before the prompt." }),
  prop("max_tokens", "int", 4096, { min: 1, max: 1_000_000 }),
  prop("temperature", "float", null, {
    min: 0,
    max: 2,
    description: "Sampling temperature; empty: the provider's default.",
  }),
  prop("top_p", "float", null, { min: 0, max: 1, description: "Nucleus sampling; empty: the provider's default." }),
  prop("stop", "list", [], { description: "Up to four sequences that end the reply." }),
  prop("tool_specs", "list", [], {
    description: "Functions the model may call, [{name, description, parameters}]; the caller runs them.",
  }),
  prop("tool_choice", "any", null, { description: '"auto", "none", "required" or {"name": tool}.' }),
];

/**
 * The reply's pieces as the provider sends them, each also sent to clients as a chunk, then a final `done` one
 * whose `content_metadata` says how the reply ended and its token counts (what `/v1/chat/completions` reports).
 * The SDKs load when a node first calls a model, not with the library (runners start without them).
 */
async function* replyPieces(ctx: NodeContext, inputs: NodeInputs): AsyncGenerator<string> {
  const req = await request(ctx, inputs);
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
