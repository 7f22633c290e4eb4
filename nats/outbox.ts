/**
 * The agent's outbox: every event a job published and NATS has not acknowledged yet, kept until it is stored.
 *
 * nats.js drops what is published while it is disconnected (each dial empties its outbound buffer), and what was
 * in flight when nats-server died may or may not be stored. So an event stays here, bytes and `Nats-Msg-Id`, until
 * its PubAck comes. Once one is not acknowledged (a timeout, no responders, a disconnect), the job's queue stops
 * publishing as it goes and republishes from its oldest unacknowledged event, in order, with the original ids: the
 * oldest alone until NATS stores it, then the rest pipelined. A copy that did arrive the first time is dropped by
 * the stream's deduplication, which is why an event may wait at most `maxAgeMs`, no longer than NW_EVENTS's
 * duplicate window. Past that age, or past `maxBytes` held by all jobs together, the queue fails and its job ends
 * `JOB_ERR_EVENTS_UNSTORED` rather than complete with a hole in its history.
 *
 * While NATS is healthy the only extra work per event is the entry that keeps it until its PubAck.
 */
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import type { AckedPublisher } from "./acked-publish.js";

export interface OutboxLimits {
  /** Bytes of unacknowledged events the agent keeps, all jobs together (`outboxMaxBytes`). */
  maxBytes: number;
  /** How long an event may go unacknowledged (`outboxMaxAgeMs`); at most NW_EVENTS's duplicate window. */
  maxAgeMs: number;
}

/** How long one republish waits for its PubAck before the next try (the first publish waits the default 5 s). */
const RETRY_ACK_TIMEOUT_MS = 2_000;
/** Pause between tries of the oldest event while NATS answers but does not store it (backs off to the max). */
const RETRY_PAUSE_MIN_MS = 50;
const RETRY_PAUSE_MAX_MS = 1_000;
/** How often a queue looks at the connection again while NATS is away. */
const DISCONNECTED_POLL_MS = 100;

interface Entry {
  data: Uint8Array;
  headers: MsgHdrs;
  bytes: number;
  /** When it was first published (`performance.now()`): its age bounds the wait. */
  atMs: number;
  acked: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Outbox {
  /** Bytes held by every queue together. */
  bytes = 0;
  /** False from a `disconnect` status until the `reconnect` one: queues publish nothing meanwhile. */
  connected = true;
  private closed = false;
  private readonly queues = new Set<EventQueue>();

  constructor(
    nc: NatsConnection,
    readonly pub: AckedPublisher,
    readonly limits: Readonly<OutboxLimits>,
  ) {
    // Statuses arrive in microtasks after the socket closes, before any later event is published: nothing published
    // directly can reach a new connection ahead of the republished ones.
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect") {
          this.connected = false;
          for (const q of this.queues) q.recover("NATS disconnected");
        } else if (s.type === "reconnect") this.connected = true;
      }
    })();
  }

  /** A queue for one job attempt's events, stored on `subject` in the order pushed. */
  queue(subject: string, onFail: (why: string) => void, log: (line: string) => void): EventQueue {
    const q = new EventQueue(this, subject, onFail, log, () => this.queues.delete(q));
    if (this.closed) q.close();
    else this.queues.add(q);
    return q;
  }

  /** Drops everything held (the agent is stopping); waiters are released. */
  close(): void {
    this.closed = true;
    for (const q of [...this.queues]) q.close();
  }
}

