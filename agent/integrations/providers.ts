/**
 * Language-model providers through their official SDKs (`openai`, `@anthropic-ai/sdk`, `ollama`), streamed: each
 * yields the reply's text as it comes, and a job's abort (cancel, timeout, lost lease) aborts the request. Keys and
 * endpoints live on the agent, in its environment (`OPENAI_API_KEY` and `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`
 * and `ANTHROPIC_BASE_URL`, `OLLAMA_HOST`), never in a job or an event.
 *
 * A provider's refusal (bad key, unknown model, rate limit) or an endpoint that does not answer becomes a
 * `NodeError` saying which provider, what it said and its HTTP status; a failed request is tried once more (not
 * the SDKs' retries: their waits ignore a cancel and obey any Retry-After), so a dead endpoint fails the node in
 * seconds rather than minutes, and a provider asking to wait longer than `MAX_RETRY_WAIT_MS` fails it at once. No
 * such message quotes a credential: a base URL is shown without its userinfo and query values, and those (and the
 * key) are cut from whatever the SDK said.
 *
 * A reply is bounded (./stream-guard.ts): a stream silent for `STREAM_IDLE_MS` between two pieces fails, as does
 * a line over `MAX_LINE_BYTES` or a piece that is not JSON, and one that ends without its provider's end (OpenAI's
 * `finish_reason`, Anthropic's `message_stop`, Ollama's `done`) fails rather than pass off a cut reply as whole.
 */
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import {
  Ollama,
  type AbortableAsyncIterator,
  type ChatResponse,
  type Message as OllamaMessage,
  type Tool as OllamaTool,
} from "ollama";
import {
  LLM_PROVIDERS,
  MAX_MODELS_PER_PROVIDER,
  type AgentModel,
  type ChatEndMetadata,
  type ChatTurn,
  type ChatCompletionRequest,
  type FinishReason,
  type LlmProvider,
} from "../../protocol/index.js";
import { assertNever, redactSecretsIn, redactUrl, secretsOfUrl } from "../../protocol/index.js";
import { NodeError } from "../engine/types.js";
import { guardedFetch, type StreamGuard } from "./stream-guard.js";

export const PROVIDERS = LLM_PROVIDERS;
export type ProviderName = LlmProvider;
/** An image sent with a user turn (NodeTool's Agent and LLM `image` input): its bytes and media type. */
export interface ChatImage {
  mime: string;
  data: Uint8Array;
}
/** Audio sent with a user turn (the `audio` input): as a model's API takes it, WAV or MP3. */
export interface ChatAudio {
  format: "wav" | "mp3";
  data: Uint8Array;
}
/** A turn of the conversation as the agent sends it: the wire's turns, a user turn with images and audio too. */
export type ChatMessage =
  | Exclude<ChatTurn, { role: "user" }>
  | { role: "user"; content: string; images?: readonly ChatImage[]; audio?: readonly ChatAudio[] };

/** A provider whose chat API takes no audio: a turn with some fails naming what to do instead. */
function refuseAudio(provider: string, req: ChatRequest): void {
  if (req.messages.some((m) => m.role === "user" && m.audio?.length))
    throw new NodeError(
      `${provider}'s chat API takes no audio input: transcribe it first (nodetool.text.AutomaticSpeechRecognition) and send the text, or use an OpenAI audio model (e.g. gpt-4o-audio-preview)`,
    );
}
const base64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
/** A tool call the model asked for. */
export type ToolCall = NonNullable<Extract<ChatTurn, { role: "assistant" }>["tool_calls"]>[number];
/** A function the model may call: name, description, JSON Schema of its arguments. */
export type ToolSpec = ChatCompletionRequest["tools"][number];
export type ToolChoice = NonNullable<ChatCompletionRequest["toolChoice"]>;

export interface ChatRequest {
  provider: ProviderName;
  model: string;
  system: string;
  messages: ChatMessage[];
  maxTokens: number;
  /** Absent: the provider's default. */
  temperature?: number;
  topP?: number;
  /** Sequences that end the reply. */
  stop?: string[];
  /** Functions the model may call; its calls end the reply (finish reason `tool_calls`). */
  tools?: ToolSpec[];
  toolChoice?: ToolChoice;
  signal: AbortSignal;
  /**
   * How long the provider may take to start answering, and to send the next piece of its answer. Absent:
   * `REQUEST_TIMEOUT_MS` (`OLLAMA_START_MS` for Ollama, which answers once its model is loaded) and `STREAM_IDLE_MS`.
   */
  timeouts?: { startMs?: number; idleMs?: number };
}

