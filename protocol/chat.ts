/**
 * Language models as the fleet offers them: which providers there
 * are, how a graph names a model, what an agent says it offers, and the OpenAI chat-completions request the
 * gateway's `/v1/chat/completions` takes, checked once at the edge.
 *
 * A provider is also a pool (`openai`, `anthropic`, `ollama`): an agent with the provider's key or endpoint
 * consumes it, so a job that calls a provider's model reaches an agent that holds the key (keys never travel).
 */
import { ErrorCode, ProtocolError } from "./errors.js";

export const LLM_PROVIDERS = ["openai", "anthropic", "ollama"] as const;
export type LlmProvider = (typeof LLM_PROVIDERS)[number];
/** The image-model provider whose models are checkpoints of the ComfyUI beside an agent; its jobs go to that pool. */
export const COMFY_PROVIDER = "comfyui";

/** The agent setting (environment variable) that gives it a provider: its key, or Ollama's endpoint. */
export const PROVIDER_SETTING: Readonly<Record<LlmProvider, string>> = {
  openai: "OPENAI_API_KEY",
  anthropic: "ANTHROPIC_API_KEY",
  ollama: "OLLAMA_HOST",
};

export function isLlmProvider(s: unknown): s is LlmProvider {
  return typeof s === "string" && (LLM_PROVIDERS as readonly string[]).includes(s);
}

/** A model as a graph names it: NodeTool's LanguageModel `{type: "language_model", provider, id}`. */
export interface LanguageModelRef {
  provider: string;
  id: string;
}

/**
 * The provider and id of a model value: NodeTool's `{provider, id}` object or the short `"<provider>:<id>"`
 * (Ollama ids have colons of their own, `llama3.2:1b`: only the first one splits). Null when it names none.
 */
export function languageModelOf(v: unknown): LanguageModelRef | null {
  if (typeof v === "string") {
    const colon = v.indexOf(":");
    return colon > 0 ? { provider: v.slice(0, colon), id: v.slice(colon + 1) } : null;
  }
  if (v !== null && typeof v === "object") {
    const { provider, id } = v as { provider?: unknown; id?: unknown };
    if (typeof provider === "string") return { provider, id: typeof id === "string" ? id : "" };
  }
  return null;
}

/** A model an agent offers (`capabilities.models`), as its provider listed it. */
export interface AgentModel {
  provider: LlmProvider;
  id: string;
}

/** Longest model list an agent publishes per provider (its registration must stay one small KV entry). */
export const MAX_MODELS_PER_PROVIDER = 500;

// ---- OpenAI chat completions (POST /v1/chat/completions) ------------------------------------------------------

/** A tool call a model asked for: its id (the provider's; made up for Ollama, which gives none), name and arguments. */
export interface ToolCallRef {
  id: string;
  name: string;
  args: Record<string, unknown>;
}

/** A function a model may call: OpenAI's `{type: "function", function: {name, description, parameters}}`, flat. */
export interface ToolSpecRef {
  name: string;
  description: string;
  /** JSON Schema of the arguments (an object schema). */
  parameters: Record<string, unknown>;
}

/** Whether and which tool the model must call: OpenAI's `tool_choice`. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

/**
 * One turn of a conversation: a user's text, the model's (with the tool calls it asked for), or a tool's result
 * for one of those calls.
 */
export type ChatTurn =
  | { role: "user"; content: string }
  | { role: "assistant"; content: string; tool_calls?: ToolCallRef[] }
  | { role: "tool"; tool_call_id: string; name?: string; content: string };

/** A chat-completions request as the fleet runs it. */
export interface ChatCompletionRequest {
  /** The model as the client named it: a plain id, or `"<provider>/<id>"` to pick the provider. */
  model: string;
  /** System and developer messages, joined (each provider takes one system prompt). */
  system: string;
  messages: ChatTurn[];
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the token counts. */
  includeUsage: boolean;
  maxTokens: number | null;
  temperature: number | null;
  /** `top_p`: nucleus sampling (null: the provider's default). */
  topP: number | null;
  /** `stop`: up to four sequences that end the reply (OpenAI's limit). */
  stop: string[];
  /** `tools`: functions the model may call (the client runs them and sends their results back). */
  tools: ToolSpecRef[];
  toolChoice: ToolChoice | null;
}

