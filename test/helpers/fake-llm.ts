/**
 * One local server speaking three providers' streaming chat APIs as documented, for the LLM nodes' tests (the
 * official SDKs talk to it over a real socket): OpenAI `POST /v1/chat/completions` (`stream: true`: SSE
 * `chat.completion.chunk`s, then `data: [DONE]`; Bearer key), Anthropic `POST /v1/messages` (SSE `message_start`,
 * `content_block_start`, `content_block_delta` text deltas, `content_block_stop`, `message_delta`, `message_stop`;
 * `x-api-key` or Bearer), Ollama `POST /api/chat` (NDJSON parts, the last with `done: true`). Each replies `echo: <last
 * user
 * message>` word by word, `delayMs` apart; model `missing` is unknown (404), a wrong key gets each API's 401.
 *
 * Tool calls, in each API's documented streaming form: a request that offers tools and holds no tool result yet is
 * answered by a call of the first tool (or `toolName`) with `toolArgs` (OpenAI: `delta.tool_calls` pieces, finish
 * `tool_calls`; Anthropic: a `tool_use` block with `input_json_delta` pieces, stop `tool_use`; Ollama: one message
 * with `tool_calls`). Once the conversation holds a tool result the reply is `tool said: <result>`; `reply`, when
 * set, replaces any text reply (a structured answer, say).
 *
 * Misbehaving providers, by model name (see `HOSTILE_MODELS`), each in the API's own framing: `stalls` (headers and
 * a first piece, then silence), `silent` (no answer at all), `rate-limited` (429 with `Retry-After: 99999`),
 * `unfinished` (a piece, then the body ends without the API's end), `html` (200 with a web page), `json-reply` (the
 * API's non-streaming JSON reply), `big-line` (one 5 MiB piece on one line), `bad-json` (a piece that is not JSON
 * between good ones).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const FAKE_KEY = "sk-test-nodeway";

/** An agent's environment pointing OpenAI, Anthropic and Ollama at `fake`, with its key. */
export const providerEnv = (fake: { url: string }) => ({
  OPENAI_API_KEY: FAKE_KEY,
  OPENAI_BASE_URL: `${fake.url}/v1`,
  ANTHROPIC_API_KEY: FAKE_KEY,
  ANTHROPIC_BASE_URL: fake.url,
  OLLAMA_HOST: fake.url,
});

export interface FakeModels {
  openai: string[];
  anthropic: string[];
  ollama: string[];
}
export const FAKE_MODELS: FakeModels = {
  openai: ["gpt-4o-mini", "gpt-4.1"],
  anthropic: ["claude-sonnet-4-5"],
  ollama: ["llama3.2:1b", "qwen3:8b"],
};

/** The models that make the fake misbehave, as their names say. */
export const HOSTILE_MODELS = [
  "stalls",
  "silent",
  "rate-limited",
  "unfinished",
  "html",
  "json-reply",
  "big-line",
  "bad-json",
] as const;
type Api = "openai" | "anthropic" | "ollama";

export class FakeLlm {
  readonly requests: { path: string; body: Record<string, unknown>; headers: IncomingMessage["headers"] }[] = [];
  /** Requests whose client went away before the reply ended (a cancelled stream). */
  abandoned = 0;
  private server!: Server;
  port = 0;

  /** The arguments of the tool calls it makes, and which tool (default: the first offered). */
  toolArgs: Record<string, unknown> = {};
  toolName: string | null = null;
  /** The text of every reply that is not a tool call, instead of the echo. */
  reply: string | null = null;
  /** The tool call's arguments as this text instead of `toolArgs` (for Ollama, a string where it sends an object). */
  toolArgsText: string | null = null;
  /**
   * Answer as a model following the request's format would (a stand-in for the gallery run): `<LIST_ITEM>` items
   * when the system prompt asks for them, a markdown table of the asked columns, a JSON object matching a JSON
   * Schema the system prompt or `response_format` gives, and tool arguments that fill the tool's schema.
   */
  followFormats = false;

  constructor(
    readonly delayMs = 5,
    public models: FakeModels = FAKE_MODELS,
  ) {}