/**
 * What a reply stream yields: its text as it comes, then once how it ended, with the tool calls the model asked
 * for (each whole: the providers stream their arguments in pieces, put together here).
 */
export type ChatPiece = { type: "text"; text: string } | ({ type: "end" } & ChatEndMetadata);

/** How long a provider request may take to start answering. */
const REQUEST_TIMEOUT_MS = 60_000;
/** Ollama answers a chat only once its model is loaded, which from a slow disk takes minutes. */
const OLLAMA_START_MS = 180_000;
/** How long a reply may be silent between two pieces before it counts as stalled. */
const STREAM_IDLE_MS = 120_000;
/** The longest line of a reply stream: a piece is a few tokens, a whole tool call at most. */
const MAX_LINE_BYTES = 4 * 1024 * 1024;
/** The longest wait a provider may ask for (Retry-After) before the one retry; a longer one fails the node. */
const MAX_RETRY_WAIT_MS = 60_000;
/** The wait before the retry when the provider asks for none. */
const RETRY_MS = 1_000;

function needKey(env: NodeJS.ProcessEnv, name: string, provider: string): string {
  const key = env[name];
  if (!key)
    throw new NodeError(
      `this agent has no ${name}: ${provider} keys live on the agents that may use them (set it there, or send the job to a pool whose agents have it)`,
    );
  return key;
}

/** Each provider's client from the agent's environment (its key and endpoint), for a chat or a model listing. */
type Client<C> = { client: C; baseURL: string; key: string };
function openaiClient(env: NodeJS.ProcessEnv, maxRetries: number, timeout: number, fetch?: typeof globalThis.fetch) {
  const baseURL = env.OPENAI_BASE_URL || "https://api.openai.com/v1";
  const key = needKey(env, "OPENAI_API_KEY", "OpenAI");
  const client = new OpenAI({ apiKey: key, baseURL, maxRetries, timeout, ...(fetch ? { fetch } : {}) });
  return { client, baseURL, key } satisfies Client<OpenAI>;
}
function anthropicClient(env: NodeJS.ProcessEnv, maxRetries: number, timeout: number, fetch?: typeof globalThis.fetch) {
  const baseURL = env.ANTHROPIC_BASE_URL || "https://api.anthropic.com";
  const key = needKey(env, "ANTHROPIC_API_KEY", "Anthropic");
  const client = new Anthropic({ apiKey: key, baseURL, maxRetries, timeout, ...(fetch ? { fetch } : {}) });
  return { client, baseURL, key } satisfies Client<Anthropic>;
}

/** A chat's reply stream under the bounds of ./stream-guard.ts. */
function chatFetch(provider: ProviderName, req: ChatRequest, format: StreamGuard["format"], startMs?: number) {
  const idleMs = req.timeouts?.idleMs ?? STREAM_IDLE_MS;
  return guardedFetch({ provider, idleMs, startMs, maxLineBytes: MAX_LINE_BYTES, format, signal: req.signal });
}

/**
 * Failures worth the one retry, as the SDKs judge them: no answer, or HTTP 408, 409, 429 or 5xx, unless the
 * provider says otherwise (`x-should-retry`).
 */
function retryable(err: unknown): boolean {
  if (err instanceof OpenAI.APIConnectionError || err instanceof Anthropic.APIConnectionError) return true;
  const e = err as { status?: unknown; headers?: Headers };
  if (typeof e.status !== "number") return false;
  const said = e.headers?.get("x-should-retry");
  if (said === "true" || said === "false") return said === "true";
  return e.status === 408 || e.status === 409 || e.status === 429 || e.status >= 500;
}

