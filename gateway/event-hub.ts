/**
 * The gateway's one view of `NW_EVENTS`: a single push consumer on `nw.events.>` (nats/push-consumer.ts) feeds every
 * local watcher, and replay reads a job's stored events by subject. Both apply the same attempt fence, so a
 * client that resumes sees exactly what a live client saw: no gap, no duplicate.
 */
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { DeliverPolicy } from "@nats-io/jetstream";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import {
  STREAM_EVENTS,
  decodeMsgpack,
  decodeEventHead,
  asJobEvent,
  encodeJson,
  encodeMsgpack,
  withSeqMsgpack,
  isTerminalEvent,
  jobIdOfEventSubject,
  subjects,
  type JobEvent,
  type JobEventHead,
  type JobEventType,
} from "../protocol/index.js";
import { GATEWAY_SOURCE, sourceOfEventSubject } from "../protocol/index.js";
import { PushConsumer, leaseHeaderIn, leaseHeaderOf, leaseHeaderOfMsg, type LeaseSigner } from "../nats/index.js";
import { badRequest } from "./errors.js";
import { Fence } from "./fence.js";
import { ReplayLog } from "./replay-log.js";

/** One event as delivered: the event with its `seq`, and each encoding made at most once. */
export class Delivery {
  private j: string | null = null;
  /**
   * `m` is the MessagePack form (with `seq`) when known, `ev` the event (with `seq`) when decoded. A delivery
   * `fromCache` (the log it was read from) is a view of the replay cache's bytes: its event and JSON are made for
   * each caller and not kept (JSON texts go to the bounded `cachedJson`), so replaying a job to many clients
   * never grows the cache.
   */
  constructor(
    readonly type: JobEventType,
    readonly terminal: boolean,
    readonly seq: number,
    private m: Uint8Array | null,
    private e: JobEvent | null,
    private readonly fromCache: ReplayLog | null = null,
  ) {}
  /**
   * An event as it was stored: `head` is what the hub read of it (`decodeEventHead`), `ev` the whole event when
   * that was decoded too, else null: it is decoded on first use, which a binary client never causes. `stored` is
   * the event's bytes as the agent published them: its MessagePack form is then those bytes with `seq` appended,
   * the same bytes re-encoding would give, at the cost of a copy (an event that came with a `seq` of its own,
   * never one of ours, is decoded and encoded again instead). `alloc` gives the room those bytes are written to.
   */
  static of(
    head: JobEventHead,
    ev: JobEvent | null,
    seq: number,
    stored: Uint8Array,
    alloc?: (size: number) => Buffer,
  ): Delivery {
    const m = head.seq === undefined ? withSeqMsgpack(stored, seq, alloc) : null;
    if (m === null) ev ??= asJobEvent(decodeMsgpack(stored));
    if (ev !== null) ev.seq = seq;
    return new Delivery(head.type, isTerminalEvent(head), seq, m, ev);
  }
  /** The event (with `seq`), decoded from the bytes on first use (and kept, unless from the cache). */
  get ev(): JobEvent {
    if (this.e !== null) return this.e;
    const ev = asJobEvent(decodeMsgpack(this.m!));
    if (this.fromCache === null) this.e = ev;
    return ev;
  }
  /** The JSON text, made once: kept on the Delivery, or for one from the cache in `cachedJson` (bounded). */
  json(): string {
    if (this.j !== null) return this.j;
    if (this.fromCache === null) return (this.j = encodeJson(this.ev));
    let hit = cachedJson.get(this.seq);
    if (hit !== undefined && hit.log === this.fromCache) {
      cachedJson.delete(this.seq); // most recently used goes last
    } else {
      hit = { log: this.fromCache, text: encodeJson(this.ev) };
      if (cachedJson.size >= CACHED_JSON_ENTRIES) cachedJson.delete(cachedJson.keys().next().value!);
    }
    cachedJson.set(this.seq, hit);
    return hit.text;
  }
  msgpack(): Uint8Array {
    return (this.m ??= encodeMsgpack(this.ev));
  }
}

/**
 * JSON texts of cached events by stream seq, least recently used first, each with the log it belongs to (seqs
 * are unique within one stream, and a process may hold several hubs). Thousands of JSON clients resuming one job
 * after a network blip then encode each of its events once, while what the cache holds beyond its counted bytes
 * stays bounded (~1 MB of token events).
 */
