/**
 * Runs one pulled job: claims it in the job record (compare-and-set), runs the graph, publishes every event,
 * keeps the lease alive, obeys cancel and timeout, and finishes in the order that loses nothing:
 * record → terminal event (PubAck) → ack the job message.
 *
 * A first attempt pulled fresh starts its graph while the claim is in flight (two KV round trips that would
 * otherwise sit in every job's time to first token). Nothing it emits leaves the agent before the claim is stored:
 * events wait in order behind the `running` update, and a claim that fails aborts the run and drops them. A job
 * that waited in the queue is claimed first: it may have been cancelled meanwhile, and a cancelled job is skipped,
 * not started (design §4).
 */
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { headers } from "@nats-io/transport-node";
import type { JsMsg } from "@nats-io/jetstream";
import type { ObjectStore } from "@nats-io/obj";
import {
  CancelReason,
  ErrorCode,
  canTransition,
  casJobRecord,
  readJobRecord,
  type AckedPublisher,
  type JobCancel,
  encodeMsgpack,
  encodeJson,
  eventMsgId,
  isTerminal,
  subjects,
  type JobDispatch,
  type JobEvent,
  type JobRecord,
  type JobState,
  type RecordStore,
  type WireError,
  type ExecutionStrategy,
  pickStrategy,
  payloadLimitBytes,
} from "../protocol/index.js";
import { UnknownNodeTypeError, type EngineEvent, type RunGraphResult } from "./engine/engine.js";
import type { NodeDef, NodeLimits } from "./engine/types.js";
import { runWithStrategy, RunnerCrashedError, type RunnerSpares } from "./strategies.js";
import type { DockerRunner } from "./docker.js";
import { JobAssets } from "./assets.js";
import type { EventQueue, Outbox } from "./outbox.js";

export interface JobRunnerDeps {
  nc: NatsConnection;
  pub: AckedPublisher<MsgHdrs>;
  /** Keeps each event until NATS acknowledges it and republishes it, in order, while it does not. */
  outbox: Outbox;
  /** Job records: reads and compare-and-set writes (the agent passes an `AckedKv`). */
  jobsKv: RecordStore;
  library: ReadonlyMap<string, NodeDef>;
  /** Caps on what each node builds (`nodeListMaxItems`, `nodeStringMaxBytes`, `nodeDictMaxKeys`). */
  nodeLimits: NodeLimits;
  /** The agent's policy: the strategies it offers, its default first (protocol `pickStrategy`). */
  strategies: readonly ExecutionStrategy[];
  /** Heap limit of a threaded or subprocess run (MiB, 0 = V8's default). */
  jobMemoryMb: number;
  /** The agent's docker runs, when it offers `docker`. */
  docker: DockerRunner | null;
  /** GPU device ids this job's run is given: the agent's for a job of the `gpu` pool, else none. */
  gpus: readonly string[];
  /** The agent's spare threads and processes (`warmRunners`), or null. */
  spares: RunnerSpares | null;
  /** `nw_assets`, where binary outputs over `assetInlineMaxBytes` go (null: none, and such outputs fail the job). */
  assets: ObjectStore | null;
  assetInlineMaxBytes: number;
  agentId: string;
  ackWaitMs: number;
  maxAttempts: number;
  /** Events one attempt may publish before it fails `JOB_ERR_TOO_MANY_EVENTS` (the stream would drop its oldest). */
  eventBudget: number;
  /** When the NATS connection was lost, or null while connected. */
  disconnectedSinceMs: () => number | null;
  /** The agent's one reading of how long dispatches waited (see `QueueClock`). */
  queueClock: QueueClock;
  log: (line: string) => void;
}

/**
 * How long a dispatch waits for its job record to become readable. The gateway sends both in one burst and the
 * record lives in another stream, so it can land a moment after the dispatch; missing for longer means the
 * submit failed (its client got an error) and the dispatch is ended.
 */
export const RECORD_WAIT_MS = 5_000;

/**
 * A first attempt starts before its claim only when its dispatch was stored less than this long ago (JetStream's
 * timestamp, read through `QueueClock`). A cancel inside that window is no different from one just after the
 * claim; a job that sat in the queue longer is claimed first.
 */
export const EARLY_START_MAX_AGE_MS = 1_000;

