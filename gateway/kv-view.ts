/**
 * A live view of some keys of a KV bucket: one ordered consumer reads the last value of every key, then every
 * write as it is stored. What the gateway keeps from it (counts, indexes, the live agents) is then read from
 * memory, whatever the bucket holds, instead of listing and reading keys per request.
 *
 * Deletes and purges arrive as values with a `KV-Operation` header. Entries the bucket's `max_age` removes
 * leave no trace in the stream: owners drop those by the write time given with each value.
 */
import {
  DeliverPolicy,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
} from "@nats-io/jetstream";

/** How often a view that is not yet ready asks the server whether its consumer has delivered everything. */
const READY_POLL_MS = 1_000;

export interface KvViewSink {
  /** A value written at `writtenMs` (the server's time). */
  put(key: string, value: Uint8Array, writtenMs: number): void;
  /** The key was deleted or purged. */
  delete(key: string): void;
}

export class KvView {
  /** Resolves once every value the bucket held at the start has been read. */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private isReady = false;
  private lastSeq = 0;
  private current: ConsumerMessages | null = null;
  /** The consumer `current` reads from. */
  private consumer: Consumer | null = null;
  private stopped = false;

  constructor(
    private readonly js: JetStreamClient,
    private readonly bucket: string,
    private readonly filter: string,
    private readonly sink: KvViewSink,
    private readonly log: (line: string, err?: unknown) => void,
  ) {
    this.ready = new Promise((r) => {
      this.markReady = () => {
        this.isReady = true;
        r();
      };
    });
  }

  /** Starts reading; `ready` tells when the view holds the bucket as it was. */
  async start(): Promise<void> {
    this.current = await this.open();
    void this.keepOpen();
  }

  stop(): void {
    this.stopped = true;
    this.current?.stop();
  }

  private async open(): Promise<ConsumerMessages> {
    const prefix = `$KV.${this.bucket}.`;
    // First the last value of each key; after a restart, from the first write not yet read.
    const from =
      this.lastSeq === 0
        ? { deliver_policy: DeliverPolicy.LastPerSubject }
        : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.lastSeq + 1 };
    const consumer = await this.js.consumers.get(`KV_${this.bucket}`, {
      filter_subjects: prefix + this.filter,
      ...from,
    });
    this.consumer = consumer;
    const info = await consumer.info(true);
    if (info.num_pending === 0) this.markReady();
    const messages = await consumer.consume({
      max_messages: 2_000,
      expires: 2_000,
      callback: (m) => this.take(m, prefix.length),
    });
    if (!this.isReady) void this.pollReady(consumer, messages);
    return messages;
  }

  /**
   * Resolves once the view has taken every write its consumer had been sent when called, or after `maxMs` (a
   * view behind under load answers a little late rather than wrong: a new agent's catalog, say).
   */
  async caughtUp(maxMs = 2_000): Promise<void> {
    await this.ready;
    const deadline = Date.now() + maxMs;
    while (!this.stopped && Date.now() < deadline) {
      const info = await this.consumer?.info(false).catch(() => null);
      if (info && info.num_pending === 0 && info.delivered.stream_seq <= this.lastSeq) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * `ready` comes from a value read with nothing pending after it. Values counted at the start may never come (a
   * purge of the stream, entries aged out, a consumer recreated past them): then the server's word that the
   * consumer has nothing pending, and everything it delivered has been taken, makes the view ready.
   */
  private async pollReady(consumer: Consumer, messages: ConsumerMessages): Promise<void> {
    let idlePolls = 0;
    while (!this.isReady && !this.stopped) {
      await new Promise((r) => setTimeout(r, READY_POLL_MS).unref());
      if (this.current !== messages) return; // a new consumer polls for itself
      const info = await consumer.info(false).catch(() => null);
      if (!info || info.num_pending > 0) {
        idlePolls = 0;
        continue;
      }
      // Delivered but not yet taken: the next poll looks again; three idle polls in a row settle it regardless.
      if (info.delivered.stream_seq <= this.lastSeq || ++idlePolls >= 3) this.markReady();
    }
  }

  private take(m: JsMsg, prefixLength: number): void {
    this.lastSeq = m.seq;
    const key = m.subject.slice(prefixLength);
    const op = m.headers?.get("KV-Operation");
    try {
      if (op === "DEL" || op === "PURGE") this.sink.delete(key);
      else this.sink.put(key, m.data, Math.floor(m.info.timestampNanos / 1e6));
    } catch (err) {
      this.log(`${this.bucket}: the view could not take ${key}`, err);
    }
    if (m.info.pending === 0) this.markReady();
  }

  /** The view must outlive anything that ends its consumer (a NATS restart): it reads on from the last write. */
  private async keepOpen(): Promise<void> {
    while (!this.stopped) {
      try {
        this.current ??= await this.open();
        if (this.stopped) this.current.stop();
        const end = await this.current.closed();
        if (!this.stopped)
          this.log(
            `${this.bucket}: the view's consumer ended${end instanceof Error ? ` (${end.message})` : ""}; starting it again`,
          );
      } catch (err) {
        if (!this.stopped) this.log(`${this.bucket}: the view's consumer failed; starting it again`, err);
      }
      this.current = null;
      if (!this.stopped) await new Promise((r) => setTimeout(r, 500));
    }
  }
}