const CACHED_JSON_ENTRIES = 4_096;
const cachedJson = new Map<number, { log: ReplayLog; text: string }>();

export type Listener = (d: Delivery) => void;
/** Sees every admitted event of every job, in stream order (the WebSocket fan-out, the queue tracker). */
export type Subscriber = (jobId: string, d: Delivery) => void;
/** Where the hub reports: `err` is the failure behind the line, when there is one. */
export type HubLog = (line: string, err?: unknown) => void;

/** What a replay says before its first event. */
export interface ReplayHeader {
  /** Admitted events with `after < seq <= lastSeq`: exactly what the replay hands out. */
  count: number;
  /** Highest seq among the job's stored events (0 when none). */
  lastSeq: number;
  /** True when the job's earliest events are gone (retention) so the history is not whole. */
  incomplete: boolean;
  /** The replay reaches the job's terminal event. */
  ended: boolean;
}

/** A replay read in batches: `next` gives the following events in order, none once all `count` are out. */
export interface Replay extends ReplayHeader {
  next(): Promise<Delivery[]>;
  /** Ends the replay early: `next` then gives nothing. Nothing is held on the server between batches. */
  close(): void;
}

/** A replay the hub answers from memory at once: `batch(i)` gives up to a batch of its events from the i-th. */
export interface MemoryReplay {
  count: number;
  lastSeq: number;
  ended: boolean;
  batch(from: number): Delivery[];
}

/** A whole replay in one array (small histories only: a job's events are capped by the stream). */
export interface ReplayResult extends ReplayHeader {
  events: Delivery[];
}

/** Events a replay reads from JetStream (and holds) at a time. */
export const REPLAY_BATCH_DEFAULT = 1_000;

/** A fence as it stood right after an admitted event of `attempt` (`ended` when that event was terminal). */
function fenceAt(jobId: string, attempt: number, ended: boolean): Fence {
  const f = new Fence();
  f.admit({ type: "job_update", job_id: jobId, attempt, status: ended ? "completed" : "running" });
  return f;
}

function headOf(data: Uint8Array): { head: JobEventHead; ev: JobEvent | null } | null {
  try {
    return decodeEventHead(data);
  } catch {
    return null;
  }
}

/** Jobs whose fence the hub remembers (the oldest is forgotten first). */
const JOB_CAP = 200_000;
/** How often the hub compares its position with the stream's (a stall is two checks behind, unchanged). */
const STALL_CHECK_MS = 3_000;

/** What the hub knows of one job from the live stream. */
interface JobView {
  fence: Fence;
  /** Highest stream seq of the job's events seen live, admitted or not. */
  lastSeq: number;
  /**
   * Every admitted event since the job's first (`queued`) event, while the job is in the replay cache; null
   * when the hub joined the job midway or the cache let it go. A whole history replays from memory.
   */
  log: ReplayLog | null;
  /** Of the log's bytes, what `cachedBytes` counts (room the log took for an event counts once it is appended). */
  counted: number;
  /** When the hub saw the job's first event: past the stream's max age, its oldest events may be gone there. */
  firstAtMs: number;
  /** The hub joined the job midway and has not tried to load its history yet (`warm`). */
  midway: boolean;
}

export class EventHub {
  /** Highest stream sequence this hub has processed (any job). */
  lastSeq = 0;
  eventsIn = 0;
  badEvents = 0;
  replaysFromMemory = 0;
  replaysFromStream = 0;
  /** Agents' events without a lease on their job's attempt (forged, or from an agent that lost the job). */
  unleasedEvents = 0;
  /** Stored events replays read from JetStream (each pass counts). */
  replayMessagesRead = 0;
  /** Most events one replay batch held (never more than `replayBatch`). */
  replayBatchPeak = 0;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly subscribers: Subscriber[] = [];
  private readonly views = new Map<string, JobView>();
  /** Views holding events, oldest first (what the byte budget evicts). */
  private readonly cached = new Map<string, JobView>();
  /** Bytes of events in the replay cache (for /metrics). */
  cachedBytes = 0;
  private readonly caughtUp: { seq: number; fn: () => void }[] = [];
  /** History loads in progress, by job (`warm`). */
  private readonly warming = new Map<string, Promise<void>>();
  private stopFn: (() => void) | null = null;
  private restartFn: (() => void) | null = null;
  /** The first missing seq of the last gap the hub read again for. */
  private gapAt = 0;
  private stallSeenSeq = -1;
  private stallChecks = 0;

