/**
 * A watched job: its events once each, in order, across reconnects (the client drops any `seq` it has passed), to
 * listeners and async iterators, and its end as `done`.
 */
import type { JobResumed } from "../protocol/client.js";
import type { WireError } from "../protocol/errors.js";
import { isTerminalEvent, type JobEvent, type JobUpdate } from "../protocol/events.js";
import type { JobRecord, JobState } from "../protocol/jobs.js";
import { ClientErrorCode, NodewayError } from "./errors.js";

/** How a job ended: from its terminal `job_update` (or its record, when the history is gone). */
export interface JobOutcome {
  job_id: string;
  workflow_id: string;
  status: JobState;
  attempt: number;
  /** Output node name → every value it produced (on `completed`). */
  outputs: Record<string, unknown[]> | null;
  error: WireError | string | null;
}

/** The answer to a cancel: the job's status when the request was taken. */
export interface CancelResult {
  job_id: string;
  status: JobState;
  message: string;
}

export interface JobHandle {
  readonly jobId: string;
  /** The highest `seq` delivered so far (0: none): where a resume starts. */
  readonly lastSeq: number;
  /** Every event from now until the job's end (the terminal `job_update` is the last one); throws if watching fails. */
  events(): AsyncIterable<JobEvent>;
  /** Calls `cb` for each event; returns the unsubscribe. */
  on(cb: (ev: JobEvent) => void): () => void;
  /** Calls `cb` for each `job_resumed` header (the first watch and every reconnect); returns the unsubscribe. */
  onResumed(cb: (h: JobResumed) => void): () => void;
  /** Settles when the job ends; rejects when watching it fails (unknown job, `stop()`, `close()`, token refused). */
  readonly done: Promise<JobOutcome>;
  cancel(): Promise<CancelResult>;
  /** Stops watching (the job keeps running). */
  stop(): void;
}

/** One `events()` iterator's queue. */
class EventQueue implements AsyncIterator<JobEvent> {
  private readonly items: JobEvent[] = [];
  private waiter: ((r: IteratorResult<JobEvent>) => void) | null = null;
  private failWaiter: ((e: Error) => void) | null = null;
  private ended = false;
  private error: Error | null = null;

  constructor(private readonly detach: () => void) {}

  push(ev: JobEvent): void {
    if (this.waiter) this.take()({ value: ev, done: false });
    else this.items.push(ev);
  }
  end(error: Error | null): void {
    this.ended = true;
    this.error = error;
    if (!this.waiter) return;
    if (error) this.takeFail()(error);
    else this.take()({ value: undefined, done: true });
  }
  private take() {
    const w = this.waiter!;
    this.waiter = this.failWaiter = null;
    return w;
  }
  private takeFail() {
    const f = this.failWaiter!;
    this.waiter = this.failWaiter = null;
    return f;
  }
  next(): Promise<IteratorResult<JobEvent>> {
    const ev = this.items.shift();
    if (ev !== undefined) return Promise.resolve({ value: ev, done: false });
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }
  return(): Promise<IteratorResult<JobEvent>> {
    this.detach();
    this.ended = true;
    this.items.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }
}

/** What a watch needs of its client. */
export interface WatchHost {
  cancel(jobId: string): Promise<CancelResult>;
  /** The watch ended; `tellGateway`: send `stop` (the job has not ended, the gateway would keep sending). */
  unwatch(jobId: string, tellGateway: boolean): void;
}

export function outcomeOf(ev: JobUpdate): JobOutcome {
  return {
    job_id: ev.job_id,
    workflow_id: ev.workflow_id,
    status: ev.status,
    attempt: ev.attempt,
    outputs: ev.result ?? null,
    error: ev.error ?? null,
  };
}

export function outcomeOfRecord(r: JobRecord): JobOutcome {
  const { id, workflow_id, status, attempt, outputs, error } = r;
  return { job_id: id, workflow_id, status, attempt, outputs, error };
}

export class Watch implements JobHandle {
  readonly done: Promise<JobOutcome>;
  private settle!: { resolve: (o: JobOutcome) => void; reject: (e: Error) => void };
  private readonly listeners = new Set<(ev: JobEvent) => void>();
  private readonly queues = new Set<EventQueue>();
  private readonly resumedListeners = new Set<(h: JobResumed) => void>();
  /** Events that came before anyone listened: handed to the first listener or iterator. */
  private held: JobEvent[] | null = [];
  ended = false;

  constructor(
    readonly jobId: string,
    public lastSeq: number,
    private readonly host: WatchHost,
  ) {
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // a caller that never awaits `done` is not an unhandled rejection
  }

  /** One delivered event; one at or below `lastSeq` was delivered before (a replay overlapping a live stream). */
  deliver(ev: JobEvent): void {
    if (this.ended) return;
    if (typeof ev.seq === "number") {
      if (ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
    }
    if (this.held) this.held.push(ev);
    else this.dispatch(ev);
    if (isTerminalEvent(ev)) this.finish(outcomeOf(ev));
  }

  resumed(h: JobResumed): void {
    for (const cb of this.resumedListeners) cb(h);
  }

  finish(o: JobOutcome): void {
    if (this.ended) return;
    this.ended = true;
    this.host.unwatch(this.jobId, false);
    for (const q of this.queues) q.end(null);
    this.settle.resolve(o);
  }

  fail(err: Error, tellGateway = false): void {
    if (this.ended) return;
    this.ended = true;
    this.host.unwatch(this.jobId, tellGateway);
    for (const q of this.queues) q.end(err);
    this.settle.reject(err);
  }

  private dispatch(ev: JobEvent): void {
    for (const cb of this.listeners) cb(ev);
    for (const q of this.queues) q.push(ev);
  }

  /** The first consumer gets what was held. */
  private release(): void {
    const held = this.held;
    if (!held) return;
    this.held = null;
    for (const ev of held) this.dispatch(ev);
  }

  on(cb: (ev: JobEvent) => void): () => void {
    this.listeners.add(cb);
    this.release();
    return () => this.listeners.delete(cb);
  }

  onResumed(cb: (h: JobResumed) => void): () => void {
    this.resumedListeners.add(cb);
    return () => this.resumedListeners.delete(cb);
  }

  events(): AsyncIterable<JobEvent> {
    const q = new EventQueue(() => this.queues.delete(q));
    this.queues.add(q);
    this.release();
    if (this.ended) q.end(null);
    return { [Symbol.asyncIterator]: () => q };
  }

  cancel(): Promise<CancelResult> {
    return this.host.cancel(this.jobId);
  }

  stop(): void {
    this.fail(new NodewayError(ClientErrorCode.closed, `stopped watching job ${this.jobId}`), true);
  }
}
