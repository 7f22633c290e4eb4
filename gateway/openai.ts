/**
 * OpenAI-compatible chat: `POST /v1/chat/completions`, streamed as OpenAI's SSE chunks or
 * answered whole, and `GET /v1/models`, served by the fleet's agents that offer the model, so any OpenAI client
 * can use it. A completion is a job like any other (one LLM node; listed under workflow `chat-completions`,
 * durable, cancellable): it goes to the pool of the model's provider, which only agents holding that provider's
 * key consume, and the client leaving cancels it.
 *
 * Tools are the client's: the model's calls come back as OpenAI's `tool_calls` (finish reason `tool_calls`), the
 * client runs them and sends their results in its next request's `tool` messages.
 *
 * Errors are OpenAI's shape, `{error: {message, type, param, code}}`, with our stable code in `nodeway_code`; a
 * model no live agent offers is OpenAI's 404 `model_not_found`. A job that fails before its first token (the
 * provider refused it, say) is an HTTP error; after it, the stream ends with an `{"error": …}` chunk and no
 * `[DONE]`, which OpenAI's SDKs raise.
 */
import { ChatRequestError, parseChatCompletion, type ChatEndMetadata } from "../protocol/index.js";
import { logInternal, toWireError } from "./errors.js";
import type { EventHub } from "./event-hub.js";
import type { Reply } from "./http.js";
import type { JobManager } from "./jobs.js";
import { replyTextOf, runChat, type ModelDirectory } from "./models.js";

/** The workflow id completions are listed under (`GET /api/jobs?workflow_id=chat-completions`). */
export const CHAT_WORKFLOW_ID = "chat-completions";

interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
}

/** OpenAI's error `type` for an HTTP status. */
function errorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 429) return "rate_limit_error";
  // Any other refusal of the request itself (400, 404, 409, 413, 415, 421, …) is the client's to fix.
  if (status >= 400 && status < 500) return "invalid_request_error";
  return "server_error";
}

/** A job's terminal failure as an HTTP status: the provider (or the node) failed → 502, time ran out → 504. */
function failureStatus(status: string): number {
  if (status === "timed_out") return 504;
  if (status === "cancelled") return 503;
  return 502;
}

/** The model's tool calls in OpenAI's shape: `{id, type: "function", function: {name, arguments}}`, arguments JSON. */
function wireToolCalls(calls: ChatEndMetadata["tool_calls"]) {
  return (calls ?? []).map((c) => ({
    id: c.id,
    type: "function" as const,
    function: { name: c.name, arguments: JSON.stringify(c.args) },
  }));
}

export class OpenAiApi {
  constructor(
    private readonly jobs: JobManager,
    private readonly models: ModelDirectory,
    private readonly hub: EventHub,
    private readonly readJson: (reply: Reply) => Promise<Record<string, unknown>>,
    private readonly maxBacklogBytes: number,
    private readonly onEventOut: () => void,
  ) {}

  /** Answers `err` in OpenAI's shape. */
  fail(reply: Reply, err: unknown): void {
    if (err instanceof ChatRequestError) {
      reply.json(400, {
        error: {
          message: err.message,
          type: "invalid_request_error",
          param: err.param,
          code: null,
          nodeway_code: err.code,
        },
      });
      return;
    }
    const { status, body } = toWireError(err);
    if (status === 500) logInternal(err, "internal error");
    const code = (body.openai_code as string | undefined) ?? body.code;
    reply.json(status, {
      error: {
        message: body.message,
        type: errorType(status),
        param: (body.param as string | undefined) ?? null,
        code,
        nodeway_code: body.code,
      },
    });
  }

  async listModels(reply: Reply): Promise<void> {
    const { listed } = this.models.offers(await this.jobs.liveAgents());
    reply.json(200, {
      object: "list",
      data: listed.map(
        ({ name, target }): ModelCard => ({
          id: name,
          object: "model",
          created: target.sinceS,
          owned_by: target.provider,
        }),
      ),
    });
  }

  async getModel(name: string, reply: Reply): Promise<void> {
    const t = await this.models.resolve(name);
    reply.json(200, { id: name, object: "model", created: t.sinceS, owned_by: t.provider } satisfies ModelCard);
  }

  async complete(reply: Reply): Promise<void> {
    const chat = parseChatCompletion(await this.readJson(reply));
    const target = await this.models.resolve(chat.model);
    const created = Math.floor(Date.now() / 1000);
    let jobId = "";
    let started = false;
    const base = () => ({
      id: `chatcmpl-${jobId}`,
      object: "chat.completion.chunk",
      created,
      model: target.id,
      system_fingerprint: null,
    });
    const sse = (v: unknown) => {
      this.onEventOut();
      reply.write(`data: ${JSON.stringify(v)}\n\n`);
    };
    // The stream opens with the first piece of the reply, so a job that fails before it gets an HTTP status.
    const open = () => {
      if (started) return;
      started = true;
      reply.startStream("text/event-stream", this.maxBacklogBytes);
      sse({
        ...base(),
        choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
      });
    };
    const run = await runChat(this.jobs, this.hub, target, chat, CHAT_WORKFLOW_ID, {
      beforePublish: (id) => (jobId = id),
      ...(chat.stream
        ? {
            onPiece: (text: string) => {
              open();
              sse({
                ...base(),
                choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }],
              });
            },
          }
        : {}),
    });
    // A client that leaves does not want the rest: its job is cancelled (it cannot resume a completion).
    const gone = new Promise<null>((r) => reply.onAbort(() => r(null)));
    reply.onAbort(() => void this.jobs.cancel(run.jobId).catch(() => undefined));
    const ev = await Promise.race([run.finished, gone]);
    run.stop();
    if (ev === null) return;
    const extra = { "x-nodeway-job-id": run.jobId };
    if (ev.status !== "completed") {
      const why = (ev.error as { code?: string; message?: string } | undefined) ?? {};
      const error = {
        message: why.message ?? `the completion's job ended ${ev.status}`,
        type: "server_error",
        param: null,
        code: why.code ?? null,
        nodeway_code: why.code ?? null,
        job_id: run.jobId,
      };
      if (!started) {
        reply.json(failureStatus(ev.status), { error }, extra);
        return;
      }
      sse({ error });
      reply.end();
      return;
    }
    const finish = run.end?.finish_reason ?? "stop";
    const usage = run.end?.usage ?? null;
    const content = replyTextOf(ev.result) ?? run.text;
    const calls = wireToolCalls(run.end?.tool_calls);
    if (chat.stream) {
      open();
      // Each call whole in one delta (OpenAI streams the arguments in pieces; its SDKs join either the same way).
      for (const [index, call] of calls.entries())
        sse({
          ...base(),
          choices: [{ index: 0, delta: { tool_calls: [{ index, ...call }] }, logprobs: null, finish_reason: null }],
        });
      sse({ ...base(), choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finish }] });
      if (chat.includeUsage) sse({ ...base(), choices: [], usage });
      reply.write("data: [DONE]\n\n");
      reply.end();
      return;
    }
    reply.json(
      200,
      {
        id: `chatcmpl-${run.jobId}`,
        object: "chat.completion",
        created,
        model: target.id,
        system_fingerprint: null,
        choices: [
          {
            index: 0,
            message: {
              role: "assistant",
              // OpenAI's: a reply that only calls tools has no content.
              content: calls.length > 0 && content === "" ? null : content,
              refusal: null,
              ...(calls.length > 0 ? { tool_calls: calls } : {}),
            },
            logprobs: null,
            finish_reason: finish,
          },
        ],
        ...(usage ? { usage } : {}),
      },
      extra,
    );
  }
}