/**
 * How long a dispatch has been queued, from the server's store timestamp and our clock, with our clock's lag
 * behind the server's taken out. A real age is never negative, so a negative reading proves our clock is behind by
 * at least that much; the largest such lag seen is added to every later reading. Without it, an agent whose clock
 * runs 5 s behind would take a dispatch that waited 4 s for a fresh one and start a job that may have been
 * cancelled meanwhile. A clock that runs ahead only makes dispatches look older: they are claimed before they
 * start, which is slower, never wrong. One per agent: the lag is a property of the host, not of a job.
 */
export class QueueClock {
  /** How far our clock has been seen behind the server's (ms, ≥ 0). */
  behindMs = 0;
  constructor(private readonly onLag: (behindMs: number) => void = () => undefined) {}

  ageMs(storedAtMs: number, nowMs: number = Date.now()): number {
    const raw = nowMs - storedAtMs;
    if (raw < -this.behindMs) {
      const before = this.behindMs;
      this.behindMs = -raw;
      // Report a lag worth knowing about once, and again when it grows by as much.
      if (this.behindMs >= LAG_REPORT_MS && this.behindMs >= 2 * before) this.onLag(this.behindMs);
    }
    return raw + this.behindMs;
  }
}
const LAG_REPORT_MS = 100;

/** The job's strategy is not one this agent may give it. */
class StrategyUnavailable extends Error {}

/** Why a run stopped early; becomes the job's final state. */
class StopReason {
  constructor(readonly state: JobState | "handed_back", readonly message: string) {}
}

const now = () => new Date().toISOString();

/** Compare-and-set that answers with the written record, or null when `change` refused or none exists. */
async function casRecord(
  kv: RecordStore,
  jobId: string,
  change: (rec: JobRecord) => JobRecord | null,
  known?: { rec: JobRecord; revision: number },
): Promise<{ rec: JobRecord; revision: number } | null> {
  const r = await casJobRecord(kv, jobId, change, known);
  return r && r.written ? { rec: r.rec, revision: r.revision } : null;
}
const readRecord = readJobRecord;

export class JobRunner {
  private n = 0;
  /**
   * Events waiting behind an asset upload, and the waiters for all of them to reach `events`. A count rather
   * than a list of the promises: a long stream kept every one of them (and its closure) alive to the job's end,
   * and every young-generation GC copied them.
   */
  private pubsInFlight = 0;
  private pubsSettled: (() => void)[] = [];
  /**
   * Events emitted before the claim is stored, in order; null once they are published. A claim that fails
   * never publishes them: they go with the runner.
   */
  private held: Record<string, unknown>[] | null = [];
  /**
   * Why an event could not be published (too large for NATS), once one could not. A held event is published
   * after the claim, when the graph may have finished already: the job fails all the same.
   */
  private tooLarge: string | null = null;
  /** Why the job's events passed the stream's per-job cap, once they did: the job fails. */
  private tooMany: string | null = null;
  /** Why a binary output could not be stored as an asset, once one could not: the job fails. */
  private assetFailed: string | null = null;
  /** This attempt's events not acknowledged yet, in order (opened with the first one). */
  private events: EventQueue | null = null;
  /** Why some of the job's events could not be stored (NATS away past the outbox's bounds): the job fails. */
  private unstored: string | null = null;
  private readonly assets: JobAssets;
  /**
   * The event publishes waiting behind an asset upload, in order (null when none waits): an event that carries
   * a large binary value is published once its bytes are stored, and every event after it waits its turn.
   */
  private offloading: Promise<void> | null = null;
  private readonly controller = new AbortController();
  private leaseTimer: NodeJS.Timeout | null = null;
  private timeoutTimer: NodeJS.Timeout | null = null;
  private lastLeaseOkMs = Date.now();
  /** The record as this attempt wrote it when claiming, and its revision. */
  private owned: { rec: JobRecord; revision: number } | null = null;
  readonly jobId: string;
  readonly attempt: number;

  constructor(
    private readonly deps: JobRunnerDeps,
    private readonly msg: JsMsg,
    private readonly job: JobDispatch,
  ) {
    this.jobId = job.job_id;
    this.attempt = msg.info.deliveryCount;
    this.assets = new JobAssets(deps.assets, deps.assetInlineMaxBytes, job);
  }

  /**
   * Terminates the job message (no redelivery). Sent without a reason: nats-server before 2.10 (Debian's 2.9)
   * ignores `+TERM <reason>` altogether, which left the message pending and redelivered it after ack_wait.
   */
  private term(reason: string): void {
    this.deps.log(`job ${this.jobId}: attempt ${this.attempt} ends the job message: ${reason}`);
    this.msg.term();
  }

