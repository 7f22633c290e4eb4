/**
 * `NodewayClient`: one `/ws` connection for running and watching jobs (resumed by `seq` across reconnects), and
 * the REST API for everything else. Runs in browsers and in Node 20 (with the `ws` package).
 */
import type { JobResumed, RunJobData, ServerMessage } from "../protocol/client.js";
import type { ChatThread, ThreadMessage } from "../protocol/chat.js";
import type { JobEvent } from "../protocol/events.js";
import type { NodeMetadata, Workflow } from "../protocol/graph.js";
import { isTerminal, type AgentRegistration, type JobRecord } from "../protocol/jobs.js";
import type { WireFormat } from "./codec.js";
import { ClientErrorCode, NodewayError } from "./errors.js";
import { Http } from "./http.js";
import { outcomeOfRecord, Watch, type CancelResult, type JobHandle } from "./job.js";
import { Socket, type ConnState, type WebSocketCtor } from "./socket.js";

export interface ClientOptions {
  /** The gateway's base URL (`http://host:8000`); `/ws` is opened on the same host (ws:// or wss://). */
  url: string;
  token?: string;
  /** The `/ws` encoding; MessagePack unless told. */
  format?: WireFormat;
  /** A WebSocket class; default: the global one, else the `ws` package (Node). */
  WebSocket?: WebSocketCtor;
  /**
   * Backoff between reconnects: doubles from `initialMs` (250) up to `maxMs` (10,000), with jitter, and starts over
   * once a connection has been up 5 s. Unreadable frames on `maxProtocolErrors` (5) connections in a row end the
   * client: watches and commands reject with `CLIENT_ERR_PROTOCOL`.
   */
  reconnect?: { initialMs?: number; maxMs?: number; maxProtocolErrors?: number };
  /** The largest command frame sent: the gateway's `wsMaxPayloadBytes` (1 MiB unless its operator changed it). */
  maxFrameBytes?: number;
  /**
   * How long a command (`run`, `chat`: the wait for the socket included), a WebSocket upgrade or a REST call waits
   * for its answer before rejecting with `CLIENT_ERR_TIMEOUT` (30,000; uploads get a second more per 256 KiB).
   */
  requestTimeoutMs?: number;
  /**
   * After this long without a frame the client pings the gateway; no frame within as long again and the connection
   * is dead: it reconnects and resumes (15,000; 0: no heartbeat).
   */
  heartbeatMs?: number;
  /** The largest REST answer read (64 MiB); a larger one rejects with `CLIENT_ERR_TOO_LARGE`. */
  maxResponseBytes?: number;
}

export interface RunRequest {
  workflowId?: string;
  graph?: unknown;
  params?: Record<string, unknown>;
  timeoutS?: number;
  pool?: string;
  /**
   * The run's idempotency key (`run_job`'s `job_id`): the gateway runs one key once while its job is kept.
   * Default: a new random key per `run()`, so that a run resent after a dropped connection finds its first job.
   */
  runKey?: string;
}

/** Sends of one `run()` when the connection drops before the answer (each with the same key). */
const RUN_SENDS = 3;