  static async start(delayMs = 5, models: FakeModels = FAKE_MODELS): Promise<FakeLlm> {
    const f = new FakeLlm(delayMs, models);
    f.server = createServer((req, res) => void f.handle(req, res));
    await new Promise<void>((r) => f.server.listen(0, "127.0.0.1", r));
    f.port = (f.server.address() as AddressInfo).port;
    return f;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString() || "{}") as Record<string, unknown>;
    const path = (req.url ?? "/").split("?")[0]!;
    this.requests.push({ path, body, headers: req.headers });
    const json = (status: number, v: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    const messages = (body.messages ?? []) as { role: string; content: unknown }[];
    // The last user turn that is not a tool result: its text, and the images it carries, told back in the reply.
    const lastUser = [...messages].reverse().find((m) => m.role === "user" && textOf(m) !== null);
    const seenImages = lastUser ? imagesOf(lastUser) : [];
    const badAudio = seenImages.find(
      (i) => i.mime.startsWith("audio/") && !["audio/wav", "audio/mp3"].includes(i.mime),
    );
    if (badAudio)
      return json(400, {
        error: {
          message: `Invalid value: '${badAudio.mime.slice(6)}'. Supported values are: 'wav' and 'mp3'.`,
          type: "invalid_request_error",
          param: "messages[0].content[1].input_audio.format",
          code: "invalid_value",
        },
      });
    const last =
      (lastUser ? textOf(lastUser) : "") +
      seenImages.map((i) => ` [${i.mime} ${Buffer.from(i.base64, "base64").byteLength} bytes]`).join("");
    const toolResult = lastToolResult(messages);
    const call = toolResult === null ? this.toolCallFor(body) : null;
    const text =
      this.reply ??
      (this.followFormats ? formattedReply(body, messages) : null) ??
      (toolResult !== null ? `tool said: ${toolResult}` : `echo: ${String(last)}`);
    const all = call ? [] : text.split(/(?<= )/);
    const limit = Number(
      (body.options as { num_predict?: number } | undefined)?.num_predict ?? body.max_tokens ?? Infinity,
    );
    // Stop sequences (OpenAI's `stop`, Anthropic's `stop_sequences`, Ollama's `options.stop`) end the reply before
    // the word that holds one; the limit cuts it with the finish reason `length`.
    const stops = (body.stop ??
      body.stop_sequences ??
      (body.options as { stop?: string[] } | undefined)?.stop ??
      []) as string[];
    const stopAt = all.findIndex((w) => stops.some((x) => w.includes(x)));
    const natural = stopAt >= 0 ? all.slice(0, stopAt) : all;
    const words = natural.slice(0, limit);
    const truncated = words.length < natural.length;
    const promptTokens =
      messages.reduce((n, m) => n + String(m.content).split(/\s+/).filter(Boolean).length, 0) +
      (typeof body.system === "string" ? body.system.split(/\s+/).filter(Boolean).length : 0);
    let gone = false;
    res.on("close", () => {
      if (!res.writableFinished) {
        gone = true;
        this.abandoned++;
      }
    });
    const paced = async (each: (w: string, i: number) => void) => {
      for (let i = 0; i < words.length && !gone; i++) {
        await new Promise((r) => setTimeout(r, this.delayMs));
        if (body.model === "breaks" && i === 3) {
          res.destroy();
          gone = true;
        }
        if (!gone) each(words[i]!, i);
      }
    };
    const openaiKey = req.headers.authorization === `Bearer ${FAKE_KEY}`;
    const anthropicKey = req.headers["x-api-key"] === FAKE_KEY || openaiKey;
    if (req.method === "GET" && path === "/v1/models") {
      if (req.headers["anthropic-version"]) {
        if (!anthropicKey)
          return json(401, { type: "error", error: { type: "authentication_error", message: "invalid x-api-key" } });
        const data = this.models.anthropic.map((id) => ({
          type: "model",
          id,
          display_name: id,
          created_at: "2025-09-29T00:00:00Z",
        }));
        return json(200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null });
      }
      if (!openaiKey)
        return json(401, {
          error: {
            message: "Incorrect API key provided: sk-wr***ng.",
            type: "invalid_request_error",
            param: null,
            code: "invalid_api_key",
          },
        });
      return json(200, {
        object: "list",
        data: this.models.openai.map((id) => ({ id, object: "model", created: 1_715_367_049, owned_by: "system" })),
      });
    }
    if (req.method === "GET" && path === "/api/tags") {
      return json(200, {
        models: this.models.ollama.map((name) => ({
          name,
          model: name,
          modified_at: "2025-01-01T00:00:00Z",
          size: 1_000,
          digest: "0".repeat(64),
          details: { format: "gguf", family: "llama" },
        })),
      });
    }
    if (path === "/v1/chat/completions") {
      if (!openaiKey)
        return json(401, {
          error: {
            message: "Incorrect API key provided: sk-wr***ng.",
            type: "invalid_request_error",
            param: null,
            code: "invalid_api_key",
          },
        });
      if (body.model === "missing")
        return json(404, {
          error: {
            message: "The model `missing` does not exist or you do not have access to it.",
            type: "invalid_request_error",
            param: null,
            code: "model_not_found",
          },
        });
      if (await misbehave("openai", body, res)) return;
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      const base = {
        id: "chatcmpl-fake",
        object: "chat.completion.chunk",
        created: Math.floor(Date.now() / 1000),
        model: body.model,
      };
      res.write(
        `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] })}\n\n`,
      );
      await paced((w) =>
        res.write(
          `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`,
        ),
      );
      if (gone) return;
      if (call) {
        const json = this.toolArgsText ?? JSON.stringify(call.args);
        const half = Math.floor(json.length / 2);
        const delta = (d: Record<string, unknown>) =>
          res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: d, finish_reason: null }] })}\n\n`);
        delta({
          tool_calls: [{ index: 0, id: "call_fake1", type: "function", function: { name: call.name, arguments: "" } }],
        });
        delta({ tool_calls: [{ index: 0, function: { arguments: json.slice(0, half) } }] });
        delta({ tool_calls: [{ index: 0, function: { arguments: json.slice(half) } }] });
      }
      const finish = call ? "tool_calls" : truncated ? "length" : "stop";
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: finish }] })}\n\n`);
      if ((body.stream_options as { include_usage?: boolean } | undefined)?.include_usage) {
        res.write(
          `data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: promptTokens, completion_tokens: words.length, total_tokens: promptTokens + words.length } })}\n\n`,
        );
      }
      res.end("data: [DONE]\n\n");
      return;
    }
    if (path === "/v1/messages") {
      // The API takes the key as x-api-key or (what this SDK sends) a Bearer token.
      if (!anthropicKey)
        return json(401, { type: "error", error: { type: "authentication_error", message: "invalid x-api-key" } });
      if (body.model === "missing")
        return json(404, { type: "error", error: { type: "not_found_error", message: "model: missing" } });
      if (await misbehave("anthropic", body, res)) return;
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      const ev = (type: string, data: Record<string, unknown>) =>
        res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
      ev("message_start", {
        message: {
          id: "msg_fake",
          type: "message",
          role: "assistant",
          model: body.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: promptTokens, output_tokens: 1 },
        },
      });
      ev("ping", {});
      if (call) {
        const json = this.toolArgsText ?? JSON.stringify(call.args);
        const half = Math.floor(json.length / 2);
        ev("content_block_start", {
          index: 0,
          content_block: { type: "tool_use", id: "toolu_fake1", name: call.name, input: {} },
        });
        for (const part of [json.slice(0, half), json.slice(half)])
          ev("content_block_delta", { index: 0, delta: { type: "input_json_delta", partial_json: part } });
      } else {
        ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
        await paced((w) => ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: w } }));
      }
      if (gone) return;
      ev("content_block_stop", { index: 0 });
      ev("message_delta", {
        delta: { stop_reason: call ? "tool_use" : truncated ? "max_tokens" : "end_turn", stop_sequence: null },
        usage: { output_tokens: words.length },
      });
      ev("message_stop", {});
      res.end();
      return;
    }
    if (path === "/api/chat") {
      if (body.model === "missing") return json(404, { error: `model "missing" not found, try pulling it first` });
      if (await misbehave("ollama", body, res)) return;
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      await paced((w) =>
        res.write(
          `${JSON.stringify({
            model: body.model,
            created_at: new Date().toISOString(),
            message: { role: "assistant", content: w },
            done: false,
          })}\n`,
        ),
      );
      if (gone) return;
      if (call) {
        const message = {
          role: "assistant",
          content: "",
          tool_calls: [{ function: { name: call.name, arguments: this.toolArgsText ?? call.args } }],
        };
        res.write(
          `${JSON.stringify({ model: body.model, created_at: new Date().toISOString(), message, done: false })}\n`,
        );
      }
      res.end(
        `${JSON.stringify({
          model: body.model,
          created_at: new Date().toISOString(),
          message: { role: "assistant", content: "" },
          done: true,
          done_reason: truncated ? "length" : "stop",
          total_duration: 1,
          prompt_eval_count: promptTokens,
          eval_count: words.length,
        })}\n`,
      );
      return;
    }
    json(404, { error: "not found" });
  }

  /** The call to make when a request offers tools (OpenAI's and Ollama's `{function: {name}}`, Anthropic's `{name}`). */
  private toolCallFor(body: Record<string, unknown>): { name: string; args: Record<string, unknown> } | null {
    const tools = (body.tools ?? []) as { name?: string; function?: { name?: string } }[];
    if (tools.length === 0 || body.tool_choice === "none") return null;
    const names = tools.map((t) => t.function?.name ?? t.name ?? "");
    const name = this.toolName ?? names[0]!;
    if (!this.followFormats || Object.keys(this.toolArgs).length > 0) return { name, args: this.toolArgs };
    const tool = tools.find((t) => (t.function?.name ?? t.name) === name) as
      | { input_schema?: unknown; function?: { parameters?: unknown } }
      | undefined;
    const args = sampleOf(tool?.function?.parameters ?? tool?.input_schema ?? { type: "object" });
    return { name, args: (args ?? {}) as Record<string, unknown> };
  }
}

