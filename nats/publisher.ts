/**
 * The one way gateway and agent publish to JetStream: what each message carries around its body (an event's
 * envelope, the `Nats-Msg-Id` that deduplicates it), the check that one NATS message can carry it, its encoding,
 * and the wait for its PubAck. An agent's events go through its outbox (`queue`): kept until NATS acknowledges
 * them and republished in order, with their original ids, while it does not.
 */
import { headers, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { encodeMsgpack, eventMsgId, subjects, type EventEnvelope, type JobEventBody } from "../protocol/index.js";
import { GATEWAY_SOURCE, LEASE_HEADER } from "../protocol/index.js";
import { payloadLimitBytes, type AckedPublisher, type PubAck } from "./acked-publish.js";
import type { EventQueue, Outbox } from "./outbox.js";

/** The job attempt an event belongs to (attempt 0: the gateway's, before any agent owns the job). */
export interface EventSource {
  jobId: string;
  workflowId: string;
  attempt: number;
  /** The agent's lease token for `attempt` (nats/lease.ts); the gateway's own events have none. */
  lease?: string;
}

/** A body larger than one NATS message may carry: nothing was sent. */
export class PayloadTooLargeError extends Error {
  constructor(
    readonly bytes: number,
    readonly limitBytes: number,
  ) {
    super(`${bytes} bytes; NATS carries at most ${limitBytes} (max_payload less headers)`);
    this.name = "PayloadTooLargeError";
  }
}

/** How a publish that must land is tried again: `retries` more times, `pauseMs` apart, while `nc` is open. */
export interface RetryPolicy {
  timeoutMs: number;
  retries: number;
  pauseMs: number;
  onRetry: (err: Error) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class EventPublisher {
  /**
   * `outbox`: where an agent's event queues keep their events (the gateway has none). `source`: the last token of
   * every event subject, the gateway's own or the agent's principal (the only one its NATS user may publish on).
   */
  constructor(
    readonly nc: NatsConnection,
    readonly acked: AckedPublisher,
    private readonly outbox: Outbox | null = null,
    readonly source: string = GATEWAY_SOURCE,
  ) {}

  /** The headers of an event: its id, and the lease token of an agent's attempt. */
  eventHeaders(src: EventSource, n: number | string): MsgHdrs {
    const h = headers();
    h.set("Nats-Msg-Id", eventMsgId(src.jobId, src.attempt, n));
    if (src.lease) h.set(LEASE_HEADER, src.lease);
    return h;
  }

  /** The largest body one message may carry on this connection. */
  get limitBytes(): number {
    return payloadLimitBytes(this.nc);
  }

  /** MessagePack bytes of `body`; throws `PayloadTooLargeError` past what one NATS message carries. */
  encode(body: unknown): Uint8Array {
    const data = encodeMsgpack(body);
    const limit = this.limitBytes;
    if (data.byteLength > limit) throw new PayloadTooLargeError(data.byteLength, limit);
    return data;
  }

  /** `ev` with its envelope, encoded and checked as `encode` does. */
  encodeEvent(src: EventSource, ev: JobEventBody): Uint8Array {
    const envelope: EventEnvelope = {
      job_id: src.jobId,
      workflow_id: src.workflowId,
      attempt: src.attempt,
      ts: performance.timeOrigin + performance.now(),
    };
    return this.encode({ ...ev, ...envelope });
  }

  /** Publishes `data` to a stream subject under `msgId`; resolves with the PubAck, rejects with `PublishError`. */
  send(subject: string, data: Uint8Array, msgId: string, timeoutMs?: number): Promise<PubAck> {
    const h = headers();
    h.set("Nats-Msg-Id", msgId);
    return this.acked.publish(subject, data, h, timeoutMs);
  }

  /**
   * One event with the id `eventMsgId(job, attempt, n)`, straight to the job's subject; resolves once stored.
   * With `retry`, a failed publish is tried again under the same id (a copy that did land is deduplicated).
   */
  async publishEvent(src: EventSource, n: number | string, ev: JobEventBody, retry?: RetryPolicy): Promise<PubAck> {
    const subject = subjects.jobEvents(src.jobId, this.source);
    const data = this.encodeEvent(src, ev);
    const h = this.eventHeaders(src, n);
    if (!retry) return this.acked.publish(subject, data, h);
    for (let i = 0; ; i++) {
      try {
        return await this.acked.publish(subject, data, h, retry.timeoutMs);
      } catch (err) {
        if (i >= retry.retries || this.nc.isClosed()) throw err;
        retry.onRetry(err as Error);
        await sleep(retry.pauseMs);
      }
    }
  }

  /** A queue for one job attempt's events, published in order through the outbox. */
  queue(src: EventSource, onFail: (why: string) => void, log: (line: string) => void): JobEventQueue {
    if (!this.outbox) throw new Error("this publisher has no outbox");
    return new JobEventQueue(this, src, this.outbox.queue(subjects.jobEvents(src.jobId, this.source), onFail, log));
  }
}

/** One job attempt's events, numbered 1, 2, … in their ids (0 is the terminal update's, `publishEvent`). */
export class JobEventQueue {
  private n = 0;

  constructor(
    private readonly publisher: EventPublisher,
    private readonly src: EventSource,
    private readonly events: EventQueue,
  ) {}

  /** Events pushed so far. */
  get count(): number {
    return this.n;
  }

  /** `ev` stamped and encoded; throws `PayloadTooLargeError` when NATS could not carry it. */
  encode(ev: JobEventBody): Uint8Array {
    return this.publisher.encodeEvent(this.src, ev);
  }

  /** Publishes encoded bytes now, or after the events before them are stored. */
  push(data: Uint8Array): void {
    this.events.push(data, this.publisher.eventHeaders(this.src, ++this.n));
  }

  /** Resolves once every event pushed so far is stored, or the queue failed or closed; never rejects. */
  settled(): Promise<void> {
    return this.events.settled();
  }

  /** Stops publishing and drops what is held. */
  close(): void {
    this.events.close();
  }
}
