/**
 * Runs one pulled job: claims it in the job record (compare-and-set, through a gateway: agents cannot reach
 * `nw_jobs`; the claim gives the lease token every event of the attempt carries), runs the graph, publishes every
 * event, keeps the lease alive, obeys cancel and timeout, and finishes in the order that loses nothing:
 * every event stored → record (the gateway that writes it publishes the terminal event) → ack the job message.
 *
 * A first attempt pulled fresh starts its graph while the claim is in flight (two KV round trips that would
 * otherwise sit in every job's time to first token). Nothing it emits leaves the agent before the claim is stored:
 * events wait in order behind the `running` update, and a claim that fails aborts the run and drops them. A job
 * that waited in the queue is claimed first: it may have been cancelled meanwhile, and a cancelled job is skipped,
 * not started.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { JsMsg } from "@nats-io/jetstream";
import {
  CancelReason,
  ErrorCode,
  assertNever,
  canTransition,
  checkJsonShape,
  type JobCancel,
  encodeJson,
  isTerminal,
  jobUpdate,
  type Graph,
  type GraphEvent,
  type JobDispatch,
  type JobEventBody,
  type JobRecord,
  type JobState,
  type WireError,
  type ExecutionStrategy,
  pickStrategy,
} from "../protocol/index.js";
import {
  casJobRecord,
  readJobRecord,
  PayloadTooLargeError,
  type EventPublisher,
  type EventSource,
  type JobEventQueue,
  type JobRecordClient,
  type RecordClient,
  type RecordStore,
} from "../nats/index.js";
import { UnknownNodeTypeError, type RunGraphResult } from "./engine/engine.js";
import type { NodeDef, NodeLimits } from "./engine/types.js";
import { runWithStrategy, RunnerCrashedError, type DockerRunner, type RunnerSpares } from "./runners/index.js";
import { AssetBudget, JobAssets } from "./assets.js";
import type { JobAssetStore } from "./asset-io.js";
import { ChildJobs, remoteNodeIds } from "./child-jobs.js";
import { objectStoreAssets } from "./nodes/asset-store.js";

export interface JobRunnerDeps {
  /** Stamps, encodes and publishes the job's events; its outbox keeps each until NATS acknowledges it. */
  publisher: EventPublisher;
  /** Job records: reads and compare-and-set writes, through the gateways (nats/records.ts). */
  records: RecordClient;
  library: ReadonlyMap<string, NodeDef>;
  /** The graph as this agent runs it (ComfyUI's class nodes compiled into prompts); throws when it cannot. */
  compile?: (graph: Graph) => Graph;
  /** Whether this agent can run a node of `pool` (absent: it runs every node of its graphs itself). */
  runsPool?: (pool: string) => boolean;
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
  /**
   * The job's asset store (`nw_assets` through the gateways, agent/asset-io.ts), given its id and claim secret: where
   * binary outputs over `assetInlineMaxBytes` go (null: none, and such outputs fail the job).
   */
  assetStore: (jobId: string, proof: string) => JobAssetStore | null;
  assetInlineMaxBytes: number;
  /** What one job's assets may hold in all. */
  jobAssetMaxBytes: number;
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

/** Bytes a record request adds around the record's JSON text (job id, claim secret, revision, duration). */
const RECORD_REQUEST_ROOM_BYTES = 1_024;

/** The job's strategy is not one this agent may give it. */
class StrategyUnavailable extends Error {}

/** Why a run stopped early; becomes the job's final state. */
class StopReason {
  constructor(
    readonly state: JobState | "handed_back",
    readonly message: string,
  ) {}
}

const now = () => new Date().toISOString();

/** A job's final state, as its record and terminal update say it. */
interface FinalState {
  status: JobState;
  error: WireError | null;
  outputs: Record<string, unknown[]> | null;
  message?: string;
}

/** The record as this attempt wrote it, and its revision. */
type OwnedRecord = { rec: JobRecord; revision: number };

type ClaimOutcome =
  | { kind: "claimed"; claim: OwnedRecord }
  | { kind: "finished"; rec: JobRecord }
  | { kind: "held"; rec: JobRecord }
  | { kind: "missing" };

/** How a graph run ended; a graph that cannot start comes back as `thrown`. */
type GraphOutcome = RunGraphResult | { thrown: unknown };

/** The fields of an event that may carry large binary data, and the node it names (on most events). */
type Bulky = { type?: string; node_id?: string; value?: unknown; result?: unknown };

