/**
 * `/ws`: one socket may run and watch many jobs. Events reach sockets through uWS topics, one per
 * job and encoding, so each event is encoded once per encoding and uWS does the fan-out. A resuming socket is
 * fed directly (replay, then live) until the hub has caught up with what it sent, then moves to the topic.
 */
import type { TemplatedApp, WebSocket, HttpResponse, HttpRequest, us_socket_context_t } from "uWebSockets.js";
import {
  ErrorCode,
  assertNever,
  ProtocolError,
  decodeClientFrame,
  encodeJson,
  encodeMsgpack,
  isTerminal,
  parseChatTurn,
  type ClientCommand,
  type Graph,
  type JobRecord,
  type ServerMessage,
} from "../protocol/index.js";
import type { GatewayConfig } from "./config.js";
import type { Delivery, EventHub, ReplayHeader } from "./event-hub.js";
import { follow, type Following } from "./follow.js";
import { ON_TOPIC, SocketFollows } from "./socket-follows.js";
import type { JobManager } from "./jobs.js";
import type { WorkflowStore } from "./workflows.js";
import type { ThreadStore } from "./threads.js";
import { BrowserPolicy } from "./browser.js";
import { GatewayError, logInternal, toWireError } from "./errors.js";
import { runSpecOf } from "./run-request.js";
import { bearerToken, peerOf, refusalBody, subprotocolToken, type RefusalLog, type TokenCheck } from "./auth.js";

type Mode = "binary" | "text";

export interface SocketData {
  /** Encoding for what we send. Fixed when negotiated by subprotocol; else follows the client's last frame. */
  mode: Mode;
  fixed: boolean;
  closed: boolean;
  /** Jobs this socket watches: via topic (`following` null) or directly while catching up. */
  jobs: SocketFollows;
  /** Digest of the API token it was opened with (auth on), checked again when the tokens are reloaded. */
  tokenDigest: Buffer | null;
  /** Follows promised to commands still being answered (a submit in flight), counted against the limit. */
  pendingFollows: number;
}

/**
 * A job's two uWS topics, one per encoding, with their names as bytes made once per job (a string topic is
 * converted to UTF-8 by uWS on every call, and the fan-out asks about both topics for every event), and the sockets
 * on them.
 */
interface JobTopics {
  /** The job's id, kept once: every socket on the topic files its follow under this string, not its own copy. */
  jobId: string;
  binary: Buffer;
  text: Buffer;
  sockets: Set<WebSocket<SocketData>>;
}
const topicsFor = (jobId: string): JobTopics => ({
  jobId,
  binary: Buffer.from(`j/${jobId}/m`),
  text: Buffer.from(`j/${jobId}/j`),
  sockets: new Set(),
});
const topicOf = (t: JobTopics, mode: Mode) => (mode === "binary" ? t.binary : t.text);

type ReconnectCommand = Extract<ClientCommand, { command: "reconnect_job" }>;

/** A `reconnect_job` waiting for its job's record (the socket's data kept: a closed socket gives none). */
interface ResumeAsk {
  ws: WebSocket<SocketData>;
  u: SocketData;
  cmd: ReconnectCommand;
}

export class WsHub {
  readonly sockets = new Set<WebSocket<SocketData>>();
  /** `reconnect_job`s waiting for their job's record, by job: one read for all of them. */
  private readonly resumesWaiting = new Map<string, ResumeAsk[]>();
  /** The topics of each job some socket joined: the fan-out skips every other job at once. */
  private readonly topics = new Map<string, JobTopics>();
  framesIn = 0;
  framesOut = 0;
  badFrames = 0;
  private readonly browser: BrowserPolicy;