/** One piece of text in `api`'s stream framing. */
function pieceOf(api: Api, model: unknown, text: string): string {
  if (api === "openai")
    return `data: ${JSON.stringify({ id: "chatcmpl-fake", object: "chat.completion.chunk", created: 0, model, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`;
  if (api === "anthropic")
    return `event: content_block_delta\ndata: ${JSON.stringify({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })}\n\n`;
  return `${JSON.stringify({ model, created_at: new Date().toISOString(), message: { role: "assistant", content: text }, done: false })}\n`;
}

/** What opens `api`'s stream (Anthropic's message and text block), and what ends it. */
function headOf(api: Api, model: unknown): string {
  if (api !== "anthropic") return "";
  const message = { id: "msg_fake", type: "message", role: "assistant", model, content: [], stop_reason: null };
  return [
    `event: message_start\ndata: ${JSON.stringify({ type: "message_start", message: { ...message, usage: { input_tokens: 1, output_tokens: 1 } } })}\n\n`,
    `event: content_block_start\ndata: ${JSON.stringify({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } })}\n\n`,
  ].join("");
}
function tailOf(api: Api, model: unknown): string {
  if (api === "openai")
    return `data: ${JSON.stringify({ id: "chatcmpl-fake", object: "chat.completion.chunk", created: 0, model, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\ndata: [DONE]\n\n`;
  if (api === "anthropic")
    return [
      ["content_block_stop", { index: 0 }],
      ["message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 2 } }],
      ["message_stop", {}],
    ]
      .map(([type, data]) => `event: ${String(type)}\ndata: ${JSON.stringify({ type, ...(data as object) })}\n\n`)
      .join("");
  return `${JSON.stringify({ model, created_at: new Date().toISOString(), message: { role: "assistant", content: "" }, done: true, done_reason: "stop", prompt_eval_count: 1, eval_count: 2 })}\n`;
}

/** Each API's error body for a rate limit (Ollama's in the OpenAI-style object a proxy in front of it sends). */
const rateLimited: Record<Api, unknown> = {
  openai: {
    error: { message: "Rate limit reached for requests", type: "requests", param: null, code: "rate_limit_exceeded" },
  },
  anthropic: {
    type: "error",
    error: { type: "rate_limit_error", message: "Number of requests has exceeded your rate limit" },
  },
  ollama: { error: { message: "too many requests, slow down", type: "rate_limit" } },
};

/** The non-streaming reply of each API, to a request that asked for a stream. */
function wholeReply(api: Api, model: unknown): unknown {
  if (api === "openai")
    return {
      id: "chatcmpl-fake",
      object: "chat.completion",
      created: 0,
      model,
      choices: [{ index: 0, message: { role: "assistant", content: "Not streamed" }, finish_reason: "stop" }],
    };
  if (api === "anthropic")
    return {
      id: "msg_fake",
      type: "message",
      role: "assistant",
      model,
      content: [{ type: "text", text: "Not streamed" }],
      stop_reason: "end_turn",
      usage: { input_tokens: 1, output_tokens: 2 },
    };
  return {
    model,
    created_at: new Date().toISOString(),
    message: { role: "assistant", content: "Not streamed" },
    done: true,
  };
}

/** Answers a request for one of `HOSTILE_MODELS` as its name says; false for any other model. */
async function misbehave(api: Api, body: Record<string, unknown>, res: ServerResponse): Promise<boolean> {
  const model = body.model;
  if (!(HOSTILE_MODELS as readonly unknown[]).includes(model)) return false;
  const closed = new Promise<void>((r) => res.once("close", () => r()));
  const stream = () =>
    res.writeHead(200, { "content-type": api === "ollama" ? "application/x-ndjson" : "text/event-stream" });
  switch (model as (typeof HOSTILE_MODELS)[number]) {
    case "stalls":
      stream();
      res.write(headOf(api, model) + pieceOf(api, model, "Hello"));
      await closed;
      break;
    case "silent":
      await closed;
      break;
    case "rate-limited":
      res.writeHead(429, { "content-type": "application/json", "retry-after": "99999" });
      res.end(JSON.stringify(rateLimited[api]));
      break;
    case "unfinished":
      stream();
      res.end(headOf(api, model) + pieceOf(api, model, "Hello, and then"));
      break;
    case "html":
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html><body><h1>Welcome to nginx!</h1></body></html>");
      break;
    case "json-reply":
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(wholeReply(api, model)));
      break;
    case "big-line":
      stream();
      res.write(headOf(api, model) + pieceOf(api, model, "x".repeat(5 * 1024 * 1024)));
      res.end(tailOf(api, model));
      break;
    case "bad-json":
      stream();
      res.write(headOf(api, model) + pieceOf(api, model, "Hello"));
      res.write(api === "ollama" ? "{not json\n" : "data: {not json\n\n");
      res.end(pieceOf(api, model, " world") + tailOf(api, model));
      break;
  }
  return true;
}