  constructor(
    /** The live events come on a core subscription of `nc`; replays read through `js`. */
    private readonly n: { nc: NatsConnection; js: JetStreamClient },
    private readonly jsm: JetStreamManager,
    /** A first subscriber, or null (more come through `subscribe`). */
    first: Subscriber | null,
    private readonly log: HubLog,
    /** Replay cache budget (0 = every replay reads JetStream). One job may use an eighth of it. */
    private readonly cacheBytes = 64 * 1024 * 1024,
    /** `NW_EVENTS` max age: memory never replays what retention has removed from the stream. */
    private readonly maxAgeMs = Number.POSITIVE_INFINITY,
    /** Events a replay reads and holds at a time (`replayBatchEvents`). */
    private readonly replayBatch = REPLAY_BATCH_DEFAULT,
    /**
     * Checks agents' lease tokens: an event on an agent's subject is admitted only with a token for that agent and
     * the event's attempt. Null: no agent's event is (the gateway's own always are).
     */
    private readonly leases: LeaseSigner | null = null,
  ) {
    if (first !== null) this.subscribe(first);
  }

  /**
   * Adds a subscriber, called for every admitted event before the job's direct listeners, in the order they
   * subscribed. Returns the function that removes it.
   */
  subscribe(fn: Subscriber): () => void {
    this.subscribers.push(fn);
    return () => {
      const i = this.subscribers.indexOf(fn);
      if (i >= 0) this.subscribers.splice(i, 1);
    };
  }

  async start(): Promise<void> {
    const info = await this.jsm.streams.info(STREAM_EVENTS);
    this.lastSeq = info.state.last_seq;
    let stopped = false;
    let current: PushConsumer | null = null;
    const watchdog = setInterval(() => void this.checkStalled(), STALL_CHECK_MS);
    watchdog.unref();
    this.stopFn = () => {
      stopped = true;
      clearInterval(watchdog);
      current?.stop();
    };
    this.restartFn = () => current?.stop();
    const open = async (): Promise<PushConsumer> => {
      const consumer = await PushConsumer.open(this.n.nc, this.jsm, {
        stream: STREAM_EVENTS,
        filter: subjects.eventsAll(),
        startSeq: this.lastSeq + 1,
        onMessage: (m, seq, from) => this.inOrder(m, seq, from),
      });
      return consumer;
    };
    current = await open();
    // The hub must outlive anything that ends its consumer (the library giving up after a long outage, a restart
    // asked for below): every live client depends on it. It starts again after the last seq it processed.
    void (async () => {
      while (!stopped) {
        try {
          current ??= await open();
          if (stopped) current.stop(); // stopped while it was opening
          const end = await current.closed();
          const why = end instanceof Error ? ` (${end.message})` : "";
          if (!stopped) this.log(`event consumer ended at seq ${this.lastSeq}${why}; starting it again`);
        } catch (err) {
          if (!stopped) this.log(`event consumer failed at seq ${this.lastSeq}; starting it again`, err);
        }
        current = null;
        if (!stopped) await new Promise((r) => setTimeout(r, 500));
      }
    })();
  }

  /**
   * Every stored event reaches the hub, in stream order. NW_EVENTS holds only event subjects, so a sequence that
   * skips ahead means the consumer lost messages (seen when a stream leader moves on a cluster): the hub reads
   * again from the first missing one. The same gap seen twice is real (retention removed those events) and passes.
   */
  private inOrder(m: Msg, seq: number, from: PushConsumer): void {
    if (seq <= this.lastSeq) return;
    const expected = this.lastSeq + 1;
    if (seq > expected && this.gapAt !== expected) {
      this.gapAt = expected;
      this.log(`events ${expected}..${seq - 1} were not delivered; reading NW_EVENTS again from ${expected}`);
      // The consumer that skipped, not `current`: it may still be opening (its first deliveries came first).
      from.stop();
      return;
    }
    this.handleSafely(m, seq);
  }