  /** A cancel for this job (the agent listens on `nw.cancel.*` once and routes here). */
  cancel(c: JobCancel): void {
    const state: JobState = c.reason === CancelReason.timeout ? "timed_out" : "cancelled";
    this.controller.abort(new StopReason(state, c.reason));
  }

  /** Stop the run from outside (drain hand-back). */
  handBack(): void {
    this.controller.abort(new StopReason("handed_back", "agent draining"));
  }

  private publish(ev: Record<string, unknown>): void {
    if (this.held) {
      this.held.push(ev);
      return;
    }
    if (this.offloading !== null || this.assets.needs(ev.value) || this.assets.needs(ev.result)) {
      this.publishAfterOffload(ev);
      return;
    }
    this.publishNow(ev);
  }

  /** Stores the event's large binary values as assets, then publishes it with references in their place. */
  private publishAfterOffload(ev: Record<string, unknown>): void {
    // Counted as in flight from now: the terminal event waits for it like for any publish (`allPublished`).
    this.pubsInFlight++;
    const nodeId = typeof ev.node_id === "string" ? ev.node_id : undefined;
    const turn = (this.offloading ?? Promise.resolve()).then(async () => {
      try {
        if (this.assetFailed === null) {
          const out = { ...ev };
          if ("value" in ev) out.value = await this.assets.offload(ev.value, nodeId);
          if ("result" in ev) out.result = await this.assets.offload(ev.result, nodeId);
          this.publishNow(out);
        }
      } catch (err) {
        this.assetFailed ??= (err as Error).message;
        this.deps.log(`job ${this.jobId}: ${this.assetFailed}`);
        this.controller.abort(new StopReason("failed", this.assetFailed));
      } finally {
        this.pubSettled();
      }
    });
    this.offloading = turn;
    void turn.then(() => {
      if (this.offloading === turn) this.offloading = null;
    });
  }

  private publishNow(ev: Record<string, unknown>): void {
    // Checked per event because after a SIGCONT any timer may fire before the lease timer does.
    if (!this.leaseHeld()) {
      this.controller.abort(new StopReason("cancelled", "lease lost"));
      return;
    }
    const body = { ...ev, job_id: this.jobId, workflow_id: this.job.workflow_id, attempt: this.attempt, ts: performance.timeOrigin + performance.now() };
    const data = encodeMsgpack(body);
    const limit = payloadLimitBytes(this.deps.nc);
    if (data.byteLength > limit) {
      // NATS would refuse it, and the event would be lost with only a line in this log: the job fails instead,
      // saying which event and by how much (see `run`). Nothing after it is published; the terminal update is.
      const what = `${String(ev.type)}${ev.node_id ? ` of node "${String(ev.node_id)}"` : ""}`;
      this.tooLarge ??= `the ${what} is ${data.byteLength} bytes; NATS carries at most ${limit} (max_payload less headers)`;
      this.controller.abort(new StopReason("failed", this.tooLarge));
      return;
    }
    if (this.n >= this.deps.eventBudget) {
      this.tooMany ??= `the job emitted more than ${this.deps.eventBudget} events, the most NW_EVENTS keeps of one job (eventsMaxPerJob)`;
      this.controller.abort(new StopReason("failed", this.tooMany));
      return;
    }
    const h = headers();
    h.set("Nats-Msg-Id", eventMsgId(this.jobId, this.attempt, ++this.n));
    // Kept until NATS acknowledges it, republished with the same id while it does not (agent/outbox.ts); the
    // terminal event waits for all of them (`allPublished`).
    (this.events ??= this.openEvents()).push(data, h);
  }

  private openEvents(): EventQueue {
    const log = (line: string) => this.deps.log(`job ${this.jobId}: ${line}`);
    return this.deps.outbox.queue(subjects.jobEvents(this.jobId), (why) => {
      this.unstored ??= why;
      log(why);
      this.controller.abort(new StopReason("failed", why));
    }, log);
  }

  private pubSettled(): void {
    if (--this.pubsInFlight > 0) return;
    for (const fn of this.pubsSettled.splice(0)) fn();
  }