/** What a request leaves out of the fleet's answer, refused rather than ignored: the client relies on it. */
const UNSUPPORTED = [
  "functions",
  "function_call",
  "response_format",
  "logprobs",
  "top_logprobs",
  "audio",
  "modalities",
  "prediction",
];

/** A request that is not a chat completion this fleet runs; `param` names the parameter (OpenAI's `param`). */
export class ChatRequestError extends ProtocolError {
  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super(ErrorCode.PROTO_ERR_SHAPE, message);
    this.name = "ChatRequestError";
  }
}

const bad = (message: string, param: string | null = null) => new ChatRequestError(message, param);

/** Text of a message's content: a string, or OpenAI's parts of which only `text` ones are taken. */
function textOf(content: unknown, where: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content))
    throw bad(`${where}.content must be a string or a list of content parts`, `${where}.content`);
  return content
    .map((p, i) => {
      const part = p as { type?: unknown; text?: unknown };
      if (part?.type === "text" && typeof part.text === "string") return part.text;
      throw bad(
        `${where}.content[${i}] is a "${String(part?.type)}" part: this fleet's models take text parts only`,
        `${where}.content`,
      );
    })
    .join("");
}

/**
 * Checks a request body against OpenAI's chat-completions shape; throws `ChatRequestError`.
 */
export function parseChatCompletion(body: Record<string, unknown>): ChatCompletionRequest {
  const model = body.model;
  if (typeof model !== "string" || model.trim() === "")
    throw bad(`"model" is required: one of GET /v1/models`, "model");
  for (const k of UNSUPPORTED) {
    if (body[k] !== undefined && body[k] !== null)
      throw bad(`"${k}" is not supported by this fleet's chat completions`, k);
  }
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw bad(`"n" must be 1: one choice per request`, "n");
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean")
    throw bad(`"stream" must be a boolean`, "stream");
  const opts = body.stream_options as { include_usage?: unknown } | null | undefined;
  if (
    opts !== undefined &&
    opts !== null &&
    (typeof opts !== "object" || (opts.include_usage !== undefined && typeof opts.include_usage !== "boolean"))
  ) {
    throw bad(`"stream_options" must be {"include_usage": boolean}`, "stream_options");
  }
  const limit = body.max_completion_tokens ?? body.max_tokens;
  if (limit !== undefined && limit !== null && !(Number.isInteger(limit) && (limit as number) >= 1)) {
    throw bad(
      `"max_completion_tokens" (or "max_tokens") must be a positive integer`,
      body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens",
    );
  }
  const temperature = body.temperature;
  if (
    temperature !== undefined &&
    temperature !== null &&
    !(typeof temperature === "number" && temperature >= 0 && temperature <= 2)
  ) {
    throw bad(`"temperature" must be a number in [0, 2]`, "temperature");
  }
  const topP = body.top_p;
  if (topP !== undefined && topP !== null && !(typeof topP === "number" && topP > 0 && topP <= 1))
    throw bad(`"top_p" must be a number in (0, 1]`, "top_p");
  const rawStop = body.stop ?? [];
  const stop = typeof rawStop === "string" ? [rawStop] : rawStop;
  if (!Array.isArray(stop) || stop.length > 4 || !stop.every((x) => typeof x === "string" && x !== ""))
    throw bad(`"stop" must be a string or a list of up to 4 non-empty strings`, "stop");
  if (!Array.isArray(body.messages) || body.messages.length === 0)
    throw bad(`"messages" must be a non-empty list`, "messages");
  const system: string[] = [];
  const messages: ChatTurn[] = [];
  body.messages.forEach((m, i) => {
    const where = `messages[${i}]`;
    const msg = m as { role?: unknown; content?: unknown };
    if (msg === null || typeof msg !== "object") throw bad(`${where} must be an object`, "messages");
    if (msg.role === "system" || msg.role === "developer") system.push(textOf(msg.content, where));
    else messages.push(turnOf(msg as Record<string, unknown>, where));
  });
  if (!messages.some((m) => m.role === "user")) throw bad(`"messages" has no user message`, "messages");
  return {
    model,
    system: system.join("\n\n"),
    messages,
    stream: body.stream === true,
    includeUsage: opts?.include_usage === true,
    maxTokens: (limit as number | undefined) ?? null,
    temperature: (temperature as number | undefined) ?? null,
    topP: (topP as number | undefined) ?? null,
    stop: stop as string[],
    tools: toolsOf(body.tools),
    toolChoice: toolChoiceOf(body.tool_choice),
  };
}