/** Compare-and-set that answers with the written record, or null when `change` refused or none exists. */
async function casRecord(
  kv: RecordStore,
  jobId: string,
  change: (rec: JobRecord) => JobRecord | null,
  known?: { rec: JobRecord; revision: number },
): Promise<{ rec: JobRecord; revision: number } | null> {
  const r = await casJobRecord(kv, jobId, change, known);
  return r?.written ? { rec: r.rec, revision: r.revision } : null;
}
const readRecord = readJobRecord;

export class JobRunner {
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
  private held: JobEventBody[] | null = [];
  /**
   * Why an event could not be published (too large for NATS), once one could not. A held event is published
   * after the claim, when the graph may have finished already: the job fails all the same.
   */
  private tooLarge: string | null = null;
  /** Why an event could not be encoded (nested too deep), once one could not: the job fails. */
  private invalidOutput: string | null = null;
  /** Why the job's events passed the stream's per-job cap, once they did: the job fails. */
  private tooMany: string | null = null;
  /** Why a binary output could not be stored as an asset, once one could not: the job fails. */
  private assetFailed: string | null = null;
  /** This attempt's events not acknowledged yet, in order (opened with the first one). */
  private events: JobEventQueue | null = null;
  /** Why some of the job's events could not be stored (NATS away past the outbox's bounds): the job fails. */
  private unstored: string | null = null;
  private readonly assets: JobAssets;
  /** What this job's assets may still hold, shared with the inputs it sends to child jobs. */
  private readonly assetBudget: AssetBudget;
  /** The job's asset store (reads of what it may read, create-only writes). */
  private readonly assetStore: JobAssetStore | null;
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
  /** The envelope of this attempt's events; the lease token joins it at the claim. */
  private source: EventSource;
  /** This job's record, through the gateways; after the claim it holds the attempt's lease token. */
  private readonly store: JobRecordClient;
  /** Resolves when the claim is stored (child jobs may only be asked for by the holder). */
  private readonly claimed: Promise<void>;
  private markClaimed!: () => void;