/** The wait an error's answer asks for before a retry (`retry-after-ms`, `Retry-After` in seconds or a date). */
function retryAfterMs(err: unknown): number | null {
  const h = (err as { headers?: unknown }).headers;
  if (!(h instanceof Headers)) return null;
  const ms = Number.parseFloat(h.get("retry-after-ms") ?? "");
  if (Number.isFinite(ms)) return Math.max(0, ms);
  const after = h.get("retry-after")?.trim();
  if (!after) return null;
  const wait = /^\d+(\.\d+)?$/.test(after) ? Number(after) * 1000 : Date.parse(after) - Date.now();
  return Number.isFinite(wait) ? Math.max(0, wait) : null;
}

/**
 * `start` (a request, up to its answer's headers), and once more after a failure worth it, after the wait the
 * provider asks for: one over `MAX_RETRY_WAIT_MS` is not waited (the error says it), and a cancel ends the wait.
 */
async function withRetry<T>(signal: AbortSignal, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if (signal.aborted || !retryable(err)) throw err;
    const wait = retryAfterMs(err) ?? RETRY_MS;
    if (wait > MAX_RETRY_WAIT_MS) throw err;
    await sleep(wait, undefined, { signal });
    return start();
  }
}

/** A reply that ended without its provider's end: what came may be cut anywhere. */
function unfinished(provider: ProviderName, end: string): NodeError {
  return new NodeError(
    `${provider} failed: the stream ended without finishing (no ${end}), so its reply may be cut off`,
  );
}
const ollamaHost = (env: NodeJS.ProcessEnv) => env.OLLAMA_HOST || "http://127.0.0.1:11434";

/** A provider's failure as a `NodeError` whose message holds no credential of `endpoint` nor the `key`. */
function failure(message: string, endpoint: string, key?: string): NodeError {
  return new NodeError(redactSecretsIn(message, [...secretsOfUrl(endpoint), ...(key ? [key] : [])]));
}

/** The provider's error as one line: its HTTP status and message, or why its endpoint did not answer. */
function providerError(provider: string, endpoint: string, err: unknown, signal: AbortSignal, key?: string): unknown {
  if (signal.aborted) return signal.reason;
  // Ours, already saying what went wrong (a stalled stream, a bad piece, a reply cut off).
  if (err instanceof NodeError) return failure(err.message, endpoint, key);
  const e = err as {
    status?: number;
    message?: string;
    error?: unknown;
    cause?: { code?: string; message?: string };
    name?: string;
  };
  if (
    err instanceof OpenAI.APIConnectionError ||
    err instanceof Anthropic.APIConnectionError ||
    (e.cause && !e.status)
  ) {
    const cause = e.cause?.code ?? e.cause?.message ?? e.message;
    return failure(`${provider} at ${redactUrl(endpoint)} is unreachable: ${cause}`, endpoint, key);
  }
  if (typeof e.status === "number") {
    // The API's own message: OpenAI's `{error: {message}}`, Anthropic's `{type: "error", error: {message}}`.
    const body = e.error as { message?: unknown; error?: { message?: unknown } } | undefined;
    const said = body?.error?.message ?? body?.message ?? String(e.message ?? "").replace(/^\d{3}\s*/, "");
    return failure(
      `${provider} refused the request (HTTP ${e.status}): ${textOf(said)}${waitAsked(err)}`,
      endpoint,
      key,
    );
  }
  return failure(`${provider} failed: ${e.message ?? String(err)}`, endpoint, key);
}

/** A provider's message as text: a string, or an object's `message`, or its JSON. */
function textOf(said: unknown): string {
  if (typeof said === "string") return said;
  const message = (said as { message?: unknown } | null)?.message;
  if (typeof message === "string") return message;
  return (JSON.stringify(said) ?? String(said)).slice(0, 200);
}

/** What a refusal asks to be waited for, when it is more than a node waits (the retry was not made). */
function waitAsked(err: unknown): string {
  const wait = retryAfterMs(err);
  if (wait === null || wait <= MAX_RETRY_WAIT_MS) return "";
  const asked = `${Math.round(wait / 1000)} s`;
  return `; it asks to wait ${asked} before a retry, more than the ${MAX_RETRY_WAIT_MS / 1000} s a node waits`;
}