  constructor(
    private readonly app: TemplatedApp,
    private readonly config: Readonly<GatewayConfig>,
    private readonly hub: EventHub,
    private readonly jobs: JobManager,
    private readonly workflows: WorkflowStore,
    private readonly threads: ThreadStore,
    private readonly auth: TokenCheck,
    private readonly refusals: RefusalLog,
  ) {
    // Registered at once, not with the other routes: uWS makes an app's topic tree with its first WebSocket route,
    // and `numSubscribers` or `publish` before that crash the process (SIGSEGV, uWebSockets.js 20.30). The event
    // hub hands on events as soon as it starts, before the gateway listens.
    this.browser = new BrowserPolicy(config, () => auth.enabled);
    app.ws("/ws", this.behavior());
  }

  /** Refuses a new follow past `wsMaxFollowsPerSocket`: what one socket holds here stays bounded. */
  private checkFollowRoom(ws: WebSocket<SocketData>, jobId?: string): void {
    const u = ws.getUserData();
    if (jobId !== undefined && u.jobs.has(jobId)) return;
    if (u.jobs.size + u.pendingFollows >= this.config.wsMaxFollowsPerSocket) {
      throw new GatewayError(
        ErrorCode.GW_ERR_LIMIT,
        `this socket follows ${u.jobs.size} jobs already (wsMaxFollowsPerSocket); stop one first`,
      );
    }
  }

  /** Fan-out of one admitted event: encode once per encoding that has subscribers, publish. */
  publish(jobId: string, d: Delivery): void {
    const t = this.topics.get(jobId);
    if (t === undefined) return;
    if (this.app.numSubscribers(t.binary) > 0) this.app.publish(t.binary, d.msgpack(), true);
    if (this.app.numSubscribers(t.text) > 0) this.app.publish(t.text, d.json(), false);
    if (d.terminal) {
      // uWS batches publishes and drains them later in the loop; unsubscribing now would drop this very
      // message. Leave the topic a little later instead.
      this.ended.push(jobId);
      this.sweepTimer ??= setTimeout(() => this.sweepEnded(), 500);
    }
  }