  /**
   * A consumer that silently stopped delivering (no error, no end) while the stream grew is restarted: the
   * library's heartbeat checks do not catch every case of a leader change on a cluster.
   */
  private async checkStalled(): Promise<void> {
    if (this.lastSeq !== this.stallSeenSeq) {
      this.stallSeenSeq = this.lastSeq;
      this.stallChecks = 0;
      return;
    }
    const info = await this.jsm.streams.info(STREAM_EVENTS).catch(() => null);
    if (!info || info.state.last_seq <= this.lastSeq) {
      this.stallChecks = 0;
      return;
    }
    if (++this.stallChecks < 2) return;
    this.stallChecks = 0;
    this.log(`event consumer stalled at seq ${this.lastSeq} (stream at ${info.state.last_seq}); starting it again`);
    this.restartFn?.();
  }

  /** A listener that throws must not take the consumer (and every other client) down with it. */
  private handleSafely(m: Msg, seq: number): void {
    try {
      this.handle(m, seq);
    } catch (err) {
      this.log(`event at seq ${seq} broke a listener`, err);
      this.advance(seq);
    }
  }

  stop(): void {
    this.stopFn?.();
  }

  private handle(m: Msg, seq: number): void {
    // Read once: the library makes a new view of the message's bytes on every read.
    const data = m.data;
    this.eventsIn++;
    let ev: JobEventHead;
    let whole: JobEvent | null;
    try {
      ({ head: ev, ev: whole } = decodeEventHead(data));
    } catch (err) {
      this.badEvents++;
      this.log(`dropping malformed event at seq ${seq}: ${(err as Error).message}`);
      this.advance(seq);
      return;
    }
    const jobId = jobIdOfEventSubject(m.subject);
    if (ev.job_id !== jobId) {
      this.badEvents++;
      this.advance(seq);
      return;
    }
    if (!this.leased(jobId, m.subject, ev, leaseHeaderOfMsg(m))) {
      this.unleasedEvents++;
      this.advance(seq);
      return;
    }
    let view = this.views.get(jobId);
    if (!view) {
      if (this.views.size >= JOB_CAP) this.forget(this.views.keys().next().value!);
      // Only a job first seen at its very first event can be replayed from memory.
      const first = ev.type === "job_update" && ev.attempt === 0 && ev.status === "queued" && this.cacheBytes > 0;
      view = {
        fence: new Fence(),
        lastSeq: 0,
        log: first ? new ReplayLog() : null,
        counted: 0,
        firstAtMs: Date.now(),
        midway: !first && this.cacheBytes > 0,
      };
      this.views.set(jobId, view);
      if (first) this.cached.set(jobId, view);
    }
    view.lastSeq = seq;
    if (view.fence.admit(ev)) {
      // A cached job's events are written into its log at once: one copy of the bytes, not two.
      const d = Delivery.of(ev, whole, seq, data, view.log?.reserve);
      try {
        for (const s of this.subscribers) s(jobId, d);
        const ls = this.listeners.get(jobId);
        if (ls) for (const l of ls) l(d);
      } finally {
        // Cached in the same turn as the fan-out, also when a listener threw: a replay from memory must never
        // miss an event.
        if (view.log) this.remember(jobId, view, view.log, d);
      }
    }
    this.advance(seq);
  }

  /**
   * The gateway's own events are trusted (no agent user may publish on its subjects); an agent's only with the
   * lease token of its principal (the subject's last token) for the event's attempt. Same rule live and on replay.
   */
  private leased(jobId: string, subject: string, ev: JobEventHead, token: string | undefined): boolean {
    const source = sourceOfEventSubject(subject);
    if (source === GATEWAY_SOURCE) return true;
    return this.leases?.verify(jobId, ev.attempt, source, token) === true;
  }

  private remember(jobId: string, view: JobView, log: ReplayLog, d: Delivery): void {
    log.append(d.type, d.terminal, d.seq, d.msgpack());
    this.cachedBytes += log.bytes - view.counted;
    view.counted = log.bytes;
    if (log.bytes > this.cacheBytes / 8) this.uncache(jobId, view);
    // Oldest jobs leave first; their resumes read JetStream as before.
    while (this.cachedBytes > this.cacheBytes && this.cached.size > 0) {
      const [oldId, old] = this.cached.entries().next().value!;
      this.uncache(oldId, old);
    }
  }

