/**
 * JetStream publishes with their PubAcks collected on one shared reply subscription ("async publish").
 *
 * `js.publish` in nats.js is a request per message: a per-request timer, a random inbox token and, when the
 * reply arrives, an `Error` built (stack captured) to reject an already-settled promise. Under job dispatch
 * that was 7–9 % of the agent's and the gateway's CPU for work the server does anyway. Here every publish
 * takes a counter as its reply token, one subscription on `<inbox>.*` settles them, and one coarse timer
 * sweeps the overdue ones. Same guarantees: each promise resolves with the server's PubAck or rejects.
 *
 * `AckedKv` writes KV entries the same way.
 */
import { createInbox, headers, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { subjects } from "../protocol/index.js";
import type { KvReadEntry } from "./job-record.js";

export interface PubAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

/** NATS's default max_payload, for a connection that has not told us the server's. */
const DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576;
/**
 * Room kept under max_payload for what travels with a body besides its bytes: the message's headers
 * (`Nats-Msg-Id`, a KV write's expected revision) and the protocol line.
 */
const PAYLOAD_HEADROOM_BYTES = 1_024;

/** The largest body one NATS message may carry on this connection: an event, a dispatch, a KV value. */
export function payloadLimitBytes(nc: Pick<NatsConnection, "info">): number {
  return (nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD_BYTES) - PAYLOAD_HEADROOM_BYTES;
}

export class PublishError extends Error {
  constructor(
    message: string,
    /** The server's JetStream error code (e.g. 10071 wrong last sequence), or 0 for timeouts and no-responders. */
    readonly errCode: number,
  ) {
    super(message);
    this.name = "PublishError";
  }
}

interface Pending {
  resolve: (a: PubAck) => void;
  reject: (e: Error) => void;
  deadlineMs: number;
  /** What was sent, to send again after a "no responders" answer. */
  resend: () => void;
}

/** Pause before sending again after "no responders" (a server whose JetStream is not ready yet). */
const NO_RESPONDERS_RETRY_MS = 100;

const SWEEP_MS = 250;
const utf8 = new TextDecoder();

export class AckedPublisher {
  private next = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: { unsubscribe(): void };
  private readonly sweeper: NodeJS.Timeout;
  private readonly prefix: string;

  /** `inbox` is a unique subject prefix for this publisher's PubAcks. */
  constructor(
    private readonly nc: NatsConnection,
    inbox: string = createInbox(),
    private readonly defaultTimeoutMs = 5_000,
  ) {
    this.prefix = `${inbox}.`;
    this.sub = nc.subscribe(`${inbox}.*`, { callback: (err, m) => (err ? undefined : this.settle(m)) });
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** Publishes to a stream subject; resolves with the PubAck, rejects with `PublishError` (server error, timeout). */
  publish(subject: string, data: Uint8Array, hdrs?: MsgHdrs, timeoutMs = this.defaultTimeoutMs): Promise<PubAck> {
    const id = ++this.next;
    return new Promise<PubAck>((resolve, reject) => {
      const resend = () => this.nc.publish(subject, data, { reply: this.prefix + id, headers: hdrs });
      this.pending.set(id, { resolve, reject, deadlineMs: Date.now() + timeoutMs, resend });
      try {
        resend();
      } catch (err) {
        // Closed connection, bad subject, payload over max_payload: nothing was sent.
        this.pending.delete(id);
        reject(err as Error);
      }
    });
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Rejects everything still waiting and stops listening. */
  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(new PublishError("publisher closed", 0));
    this.pending.clear();
  }

  private settle(m: Msg): void {
    const id = Number(m.subject.slice(this.prefix.length));
    const p = this.pending.get(id);
    if (!p) return; // already timed out
    const code = m.data.length === 0 ? (m.headers?.code ?? 0) : 0;
    // 503: no server took the message (a stream leader moving, a restarted server's JetStream not ready), so
    // nothing was stored and sending it again is safe; until the publish's own deadline.
    if (code === 503 && Date.now() + NO_RESPONDERS_RETRY_MS < p.deadlineMs) {
      setTimeout(() => this.resendIfPending(id, p), NO_RESPONDERS_RETRY_MS);
      return;
    }
    this.pending.delete(id);
    if (m.data.length === 0) {
      // A status message: 503 when no stream listens on the subject.
      p.reject(
        new PublishError(
          code === 503
            ? "no stream for this subject (no responders)"
            : `publish failed: status ${code} ${m.headers?.description ?? ""}`.trim(),
          0,
        ),
      );
      return;
    }
    let r: {
      stream?: string;
      seq?: number;
      duplicate?: boolean;
      error?: { code?: number; err_code?: number; description?: string };
    };
    try {
      r = JSON.parse(utf8.decode(m.data)) as typeof r;
    } catch {
      p.reject(new PublishError("unreadable PubAck", 0));
      return;
    }
    if (r.error)
      p.reject(new PublishError(r.error.description ?? "publish refused", r.error.err_code ?? r.error.code ?? 0));
    else if (typeof r.stream !== "string" || typeof r.seq !== "number") p.reject(new PublishError("invalid PubAck", 0));
    else p.resolve({ stream: r.stream, seq: r.seq, duplicate: r.duplicate === true });
  }

  private resendIfPending(id: number, p: Pending): void {
    if (this.pending.get(id) !== p) return; // timed out or closed meanwhile
    try {
      p.resend();
    } catch (err) {
      this.pending.delete(id);
      p.reject(err as Error);
    }
  }

  private sweep(): void {
    const nowMs = Date.now();
    // Insertion order is publish order and every publish of one call site uses the same timeout, but timeouts
    // differ between call sites, so look at all of them (the map holds only what is in flight).
    for (const [id, p] of this.pending) {
      if (p.deadlineMs > nowMs) continue;
      this.pending.delete(id);
      p.reject(new PublishError("timed out waiting for the PubAck", 0));
    }
  }
}

/**
 * A JetStream KV bucket whose writes go through an `AckedPublisher`. A KV put is a publish to the entry's subject
 * (`$KV.<bucket>.<key>`); a create and a compare-and-set update are the same publish with
 * `Nats-Expected-Last-Subject-Sequence` (0: the key must not exist; else the revision read). That is all the KV
 * client does for them, but through `js.publish`, a request each: the per-request cost above, on the record
 * writes of every job (the gateway's create, the claim and the result). Revisions are the
 * PubAck's stream sequence, as the KV client's are; a lost compare-and-set rejects with `PublishError` 10071
 * ("wrong last sequence"), as the KV client's does. Reads stay with the KV client (`read`).
 *
 * Differences from the KV client, which its callers here do not meet: `create` does not take over a deleted
 * key's tombstone (job records and index entries are written under fresh ids; the Idempotency-Key entries, which
 * are deleted and re-created, stay on the KV client), and the bucket must be in this account's own JetStream (no
 * domain or mirror prefix), which is how Nodeway creates its buckets.
 */
export class AckedKv {
  private readonly enc = new TextEncoder();

  constructor(
    private readonly pub: AckedPublisher,
    private readonly bucket: string,
    private readonly read: (key: string) => Promise<KvReadEntry | null>,
  ) {}

  get(key: string): Promise<KvReadEntry | null> {
    return this.read(key);
  }

  /** Writes `value` whatever the key holds; resolves with the new revision. */
  put(key: string, value: string): Promise<number> {
    return this.write(key, value, null);
  }

  /** Writes `value` only if the key has never been written (or has expired); resolves with the revision. */
  create(key: string, value: string): Promise<number> {
    return this.write(key, value, 0);
  }

  /** Writes `value` only if the key is still at `revision`; resolves with the new revision. */
  update(key: string, value: string, revision: number): Promise<number> {
    return this.write(key, value, revision);
  }

  /** `expectLast`: the subject's last sequence the server must find (0: none), or null for no condition. */
  private async write(key: string, value: string, expectLast: number | null): Promise<number> {
    let h: MsgHdrs | undefined;
    if (expectLast !== null) {
      h = headers();
      h.set("Nats-Expected-Last-Subject-Sequence", String(expectLast));
    }
    return (await this.pub.publish(subjects.kvEntry(this.bucket, key), this.enc.encode(value), h)).seq;
  }
}