  private ended: string[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweepEnded(): void {
    this.sweepTimer = null;
    for (const jobId of this.ended.splice(0)) {
      const t = this.topics.get(jobId);
      if (!t) continue;
      for (const ws of t.sockets) this.leaveJob(ws, jobId);
      this.topics.delete(jobId);
    }
  }

  private sendTo(ws: WebSocket<SocketData>, msg: ServerMessage | Record<string, unknown>): void {
    const u = ws.getUserData();
    if (u.closed) return;
    this.framesOut++;
    if (u.mode === "binary") ws.send(encodeMsgpack(msg), true);
    else ws.send(encodeJson(msg), false);
  }

  private sendDelivery(ws: WebSocket<SocketData>, d: Delivery): void {
    const u = ws.getUserData();
    if (u.closed) return;
    this.framesOut++;
    if (u.mode === "binary") ws.send(d.msgpack(), true);
    else ws.send(d.json(), false);
  }

  private joinTopic(ws: WebSocket<SocketData>, jobId: string): void {
    const u = ws.getUserData();
    if (u.closed) return;
    let t = this.topics.get(jobId);
    if (!t) this.topics.set(jobId, (t = topicsFor(jobId)));
    ws.subscribe(topicOf(t, u.mode));
    t.sockets.add(ws);
    u.jobs.set(t.jobId, ON_TOPIC);
  }

  private leaveJob(ws: WebSocket<SocketData>, jobId: string): void {
    const u = ws.getUserData();
    const entry = u.jobs.get(jobId);
    if (!entry) return;
    entry.following?.stop();
    const t = this.topics.get(jobId);
    if (entry.onTopic && !u.closed && t) ws.unsubscribe(topicOf(t, u.mode));
    u.jobs.delete(jobId);
    t?.sockets.delete(ws);
  }

  /** The client's frame kind switches the mode (NodeTool's rule) unless a subprotocol fixed it. */
  private setMode(ws: WebSocket<SocketData>, mode: Mode): void {
    const u = ws.getUserData();
    if (u.fixed || u.mode === mode) return;
    for (const [jobId, e] of u.jobs) {
      const t = this.topics.get(jobId);
      if (!e.onTopic || !t) continue;
      ws.unsubscribe(topicOf(t, u.mode));
      ws.subscribe(topicOf(t, mode));
    }
    u.mode = mode;
  }

  /** The behaviour of the `/ws` route: every callback is guarded (a throw in a uWS callback ends the process). */
  private behavior() {
    const cfg = this.config;
    return {
      // uWS drops a frame past its own limit with no close frame (1006): up to twice ours, the socket is closed
      // with 1009 and the reason instead (`onMessage`).
      maxPayloadLength: cfg.wsMaxPayloadBytes * 2,
      maxBackpressure: cfg.wsMaxBackpressureBytes,
      // A client that cannot keep up is closed, not silently skipped: it resumes from its last seq.
      closeOnBackpressureLimit: 1,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      upgrade: (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => {
        try {
          this.upgrade(res, req, context);
        } catch (err) {
          logInternal(err, "/ws upgrade failed");
          res.writeStatus("500 Internal Server Error").end();
        }
      },
      open: (ws: WebSocket<SocketData>) => {
        this.sockets.add(ws);
      },
      message: (ws: WebSocket<SocketData>, message: ArrayBuffer, isBinary: boolean) => {
        try {
          this.onMessage(ws, message, isBinary);
        } catch (err) {
          logInternal(err, "a /ws frame failed");
          this.sendTo(ws, { type: "error", code: ErrorCode.GW_ERR_INTERNAL, message: "internal error" });
        }
      },
      close: (ws: WebSocket<SocketData>) => {
        const u = ws.getUserData();
        u.closed = true;
        // Closing a socket never cancels its jobs; it only stops watching them.
        for (const [jobId, e] of u.jobs) {
          e.following?.stop();
          this.topics.get(jobId)?.sockets.delete(ws);
        }
        u.jobs.clear();
        this.sockets.delete(ws);
      },
    };
  }

  /** Answers a `/ws` upgrade: Host, Origin, key and token first (refused before the upgrade), then the subprotocol. */
  private upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
    const key = req.getHeader("sec-websocket-key");
    const protoHeader = req.getHeader("sec-websocket-protocol");
    const ext = req.getHeader("sec-websocket-extensions");
    const host = req.getHeader("host");
    const refusal = this.upgradeRefusal(host, req.getHeader("origin"), key, req.getHeader("sec-websocket-version"));
    if (refusal) {
      res.cork(() => {
        res.writeStatus(refusal.status).writeHeader("content-type", "application/json");
        res.end(JSON.stringify({ code: refusal.code, message: refusal.message }));
      });
      return;
    }
    const offered = protoHeader
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    let tokenDigest: Buffer | null = null;
    if (this.auth.enabled) {
      // Refused before the upgrade. A browser passes the token as a `bearer.<token>`
      // subprotocol next to `nodeway.*`, and only `nodeway.*` is ever answered.
      const token =
        bearerToken(req.getHeader("authorization")) ??
        (req.getQuery("api_key") || undefined) ??
        subprotocolToken(offered);
      const a = this.auth.check(
        token,
        "send Authorization: Bearer <token>, ?api_key=<token> or a bearer.<token> subprotocol",
      );
      if (!a.ok) {
        this.refusals.refused("the /ws upgrade", peerOf(res), a);
        res.cork(() => {
          res
            .writeStatus("401 Unauthorized")
            .writeHeader("www-authenticate", a.header)
            .writeHeader("content-type", "application/json");
          res.end(JSON.stringify(refusalBody(a)));
        });
        return;
      }
      tokenDigest = a.digest;
    }
    const chosen = offered.find((p) => p === "nodeway.msgpack" || p === "nodeway.json") ?? "";
    const data: SocketData = {
      mode: chosen === "nodeway.json" ? "text" : "binary",
      fixed: chosen !== "",
      closed: false,
      jobs: new SocketFollows(),
      tokenDigest,
      pendingFollows: 0,
    };
    res.upgrade(data, key, chosen, ext, context);
  }

  private upgradeRefusal(
    host: string,
    origin: string,
    key: string,
    version: string,
  ): { status: string; code: ErrorCode; message: string } | null {
    if (!this.browser.hostAllowed(host)) {
      return {
        status: "421 Misdirected Request",
        code: ErrorCode.GW_ERR_FORBIDDEN,
        message: "this gateway does not answer for that Host (see allowedHosts)",
      };
    }
    if (!this.browser.originAllowed(origin, host)) {
      return {
        status: "403 Forbidden",
        code: ErrorCode.GW_ERR_FORBIDDEN,
        message: "WebSocket connections from this Origin are not allowed (see allowedOrigins)",
      };
    }
    if (version !== "13") {
      return {
        status: "426 Upgrade Required",
        code: ErrorCode.GW_ERR_BAD_REQUEST,
        message: "only WebSocket version 13 is spoken here (RFC 6455)",
      };
    }
    if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
      return {
        status: "400 Bad Request",
        code: ErrorCode.GW_ERR_BAD_REQUEST,
        message: "Sec-WebSocket-Key must be 16 bytes in base64",
      };
    }
    return null;
  }