  /** Loads the stored history of a job into its view's log, once (concurrent callers share the load). */
  private warm(jobId: string, view: JobView): Promise<void> {
    let p = this.warming.get(jobId);
    if (!p) {
      view.midway = false; // one try: a job the cache lets go later resumes from the stream, as any other
      p = this.loadHistory(jobId, view).finally(() => this.warming.delete(jobId));
      this.warming.set(jobId, p);
    }
    return p;
  }

  /**
   * Reads the job's events from its first up to the last this hub has processed live, fenced from the start, and
   * installs them as the job's log (and that fence as its fence) in the same turn as it checks no newer event of the
   * job has been processed meanwhile: live events after that are appended as for any cached job. Nothing is
   * installed when the history's start is gone (retention) or it is too large for the cache.
   */
  private async loadHistory(jobId: string, view: JobView): Promise<void> {
    const subject = subjects.jobEventsAny(jobId);
    const log = new ReplayLog();
    const fence = new Fence();
    let firstSeq = 0;
    let whole = true;
    let from = 1;
    for (let pass = 0; pass < 4 && whole; pass++) {
      const upTo = view.lastSeq;
      if (upTo >= from) {
        await this.scan(subject, from, upTo, (seq, head, ev, data, leased) => {
          if (firstSeq === 0 && leased) {
            firstSeq = seq;
            whole = head.type === "job_update" && head.attempt === 0 && head.status === "queued";
          }
          if (leased && fence.admit(head)) {
            const d = Delivery.of(head, ev, seq, data, log.reserve);
            log.append(d.type, d.terminal, d.seq, d.msgpack());
          }
          return whole && log.bytes <= this.cacheBytes / 8;
        });
        from = upTo + 1;
      }
      if (!whole || firstSeq === 0 || log.bytes > this.cacheBytes / 8) return;
      const firstAt = await this.jsm.streams.getMessage(STREAM_EVENTS, { seq: firstSeq }).catch(() => null);
      if (!firstAt || Date.now() - firstAt.time.getTime() >= this.maxAgeMs) return;
      if (view.lastSeq !== upTo || view.log || this.views.get(jobId) !== view) continue;
      view.log = log;
      view.fence = fence;
      view.firstAtMs = firstAt.time.getTime();
      view.counted = log.bytes;
      this.cachedBytes += log.bytes;
      this.cached.set(jobId, view);
      while (this.cachedBytes > this.cacheBytes && this.cached.size > 0) {
        const [oldId, old] = this.cached.entries().next().value!;
        this.uncache(oldId, old);
      }
      return;
    }
  }

  private uncache(jobId: string, view: JobView): void {
    if (!view.log) return;
    this.cachedBytes -= view.counted;
    view.log = null;
    view.counted = 0;
    this.cached.delete(jobId);
  }

  private forget(jobId: string): void {
    const view = this.views.get(jobId);
    if (view) this.uncache(jobId, view);
    this.views.delete(jobId);
  }

  private advance(seq: number): void {
    this.lastSeq = seq;
    while (this.caughtUp.length > 0 && this.caughtUp[0]!.seq <= seq) this.caughtUp.shift()!.fn();
  }

  /** Calls `fn` once the hub has processed stream sequence `seq` (at once if it already has). */
  whenCaughtUp(seq: number, fn: () => void): void {
    if (this.lastSeq >= seq) {
      fn();
      return;
    }
    let i = this.caughtUp.length;
    while (i > 0 && this.caughtUp[i - 1]!.seq > seq) i--;
    this.caughtUp.splice(i, 0, { seq, fn });
  }