  constructor(
    private readonly deps: JobRunnerDeps,
    private readonly msg: JsMsg,
    private readonly job: JobDispatch,
  ) {
    this.jobId = job.job_id;
    this.attempt = msg.info.deliveryCount;
    this.source = { jobId: job.job_id, workflowId: job.workflow_id, attempt: this.attempt };
    this.store = deps.records.forJob(job.job_id, job.claim_secret ?? "");
    this.assetStore = deps.assetStore(job.job_id, job.claim_secret ?? "");
    this.assetBudget = new AssetBudget(deps.jobAssetMaxBytes);
    this.assets = new JobAssets(this.assetStore, deps.assetInlineMaxBytes, undefined, this.assetBudget);
    this.claimed = new Promise((resolve) => (this.markClaimed = resolve));
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

  /**
   * Reads the record for what may have been missed: another attempt took over (the lease is gone), or a cancel was
   * asked for while its core-NATS message could not reach this agent (cut off, reconnecting): the record keeps it.
   */
  recheck(): void {
    void readRecord(this.store, this.jobId)
      .then((cur) => {
        if (!cur) return;
        const rec = cur.rec;
        if (rec.attempt > this.attempt || (isTerminal(rec.status) && rec.attempt !== this.attempt)) {
          this.lastLeaseOkMs = 0;
          this.controller.abort(new StopReason("cancelled", "lease lost"));
        } else if (rec.cancel_requested) {
          this.controller.abort(new StopReason("cancelled", CancelReason.user));
        }
      })
      .catch(() => undefined);
  }

  /** Stop the run from outside (drain hand-back). */
  handBack(): void {
    this.controller.abort(new StopReason("handed_back", "agent draining"));
  }

  private get nc(): NatsConnection {
    return this.deps.publisher.nc;
  }

  private publish(ev: JobEventBody): void {
    if (this.held) {
      this.held.push(ev);
      return;
    }
    const bulk: Bulky = ev;
    if (this.offloading !== null || this.assets.needs(bulk.value) || this.assets.needs(bulk.result)) {
      this.publishAfterOffload(ev);
      return;
    }
    this.publishNow(ev);
  }

  /** Stores the event's large binary values as assets, then publishes it with references in their place. */
  private publishAfterOffload(ev: JobEventBody): void {
    // Counted as in flight from now: the terminal event waits for it like for any publish (`allPublished`).
    this.pubsInFlight++;
    const turn = (this.offloading ?? Promise.resolve()).then(async () => {
      try {
        if (this.assetFailed === null) this.publishNow(await this.offloaded(ev));
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

  /** `ev` with its `value` and `result` stored as assets where they are large binary data. */
  private async offloaded(ev: JobEventBody): Promise<JobEventBody> {
    const bulk: Bulky = ev;
    const nodeId = typeof bulk.node_id === "string" ? bulk.node_id : undefined;
    const out: Bulky = { ...ev };
    if ("value" in ev) out.value = await this.assets.offload(bulk.value, nodeId);
    if ("result" in ev) out.result = await this.assets.offload(bulk.result, nodeId);
    return out as JobEventBody;
  }

  private publishNow(ev: JobEventBody): void {
    // Checked per event because after a SIGCONT any timer may fire before the lease timer does.
    if (!this.leaseHeld()) {
      this.controller.abort(new StopReason("cancelled", "lease lost"));
      return;
    }
    const events = (this.events ??= this.openEvents());
    let data: Uint8Array;
    try {
      data = events.encode(ev);
    } catch (err) {
      // NATS would refuse it, and the event would be lost with only a line in this log: the job fails instead,
      // saying which event and why (see `run`). Nothing after it is published; the terminal update is.
      const nodeId = (ev as Bulky).node_id;
      const what = `${ev.type}${nodeId ? ` of node "${nodeId}"` : ""}`;
      if (err instanceof PayloadTooLargeError) this.tooLarge ??= `the ${what} is ${err.message}`;
      else this.invalidOutput ??= `the ${what} cannot be encoded: ${(err as Error).message}`;
      this.controller.abort(new StopReason("failed", this.tooLarge ?? this.invalidOutput ?? ""));
      return;
    }
    if (events.count >= this.deps.eventBudget) {
      this.tooMany ??= `the job emitted more than ${this.deps.eventBudget} events, the most NW_EVENTS keeps of one job (eventsMaxPerJob)`;
      this.controller.abort(new StopReason("failed", this.tooMany));
      return;
    }
    // Kept until NATS acknowledges it, republished with the same id while it does not (nats/outbox.ts); the
    // terminal event waits for all of them (`allPublished`).
    events.push(data);
  }

  private openEvents(): JobEventQueue {
    const log = (line: string) => this.deps.log(`job ${this.jobId}: ${line}`);
    const onFail = (why: string) => {
      this.unstored ??= why;
      log(why);
      this.controller.abort(new StopReason("failed", why));
    };
    return this.deps.publisher.queue(this.source, onFail, log);
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

  async run(): Promise<void> {
    const jobsKv = this.store;
    const jobId = this.jobId;

    // The extra delivery after the last allowed attempt only records the failure.
    if (this.attempt > this.deps.maxAttempts) {
      const error: WireError = {
        code: ErrorCode.JOB_ERR_MAX_DELIVERIES,
        message: `max deliveries reached (${this.deps.maxAttempts} attempts)`,
      };
      const w = await casRecord(jobsKv, jobId, (r) =>
        isTerminal(r.status) ? null : { ...r, status: "failed", error, finished_at: now() },
      );
      // The gateway that wrote it published the terminal update.
      if (!w) this.deps.log(`job ${jobId}: the record was not failed (finished already, or a live lease holds it)`);
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
    const started = performance.now();
    this.startTimeout();
    const early = this.startEarly();
    const claim = await this.claimOrSettle(early);
    if (!claim) return;
    this.beginRun(claim);
    const ended = this.finalOf(await (early ?? this.runJobGraph()));
    if (ended === "handed_back") {
      // Drain: leave the job for another agent, at once rather than after ack_wait.
      await this.allPublished();
      this.msg.nak();
      return;
    }
    if (ended === "lease_lost") {
      this.deps.log(`job ${this.jobId}: lease lost; stopping without publishing`);
      return; // Another attempt owns the job now; anything we wrote would be fenced off anyway.
    }
    await this.finish(await this.settleOutputs(ended), performance.now() - started);
  }

  /** The timeout counts from the graph's start, which for a first attempt comes before the claim. */
  private startTimeout(): void {
    const timeoutS = this.job.timeout_s;
    if (typeof timeoutS !== "number" || !(timeoutS > 0)) return;
    const stop = () => this.controller.abort(new StopReason("timed_out", `timed out after ${timeoutS} s`));
    this.timeoutTimer = setTimeout(stop, timeoutS * 1000);
  }

  /** A first attempt dispatched moments ago starts its graph while claiming; null when the run waits. */
  private startEarly(): Promise<GraphOutcome> | null {
    const queuedMs = this.deps.queueClock.ageMs(this.msg.info.timestampNanos / 1e6);
    return this.attempt === 1 && queuedMs < EARLY_START_MAX_AGE_MS ? this.runJobGraph() : null;
  }

  /**
   * Claims the record; null when this delivery does not run the job, its message then settled and a run started
   * early aborted before it published anything.
   */
  private async claimOrSettle(early: Promise<GraphOutcome> | null): Promise<OwnedRecord | null> {
    const dropEarly = async (why: string): Promise<void> => {
      if (!early) return;
      this.controller.abort(new StopReason("cancelled", "not claimed"));
      await early;
      this.deps.log(
        `job ${this.jobId}: not claimed (${why}); aborted the run it had started while claiming, nothing was published`,
      );
    };
    const outcome = await this.claim().catch(async (err: unknown) => {
      await dropEarly((err as Error).message);
      throw err;
    });
    if (outcome.kind === "claimed") return outcome.claim;
    await dropEarly(outcome.kind);
    await this.settleUnclaimed(outcome);
    return null;
  }

  private async settleUnclaimed(outcome: Exclude<ClaimOutcome, { kind: "claimed" }>): Promise<void> {
    switch (outcome.kind) {
      case "finished": {
        // Finished already (cancelled while queued, or we crashed after writing the record): a gateway makes sure
        // its terminal event exists (deduplicated by id), then the message is dropped.
        if (outcome.rec.attempt > 0) await this.store.terminal().catch(() => undefined);
        this.term("job already finished");
        return;
      }
      case "missing":
        this.term("no job record (never written, or past retention)");
        return;
      case "held": {
        // Another delivery of this job owns the record with an attempt at least ours: after a NATS restart the
        // server may deliver a message again under the same count. Ending the message here would strand the job
        // if that owner is gone; left alone, the owner's in-progress acks keep it, or ack_wait hands it to a
        // higher attempt, which takes the record over.
        const owner = `attempt ${outcome.rec.attempt} (${outcome.rec.agent_id ?? "?"})`;
        this.deps.log(
          `job ${this.jobId}: record held by ${owner}, this delivery is attempt ${this.attempt}; leaving the message`,
        );
        return;
      }
      default:
        assertNever(outcome);
    }
  }

  /** The claim is stored: `running` first, then whatever the run emitted while it was in flight, in order. */
  private beginRun(claim: OwnedRecord): void {
    this.owned = claim;
    this.markClaimed();
    // Every event of the attempt carries the lease token the claim gave (the gateway drops an agent's event without).
    if (this.store.lease !== null && this.store.leaseAttempt === this.attempt)
      this.source = { ...this.source, lease: this.store.lease };
    else this.deps.log(`job ${this.jobId}: the claim came without a lease token; gateways will drop its events`);
    if (claim.rec.cancel_requested) this.controller.abort(new StopReason("cancelled", CancelReason.user));
    const held = this.held ?? [];
    this.held = null;
    const picked = this.strategyPick();
    const strategy = "strategy" in picked ? picked.strategy : undefined;
    this.publish(
      jobUpdate.running(this.deps.agentId, strategy, this.attempt > 1 ? `attempt ${this.attempt}` : undefined),
    );
    for (const ev of held) this.publish(ev);
    this.startLease();
  }

  /** How the run ended, as the job's final state; a hand-back and a lost lease end the attempt without one. */
  private finalOf(result: GraphOutcome): FinalState | "handed_back" | "lease_lost" {
    if ("thrown" in result) {
      const err = result.thrown;
      const [code, message] =
        err instanceof StrategyUnavailable
          ? [ErrorCode.JOB_ERR_STRATEGY_UNAVAILABLE, err.message]
          : err instanceof RunnerCrashedError
            ? [ErrorCode.JOB_ERR_RUNNER_CRASHED, err.message]
            : [
                ErrorCode.JOB_ERR_INVALID,
                err instanceof UnknownNodeTypeError ? err.message : `job could not start: ${(err as Error).message}`,
              ];
      return { status: "failed", error: { code, message }, outputs: null, message };
    }
    switch (result.status) {
      case "completed":
        return { status: "completed", error: null, outputs: result.outputs };
      case "failed": {
        const e = result.error;
        const message = `node "${e.node_id}" (${e.node_type}) failed: ${e.message}`;
        return {
          status: "failed",
          error: { code: ErrorCode.JOB_ERR_NODE_FAILED, message },
          outputs: result.outputs,
          message,
        };
      }
      case "cancelled": {
        const r =
          result.reason instanceof StopReason ? result.reason : new StopReason("cancelled", String(result.reason));
        if (r.state === "handed_back") return "handed_back";
        if (r.message === "lease lost") return "lease_lost";
        const code = r.state === "timed_out" ? ErrorCode.JOB_ERR_TIMEOUT : ErrorCode.JOB_ERR_CANCELLED;
        return { status: r.state, error: { code, message: r.message }, outputs: null, message: r.message };
      }
      default:
        return assertNever(result);
    }
  }

  /**
   * The final state once every event is stored: outputs refer to assets, never to large bytes, and an event too
   * large to publish, too many events, bytes the asset store would not take or events NATS would not store fail
   * the job, whether that stopped the run or came (held) after its end; a cancel or timeout that came first stands.
   */
  private async settleOutputs(final: FinalState): Promise<FinalState> {
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
    const lost = this.lostOutput();
    if (lost && (final.status === "completed" || final.status === "failed")) {
      return { status: "failed", error: lost, outputs: null, message: lost.message };
    }
    return final;
  }

  /** What made the job's output incomplete (an event too large, too many, bytes or events not stored), or null. */
  private lostOutput(): { code: ErrorCode; message: string } | null {
    if (this.tooLarge !== null) return { code: ErrorCode.JOB_ERR_OUTPUT_TOO_LARGE, message: this.tooLarge };
    if (this.invalidOutput !== null) return { code: ErrorCode.JOB_ERR_OUTPUT_INVALID, message: this.invalidOutput };
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
  private async runJobGraph(): Promise<GraphOutcome> {
    const picked = this.strategyPick();
    if ("refused" in picked) return { thrown: new StrategyUnavailable(picked.refused) };
    try {
      return await runWithStrategy(
        picked.strategy,
        {
          graph: this.runGraph(),
          params: this.job.params,
          library: this.deps.library,
          limits: this.deps.nodeLimits,
          assets: objectStoreAssets(this.assetStore),
          ...this.remoteNodes(),
          signal: this.controller.signal,
          emit: (e: GraphEvent) => {
            if (!this.controller.signal.aborted || e.type === "node_update") this.publish(e);
          },
        },
        {
          memoryMb: this.deps.jobMemoryMb,
          docker: this.deps.docker,
          gpus: this.deps.gpus,
          label: this.job.job_id,
          spares: this.deps.spares,
        },
      );
    } catch (thrown) {
      return { thrown };
    }
  }

  private compiled: Graph | null = null;
  /** The job's graph as this agent runs it (`compile`), made once. */
  private runGraph(): Graph {
    return (this.compiled ??= this.deps.compile ? this.deps.compile(this.job.graph) : this.job.graph);
  }

  /** The graph's nodes of pools this agent cannot run, sent there as child jobs (agent/child-jobs.ts). */
  private remoteNodes(): { remote?: ChildJobs } {
    const runsPool = this.deps.runsPool;
    const ids = runsPool ? remoteNodeIds(this.runGraph(), this.deps.library, runsPool) : null;
    if (!ids?.size) return {};
    const remote = new ChildJobs(ids, {
      records: this.deps.records,
      jobId: this.jobId,
      proof: this.job.claim_secret ?? "",
      attempt: this.attempt,
      graph: this.runGraph(),
      library: this.deps.library,
      assets: new JobAssets(this.assetStore, 0, undefined, this.assetBudget),
      claimed: this.claimed,
    });
    return { remote };
  }

  /**
   * Claims the record for this attempt, waiting up to `RECORD_WAIT_MS` for a record that is not readable yet.
   */
  private async claim(): Promise<ClaimOutcome> {
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
    const jobsKv = this.store;
    const change = (r: JobRecord): JobRecord | null => {
      if (isTerminal(r.status) || r.attempt >= this.attempt || !canTransition(r.status, "running")) return null;
      return {
        ...r,
        status: "running",
        attempt: this.attempt,
        agent_id: this.deps.agentId,
        started_at: r.started_at ?? now(),
        dispatch_seq: this.msg.info.streamSequence,
      };
    };
    // A dispatch that carries the stored record (a retried submit) makes the claim one write when nothing
    // touched the record since (a cancel while queued did: then the compare-and-set reads and sees it).
    const known = this.attempt === 1 ? this.job.record : undefined;
    try {
      if (known) return await casJobRecord(jobsKv, this.jobId, change, known);
      return await this.store.claim(this.attempt, this.deps.agentId, this.msg.info.streamSequence, change);
    } catch (err) {
      this.deps.log(`job ${this.jobId}: claim failed (${(err as Error).message}); reading the record back`);
      const deadline = Date.now() + this.deps.ackWaitMs;
      for (;;) {
        try {
          const cur = await readJobRecord(jobsKv, this.jobId);
          if (!cur) return null;
          const mine =
            cur.rec.attempt === this.attempt && cur.rec.agent_id === this.deps.agentId && cur.rec.status === "running";
          return { rec: cur.rec, written: mine, revision: cur.revision };
        } catch (again) {
          if (Date.now() > deadline || this.nc.isClosed()) throw again;
          await new Promise((res) => setTimeout(res, 250));
        }
      }
    }
  }

  private async finish(final: FinalState, durationMs: number): Promise<void> {
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    if (!this.leaseHeld()) {
      this.deps.log(`job ${this.jobId}: lease lost before finishing; result dropped`);
      return;
    }
    // The record as claimed is the likely current one (only a cancel request changes it meanwhile). The gateway
    // that writes it publishes the terminal update (every event before it is stored: `settleOutputs`).
    this.store.durationS = durationMs / 1000;
    const w = await this.whileLeaseHeld(() =>
      casRecord(
        this.store,
        this.jobId,
        (r) => {
          // Attempt fencing: only the attempt that owns the record may finish it; terminal states never change.
          if (r.attempt !== this.attempt || isTerminal(r.status)) return null;
          const next: JobRecord = {
            ...r,
            status: final.status,
            error: final.error,
            outputs: final.outputs,
            finished_at: now(),
          };
          const text = encodeJson(next);
          const bytes = Buffer.byteLength(text);
          // The record travels to a gateway inside a request: room for the request's other fields.
          const limit = this.deps.publisher.limitBytes - RECORD_REQUEST_ROOM_BYTES;
          const invalid = shapeError(text);
          if (invalid !== null) {
            // The gateway would refuse the record each time: the job would run again until its attempts ran out.
            // Its output_update events carried the same value, and gateways drop an event they cannot read: say so.
            const message = `the job's outputs cannot be stored or sent to clients: ${invalid}`;
            const error = { code: ErrorCode.JOB_ERR_OUTPUT_INVALID, message };
            return { ...next, status: "failed", outputs: null, error };
          }
          if (bytes <= limit) return next;
          // A record NATS cannot store would leave the job running until its attempts ran out, each one running it
          // again. The outputs went out as output_update events; the record says why it has none.
          const message = `the job's outputs make its record ${bytes} bytes; NATS stores at most ${limit} (max_payload less headers). They were sent as output_update events`;
          this.deps.log(`job ${this.jobId}: ${message}`);
          return {
            ...next,
            status: "failed",
            outputs: null,
            error: { code: ErrorCode.JOB_ERR_OUTPUT_TOO_LARGE, message },
          };
        },
        this.owned ?? undefined,
      ),
    );
    const written = w?.rec ?? null;
    if (!written) {
      const cur = await readRecord(this.store, this.jobId);
      if (cur && cur.rec.attempt === this.attempt && isTerminal(cur.rec.status)) {
        await this.store.terminal();
        this.term("finished elsewhere");
      } else {
        this.deps.log(`job ${this.jobId}: attempt ${this.attempt} is no longer the owner; result dropped`);
      }
      return;
    }
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
        if (this.nc.isClosed() || !this.leaseHeld()) throw err;
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
      if (this.nc.isClosed() || this.deps.disconnectedSinceMs() !== null) return;
      this.msg.working();
      this.lastLeaseOkMs = Date.now();
      this.recheck();
    }, period);
  }

  private leaseHeld(): boolean {
    return Date.now() - this.lastLeaseOkMs < this.deps.ackWaitMs;
  }
}

/** Why a reader would refuse this JSON text (too deep, a forbidden key), or null. */
function shapeError(text: string): string | null {
  try {
    checkJsonShape(text);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