function usageOf(prompt: number | null | undefined, completion: number | null | undefined): ChatEndMetadata["usage"] {
  if (typeof prompt !== "number" || typeof completion !== "number") return undefined;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function ending(finish: FinishReason, usage: ChatEndMetadata["usage"], calls: ToolCall[] = []): ChatPiece {
  return {
    type: "end",
    finish_reason: calls.length > 0 ? "tool_calls" : finish,
    ...(usage ? { usage } : {}),
    ...(calls.length > 0 ? { tool_calls: calls } : {}),
  };
}

/** A tool call's arguments as the model wrote them (JSON text) → an object; anything else fails naming the tool. */
function argsOf(provider: string, name: string, json: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(json === "" ? "{}" : json);
  } catch {
    throw new NodeError(`${provider} asked for tool "${name}" with arguments that are not JSON: ${json.slice(0, 200)}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v))
    throw new NodeError(`${provider} asked for tool "${name}" with arguments that are not an object`);
  return v as Record<string, unknown>;
}

/** Streams the reply's text, then how it ended (stop or length) and its token counts where the provider said. */
export async function* streamChat(req: ChatRequest, env: NodeJS.ProcessEnv = process.env): AsyncGenerator<ChatPiece> {
  switch (req.provider) {
    case "openai":
      return yield* streamOpenai(req, env);
    case "anthropic":
      return yield* streamAnthropic(req, env);
    case "ollama":
      return yield* streamOllama(req, env);
    default:
      assertNever(req.provider, "provider");
  }
}

/** OpenAI's chat completions; the token counts come in one last chunk. */
async function* streamOpenai(req: ChatRequest, env: NodeJS.ProcessEnv): AsyncGenerator<ChatPiece> {
  const startMs = req.timeouts?.startMs ?? REQUEST_TIMEOUT_MS;
  const { client, baseURL, key } = openaiClient(env, 0, startMs, chatFetch("openai", req, "sse"));
  try {
    const create = () =>
      client.chat.completions.create(
        {
          model: req.model,
          messages: [...(req.system ? [{ role: "system" as const, content: req.system }] : []), ...openaiMessages(req)],
          ...openaiTools(req),
          max_tokens: req.maxTokens,
          ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
          ...(req.topP !== undefined ? { top_p: req.topP } : {}),
          ...(req.stop ? { stop: req.stop } : {}),
          stream: true,
          // The counts come in one last chunk with no choices.
          stream_options: { include_usage: true },
        },
        { signal: req.signal },
      );
    const stream = await withRetry(req.signal, create);
    let finish: FinishReason = "stop";
    let finished = false;
    let usage: ChatEndMetadata["usage"];
    // Tool calls stream as pieces keyed by index: the first has the id and name, the rest more arguments.
    const calls: { id: string; name: string; json: string }[] = [];
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) yield { type: "text", text: choice.delta.content };
      for (const d of choice?.delta?.tool_calls ?? []) {
        const c = (calls[d.index] ??= { id: "", name: "", json: "" });
        c.id ||= d.id ?? "";
        c.name += d.function?.name ?? "";
        c.json += d.function?.arguments ?? "";
      }
      if (choice?.finish_reason === "length") finish = "length";
      if (choice?.finish_reason) finished = true;
      if (chunk.usage) usage = usageOf(chunk.usage.prompt_tokens, chunk.usage.completion_tokens);
    }
    if (!finished) throw unfinished("openai", "finish_reason");
    const made = calls.filter(Boolean).map((c, i) => ({
      id: c.id || `call_${i}`,
      name: c.name,
      args: argsOf("openai", c.name, c.json),
    }));
    yield ending(finish, usage, made);
  } catch (err) {
    throw providerError("openai", baseURL, err, req.signal, key);
  }
}

/** The conversation as OpenAI's chat messages: tool calls with their arguments as JSON text. */
function openaiMessages(req: ChatRequest): OpenAI.Chat.ChatCompletionMessageParam[] {
  return req.messages.map((m): OpenAI.Chat.ChatCompletionMessageParam => {
    if (m.role === "tool") return { role: "tool", tool_call_id: m.tool_call_id, content: m.content };
    if (m.role === "user" && (m.images?.length || m.audio?.length)) {
      const images = (m.images ?? []).map((i) => ({
        type: "image_url" as const,
        image_url: { url: `data:${i.mime};base64,${base64(i.data)}` },
      }));
      const audio = (m.audio ?? []).map((a) => ({
        type: "input_audio" as const,
        input_audio: { data: base64(a.data), format: a.format },
      }));
      return { role: "user", content: [{ type: "text", text: m.content }, ...images, ...audio] };
    }
    if (m.role === "user" || !m.tool_calls?.length) return { role: m.role, content: m.content };
    return {
      role: "assistant",
      content: m.content === "" ? null : m.content,
      tool_calls: m.tool_calls.map((c) => ({
        id: c.id,
        type: "function" as const,
        function: { name: c.name, arguments: JSON.stringify(c.args) },
      })),
    };
  });
}

function openaiTools(req: ChatRequest): Pick<OpenAI.Chat.ChatCompletionCreateParams, "tools" | "tool_choice"> {
  if (!req.tools?.length) return {};
  const tools = req.tools.map((t) => ({
    type: "function" as const,
    function: { name: t.name, description: t.description, parameters: t.parameters },
  }));
  const c = req.toolChoice;
  if (c === undefined) return { tools };
  return { tools, tool_choice: typeof c === "string" ? c : { type: "function", function: { name: c.name } } };
}

/**
 * The conversation as Anthropic's messages: an assistant's tool calls are `tool_use` blocks, and the results that
 * follow them one user message of `tool_result` blocks.
 */
function anthropicMessages(req: ChatRequest): Anthropic.MessageParam[] {
  refuseAudio("Anthropic", req);
  const out: Anthropic.MessageParam[] = [];
  for (const m of req.messages) {
    if (m.role === "tool") {
      const block: Anthropic.ToolResultBlockParam = {
        type: "tool_result",
        tool_use_id: m.tool_call_id,
        content: m.content,
      };
      const last = out.at(-1);
      if (last?.role === "user" && Array.isArray(last.content) && last.content.every((b) => b.type === "tool_result"))
        last.content.push(block);
      else out.push({ role: "user", content: [block] });
    } else if (m.role === "assistant" && m.tool_calls?.length) {
      const blocks: Anthropic.ContentBlockParam[] = m.content ? [{ type: "text", text: m.content }] : [];
      for (const c of m.tool_calls) blocks.push({ type: "tool_use", id: c.id, name: c.name, input: c.args });
      out.push({ role: "assistant", content: blocks });
    } else if (m.role === "user" && m.images?.length) {
      const images = m.images.map(
        (i): Anthropic.ImageBlockParam => ({
          type: "image",
          source: {
            type: "base64",
            media_type: i.mime as Anthropic.Base64ImageSource["media_type"],
            data: base64(i.data),
          },
        }),
      );
      out.push({ role: "user", content: [...images, { type: "text", text: m.content }] });
    } else out.push({ role: m.role, content: m.content });
  }
  return out;
}

function anthropicTools(req: ChatRequest): Pick<Anthropic.MessageCreateParams, "tools" | "tool_choice"> {
  if (!req.tools?.length) return {};
  const tools = req.tools.map((t) => ({
    name: t.name,
    description: t.description,
    input_schema: t.parameters as Anthropic.Tool.InputSchema,
  }));
  const c = req.toolChoice;
  if (c === undefined || c === "auto") return { tools };
  if (c === "none") return { tools, tool_choice: { type: "none" } };
  if (c === "required") return { tools, tool_choice: { type: "any" } };
  return { tools, tool_choice: { type: "tool", name: c.name } };
}

/** Anthropic's messages; the counts come in the stream's start and its last delta. */
async function* streamAnthropic(req: ChatRequest, env: NodeJS.ProcessEnv): AsyncGenerator<ChatPiece> {
  const startMs = req.timeouts?.startMs ?? REQUEST_TIMEOUT_MS;
  const { client, baseURL, key } = anthropicClient(env, 0, startMs, chatFetch("anthropic", req, "sse"));
  try {
    const create = () =>
      client.messages.create(
        {
          model: req.model,
          max_tokens: req.maxTokens,
          ...(req.system ? { system: req.system } : {}),
          ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
          ...(req.topP !== undefined ? { top_p: req.topP } : {}),
          ...(req.stop ? { stop_sequences: req.stop } : {}),
          ...anthropicTools(req),
          messages: anthropicMessages(req),
          stream: true,
        },
        { signal: req.signal },
      );
    const stream = await withRetry(req.signal, create);
    let finish: FinishReason = "stop";
    let finished = false;
    let input: number | undefined;
    let output: number | undefined;
    // A `tool_use` block opens with its id and name; its input streams as pieces of JSON (`input_json_delta`).
    const calls = new Map<number, { id: string; name: string; json: string }>();
    for await (const ev of stream) {
      if (ev.type === "content_block_delta" && ev.delta.type === "text_delta" && ev.delta.text)
        yield { type: "text", text: ev.delta.text };
      else if (ev.type === "content_block_start" && ev.content_block.type === "tool_use")
        calls.set(ev.index, { id: ev.content_block.id, name: ev.content_block.name, json: "" });
      else if (ev.type === "content_block_delta" && ev.delta.type === "input_json_delta") {
        const c = calls.get(ev.index);
        if (c) c.json += ev.delta.partial_json;
      } else if (ev.type === "message_start") input = ev.message.usage?.input_tokens;
      else if (ev.type === "message_delta") {
        if (ev.delta.stop_reason === "max_tokens") finish = "length";
        output = ev.usage?.output_tokens ?? output;
      } else if (ev.type === "message_stop") finished = true;
    }
    if (!finished) throw unfinished("anthropic", "message_stop");
    const made = [...calls.values()].map((c) => ({
      id: c.id,
      name: c.name,
      args: argsOf("anthropic", c.name, c.json),
    }));
    yield ending(finish, usageOf(input, output), made);
  } catch (err) {
    throw providerError("anthropic", baseURL, err, req.signal, key);
  }
}

/** Ollama's chat; its client's stream is aborted when the request's signal is. */
async function* streamOllama(req: ChatRequest, env: NodeJS.ProcessEnv): AsyncGenerator<ChatPiece> {
  const host = ollamaHost(env);
  const startMs = req.timeouts?.startMs ?? OLLAMA_START_MS;
  const client = new Ollama({ host, fetch: chatFetch("ollama", req, "ndjson", startMs) });
  let it: AbortableAsyncIterator<ChatResponse> | null = null;
  const onAbort = () => it?.abort();
  req.signal.addEventListener("abort", onAbort, { once: true });
  try {
    req.signal.throwIfAborted();
    it = await client.chat({
      model: req.model,
      messages: [...(req.system ? [{ role: "system", content: req.system }] : []), ...ollamaMessages(req)],
      // Ollama has no tool_choice: "none" sends no tools; "required" and a named tool are left to the model.
      ...(req.tools?.length && req.toolChoice !== "none"
        ? {
            tools: req.tools.map((t) => ({
              type: "function",
              function: { name: t.name, description: t.description, parameters: t.parameters as OllamaParameters },
            })),
          }
        : {}),
      stream: true,
      options: {
        num_predict: req.maxTokens,
        ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
        ...(req.topP !== undefined ? { top_p: req.topP } : {}),
        ...(req.stop ? { stop: req.stop } : {}),
      },
    });
    let finish: FinishReason = "stop";
    let usage: ChatEndMetadata["usage"];
    // Ollama sends each call whole, with its arguments as an object and no id: one is made up, per reply.
    const calls: ToolCall[] = [];
    for await (const part of it as AbortableAsyncIterator<ChatResponse>) {
      if (part.message?.content) yield { type: "text", text: part.message.content };
      for (const c of part.message?.tool_calls ?? [])
        calls.push({ id: `call_${calls.length}`, name: c.function.name, args: ollamaArgs(c.function) });
      if (part.done) {
        if (part.done_reason === "length") finish = "length";
        usage = usageOf(part.prompt_eval_count, part.eval_count);
      }
    }
    yield ending(finish, usage, calls);
  } catch (err) {
    const e = err as { status_code?: number; error?: unknown; message?: string };
    if (req.signal.aborted) throw req.signal.reason;
    if (typeof e.status_code === "number") {
      throw failure(`ollama refused the request (HTTP ${e.status_code}): ${textOf(e.error ?? e.message ?? "")}`, host);
    }
    // The client's own words for a stream that ended before its `done` part.
    if (/did not receive done/i.test(e.message ?? "")) throw failure(unfinished("ollama", "done").message, host);
    throw providerError("ollama", host, err, req.signal);
  } finally {
    req.signal.removeEventListener("abort", onAbort);
  }
}

type OllamaParameters = NonNullable<OllamaTool["function"]["parameters"]>;

/** A call's arguments as Ollama sent them: an object, or (from some models' templates) JSON text of one. */
function ollamaArgs(f: { name: string; arguments?: unknown }): Record<string, unknown> {
  const v = f.arguments ?? {};
  if (typeof v === "string") return argsOf("ollama", f.name, v);
  return argsOf("ollama", f.name, JSON.stringify(v));
}

/** The conversation as Ollama's messages: a tool's result names the tool (`tool_name`), as Ollama matches by name. */
function ollamaMessages(req: ChatRequest): OllamaMessage[] {
  refuseAudio("Ollama", req);
  return req.messages.map((m) => {
    if (m.role === "tool") return { role: "tool", content: m.content, ...(m.name ? { tool_name: m.name } : {}) };
    if (m.role === "user" && m.images?.length)
      return { role: "user", content: m.content, images: m.images.map((i) => base64(i.data)) };
    if (m.role === "user" || !m.tool_calls?.length) return { role: m.role, content: m.content };
    return {
      role: "assistant",
      content: m.content,
      tool_calls: m.tool_calls.map((c) => ({ function: { name: c.name, arguments: c.args } })),
    };
  });
}

/** How long listing a provider's models may take before the agent goes on without the list. */
const LIST_TIMEOUT_MS = 10_000;

function listFailed(provider: string, endpoint: string, err: unknown, signal: AbortSignal, key?: string): unknown {
  if (signal.aborted) {
    const said = `${provider} at ${redactUrl(endpoint)} did not list its models within ${LIST_TIMEOUT_MS / 1000} s`;
    return failure(said, endpoint, key);
  }
  return providerError(provider, endpoint, err, signal, key);
}

/**
 * The models a provider offers this agent's key (OpenAI's and Anthropic's `GET /v1/models`, Ollama's `/api/tags`:
 * what is pulled on this host), at most `MAX_MODELS_PER_PROVIDER`. Throws the provider's error, named as for a
 * chat; the caller decides what a provider that does not answer means.
 */
export async function listModels(provider: ProviderName, env: NodeJS.ProcessEnv = process.env): Promise<AgentModel[]> {
  const signal = AbortSignal.timeout(LIST_TIMEOUT_MS);
  const ids: string[] = [];
  switch (provider) {
    case "openai": {
      const { client, baseURL, key } = openaiClient(env, 0, LIST_TIMEOUT_MS);
      try {
        for await (const m of client.models.list({ signal })) {
          ids.push(m.id);
          if (ids.length >= MAX_MODELS_PER_PROVIDER) break;
        }
      } catch (err) {
        throw listFailed("openai", baseURL, err, signal, key);
      }
      break;
    }
    case "anthropic": {
      const { client, baseURL, key } = anthropicClient(env, 0, LIST_TIMEOUT_MS);
      try {
        for await (const m of client.models.list({ limit: 100 }, { signal })) {
          ids.push(m.id);
          if (ids.length >= MAX_MODELS_PER_PROVIDER) break;
        }
      } catch (err) {
        throw listFailed("anthropic", baseURL, err, signal, key);
      }
      break;
    }
    case "ollama": {
      const host = ollamaHost(env);
      const client = new Ollama({ host, fetch: (input, init) => fetch(input, { ...init, signal }) });
      try {
        for (const m of (await client.list()).models.slice(0, MAX_MODELS_PER_PROVIDER)) ids.push(m.name);
      } catch (err) {
        const e = err as { status_code?: number; error?: unknown };
        if (typeof e.status_code === "number") {
          throw failure(`ollama refused the request (HTTP ${e.status_code}): ${textOf(e.error ?? "")}`, host);
        }
        throw listFailed("ollama", host, err, signal);
      }
      break;
    }
    default:
      assertNever(provider, "provider");
  }
  return ids.map((id) => ({ provider, id }));
}
