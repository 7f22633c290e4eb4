/**
 * Chat threads and their messages (NodeTool's `/api/threads` and
 * `/api/messages`) in KV `nw_threads`, and a thread's turn (`chat_message` on `/ws`): the user's message is
 * stored, the conversation so far goes to the model as one LLM job (as `/v1/chat/completions` runs it, in the
 * pool of the model's provider), and the reply is stored as the thread's next message when the job ends, also
 * when the client that asked has gone (jobs keep running; the socket's follow is not what stores it).
 *
 * A new turn on a thread cancels the one still running there, as NodeTool does: its reply would answer a
 * conversation that moved on.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import {
  checkSchema,
  MessageBodySchema,
  ThreadBodySchema,
  KV_THREADS,
  THREAD_LIMITS,
  isTerminal,
  newId,
  parseJson,
  threadKeys,
  type ChatThread,
  type ChatTurnRequest,
  type ThreadMessage,
} from "../protocol/index.js";
import { LIST_PAGE_MAX_BYTES } from "./http.js";
import { notFound } from "./errors.js";
import type { EventHub } from "./event-hub.js";
import type { JobManager } from "./jobs.js";
import { bucketKeys } from "./kv-keys.js";
import { replyPieceOf, replyTextOf, runChat, type ModelDirectory } from "./models.js";

/** A reply's id is its question's with this after it. */
const REPLY_SUFFIX = "-reply";

/** The workflow id threads' turns are listed under. */
export const THREAD_WORKFLOW_ID = "chat-threads";

const now = () => new Date().toISOString();

/** A thread body's title, checked against its schema; none → the default. */
function titleOf(body: unknown): string {
  return checkSchema(ThreadBodySchema, body, "thread").title ?? "New thread";
}

export class ThreadStore {
  /** Turns running on this gateway: thread id → the job answering it. */
  private readonly turns = new Map<string, string>();
  /**
   * Jobs of turns a newer turn cancelled, until they end: the cancelled job may end before the newer one is
   * published (and takes its place in `turns`), and must still not store a reply.
   */
  private readonly supersededJobs = new Set<string>();

  constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
    private readonly jobs: JobManager,
    private readonly hub: EventHub,
    private readonly models: ModelDirectory,
    private readonly log: (l: string) => void,
  ) {}

  private async read<T>(key: string): Promise<T | null> {
    return (await this.readSized<T>(key))?.value ?? null;
  }

  /** The value at `key` and its size in bytes, or null. */
  private async readSized<T>(key: string): Promise<{ value: T; bytes: number } | null> {
    const e = await this.kv.get(key).catch(() => null);
    if (e?.operation !== "PUT" || e.length === 0) return null;
    return { value: parseJson(e.string()) as T, bytes: e.length };
  }

  private key(kind: "thread" | "message", id: string, threadId = ""): string {
    try {
      return kind === "thread" ? threadKeys.thread(id) : threadKeys.message(threadId, id);
    } catch {
      throw notFound(`${kind} "${id}"`);
    }
  }

  async create(body: Record<string, unknown>): Promise<ChatThread> {
    const at = now();
    const thread: ChatThread = { id: newId(), title: titleOf(body), created_at: at, updated_at: at };
    await this.kv.put(threadKeys.thread(thread.id), JSON.stringify(thread));
    return thread;
  }

  async get(id: string): Promise<ChatThread> {
    const t = await this.read<ChatThread>(this.key("thread", id));
    if (!t) throw notFound(`thread "${id}"`);
    return t;
  }

  async update(id: string, body: Record<string, unknown>): Promise<ChatThread> {
    const t = { ...(await this.get(id)), title: titleOf(body), updated_at: now() };
    await this.kv.put(threadKeys.thread(id), JSON.stringify(t));
    return t;
  }

  /** Removes the thread and its messages; a turn still running there is cancelled. */
  async delete(id: string): Promise<void> {
    await this.get(id);
    const running = this.turns.get(id);
    if (running) await this.jobs.cancel(running).catch(() => undefined);
    for (const k of await bucketKeys(this.jsm, KV_THREADS, threadKeys.messagesOf(id))) await this.kv.purge(k);
    await this.kv.purge(threadKeys.thread(id));
  }

  /** Newest first (ids are time-ordered); `cursor` is the last id of the previous page. */
  async list(limit: number, cursor?: string): Promise<{ threads: ChatThread[]; next: string | null }> {
    const ids = (await bucketKeys(this.jsm, KV_THREADS, threadKeys.allThreads()))
      .map((k) => k.slice(2))
      .sort()
      .reverse();
    const threads: ChatThread[] = [];
    for (const id of ids) {
      if (cursor && id >= cursor) continue;
      if (threads.length === limit) return { threads, next: threads.at(-1)!.id };
      const t = await this.read<ChatThread>(threadKeys.thread(id));
      if (t) threads.push(t);
    }
    return { threads, next: null };
  }

  /** Oldest first, or newest first with `reverse`; `cursor` is the last id of the previous page. */
  async messages(
    threadId: string,
    opts: { limit: number; cursor?: string; reverse?: boolean },
  ): Promise<{ messages: ThreadMessage[]; next: string | null }> {
    await this.get(threadId);
    const listIds = async () =>
      (await bucketKeys(this.jsm, KV_THREADS, threadKeys.messagesOf(threadId)))
        .map((k) => k.slice(k.lastIndexOf(".") + 1))
        .sort();
    let ids = await listIds();
    if (await this.reconcile(threadId, ids)) ids = await listIds();
    if (opts.reverse) ids.reverse();
    const messages: ThreadMessage[] = [];
    let bytes = 0;
    let last = "";
    for (const id of ids) {
      if (opts.cursor && (opts.reverse ? id >= opts.cursor : id <= opts.cursor)) continue;
      if (messages.length === opts.limit || bytes >= LIST_PAGE_MAX_BYTES) return { messages, next: last };
      last = id;
      const m = await this.readSized<ThreadMessage>(threadKeys.message(threadId, id));
      if (m) {
        messages.push(m.value);
        bytes += m.bytes;
      }
    }
    return { messages, next: null };
  }

  async message(id: string): Promise<ThreadMessage> {
    let keys: string[] = [];
    try {
      keys = await bucketKeys(this.jsm, KV_THREADS, threadKeys.messageAnywhere(id));
    } catch {
      /* not a valid id */
    }
    const m = keys[0] ? await this.read<ThreadMessage>(keys[0]) : null;
    if (!m) throw notFound(`message "${id}"`);
    return m;
  }

  /** `POST /api/messages`: a message added to a thread by hand (no model is asked). */
  async addMessage(body: Record<string, unknown>): Promise<ThreadMessage> {
    const m = checkSchema(MessageBodySchema, body, "message");
    await this.get(m.thread_id);
    return this.append({ thread_id: m.thread_id, role: m.role, content: m.content });
  }

  private async append(m: Omit<ThreadMessage, "id" | "created_at">): Promise<ThreadMessage> {
    const msg: ThreadMessage = { id: newId(), created_at: now(), ...m };
    await this.kv.put(threadKeys.message(msg.thread_id, msg.id), JSON.stringify(msg));
    return msg;
  }

  /**
   * Stores a turn's reply under its question's id + `-reply`: it sorts right after its question however late it
   * is written, and whoever writes it first (the gateway that took the turn, or any gateway reconciling after that
   * one died) writes it once (`create`). Null when it was there already.
   */
  private async storeReply(
    questionId: string,
    m: Omit<ThreadMessage, "id" | "created_at">,
  ): Promise<ThreadMessage | null> {
    const msg: ThreadMessage = { id: `${questionId}${REPLY_SUFFIX}`, created_at: now(), ...m };
    try {
      await this.kv.create(threadKeys.message(msg.thread_id, msg.id), JSON.stringify(msg));
    } catch {
      return null;
    }
    return msg;
  }

  /**
   * Replies of turns whose job ended with no reply stored (the gateway that took the turn died first): written now
   * from the job's record (the whole text of a completed one, or the error of a failed one) and its events (the
   * finish reason and token counts). A cancelled turn was
   * superseded or stopped, and its partial text lived only in that gateway. `ids` are the thread's message ids.
   */
  private async reconcile(threadId: string, ids: string[]): Promise<boolean> {
    const have = new Set(ids);
    let wrote = false;
    for (const id of ids) {
      if (id.endsWith(REPLY_SUFFIX) || have.has(`${id}${REPLY_SUFFIX}`)) continue;
      const q = await this.read<ThreadMessage>(threadKeys.message(threadId, id));
      if (q?.role !== "user" || !q.job_id || this.turns.get(threadId) === q.job_id) continue;
      const rec = await this.jobs.find(q.job_id);
      if (!rec || !isTerminal(rec.status) || rec.status === "cancelled") continue;
      // How the reply ended and what it cost are in its last chunk, which the job's stored events still hold.
      const events = await this.hub.replay(q.job_id, 0).catch(() => null);
      const fin = events?.events.map((d) => replyPieceOf(d.ev)?.end).find((end) => end) ?? null;
      const stored = await this.storeReply(id, {
        thread_id: threadId,
        role: "assistant",
        content: (rec.status === "completed" ? replyTextOf(rec.outputs) : null) ?? "",
        ...(q.provider ? { provider: q.provider } : {}),
        ...(q.model ? { model: q.model } : {}),
        job_id: q.job_id,
        ...(fin ? { finish_reason: fin.finish_reason, ...(fin.usage ? { usage: fin.usage } : {}) } : {}),
        ...(rec.status !== "completed"
          ? {
              error: {
                code: rec.error?.code ?? rec.status,
                message: rec.error?.message ?? `the turn's job ended ${rec.status}`,
              },
            }
          : {}),
      });
      wrote ||= stored !== null;
    }
    return wrote;
  }

  /**
   * A turn: stores the user's message, cancels the thread's running turn, runs the conversation so far on the
   * model, and stores its reply when the job ends. `beforePublish` sees the job id before its first event (the
   * socket joins the job there); `answered` gets the stored reply. A failed or timed-out turn stores a reply with
   * its `error` (and what came before it); a cancelled one keeps what came, unless a newer turn superseded it,
   * whose reply would otherwise sit after a question it does not answer.
   */
  async turn(
    req: ChatTurnRequest,
    beforePublish: (jobId: string) => void,
    answered: (m: ThreadMessage) => void,
  ): Promise<{ thread: ChatThread; message: ThreadMessage; jobId: string }> {
    const target = await this.models.resolve(req.model);
    const thread = req.threadId ? await this.get(req.threadId) : await this.create({ title: req.content.slice(0, 60) });
    const previous = this.turns.get(thread.id);
    if (previous) {
      this.supersededJobs.add(previous);
      await this.jobs.cancel(previous).catch(() => undefined);
    }
    const { messages: recent } = await this.messages(thread.id, {
      limit: THREAD_LIMITS.historyMessages - 1,
      reverse: true,
    });
    // Replies that are only an error are not the model's words: they stay out of what it is sent.
    const history = recent.reverse().filter((m) => !(m.error && m.content === ""));
    const turns = [
      ...history.map((m) => ({ role: m.role, content: m.content })),
      { role: "user" as const, content: req.content },
    ];
    const askedId = newId();
    const run = await runChat(
      this.jobs,
      this.hub,
      target,
      { system: req.system, messages: turns, maxTokens: req.maxTokens, temperature: req.temperature },
      THREAD_WORKFLOW_ID,
      {
        beforePublish: (id) => {
          this.turns.set(thread.id, id);
          beforePublish(id);
        },
      },
    );
    // Written once, naming the job that answers it.
    const message: ThreadMessage = {
      id: askedId,
      created_at: now(),
      thread_id: thread.id,
      role: "user",
      content: req.content,
      provider: target.provider,
      model: target.id,
      job_id: run.jobId,
    };
    await this.kv.put(threadKeys.message(thread.id, askedId), JSON.stringify(message));
    void run.finished
      .then(async (ev) => {
        const superseded = this.supersededJobs.delete(run.jobId) || this.turns.get(thread.id) !== run.jobId;
        // Until its reply is stored the turn stays listed as running here, so a listing does not reconcile it.
        const finish = () => {
          if (this.turns.get(thread.id) === run.jobId) this.turns.delete(thread.id);
        };
        if (ev.status === "cancelled" && (superseded || run.text === "")) return finish();
        const content = (ev.status === "completed" ? replyTextOf(ev.result) : null) ?? run.text;
        const why = ev.error as { code?: string; message?: string } | undefined;
        const fin = run.end;
        let stored: ThreadMessage | null;
        try {
          stored = await this.storeReply(askedId, {
            thread_id: thread.id,
            role: "assistant",
            content,
            provider: target.provider,
            model: target.id,
            job_id: run.jobId,
            ...(fin ? { finish_reason: fin.finish_reason, ...(fin.usage ? { usage: fin.usage } : {}) } : {}),
            ...(ev.status !== "completed"
              ? {
                  error: { code: why?.code ?? ev.status, message: why?.message ?? `the turn's job ended ${ev.status}` },
                }
              : {}),
          });
        } finally {
          finish();
        }
        // Null: another gateway's listing found the job ended first and wrote it from the record.
        const reply =
          stored ?? (await this.read<ThreadMessage>(threadKeys.message(thread.id, `${askedId}${REPLY_SUFFIX}`)));
        if (!reply) return;
        await this.kv.put(
          threadKeys.thread(thread.id),
          JSON.stringify({ ...(await this.get(thread.id)), updated_at: now() }),
        );
        answered(reply);
      })
      .catch((err: unknown) =>
        this.log(`thread ${thread.id}: the reply of job ${run.jobId} was not stored: ${(err as Error).message}`),
      );
    return { thread, message, jobId: run.jobId };
  }

  /** `stop {thread_id}`: cancels the turn running on the thread; the job's id, or null when none runs. */
  async stop(threadId: string): Promise<string | null> {
    const jobId = this.turns.get(threadId) ?? null;
    if (jobId) await this.jobs.cancel(jobId).catch(() => undefined);
    return jobId;
  }
}