  /** One client frame: decoded at the edge with its limit, then handled; every failure is answered, never thrown. */
  private onMessage(ws: WebSocket<SocketData>, message: ArrayBuffer, isBinary: boolean): void {
    this.framesIn++;
    if (message.byteLength > this.config.wsMaxPayloadBytes) {
      this.badFrames++;
      const limit = this.config.wsMaxPayloadBytes;
      ws.end(1009, `a frame of ${message.byteLength} bytes; at most ${limit} (wsMaxPayloadBytes)`);
      return;
    }
    this.setMode(ws, isBinary ? "binary" : "text");
    let cmd: ClientCommand;
    try {
      cmd = decodeClientFrame(message, isBinary, this.config.wsMaxPayloadBytes);
    } catch (err) {
      this.badFrames++;
      const pe = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.PROTO_ERR_DECODE, String(err));
      const error = { code: pe.code, message: pe.message };
      // A command that was recognisable is answered as a command (with its request_id); garbage as an error frame.
      if (pe.command) this.sendTo(ws, { type: "rpc_response", ...pe.command, error });
      else this.sendTo(ws, { type: "error", ...error });
      return;
    }
    void this.handle(ws, cmd).catch((err: unknown) => this.replyError(ws, cmd, err));
  }

  /** A command that failed is answered as a command, with its request_id and the error's stable code. */
  private replyError(ws: WebSocket<SocketData>, cmd: ClientCommand, err: unknown): void {
    const { status, body } = toWireError(err);
    if (status === 500) logInternal(err, "internal error on /ws");
    const requestId = cmd.request_id ? { request_id: cmd.request_id } : {};
    this.sendTo(ws, { type: "rpc_response", command: cmd.command, ...requestId, error: body });
  }

  private reply(ws: WebSocket<SocketData>, cmd: ClientCommand, result: unknown): void {
    this.sendTo(ws, {
      type: "rpc_response",
      command: cmd.command,
      ...(cmd.request_id ? { request_id: cmd.request_id } : {}),
      result,
    });
  }

  /**
   * Runs `fn` holding one follow of the socket's limit until it calls `joined` (the follow is then counted as
   * the socket's own) or settles: commands in flight count against the limit too.
   */
  private async withFollowRoom<T>(
    ws: WebSocket<SocketData>,
    jobId: string | undefined,
    fn: (joined: () => void) => Promise<T>,
  ): Promise<T> {
    this.checkFollowRoom(ws, jobId);
    const u = ws.getUserData();
    u.pendingFollows++;
    let held = true;
    const joined = () => {
      if (held) u.pendingFollows--;
      held = false;
    };
    try {
      return await fn(joined);
    } finally {
      joined();
    }
  }

  private async handle(ws: WebSocket<SocketData>, cmd: ClientCommand): Promise<void> {
    switch (cmd.command) {
      case "ping":
        this.sendTo(ws, { type: "pong", ts: Date.now(), ...(cmd.request_id ? { request_id: cmd.request_id } : {}) });
        return;
      case "set_mode": {
        // An explicit set_mode holds until the next one; frame kinds no longer switch it.
        const u = ws.getUserData();
        u.fixed = false;
        this.setMode(ws, cmd.data.mode);
        u.fixed = true;
        this.reply(ws, cmd, { mode: cmd.data.mode });
        return;
      }
      case "run_job":
        return this.withFollowRoom(ws, undefined, (joined) => this.runJob(ws, cmd, joined));
      case "reconnect_job":
        this.reconnect(ws, cmd);
        return;
      case "cancel_job": {
        const rec = await this.jobs.cancel(cmd.data.job_id);
        this.reply(ws, cmd, {
          job_id: rec.id,
          status: rec.status,
          message: isTerminal(rec.status) ? `job is ${rec.status}` : "Job cancellation requested",
        });
        return;
      }
      case "get_status": {
        if (cmd.data.job_id) {
          const rec = await this.jobs.get(cmd.data.job_id);
          this.reply(ws, cmd, {
            job_id: rec.id,
            workflow_id: rec.workflow_id,
            status: rec.status,
            attempt: rec.attempt,
            agent_id: rec.agent_id,
          });
        } else {
          const active: Record<string, unknown>[] = [];
          for (const id of ws.getUserData().jobs.keys()) {
            const rec = await this.jobs.find(id);
            if (rec) active.push({ job_id: rec.id, workflow_id: rec.workflow_id, status: rec.status });
          }
          this.reply(ws, cmd, { active_jobs: active });
        }
        return;
      }
      case "stop": {
        // NodeTool semantics: stop streaming to this socket; the job keeps running. A thread's stop ends its
        // running turn (what a chat's stop button means): that job is cancelled.
        if (cmd.data.job_id) {
          this.leaveJob(ws, cmd.data.job_id);
          this.dropWaitingResume(ws, cmd.data.job_id);
        }
        const stopped = cmd.data.thread_id ? await this.threads.stop(cmd.data.thread_id) : null;
        this.sendTo(ws, {
          type: "generation_stopped",
          ...(cmd.data.job_id ? { job_id: cmd.data.job_id } : stopped ? { job_id: stopped } : {}),
          ...(cmd.data.thread_id ? { thread_id: cmd.data.thread_id } : {}),
        });
        return;
      }
      case "chat_message": {
        this.checkFollowRoom(ws);
        const turn = await this.threads.turn(
          parseChatTurn(cmd.data),
          (jobId) => this.joinTopic(ws, jobId),
          (m) => this.sendTo(ws, { type: "message", ...m }),
        );
        this.reply(ws, cmd, { thread_id: turn.thread.id, message_id: turn.message.id, job_id: turn.jobId });
        return;
      }
      default:
        assertNever(cmd, "command");
    }
  }

  /** `run_job`: a saved workflow or a graph sent along; the socket follows the job from its first event. */
  private async runJob(
    ws: WebSocket<SocketData>,
    cmd: Extract<ClientCommand, { command: "run_job" }>,
    joined: () => void,
  ): Promise<void> {
    const d = cmd.data;
    const workflow: { id: string; graph: Graph } = d.graph
      ? { id: typeof d.workflow_id === "string" ? d.workflow_id : "adhoc", graph: d.graph }
      : await this.workflows.get(String(d.workflow_id));
    const spec = runSpecOf(d);
    const { job, created } = await this.jobs.submit({
      workflow,
      ...spec,
      // A run_job sent again with the same job_id (its socket dropped before the answer) is not run twice.
      ...(typeof d.job_id === "string" ? { idempotencyKey: `ws\0${d.job_id}` } : {}),
      beforePublish: (jobId) => {
        joined();
        this.joinTopic(ws, jobId);
      },
    });
    this.reply(ws, cmd, { job_id: job.id, workflow_id: job.workflow_id, status: job.status });
    // The first run's job: this socket follows it from its first event, as a resume from seq 0.
    if (!created)
      this.reconnect(ws, { command: "reconnect_job", data: { job_id: job.id, last_seq: 0 }, request_id: undefined });
  }

  /**
   * `reconnect_job`: the follow room is taken now; the socket resumes once the job's record is read. Asks for one
   * job wait together on one read, each as one entry (a storm of resumes holds no pending call per socket).
   */
  private reconnect(ws: WebSocket<SocketData>, cmd: ReconnectCommand): void {
    const jobId = cmd.data.job_id;
    this.checkFollowRoom(ws, jobId);
    const u = ws.getUserData();
    u.pendingFollows++;
    const waiting = this.resumesWaiting.get(jobId);
    if (waiting) {
      waiting.push({ ws, u, cmd });
      return;
    }
    const asks = [{ ws, u, cmd }];
    this.resumesWaiting.set(jobId, asks);
    this.jobs.get(jobId).then(
      (rec) => this.resumeAll(jobId, asks, rec, null),
      (err: unknown) => this.resumeAll(jobId, asks, null, err),
    );
  }

  /** A `stop` of a job the socket asked to resume: the ask still waiting on the record is dropped. */
  private dropWaitingResume(ws: WebSocket<SocketData>, jobId: string): void {
    const asks = this.resumesWaiting.get(jobId);
    if (!asks) return;
    for (let i = asks.length - 1; i >= 0; i--) {
      if (asks[i]!.ws !== ws) continue;
      asks[i]!.u.pendingFollows--;
      asks.splice(i, 1);
    }
  }

  private resumeAll(jobId: string, asks: ResumeAsk[], rec: JobRecord | null, err: unknown): void {
    this.resumesWaiting.delete(jobId);
    for (const a of asks) {
      a.u.pendingFollows--;
      if (a.u.closed) continue;
      if (rec === null) {
        this.replyError(a.ws, a.cmd, err);
        continue;
      }
      try {
        this.resumeFrom(a, rec);
      } catch (e) {
        this.replyError(a.ws, a.cmd, e);
      }
    }
  }

  /**
   * Header, replay after the ask's `last_seq`, then live. From memory it all happens in this turn: the replay
   * ends at the last event the hub handed on, and every later one reaches the job's topic, joined now.
   */
  private resumeFrom(a: ResumeAsk, rec: JobRecord): void {
    const { ws, u } = a;
    const jobId = a.cmd.data.job_id;
    const lastSeq = a.cmd.data.last_seq ?? 0;
    // Past what the hub has processed: the stream path, which checks the seq against what is stored.
    const now = lastSeq > this.hub.lastSeq ? null : this.hub.replayNow(jobId, lastSeq);
    if (now === null) {
      void this.resume(ws, jobId, lastSeq, rec).catch((err: unknown) => this.replyError(ws, a.cmd, err));
      return;
    }
    this.leaveJob(ws, jobId);
    this.sendResumed(ws, jobId, rec, lastSeq, { count: now.count, lastSeq: now.lastSeq, incomplete: false });
    for (let i = 0; i < now.count && !u.closed; ) {
      const b = now.batch(i);
      if (b.length === 0) break;
      i += b.length;
      ws.cork(() => {
        for (const d of b) this.sendDelivery(ws, d);
      });
    }
    if (!now.ended) this.joinTopic(ws, jobId);
  }

  /** `job_resumed` (and the record's state when the history is gone and nothing replays). */
  private sendResumed(
    ws: WebSocket<SocketData>,
    jobId: string,
    rec: JobRecord,
    lastSeq: number,
    r: Pick<ReplayHeader, "count" | "lastSeq" | "incomplete"> | null,
  ): void {
    const incomplete = r?.incomplete ?? false;
    this.sendTo(ws, {
      type: "job_resumed",
      job_id: jobId,
      workflow_id: rec.workflow_id,
      status: rec.status,
      last_seq: r?.lastSeq ?? lastSeq,
      replay_count: r?.count ?? 0,
      ...(incomplete ? { replay_incomplete: true } : {}),
    });
    if (incomplete && (r?.count ?? 0) === 0) {
      this.sendTo(ws, {
        type: "job_update",
        job_id: jobId,
        workflow_id: rec.workflow_id,
        attempt: rec.attempt,
        status: rec.status,
        ...(rec.error ? { error: rec.error } : {}),
      });
    }
  }

  /** A resume the stream answers: header, replay read in batches, then live — moving to the topic once caught up. */
  private async resume(ws: WebSocket<SocketData>, jobId: string, lastSeq: number, rec: JobRecord): Promise<void> {
    const u = ws.getUserData();
    this.leaveJob(ws, jobId);
    const entry = { following: null as Following | null, onTopic: false };
    u.jobs.set(jobId, entry);
    let ended = false;
    const following = await follow(
      this.hub,
      jobId,
      lastSeq,
      {
        header: (r) => this.sendResumed(ws, jobId, rec, lastSeq, r),
        send: (d) => this.sendDelivery(ws, d),
        // A replay batch in one socket write: outside uWS's own callbacks nothing corks sends by itself.
        batch: (fn) => (u.closed ? fn() : void ws.cork(fn)),
        end: () => {
          ended = true;
        },
      },
      { replay: true },
    ).catch((err: unknown) => {
      // A refused or failed resume holds no follow room.
      if (u.jobs.get(jobId) === entry) u.jobs.delete(jobId);
      throw err;
    });
    if (u.closed || ended || u.jobs.get(jobId) !== entry) {
      following.stop();
      if (ended) u.jobs.delete(jobId);
      return;
    }
    entry.following = following;
    this.hub.whenCaughtUp(following.lastSent, () => {
      if (u.closed || u.jobs.get(jobId) !== entry || ended) return;
      following.stop();
      this.joinTopic(ws, jobId);
    });
  }

  /** Socket-job follows by how events reach them: the job's uWS topic, or direct sends while catching up. */
  followStats(): { topic: number; direct: number } {
    let topic = 0;
    let direct = 0;
    for (const ws of this.sockets) {
      for (const e of ws.getUserData().jobs.values()) {
        if (e.onTopic) topic++;
        else direct++;
      }
    }
    return { topic, direct };
  }

  /** Sockets counted in the per-job topic sets (each should be a live socket's follow). */
  topicMemberships(): number {
    let n = 0;
    for (const t of this.topics.values()) n += t.sockets.size;
    return n;
  }

  /** Closes (1008) the sockets opened with a token the check no longer accepts (revoked or expired); how many. */
  closeRevoked(): number {
    let n = 0;
    for (const ws of [...this.sockets]) {
      const d = ws.getUserData().tokenDigest;
      if (d === null) continue;
      const standing = this.auth.standing(d);
      if (standing === "accepted") continue;
      n++;
      try {
        ws.end(1008, standing === "expired" ? "API token expired" : "API token revoked");
      } catch {
        /* already closed */
      }
    }
    return n;
  }

  /** Gateway shutdown: close every socket with 1001 so clients reconnect and resume elsewhere. */
  closeAll(): void {
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    for (const ws of [...this.sockets]) {
      try {
        ws.end(1001, "gateway going away");
      } catch {
        /* already closed */
      }
    }
  }
}