type Turn = { role: string; content: unknown; images?: unknown };
type Part = {
  type?: string;
  text?: string;
  image_url?: { url?: string };
  source?: { media_type?: string; data?: string };
  input_audio?: { data?: string; format?: string };
};

/** A user turn's text (a string, or the text parts of a list); null for a turn of tool results only. */
function textOf(m: Turn): string | null {
  if (typeof m.content === "string") return m.content;
  if (!Array.isArray(m.content)) return null;
  const parts = m.content as Part[];
  if (parts.every((p) => p.type === "tool_result")) return null;
  return parts
    .filter((p) => p.type === "text")
    .map((p) => p.text ?? "")
    .join("");
}

/**
 * The images (and audio) of a user turn in each API's form: OpenAI's `image_url` data URIs and `input_audio` parts,
 * Anthropic's base64 `image` blocks, Ollama's `images`.
 */
function imagesOf(m: Turn): { mime: string; base64: string }[] {
  if (Array.isArray(m.images)) return (m.images as string[]).map((b) => ({ mime: "image/*", base64: b }));
  if (!Array.isArray(m.content)) return [];
  return (m.content as Part[]).flatMap((p) => {
    if (p.type === "image_url") {
      const hit = /^data:([^;]+);base64,(.*)$/.exec(p.image_url?.url ?? "");
      return hit ? [{ mime: hit[1]!, base64: hit[2]! }] : [];
    }
    if (p.type === "image" && p.source?.data) return [{ mime: p.source.media_type ?? "", base64: p.source.data }];
    // OpenAI's audio input: base64 data and its format, which the API takes as "wav" or "mp3" only.
    if (p.type === "input_audio")
      return [{ mime: `audio/${p.input_audio?.format ?? "?"}`, base64: p.input_audio?.data ?? "" }];
    return [];
  });
}