/** 128 random bits as hex (`getRandomValues` works in insecure browser contexts, unlike `randomUUID`). */
function randomKey(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An agent as `GET /api/agents` lists it. */
export type AgentInfo = Omit<AgentRegistration, "type" | "v" | "node_catalog">;

export interface ChatRequest {
  threadId?: string;
  content: string;
  model: string;
  provider?: string;
  system?: string;
  maxTokens?: number;
  temperature?: number;
}

/** A chat turn: its thread and question, and the job that answers (its `chunk` events are the reply). */
export interface ChatTurn {
  threadId: string;
  messageId: string;
  job: JobHandle;
}

/** Events held for jobs whose `run_job` answer has not come yet (the gateway sends events before it). */
const MAX_EARLY_EVENTS = 10_000;

export class NodewayClient {
  private readonly socket: Socket;
  private readonly http: Http;
  private readonly watches = new Map<string, Watch>();
  /** `reconnect_job` request id → job: an error answer fails that watch. */
  private readonly resumes = new Map<string, string>();
  private readonly early = new Map<string, JobEvent[]>();
  private earlyCount = 0;
  private startsInFlight = 0;
  private readonly stateListeners = new Set<(s: ConnState) => void>();
  private readonly messageListeners = new Set<(m: ThreadMessage) => void>();

  constructor(opts: ClientOptions) {
    const base = opts.url.replace(/\/+$/, "");
    const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.http = new Http(base, opts.token, {
      timeoutMs: requestTimeoutMs,
      maxResponseBytes: opts.maxResponseBytes ?? 64 * 1024 * 1024,
    });
    this.socket = new Socket({
      url: base,
      ...(opts.token ? { token: opts.token } : {}),
      format: opts.format ?? "msgpack",
      ...(opts.WebSocket ? { WebSocket: opts.WebSocket } : {}),
      reconnect: {
        initialMs: opts.reconnect?.initialMs ?? 250,
        maxMs: opts.reconnect?.maxMs ?? 10_000,
        maxProtocolErrors: opts.reconnect?.maxProtocolErrors ?? 5,
      },
      maxFrameBytes: opts.maxFrameBytes ?? 1024 * 1024,
      requestTimeoutMs,
      heartbeatMs: opts.heartbeatMs ?? 15_000,
      onState: (s) => this.emitState(s),
      onMessage: (m) => this.onMessage(m),
      onOpen: () => this.resumeAll(),
      onEnd: (err) => this.failAll(err),
    });
  }

  get state(): ConnState {
    return this.socket.state;
  }

  /** Opens `/ws`; rejects if the gateway cannot be reached (or refuses the token). Later drops reconnect. */
  connect(): Promise<void> {
    return this.socket.connect();
  }

  /** Closes the connection; every watch's `done` rejects with `CLIENT_ERR_CLOSED`. */
  close(): void {
    this.socket.close();
  }

  on(event: "state", cb: (s: ConnState) => void): () => void;
  on(event: "message", cb: (m: ThreadMessage) => void): () => void;
  on(event: "state" | "message", cb: ((s: ConnState) => void) | ((m: ThreadMessage) => void)): () => void {
    const set = (event === "state" ? this.stateListeners : this.messageListeners) as Set<typeof cb>;
    set.add(cb);
    return () => set.delete(cb);
  }

  private emitState(s: ConnState): void {
    for (const cb of this.stateListeners) cb(s);
  }

  // ---- jobs over /ws ----------------------------------------------------------------------------------------

  /**
   * Runs a saved workflow (`workflowId`) or a graph sent along, and watches it from its first event. A drop
   * before the gateway answered sends it again once reconnected, with the same key (the gateway answers with the
   * job the first send made, if it made one, and resends its events from the first); after `RUN_SENDS` drops it
   * rejects with `CLIENT_ERR_DISCONNECTED`.
   */
  async run(req: RunRequest): Promise<JobHandle> {
    const data: RunJobData = {
      ...(req.workflowId !== undefined ? { workflow_id: req.workflowId } : {}),
      ...(req.graph !== undefined ? { graph: req.graph as RunJobData["graph"] } : {}),
      params: req.params ?? {},
      ...(req.timeoutS !== undefined ? { timeout_s: req.timeoutS } : {}),
      ...(req.pool !== undefined ? { requirements: { pool: req.pool } } : {}),
      job_id: req.runKey ?? randomKey(),
    };
    return this.starting(async () => {
      for (let sends = 1; ; sends++) {
        try {
          const res = await this.socket.request<unknown>({ command: "run_job", data });
          return this.adopt(answered(res, "run_job", "job_id"));
        } catch (err) {
          const dropped = err instanceof NodewayError && err.code === ClientErrorCode.disconnected;
          if (!dropped || sends >= RUN_SENDS) throw err;
        }
      }
    });
  }

  /**
   * Runs `start` (a command and the adoption of the job it answers with) while holding events of jobs not yet
   * known: the gateway sends a job's first events before the answer that names it.
   */
  private async starting<T>(start: () => Promise<T>): Promise<T> {
    this.startsInFlight++;
    try {
      return await start();
    } finally {
      if (--this.startsInFlight === 0) {
        this.early.clear();
        this.earlyCount = 0;
      }
    }
  }

  /** The watch of a job this socket already follows (a run or chat turn it started), with what came early. */
  private adopt(jobId: string): Watch {
    const w = new Watch(jobId, 0, this.host);
    this.watches.set(jobId, w);
    for (const ev of this.early.get(jobId) ?? []) w.deliver(ev);
    this.early.delete(jobId);
    return w;
  }

  /**
   * Watches a job from after `afterSeq` (0: its whole history), then live, to its end; resumes by itself after
   * every reconnect. Watching a job already watched gives the same handle.
   */
  watch(jobId: string, opts: { afterSeq?: number } = {}): JobHandle {
    const known = this.watches.get(jobId);
    if (known) return known;
    const w = new Watch(jobId, opts.afterSeq ?? 0, this.host);
    this.watches.set(jobId, w);
    if (this.socket.state === "open") this.resume(w);
    else this.socket.ready().catch((err: Error) => w.fail(err));
    return w;
  }

  private resume(w: Watch): void {
    const request_id = this.socket.requestId();
    this.resumes.set(request_id, w.jobId);
    this.socket.send({ command: "reconnect_job", data: { job_id: w.jobId, last_seq: w.lastSeq }, request_id });
  }

  private resumeAll(): void {
    this.resumes.clear();
    for (const w of this.watches.values()) this.resume(w);
  }

  private failAll(err: Error): void {
    for (const w of [...this.watches.values()]) w.fail(err);
  }

  private readonly host = {
    cancel: (jobId: string) => this.cancel(jobId),
    unwatch: (jobId: string, tellGateway: boolean) => {
      this.watches.delete(jobId);
      if (tellGateway) this.socket.send({ command: "stop", data: { job_id: jobId } });
    },
  };

  /** Every message that is not a command's answer. */
  private onMessage(m: ServerMessage): void {
    switch (m.type) {
      case "job_resumed":
        return this.onResumed(m);
      case "rpc_response":
        return this.onResumeError(m.request_id, m.error);
      case "message":
        for (const cb of this.messageListeners) cb(m);
        return;
      case "pong":
      case "generation_stopped":
        return;
      case "error":
        if ("job_id" in m) return this.onEvent(m);
        return this.onResumeError(m.request_id, m);
      default:
        return this.onEvent(m);
    }
  }

  private onEvent(ev: JobEvent): void {
    const w = this.watches.get(ev.job_id);
    if (w) return w.deliver(ev);
    if (this.startsInFlight === 0 || this.earlyCount >= MAX_EARLY_EVENTS) return;
    let list = this.early.get(ev.job_id);
    if (!list) this.early.set(ev.job_id, (list = []));
    list.push(ev);
    this.earlyCount++;
  }

  private onResumed(h: JobResumed): void {
    const w = this.watches.get(h.job_id);
    if (!w) return;
    for (const [id, job] of this.resumes) if (job === h.job_id) this.resumes.delete(id);
    w.resumed(h);
    // A job over with nothing left to send after our seq: its end comes from its record.
    if (isTerminal(h.status) && h.replay_count === 0 && !h.replay_incomplete) {
      this.job(h.job_id).then(
        (rec) => w.finish(outcomeOfRecord(rec)),
        (err: Error) => w.fail(err),
      );
    }
  }

  private onResumeError(requestId: string | undefined, error: { code?: string; message?: string } | undefined): void {
    const jobId = requestId === undefined ? undefined : this.resumes.get(requestId);
    if (jobId === undefined || !error) return;
    this.resumes.delete(requestId!);
    this.watches.get(jobId)?.fail(NodewayError.of(error));
  }

  // ---- chat ----------------------------------------------------------------------------------------------

  /** Asks a model in a thread (a new one without `threadId`); the answer streams as the job's `chunk` events. */
  async chat(req: ChatRequest): Promise<ChatTurn> {
    const data = {
      ...(req.threadId ? { thread_id: req.threadId } : {}),
      content: req.content,
      model: req.model,
      ...(req.provider ? { provider: req.provider } : {}),
      ...(req.system ? { system: req.system } : {}),
      ...(req.maxTokens !== undefined ? { max_tokens: req.maxTokens } : {}),
      ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    };
    return this.starting(async () => {
      const res = await this.socket.request<unknown>({ command: "chat_message", data });
      const threadId = answered(res, "chat_message", "thread_id");
      const messageId = answered(res, "chat_message", "message_id");
      return { threadId, messageId, job: this.adopt(answered(res, "chat_message", "job_id")) };
    });
  }

  /** Ends a thread's running turn (its job is cancelled; what came of the reply is kept). */
  async stopChat(threadId: string): Promise<void> {
    await this.socket.sendWhenOpen({ command: "stop", data: { thread_id: threadId } });
  }

  async threads(): Promise<ChatThread[]> {
    return this.pages<ChatThread>("/api/threads", "threads");
  }

  async messages(threadId: string): Promise<ThreadMessage[]> {
    return this.pages<ThreadMessage>(Http.path("/api/messages", { thread_id: threadId }), "messages");
  }

  // ---- REST ------------------------------------------------------------------------------------------------

  /** Cancels a job (idempotent): its status when the request was taken. */
  cancel(jobId: string): Promise<CancelResult> {
    return this.http.call("POST", `/api/jobs/${encodeURIComponent(jobId)}/cancel`);
  }

  /** Jobs, newest first; `next` is the cursor of the following page. */
  async jobs(
    q: { status?: string; workflowId?: string; cursor?: string; limit?: number } = {},
  ): Promise<{ jobs: JobRecord[]; next?: string }> {
    const query = { status: q.status, workflow_id: q.workflowId, cursor: q.cursor, limit: q.limit };
    const r = await this.http.call<{ jobs: JobRecord[]; next: string | null }>("GET", Http.path("/api/jobs", query));
    return r.next ? { jobs: r.jobs, next: r.next } : { jobs: r.jobs };
  }

  job(jobId: string): Promise<JobRecord> {
    return this.http.call("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
  }

  async agents(): Promise<AgentInfo[]> {
    return (await this.http.call<{ agents: AgentInfo[] }>("GET", "/api/agents")).agents;
  }

  /** Every node type the live agents offer, sorted by type. */
  nodes(): Promise<NodeMetadata[]> {
    return this.http.call("GET", "/api/nodes/metadata");
  }

  /** Asks an agent to drain: it finishes or hands back its jobs and takes no more. */
  async drainAgent(agentId: string): Promise<void> {
    await this.http.call("POST", `/api/agents/${encodeURIComponent(agentId)}/drain`);
  }

  /** Every saved workflow (all pages). */
  workflows(): Promise<Workflow[]> {
    return this.pages<Workflow>("/api/workflows", "workflows");
  }

  workflow(id: string): Promise<Workflow> {
    return this.http.call("GET", `/api/workflows/${encodeURIComponent(id)}`);
  }

  /** Saves (creates or replaces) a workflow under `id`; the gateway validates its graph. */
  saveWorkflow(id: string, wf: Record<string, unknown>): Promise<Workflow> {
    return this.http.call("PUT", `/api/workflows/${encodeURIComponent(id)}`, wf);
  }

  /** Stores bytes as an asset; `uri` (`asset://<id>`) is what a run's params take. */
  uploadAsset(bytes: Uint8Array | Blob, name: string, contentType: string): Promise<{ id: string; uri: string }> {
    return this.http.call("POST", Http.path("/api/assets", { name }), bytes, contentType);
  }

  /** Where an asset's bytes are served (with the token as a header, not in the URL). */
  assetUrl(assetId: string): string {
    return `${this.http.baseUrl}/api/assets/${encodeURIComponent(assetId)}/content`;
  }

  /** Follows `next` cursors to the end of a listing; a cursor given twice would never end it, and is refused. */
  private async pages<T>(path: string, key: string): Promise<T[]> {
    const out: T[] = [];
    const seen = new Set<string>();
    let cursor: string | undefined;
    do {
      if (cursor !== undefined) {
        if (seen.has(cursor))
          throw new NodewayError(
            ClientErrorCode.protocol,
            `GET ${path}: the listing repeats cursor "${cursor.slice(0, 64)}"`,
          );
        seen.add(cursor);
      }
      const sep = path.includes("?") ? "&" : "?";
      const page = await this.http.call<Record<string, unknown>>(
        "GET",
        cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path,
      );
      out.push(...((page[key] as T[]) ?? []));
      cursor = typeof page.next === "string" && page.next ? page.next : undefined;
    } while (cursor);
    return out;
  }
}

/** The id `key` of a command's answer, which the caller needs: an answer without it (`null`, say) is coded. */
function answered(res: unknown, command: string, key: string): string {
  const v = res !== null && typeof res === "object" ? (res as Record<string, unknown>)[key] : undefined;
  if (typeof v === "string" && v) return v;
  throw new NodewayError(
    ClientErrorCode.protocol,
    `the gateway answered "${command}" without a ${key}: ${JSON.stringify(res)?.slice(0, 100)}`,
  );
}

export { ClientErrorCode, NodewayError };