  /** Direct listeners registered, over all jobs (/metrics: a number that only grows is a leak). */
  listenerCount(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  /** Registers a direct listener for one job; returns the function that removes it. */
  listen(jobId: string, fn: Listener): () => void {
    let set = this.listeners.get(jobId);
    if (!set) this.listeners.set(jobId, (set = new Set()));
    set.add(fn);
    return () => {
      const s = this.listeners.get(jobId);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.listeners.delete(jobId);
    };
  }

  /**
   * A job's events in order, fenced, keeping those with `seq > after`, all in one array: for callers that need
   * the whole (short) history. Followers use `openReplay`, which holds one batch at a time.
   */
  async replay(jobId: string, after: number): Promise<ReplayResult> {
    const r = await this.openReplay(jobId, after);
    const events: Delivery[] = [];
    try {
      for (let b = await r.next(); b.length > 0; b = await r.next()) for (const d of b) events.push(d);
    } finally {
      r.close();
    }
    return { count: r.count, lastSeq: r.lastSeq, incomplete: r.incomplete, ended: r.ended, events };
  }

  /**
   * A job's events with `seq > after`, fenced, in batches of at most `replayBatch`: from memory when the hub saw
   * the whole history live (the same fence produced both), else read from JetStream starting after `after`.
   */
  async openReplay(jobId: string, after: number): Promise<Replay> {
    await this.checkAfter(after);
    const view = this.views.get(jobId);
    // A job this hub joined midway (it started before this gateway) has no log: a resume of its whole history
    // loads it once into the cache, shared by every concurrent resume, so a storm of them reads the stream once.
    if (view && (view.midway || this.warming.has(jobId)) && after === 0)
      await this.warm(jobId, view).catch(() => undefined);
    const now = this.replayNow(jobId, after);
    if (now !== null) {
      let i = 0;
      return this.replayOf(now.count, now.lastSeq, false, now.ended, async () => {
        const out = now.batch(i);
        i += out.length;
        return out;
      });
    }
    this.replaysFromStream++;
    return this.replayFromStream(jobId, after);
  }

  /**
   * Refuses a resume after a seq no stored event has: it would wait for events that never come. A seq past what
   * this hub has processed is asked of the stream (another gateway may have sent it an event this one has not read).
   */
  async checkAfter(after: number): Promise<void> {
    if (after <= this.lastSeq) return;
    const last = (await this.jsm.streams.info(STREAM_EVENTS)).state.last_seq;
    if (after > last) throw badRequest(`a resume after seq ${after}: no stored event has a seq past ${last}`);
  }

  /**
   * The replay after `after` from memory, when the hub holds the job's whole history (it saw every event live):
   * everything up to the last event the hub processed, so a follower that joins the job's live events in the same
   * turn misses nothing and gets nothing twice. Null when only the stream can answer (`openReplay`).
   */
  replayNow(jobId: string, after: number): MemoryReplay | null {
    const view = this.views.get(jobId);
    if (!view?.log || this.warming.has(jobId)) return null;
    // Every gateway must answer the same: once retention may have removed the job's first events from the
    // stream, the stream decides (it may say the history is incomplete).
    if (Date.now() - view.firstAtMs >= this.maxAgeMs) {
      this.uncache(jobId, view);
      return null;
    }
    this.replaysFromMemory++;
    const log = view.log;
    const start = log.indexAfter(after);
    const end = log.length;
    const make = (type: JobEventType, terminal: boolean, seq: number, bytes: Uint8Array) =>
      new Delivery(type, terminal, seq, bytes, null, log);
    return {
      count: end - start,
      lastSeq: view.lastSeq,
      ended: view.fence.ended,
      batch: (from) => log.slice(start + from, Math.min(end, start + from + this.replayBatch), make),
    };
  }

  private replayOf(
    count: number,
    lastSeq: number,
    incomplete: boolean,
    ended: boolean,
    read: () => Promise<Delivery[]>,
  ): Replay {
    let left = count;
    let closed = false;
    const close = () => {
      closed = true;
    };
    return {
      count,
      lastSeq,
      incomplete,
      ended,
      next: async () => {
        if (left <= 0 || closed) {
          close();
          return [];
        }
        const b = await read();
        left -= b.length;
        if (b.length > this.replayBatchPeak) this.replayBatchPeak = b.length;
        if (b.length === 0 || left <= 0) close();
        return b;
      },
      close,
    };
  }

  /**
   * Reads the job's stored events from `start` through `lastSeq` (or its terminal event) in batches, calling
   * `each` with every decodable one; `each` returning false stops the read.
   */
  private async scan(
    subject: string,
    start: number,
    lastSeq: number,
    each: (seq: number, head: JobEventHead, ev: JobEvent | null, data: Uint8Array, leased: boolean) => boolean,
  ): Promise<void> {
    const from =
      start <= 1
        ? { deliver_policy: DeliverPolicy.All }
        : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start };
    const consumer = await this.n.js.consumers.get(STREAM_EVENTS, { filter_subjects: subject, ...from });
    try {
      while (true) {
        const batch = await consumer.fetch({ max_messages: this.replayBatch, expires: 2_000 });
        let got = 0;
        let done = false;
        for await (const m of batch) {
          got++;
          this.replayMessagesRead++;
          const h = headOf(m.data);
          const ok = h !== null && h.head.job_id === jobIdOfEventSubject(m.subject);
          if (ok && !each(m.seq, h.head, h.ev, m.data, this.leased(h.head.job_id, m.subject, h.head, leaseHeaderOf(m))))
            done = true;
          if (m.seq >= lastSeq) done = true;
          if (done) break;
        }
        if (done || got === 0) break;
      }
    } finally {
      // An ordered consumer lingers on the server once unused: each pass removes its own.
      await consumer.delete().catch(() => undefined);
    }
  }