/** The request's system prompt in any of the three APIs (OpenAI's and Ollama's system message, Anthropic's `system`). */
function systemOf(body: Record<string, unknown>, messages: { role: string; content: unknown }[]): string {
  const sys = body.system;
  if (typeof sys === "string") return sys;
  if (Array.isArray(sys)) return sys.map((b: { text?: string }) => b.text ?? "").join("\n");
  return messages
    .filter((m) => m.role === "system" || m.role === "developer")
    .map((m) => String(m.content))
    .join("\n");
}

/** What a model that follows the asked format answers, or null when nothing asks for one. */
function formattedReply(body: Record<string, unknown>, messages: { role: string; content: unknown }[]): string | null {
  const system = systemOf(body, messages);
  if (system.includes("<LIST_ITEM>"))
    return "<LIST_ITEM>A first idea</LIST_ITEM>\n<LIST_ITEM>A second idea</LIST_ITEM>\n<LIST_ITEM>A third idea</LIST_ITEM>";
  const columns = [...system.matchAll(/^- (\S+) \((\w+)\)$/gm)].map((m) => ({ name: m[1]!, type: m[2]! }));
  if (/markdown table/i.test(system) && columns.length > 0) {
    const cell = (type: string, row: number) => (/int|float|number/.test(type) ? String(row) : `value ${row}`);
    const rows = [1, 2].map((r) => `| ${columns.map((c) => cell(c.type, r)).join(" | ")} |`);
    return [`| ${columns.map((c) => c.name).join(" | ")} |`, `|${columns.map(() => "---").join("|")}|`, ...rows].join(
      "\n",
    );
  }
  const format = body.response_format as { json_schema?: { schema?: unknown } } | undefined;
  const schemaText =
    /<JSON_SCHEMA>\s*(\{[\s\S]*\})\s*<\/JSON_SCHEMA>/.exec(system)?.[1] ??
    /JSON Schema:\s*(\{[\s\S]*\})\s*$/.exec(system)?.[1];
  const schema = format?.json_schema?.schema ?? (schemaText ? JSON.parse(schemaText) : undefined);
  if (schema !== undefined) return JSON.stringify(sampleOf(schema));
  if (format && (format as { type?: string }).type === "json_object") return JSON.stringify({ answer: "ok" });
  return null;
}