/** A user, assistant or tool message (system ones are taken before). */
function turnOf(msg: Record<string, unknown>, where: string): ChatTurn {
  switch (msg.role) {
    case "user":
      return { role: "user", content: textOf(msg.content ?? "", where) };
    case "assistant": {
      const content = textOf(msg.content ?? "", where);
      if (msg.tool_calls === undefined || msg.tool_calls === null) return { role: "assistant", content };
      if (!Array.isArray(msg.tool_calls)) throw bad(`${where}.tool_calls must be a list`, `${where}.tool_calls`);
      return {
        role: "assistant",
        content,
        tool_calls: msg.tool_calls.map((c, j) => callOf(c, `${where}.tool_calls[${j}]`)),
      };
    }
    case "tool":
      if (typeof msg.tool_call_id !== "string" || msg.tool_call_id === "")
        throw bad(`${where}.tool_call_id is required on a tool message`, `${where}.tool_call_id`);
      return { role: "tool", tool_call_id: msg.tool_call_id, content: textOf(msg.content ?? "", where) };
    default:
      throw bad(
        `${where}.role must be "system", "developer", "user", "assistant" or "tool", got ${JSON.stringify(msg.role)}`,
        `${where}.role`,
      );
  }
}

/** An assistant message's tool call: `{id, type: "function", function: {name, arguments}}`, arguments JSON text. */
function callOf(c: unknown, where: string): ToolCallRef {
  const call = c as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown } } | null;
  const fn = call?.function;
  if (typeof call?.id !== "string" || typeof fn?.name !== "string" || typeof fn.arguments !== "string")
    throw bad(`${where} must be {"id", "type": "function", "function": {"name", "arguments"}}`, where);
  let args: unknown;
  try {
    args = JSON.parse(fn.arguments || "{}");
  } catch {
    throw bad(`${where}.function.arguments is not JSON`, where);
  }
  if (args === null || typeof args !== "object" || Array.isArray(args))
    throw bad(`${where}.function.arguments must be a JSON object`, where);
  return { id: call.id, name: fn.name, args: args as Record<string, unknown> };
}

/** Longest tool list a request may give (OpenAI's own limit). */
const MAX_TOOLS = 128;
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** `tools`: OpenAI's `[{type: "function", function: {name, description?, parameters?}}]`. */
function toolsOf(v: unknown): ToolSpecRef[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.length > MAX_TOOLS)
    throw bad(`"tools" must be a list of up to ${MAX_TOOLS} tools`, "tools");
  return v.map((t, i) => {
    const tool = t as { type?: unknown; function?: { name?: unknown; description?: unknown; parameters?: unknown } };
    const fn = tool?.function;
    if (tool?.type !== "function" || typeof fn?.name !== "string" || !TOOL_NAME.test(fn.name))
      throw bad(`tools[${i}] must be {"type": "function", "function": {"name": [a-zA-Z0-9_-]{1,64}, ...}}`, "tools");
    const params = fn.parameters ?? { type: "object", properties: {} };
    if (params === null || typeof params !== "object" || Array.isArray(params))
      throw bad(`tools[${i}].function.parameters must be a JSON Schema object`, "tools");
    const description = typeof fn.description === "string" ? fn.description : "";
    return { name: fn.name, description, parameters: params as Record<string, unknown> };
  });
}

/** `tool_choice`: "auto", "none", "required" or `{type: "function", function: {name}}`. */
function toolChoiceOf(v: unknown): ToolChoice | null {
  if (v === undefined || v === null) return null;
  if (v === "auto" || v === "none" || v === "required") return v;
  const named = v as { type?: unknown; function?: { name?: unknown } };
  if (named?.type === "function" && typeof named.function?.name === "string") return { name: named.function.name };
  throw bad(
    `"tool_choice" must be "auto", "none", "required" or {"type": "function", "function": {"name"}}`,
    "tool_choice",
  );
}