/** One job attempt's events, in order. */
export class EventQueue {
  private entries: Entry[] = [];
  /** Index of the oldest unacknowledged entry; entries before it are acknowledged. */
  private head = 0;
  private pumping = false;
  private failed: string | null = null;
  private closed = false;
  private lastError: string | null = null;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly outbox: Outbox,
    private readonly subject: string,
    private readonly onFail: (why: string) => void,
    private readonly log: (line: string) => void,
    private readonly onClose: () => void,
  ) {}

  /** Publishes an event now, or after the ones before it are stored; dropped once the queue failed. */
  push(data: Uint8Array, headers: MsgHdrs): void {
    if (this.failed !== null || this.closed) return;
    const e: Entry = { data, headers, bytes: data.byteLength, atMs: performance.now(), acked: false };
    this.entries.push(e);
    const ob = this.outbox;
    ob.bytes += e.bytes;
    if (ob.bytes > ob.limits.maxBytes) {
      const over = `more than outboxMaxBytes (${ob.limits.maxBytes})`;
      this.fail(
        `the agent holds ${ob.bytes} bytes of events NATS has not acknowledged, ${over}${this.lastErrorText()}`,
      );
      return;
    }
    if (this.pumping || !ob.connected) this.recover("NATS disconnected");
    else void this.send(e);
  }

  /** Resolves once every event pushed so far is acknowledged, or the queue failed or closed; never rejects. */
  settled(): Promise<void> {
    if (this.head === this.entries.length || this.failed !== null || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops publishing and drops what is held (the attempt ended or lost its lease). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drop();
    this.onClose();
  }

  /** Starts republishing from the oldest unacknowledged event, unless that is under way or nothing waits. */
  recover(why: string): void {
    if (this.pumping || this.closed || this.failed !== null || this.head === this.entries.length) return;
    this.lastError ??= why;
    this.pumping = true;
    void this.pump().catch((err: unknown) => {
      this.pumping = false;
      this.fail(`republishing failed: ${(err as Error).message}`);
    });
  }

  /** One publish of `e`; true once NATS stored it. A failure hands the queue to `pump`. */
  private send(e: Entry, timeoutMs?: number): Promise<boolean> {
    return this.outbox.pub.publish(this.subject, e.data, e.headers, timeoutMs).then(
      () => {
        this.acked(e);
        return true;
      },
      (err: unknown) => {
        if (e.acked) return true;
        this.lastError = (err as Error).message;
        this.recover(this.lastError);
        return false;
      },
    );
  }

  private acked(e: Entry): void {
    if (e.acked) return;
    e.acked = true;
    this.outbox.bytes -= e.bytes;
    // An entry acknowledged ahead of an older one stays until the head passes it.
    if (e !== this.entries[this.head]) return;
    while (this.head < this.entries.length && this.entries[this.head]!.acked) this.head++;
    if (this.head === this.entries.length) {
      this.entries.length = 0;
      this.head = 0;
      this.wake();
    } else if (this.head >= 1024 && this.head * 2 >= this.entries.length) {
      this.entries.splice(0, this.head);
      this.head = 0;
    }
  }

  /**
   * Republishes in order until everything is stored or the oldest event is older than `maxAgeMs`. Events pushed
   * meanwhile join the queue and go out in later rounds; `pumping` ends in the same turn as the last check, so a
   * push can never find it set with no round to come.
   */
  private async pump(): Promise<void> {
    const ob = this.outbox;
    const held = this.entries.length - this.head;
    const why = this.lastError ?? "?";
    this.log(`${held}+ events not acknowledged (${why}); republishing them in order once NATS stores them`);
    let pauseMs = RETRY_PAUSE_MIN_MS;
    let rounds = 0;
    while (!this.closed && this.failed === null && this.head < this.entries.length) {
      const first = this.entries[this.head]!;
      const leftMs = ob.limits.maxAgeMs - (performance.now() - first.atMs);
      if (leftMs <= 0) {
        const n = this.entries.length - this.head;
        const within = `within outboxMaxAgeMs (${ob.limits.maxAgeMs} ms)`;
        this.fail(`${n} events were not stored: NATS did not acknowledge them ${within}${this.lastErrorText()}`);
        break;
      }
      if (!ob.connected) {
        await sleep(Math.min(leftMs, DISCONNECTED_POLL_MS));
        continue;
      }
      rounds++;
      // The oldest alone until NATS stores it (the server and the stream are back), then the rest behind it.
      if (!(await this.send(first, RETRY_ACK_TIMEOUT_MS))) {
        await sleep(Math.min(pauseMs, leftMs));
        pauseMs = Math.min(pauseMs * 2, RETRY_PAUSE_MAX_MS);
        continue;
      }
      pauseMs = RETRY_PAUSE_MIN_MS;
      if (!ob.connected) continue;
      const rest: Promise<boolean>[] = [];
      for (let i = this.head; i < this.entries.length; i++) {
        const e = this.entries[i]!;
        if (!e.acked) rest.push(this.send(e, RETRY_ACK_TIMEOUT_MS));
      }
      await Promise.all(rest);
    }
    this.pumping = false;
    if (this.failed === null && !this.closed) {
      this.log(`NATS stored the events it had not acknowledged, in order (${rounds} rounds)`);
      this.lastError = null;
    }
  }

  private lastErrorText(): string {
    return this.lastError ? ` (last error: ${this.lastError})` : "";
  }

  private fail(why: string): void {
    if (this.failed !== null || this.closed) return;
    this.failed = why;
    this.drop();
    this.onFail(why);
  }

  /** Releases every entry's bytes and the waiters. */
  private drop(): void {
    for (let i = this.head; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (!e.acked) {
        e.acked = true;
        this.outbox.bytes -= e.bytes;
      }
    }
    this.entries.length = 0;
    this.head = 0;
    this.wake();
  }

  private wake(): void {
    for (const fn of this.waiters.splice(0)) fn();
  }
}