  /**
   * From JetStream, starting right after `after` when the event stored there is the job's: a resume gives the seq
   * of the last event it was sent, an admitted one, so the fence there is that event's attempt (and ended if it
   * was terminal). Otherwise (`after` 0 or not one of the job's seqs) from the job's first stored event.
   * A first pass counts what will be handed out (the header's `count`) keeping one batch; when there is more,
   * a second pass reads the rest a batch at a time as `next` is called.
   */
  private async replayFromStream(jobId: string, after: number): Promise<Replay> {
    const subject = subjects.jobEventsAny(jobId);
    const last = await this.jsm.streams.getMessage(STREAM_EVENTS, { last_by_subj: subject }).catch(() => null);
    if (!last) return this.replayOf(0, 0, after > 0, false, async () => []);
    const lastSeq = last.seq;
    let fence = new Fence();
    let start = 1;
    if (after > 0 && after <= lastSeq) {
      const at = await this.jsm.streams.getMessage(STREAM_EVENTS, { seq: after }).catch(() => null);
      const h = at && jobIdOfEventSubject(at.subject) === jobId ? headOf(at.data) : null;
      if (h !== null && h.head.job_id === jobId && this.leased(jobId, at!.subject, h.head, leaseHeaderIn(at!.header))) {
        fence = fenceAt(jobId, h.head.attempt, isTerminalEvent(h.head));
        start = after + 1;
      }
    }
    if (start > lastSeq || fence.ended) return this.replayOf(0, lastSeq, false, fence.ended, async () => []);
    const first: Delivery[] = [];
    /** The last event kept and its attempt: where a second pass starts, and the fence there. */
    let from = { seq: 0, attempt: 0 };
    let count = 0;
    let checkFirst = start === 1;
    let incomplete = false;
    await this.scan(subject, start, lastSeq, (seq, head, whole, data, leased) => {
      if (checkFirst && leased) {
        // Every job's history starts with the gateway's `queued` update (attempt 0); without it, retention
        // has removed the beginning and events between `after` and the first stored one may be gone.
        incomplete = !(head.type === "job_update" && head.attempt === 0 && head.status === "queued") && after < seq;
        checkFirst = false;
      }
      if (leased && fence.admit(head) && seq > after) {
        count++;
        if (first.length < this.replayBatch) {
          first.push(Delivery.of(head, whole, seq, data));
          from = { seq, attempt: head.attempt };
        }
      }
      return !fence.ended;
    });
    const ended = fence.ended;
    if (count <= first.length) {
      let handed = false;
      return this.replayOf(count, lastSeq, incomplete, ended, async () => (handed ? [] : ((handed = true), first)));
    }
    // The rest: a second pass from after the last event kept, whose attempt is the fence's there.
    let pending: Delivery[] | null = first;
    return this.replayOf(count, lastSeq, incomplete, ended, async () => {
      if (pending !== null) {
        const b = pending;
        pending = null;
        return b;
      }
      const f = fenceAt(jobId, from.attempt, false);
      const out: Delivery[] = [];
      await this.scan(subject, from.seq + 1, lastSeq, (seq, head, whole, data, leased) => {
        if (leased && f.admit(head) && seq > after) {
          out.push(Delivery.of(head, whole, seq, data));
          from = { seq, attempt: head.attempt };
        }
        return out.length < this.replayBatch && !f.ended;
      });
      return out;
    });
  }
}