/** How a reply ended, in OpenAI's words (`tool_calls`: it asks for tools to be run). */
export type FinishReason = "stop" | "length" | "tool_calls";

/** Token counts of one reply, as the provider reported them. */
export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/**
 * What the LLM nodes put in the `content_metadata` of their last (`done`) chunk: how the reply ended and what it
 * cost, where the provider said.
 */
export interface ChatEndMetadata {
  finish_reason: FinishReason;
  usage?: ChatUsage;
  /** The tools the model asked to run (finish reason `tool_calls`). */
  tool_calls?: ToolCallRef[];
}

// ---- threads (REST /api/threads, /api/messages; WS chat_message) -----------------------------------------------

/** A chat thread (NodeTool's Thread), in KV `nw_threads`. */
export interface ChatThread {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
}

/** One message of a thread (NodeTool's Message fields where it has them). */
export interface ThreadMessage {
  id: string;
  thread_id: string;
  role: "user" | "assistant";
  content: string;
  created_at: string;
  /** The model that wrote an assistant message, or the one a user message asked for. */
  provider?: string;
  model?: string;
  /** The job that answers (user message) or answered (assistant message). */
  job_id?: string;
  finish_reason?: FinishReason;
  usage?: ChatUsage;
  /** Why no answer came (the job failed, was cancelled or timed out). */
  error?: { code: string; message: string };
}

/** Longest thread title, and most messages a turn sends its model (the most recent ones). */
export const THREAD_LIMITS = { titleChars: 200, contentChars: 1_000_000, historyMessages: 200 } as const;

/** A `chat_message` as the gateway runs it. */
export interface ChatTurnRequest {
  /** Absent: a new thread is made for the turn. */
  threadId: string | null;
  content: string;
  /** As for `/v1`: a plain id or `<provider>/<id>`. */
  model: string;
  system: string;
  maxTokens: number | null;
  temperature: number | null;
}

/**
 * Checks `chat_message` data: NodeTool's `{thread_id, content, model, provider}` (`model` may also be a
 * LanguageModel object), plus `system`, `max_tokens`, `temperature`. Throws `ChatRequestError`.
 */
export function parseChatTurn(data: Record<string, unknown>): ChatTurnRequest {
  const threadId = data.thread_id;
  if (threadId !== undefined && threadId !== null && (typeof threadId !== "string" || threadId === ""))
    throw bad(`"thread_id" must be a thread's id`, "thread_id");
  if (data.role !== undefined && data.role !== "user")
    throw bad(`"role" must be "user": the model answers as "assistant"`, "role");
  const content = textOf(data.content, "chat_message");
  if (content.trim() === "") throw bad(`"content" is empty`, "content");
  if (content.length > THREAD_LIMITS.contentChars)
    throw bad(`"content" is longer than ${THREAD_LIMITS.contentChars} characters`, "content");
  let model: string;
  const ref = typeof data.model === "object" ? languageModelOf(data.model) : null;
  if (ref) model = `${ref.provider}/${ref.id}`;
  else if (typeof data.model === "string" && data.model.trim() !== "")
    model = typeof data.provider === "string" && data.provider !== "" ? `${data.provider}/${data.model}` : data.model;
  else throw bad(`"model" is required: one of GET /v1/models, or NodeTool's {provider, id}`, "model");
  if (data.system !== undefined && typeof data.system !== "string") throw bad(`"system" must be a string`, "system");
  const limit = data.max_tokens;
  if (limit !== undefined && limit !== null && !(Number.isInteger(limit) && (limit as number) >= 1))
    throw bad(`"max_tokens" must be a positive integer`, "max_tokens");
  const temperature = data.temperature;
  if (
    temperature !== undefined &&
    temperature !== null &&
    !(typeof temperature === "number" && temperature >= 0 && temperature <= 2)
  )
    throw bad(`"temperature" must be a number in [0, 2]`, "temperature");
  return {
    threadId: (threadId as string | undefined) ?? null,
    content,
    model,
    system: (data.system as string | undefined) ?? "",
    maxTokens: (limit as number | undefined) ?? null,
    temperature: (temperature as number | undefined) ?? null,
  };
}