/** A value that fits a JSON Schema: every property filled, enums their first value, one item per array. */
function sampleOf(schema: unknown, depth = 0): unknown {
  const s = (schema ?? {}) as {
    type?: string | string[];
    properties?: Record<string, unknown>;
    items?: unknown;
    enum?: unknown[];
    anyOf?: unknown[];
  };
  if (s.enum?.length) return s.enum[0];
  if (s.anyOf?.length) return sampleOf(s.anyOf[0], depth);
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;
  switch (type) {
    case "string":
      return "sample text";
    case "integer":
    case "number":
      return 1;
    case "boolean":
      return true;
    case "array":
      return depth > 4 ? [] : [sampleOf(s.items, depth + 1)];
    case "object":
    case undefined:
      return Object.fromEntries(Object.entries(s.properties ?? {}).map(([k, v]) => [k, sampleOf(v, depth + 1)]));
    default:
      return null;
  }
}

/** The content of the conversation's last tool result (OpenAI's and Ollama's `tool` role, Anthropic's block). */
function lastToolResult(messages: { role: string; content: unknown }[]): string | null {
  for (const m of [...messages].reverse()) {
    if (m.role === "tool") return String(m.content);
    if (m.role === "user" && Array.isArray(m.content)) {
      const block = [...(m.content as { type?: string; content?: unknown }[])]
        .reverse()
        .find((b) => b.type === "tool_result");
      if (block) return typeof block.content === "string" ? block.content : JSON.stringify(block.content);
    }
    if (m.role === "user") return null;
  }
  return null;
}