  /**
   * Resolves once every event so far has its PubAck, or could not be stored (`unstored`, the job fails); never
   * rejects.
   */
  private async allPublished(): Promise<void> {
    if (this.pubsInFlight > 0) await new Promise<void>((resolve) => this.pubsSettled.push(resolve));
    await this.events?.settled();
  }

  /** Publishes the terminal event with a fixed id (re-publishing it after a crash is deduplicated). */
  private async publishTerminal(ev: Record<string, unknown>, attempt: number): Promise<void> {
    const body = { ...ev, job_id: this.jobId, workflow_id: this.job.workflow_id, attempt, ts: performance.timeOrigin + performance.now() };
    const h = headers();
    h.set("Nats-Msg-Id", eventMsgId(this.jobId, attempt, 0));
    await this.allPublished();
    // Retried with the same id until the server acknowledges it (design: publish → PubAck → ack the job), so a
    // NATS restart at the wrong moment delays the terminal event rather than leaving it to a redelivery.
    const data = encodeMsgpack(body);
    for (let i = 0; ; i++) {
      try {
        await this.deps.pub.publish(subjects.jobEvents(this.jobId), data, h, 10_000);
        return;
      } catch (err) {
        if (i >= 5 || this.deps.nc.isClosed()) throw err;
        this.deps.log(`job ${this.jobId}: terminal event publish failed (${(err as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async run(): Promise<void> {
    const { jobsKv } = this.deps;
    const jobId = this.jobId;

    // The extra delivery after the last allowed attempt only records the failure.
    if (this.attempt > this.deps.maxAttempts) {
      const error: WireError = { code: ErrorCode.JOB_ERR_MAX_DELIVERIES, message: `max deliveries reached (${this.deps.maxAttempts} attempts)` };
      const w = await casRecord(jobsKv, jobId, (r) => (isTerminal(r.status) ? null : { ...r, status: "failed", error, finished_at: now() }));
      if (w) await this.publishTerminal({ type: "job_update", status: "failed", error, message: error.message }, w.rec.attempt);
      this.term("max deliveries reached");
      return;
    }

    try {
      await this.claimAndRun();
    } finally {
      if (this.leaseTimer) clearInterval(this.leaseTimer);
      if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
      this.events?.close();
    }
  }

  private async claimAndRun(): Promise<void> {
    const jobId = this.jobId;
    const started = performance.now();
    // The timeout counts from the graph's start, which for a first attempt comes before the claim.
    const timeoutS = this.job.timeout_s;
    if (typeof timeoutS === "number" && timeoutS > 0) {
      this.timeoutTimer = setTimeout(() => this.controller.abort(new StopReason("timed_out", `timed out after ${timeoutS} s`)), timeoutS * 1000);
    }
    const queuedMs = this.deps.queueClock.ageMs(this.msg.info.timestampNanos / 1e6);
    const early = this.attempt === 1 && queuedMs < EARLY_START_MAX_AGE_MS ? this.runJobGraph() : null;
    const dropEarly = async (why: string): Promise<void> => {
      if (!early) return;
      this.controller.abort(new StopReason("cancelled", "not claimed"));
      await early;
      this.deps.log(`job ${jobId}: not claimed (${why}); aborted the run it had started while claiming, nothing was published`);
    };
    const outcome = await this.claim().catch(async (err: unknown) => {
      await dropEarly((err as Error).message);
      throw err;
    });
    if (outcome.kind !== "claimed") await dropEarly(outcome.kind);
    if (outcome.kind === "finished") {
      // Finished already (cancelled while queued, or we crashed after writing the record): make sure its
      // terminal event exists (deduplicated by id), then drop the message.
      const t = outcome.rec;
      if (t.attempt > 0) await this.publishTerminal(terminalUpdate(t), t.attempt).catch(() => undefined);
      this.term("job already finished");
      return;
    }
    if (outcome.kind === "missing") {
      this.term("no job record (never written, or past retention)");
      return;
    }
    if (outcome.kind === "held") {
      // Another delivery of this job owns the record with an attempt at least ours: after a NATS restart the
      // server may deliver a message again under the same count. Ending the message here would strand the job
      // if that owner is gone; left alone, the owner's in-progress acks keep it, or ack_wait hands it to a
      // higher attempt, which takes the record over.
      this.deps.log(`job ${jobId}: record held by attempt ${outcome.rec.attempt} (${outcome.rec.agent_id ?? "?"}), this delivery is attempt ${this.attempt}; leaving the message`);
      return;
    }
    const claim = outcome.claim;
    this.owned = claim;
    if (claim.rec.cancel_requested) this.controller.abort(new StopReason("cancelled", CancelReason.user));

    // `running` first, then whatever the run emitted while the claim was in flight, in order.
    const held = this.held ?? [];
    this.held = null;
    const picked = this.strategyPick();
    const strategy = "strategy" in picked ? picked.strategy : undefined;
    this.publish({ type: "job_update", status: "running", agent_id: this.deps.agentId, strategy, message: this.attempt > 1 ? `attempt ${this.attempt}` : undefined });
    for (const ev of held) this.publish(ev);
    this.startLease();

    const result = await (early ?? this.runJobGraph());
    let final: { status: JobState; error: WireError | null; outputs: Record<string, unknown[]> | null; message?: string };
    if ("thrown" in result) {
      const err = result.thrown;
      const [code, message] =
        err instanceof StrategyUnavailable
          ? [ErrorCode.JOB_ERR_STRATEGY_UNAVAILABLE, err.message]
          : err instanceof RunnerCrashedError
            ? [ErrorCode.JOB_ERR_RUNNER_CRASHED, err.message]
            : [ErrorCode.JOB_ERR_INVALID, err instanceof UnknownNodeTypeError ? err.message : `job could not start: ${(err as Error).message}`];
      final = { status: "failed", error: { code, message }, outputs: null, message };
    } else if (result.status === "completed") final = { status: "completed", error: null, outputs: result.outputs };
    else if (result.status === "failed") {
      const e = result.error;
      const message = `node "${e.node_id}" (${e.node_type}) failed: ${e.message}`;
      final = { status: "failed", error: { code: ErrorCode.JOB_ERR_NODE_FAILED, message }, outputs: result.outputs, message };
    } else {
      const r = result.reason instanceof StopReason ? result.reason : new StopReason("cancelled", String(result.reason));
      if (r.state === "handed_back") {
        // Drain: leave the job for another agent, at once rather than after ack_wait.
        await this.allPublished();
        this.msg.nak();
        return;
      }
      if (r.message === "lease lost") {
        this.deps.log(`job ${this.jobId}: lease lost; stopping without publishing`);
        return; // Another attempt owns the job now; anything we wrote would be fenced off anyway.
      }
      const code = r.state === "timed_out" ? ErrorCode.JOB_ERR_TIMEOUT : ErrorCode.JOB_ERR_CANCELLED;
      final = { status: r.state as JobState, error: { code, message: r.message }, outputs: null, message: r.message };
    }
    // The record refers to the assets its outputs' events did (same bytes, same asset), never to the bytes.
    if (final.outputs !== null && this.assets.needs(final.outputs)) {
      try {
        final = { ...final, outputs: (await this.assets.offload(final.outputs)) as Record<string, unknown[]> };
      } catch (err) {
        this.assetFailed ??= (err as Error).message;
      }
    }
    await this.offloading;
    // The record says `completed` only once every event is stored: events NATS would not take fail the job.
    await this.allPublished();
    // An event too large to publish, or bytes the asset store would not take, fail the job, whether that stopped
    // the run or came (held) after its end; a cancel or timeout that came first stands.
    const lost = this.lostOutput();
    if (lost && (final.status === "completed" || final.status === "failed")) {
      final = { status: "failed", error: lost, outputs: null, message: lost.message };
    }
    await this.finish(final, performance.now() - started);
  }

  /** What made the job's output incomplete (an event too large, too many, bytes or events not stored), or null. */
  private lostOutput(): { code: ErrorCode; message: string } | null {
    if (this.tooLarge !== null) return { code: ErrorCode.JOB_ERR_OUTPUT_TOO_LARGE, message: this.tooLarge };
    if (this.tooMany !== null) return { code: ErrorCode.JOB_ERR_TOO_MANY_EVENTS, message: this.tooMany };
    if (this.assetFailed !== null) return { code: ErrorCode.JOB_ERR_ASSET_FAILED, message: this.assetFailed };
    if (this.unstored !== null) return { code: ErrorCode.JOB_ERR_EVENTS_UNSTORED, message: this.unstored };
    return null;
  }

  private picked: ReturnType<typeof pickStrategy> | null = null;
  /**
   * The job's strategy under this agent's policy (decided once: the `running` update names it). A graph with an
   * `inAgent` node runs where any other does: the runner calls the agent for that node (agent/strategies.ts).
   */
  private strategyPick(): ReturnType<typeof pickStrategy> {
    return (this.picked ??= pickStrategy(this.job.strategy, this.deps.strategies));
  }

  /** Runs the graph with its strategy; never rejects (a graph that cannot start comes back as `thrown`). */
  private async runJobGraph(): Promise<RunGraphResult | { thrown: unknown }> {
    const picked = this.strategyPick();
    if ("refused" in picked) return { thrown: new StrategyUnavailable(picked.refused) };
    try {
      return await runWithStrategy(picked.strategy, {
        graph: this.job.graph,
        params: this.job.params,
        library: this.deps.library,
        limits: this.deps.nodeLimits,
        signal: this.controller.signal,
        emit: (e: EngineEvent) => {
          if (!this.controller.signal.aborted || e.type === "node_update") this.publish(e as unknown as Record<string, unknown>);
        },
      }, { memoryMb: this.deps.jobMemoryMb, docker: this.deps.docker, gpus: this.deps.gpus, label: this.job.job_id, spares: this.deps.spares });
    } catch (thrown) {
      return { thrown };
    }
  }

  /**
   * Claims the record for this attempt, waiting up to `RECORD_WAIT_MS` for a record that is not readable yet.
   */
  private async claim(): Promise<
    | { kind: "claimed"; claim: { rec: JobRecord; revision: number } }
    | { kind: "finished"; rec: JobRecord }
    | { kind: "held"; rec: JobRecord }
    | { kind: "missing" }
  > {
    const waitUntilMs = Date.now() + RECORD_WAIT_MS;
    // The gateway sends the dispatch just before the record (gateway/jobs.ts `submit`), so a first read can miss
    // it by microseconds: the first retry goes at once (its round trip is the pause), later ones back off.
    for (let pauseMs = 0; ; pauseMs = Math.min(Math.max(2, pauseMs * 2), 250)) {
      const r = await this.claimOnce();
      if (r) {
        if (r.written) return { kind: "claimed", claim: { rec: r.rec, revision: r.revision } };
        if (isTerminal(r.rec.status)) return { kind: "finished", rec: r.rec };
        return { kind: "held", rec: r.rec };
      }
      if (Date.now() >= waitUntilMs) return { kind: "missing" };
      this.msg.working();
      if (pauseMs > 0) await new Promise((res) => setTimeout(res, pauseMs));
    }
  }

  /**
   * One compare-and-set claim; null while there is no record. A claim whose reply was lost (NATS went away
   * after storing the write) is recognised by reading the record back once NATS answers: ours if it names this
   * agent and attempt.
   */
  private async claimOnce(): Promise<Awaited<ReturnType<typeof casJobRecord>>> {
    const { jobsKv } = this.deps;
    const change = (r: JobRecord): JobRecord | null => {
      if (isTerminal(r.status) || r.attempt >= this.attempt || !canTransition(r.status, "running")) return null;
      return { ...r, status: "running", attempt: this.attempt, agent_id: this.deps.agentId, started_at: r.started_at ?? now() };
    };
    // A dispatch that carries the stored record (a retried submit) makes the claim one write when nothing
    // touched the record since (a cancel while queued did: then the compare-and-set reads and sees it).
    const known = this.attempt === 1 ? this.job.record : undefined;
    try {
      return await casJobRecord(jobsKv, this.jobId, change, known);
    } catch (err) {
      this.deps.log(`job ${this.jobId}: claim failed (${(err as Error).message}); reading the record back`);
      const deadline = Date.now() + this.deps.ackWaitMs;
      for (;;) {
        try {
          const cur = await readJobRecord(jobsKv, this.jobId);
          if (!cur) return null;
          const mine = cur.rec.attempt === this.attempt && cur.rec.agent_id === this.deps.agentId && cur.rec.status === "running";
          return { rec: cur.rec, written: mine, revision: cur.revision };
        } catch (again) {
          if (Date.now() > deadline || this.deps.nc.isClosed()) throw again;
          await new Promise((res) => setTimeout(res, 250));
        }
      }
    }
  }

  private async finish(
    final: { status: JobState; error: WireError | null; outputs: Record<string, unknown[]> | null; message?: string },
    durationMs: number,
  ): Promise<void> {
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    if (!this.leaseHeld()) {
      this.deps.log(`job ${this.jobId}: lease lost before finishing; result dropped`);
      return;
    }
    // The record as claimed is the likely current one (only a cancel request changes it meanwhile).
    const w = await this.whileLeaseHeld(() => casRecord(this.deps.jobsKv, this.jobId, (r) => {
      // Attempt fencing: only the attempt that owns the record may finish it; terminal states never change.
      if (r.attempt !== this.attempt || isTerminal(r.status)) return null;
      const next: JobRecord = { ...r, status: final.status, error: final.error, outputs: final.outputs, finished_at: now() };
      const bytes = Buffer.byteLength(encodeJson(next));
      const limit = payloadLimitBytes(this.deps.nc);
      if (bytes <= limit) return next;
      // A record NATS cannot store would leave the job running until its attempts ran out, each one running it
      // again. The outputs went out as output_update events; the record says why it has none.
      const message = `the job's outputs make its record ${bytes} bytes; NATS stores at most ${limit} (max_payload less headers). They were sent as output_update events`;
      this.deps.log(`job ${this.jobId}: ${message}`);
      return { ...next, status: "failed", outputs: null, error: { code: ErrorCode.JOB_ERR_OUTPUT_TOO_LARGE, message } };
    }, this.owned ?? undefined));
    const written = w?.rec ?? null;
    if (!written) {
      const cur = await readRecord(this.deps.jobsKv, this.jobId);
      if (cur && cur.rec.attempt === this.attempt && isTerminal(cur.rec.status)) {
        await this.publishTerminal(terminalUpdate(cur.rec), this.attempt);
        this.term("finished elsewhere");
      } else {
        this.deps.log(`job ${this.jobId}: attempt ${this.attempt} is no longer the owner; result dropped`);
      }
      return;
    }
    await this.publishTerminal({ ...terminalUpdate(written), duration: durationMs / 1000 }, this.attempt);
    // A plain ack: if it is lost, the redelivery finds the record terminal and ends the message then.
    if (final.status === "completed" || final.status === "failed") this.msg.ack();
    else this.term(final.status);
  }

