/**
 * OpenAI-compatible chat (design §6 `/v1`): `POST /v1/chat/completions`, streamed as OpenAI's SSE chunks or
 * answered whole, and `GET /v1/models`, served by the fleet's agents that offer the model, so any OpenAI client
 * can use it. A completion is a job like any other (one LLM node; listed under workflow `chat-completions`,
 * durable, cancellable): it goes to the pool of the model's provider, which only agents holding that provider's
 * key consume, and the client leaving cancels it.
 *
 * Errors are OpenAI's shape, `{error: {message, type, param, code}}`, with our stable code in `nodeway_code`; a
 * model no live agent offers is OpenAI's 404 `model_not_found`. A job that fails before its first token (the
 * provider refused it, say) is an HTTP error; after it, the stream ends with an `{"error": …}` chunk and no
 * `[DONE]`, which OpenAI's SDKs raise.
 */
import { ChatRequestError, isTerminal, parseChatCompletion, type ChatEndMetadata, type JobEvent } from "../protocol/index.js";
import { toWireError } from "./errors.js";
import type { EventHub, Delivery } from "./event-hub.js";
import { follow, type Following } from "./follow.js";
import type { Reply } from "./http.js";
import type { JobManager } from "./jobs.js";
import { LLM_NODE, chatGraph, type ModelDirectory } from "./models.js";

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
  if (status === 404 || status === 400 || status === 413 || status === 409) return "invalid_request_error";
  return "server_error";
}

/** A job's terminal failure as an HTTP status: the provider (or the node) failed → 502, time ran out → 504. */
function failureStatus(status: string): number {
  if (status === "timed_out") return 504;
  if (status === "cancelled") return 503;
  return 502;
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
      reply.json(400, { error: { message: err.message, type: "invalid_request_error", param: err.param, code: null, nodeway_code: err.code } });
      return;
    }
    const { status, body } = toWireError(err);
    if (status === 500) process.stderr.write(`[gateway] internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    const code = (body.openai_code as string | undefined) ?? body.code;
    reply.json(status, { error: { message: body.message, type: errorType(status), param: (body.param as string | undefined) ?? null, code, nodeway_code: body.code } });
  }

  async listModels(reply: Reply): Promise<void> {
    const { listed } = this.models.offers(await this.jobs.liveAgents());
    reply.json(200, { object: "list", data: listed.map(({ name, target }): ModelCard => ({ id: name, object: "model", created: 0, owned_by: target.provider })) });
  }

  async getModel(name: string, reply: Reply): Promise<void> {
    const t = await this.models.resolve(name);
    reply.json(200, { id: name, object: "model", created: 0, owned_by: t.provider } satisfies ModelCard);
  }

  async complete(reply: Reply): Promise<void> {
    const chat = parseChatCompletion(await this.readJson(reply));
    const target = await this.models.resolve(chat.model);
    const created = Math.floor(Date.now() / 1000);
    let jobId = "";
    let following: Promise<Following> | null = null;
    let text = "";
    let end: ChatEndMetadata | null = null;
    let started = false;
    let settle!: (ev: Extract<JobEvent, { type: "job_update" }>) => void;
    const finished = new Promise<Extract<JobEvent, { type: "job_update" }>>((r) => (settle = r));
    const base = () => ({ id: `chatcmpl-${jobId}`, object: "chat.completion.chunk", created, model: target.id, system_fingerprint: null });
    const sse = (v: unknown) => {
      this.onEventOut();
      reply.write(`data: ${JSON.stringify(v)}\n\n`);
    };
    // The stream opens with the first piece of the reply, so a job that fails before it gets an HTTP status.
    const open = () => {
      if (started) return;
      started = true;
      reply.startStream("text/event-stream", this.maxBacklogBytes);
      sse({ ...base(), choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] });
    };
    const sink = {
      send: (d: Delivery) => {
        const ev = d.ev;
        switch (ev.type) {
          case "chunk":
            if (ev.node_id !== LLM_NODE || typeof ev.content !== "string") return;
            if (ev.done) end = (ev.content_metadata as ChatEndMetadata | undefined) ?? end;
            if (ev.content === "") return;
            text += ev.content;
            if (chat.stream) {
              open();
              sse({ ...base(), choices: [{ index: 0, delta: { content: ev.content }, logprobs: null, finish_reason: null }] });
            }
            return;
          case "job_update":
            if (isTerminal(ev.status)) settle(ev);
            return;
          default:
            return;
        }
      },
    };
    const { job } = await this.jobs.submit({
      workflow: { id: CHAT_WORKFLOW_ID, graph: chatGraph(target, chat) },
      params: {},
      pool: target.provider,
      beforePublish: (id) => {
        jobId = id;
        // Registered before the job's first event exists, so nothing needs replaying.
        following = follow(this.hub, id, 0, sink, { replay: false });
      },
    });
    // A client that leaves does not want the rest: its job is cancelled (it cannot resume a completion).
    const gone = new Promise<null>((r) => reply.onAbort(() => r(null)));
    reply.onAbort(() => void this.jobs.cancel(job.id).catch(() => undefined));
    const ev = await Promise.race([finished, gone]);
    void (following as Promise<Following> | null)?.then((f) => f.stop());
    if (ev === null) return;
    const extra = { "x-nodeway-job-id": job.id };
    if (ev.status !== "completed") {
      const why = (ev.error as { code?: string; message?: string } | undefined) ?? {};
      const error = { message: why.message ?? `the completion's job ended ${ev.status}`, type: "server_error", param: null, code: why.code ?? null, nodeway_code: why.code ?? null, job_id: job.id };
      if (!started) {
        reply.json(failureStatus(ev.status), { error }, extra);
        return;
      }
      sse({ error });
      reply.end();
      return;
    }
    const finish = (end as ChatEndMetadata | null)?.finish_reason ?? "stop";
    const usage = (end as ChatEndMetadata | null)?.usage ?? null;
    const outputs = ev.result as { text?: unknown[] } | undefined;
    const content = typeof outputs?.text?.[0] === "string" ? (outputs.text[0] as string) : text;
    if (chat.stream) {
      open();
      sse({ ...base(), choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finish }] });
      if (chat.includeUsage) sse({ ...base(), choices: [], usage });
      reply.write("data: [DONE]\n\n");
      reply.end();
      return;
    }
    reply.json(
      200,
      {
        id: `chatcmpl-${job.id}`,
        object: "chat.completion",
        created,
        model: target.id,
        system_fingerprint: null,
        choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: finish }],
        ...(usage ? { usage } : {}),
      },
      extra,
    );
  }
}