  /**
   * Retries `op` (a record write) while NATS is away or recovering, as long as the lease may still be ours: an
   * attempt whose events waited out an outage records its result once NATS is back rather than run again.
   */
  private async whileLeaseHeld<R>(op: () => Promise<R>): Promise<R> {
    for (let i = 0; ; i++) {
      try {
        return await op();
      } catch (err) {
        if (this.deps.nc.isClosed() || !this.leaseHeld()) throw err;
        if (i === 0) this.deps.log(`job ${this.jobId}: record write failed (${(err as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** In-progress acks extend the lease; a stall longer than ack_wait (SIGSTOP, a dead link) means it is gone. */
  private startLease(): void {
    const period = Math.max(100, Math.floor(this.deps.ackWaitMs / 3));
    this.lastLeaseOkMs = Date.now();
    this.leaseTimer = setInterval(() => {
      if (!this.leaseHeld()) {
        this.controller.abort(new StopReason("cancelled", "lease lost"));
        return;
      }
      // While cut off from NATS nothing extends the lease: past ack_wait the server may have given the job to
      // another agent, so the check above stops the run rather than let two attempts race.
      if (this.deps.nc.isClosed() || this.deps.disconnectedSinceMs() !== null) return;
      this.msg.working();
      this.lastLeaseOkMs = Date.now();
      // The record tells us if another attempt took over while we were away.
      void readRecord(this.deps.jobsKv, this.jobId)
        .then((cur) => {
          if (cur && (cur.rec.attempt > this.attempt || (isTerminal(cur.rec.status) && cur.rec.attempt !== this.attempt))) {
            this.lastLeaseOkMs = 0;
            this.controller.abort(new StopReason("cancelled", "lease lost"));
          }
        })
        .catch(() => undefined);
    }, period);
  }

  private leaseHeld(): boolean {
    return Date.now() - this.lastLeaseOkMs < this.deps.ackWaitMs;
  }
}

/** The terminal `job_update` that matches a finished record. */
export function terminalUpdate(r: JobRecord): Record<string, unknown> {
  const ev: Partial<JobEvent> & Record<string, unknown> = { type: "job_update", status: r.status };
  if (r.error) {
    ev.error = r.error;
    ev.message = r.error.message;
  }
  if (r.status === "completed") ev.result = r.outputs ?? {};
  return ev;
}

