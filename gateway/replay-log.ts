/**
 * One job's admitted events as the hub's replay cache keeps them: their MessagePack bytes (with `seq`) packed
 * back to back in a few chunks, and per event its seq, type, terminal flag and where its bytes lie, in arrays
 * that grow by doubling. A replay hands out views of the bytes; nothing per event is a heap object.
 *
 * Why not the deliveries themselves: a cached event used to be a compacted `Delivery` and its buffer, objects
 * that outlived the young generation, so every scavenge copied them and the old generation marked them. While a
 * job was cached the gateway spent ~3 µs more per event for it (bench/fanout.ts at N = 100, 2026-12-03: 195
 * against 166 ns of user CPU per delivery with the cache off). Caching an event is now a copy of its bytes.
 */
import type { JobEventType } from "../protocol/index.js";

/** The first chunk's size; each next one doubles, up to `MAX_CHUNK_BYTES` (a long job wastes at most half its last). */
const FIRST_CHUNK_BYTES = 1024;
const MAX_CHUNK_BYTES = 256 * 1024;
const FIRST_CAPACITY = 16;
/** What an entry of `types` costs (one tagged pointer to an interned string). */
const POINTER_BYTES = 8;
/** What the typed-array index holds per event of capacity: seq (8), chunk, offset and length (3 × 4), terminal (1). */
const INDEX_BYTES = 8 + 12 + 1;

export class ReplayLog {
  private readonly chunks: Buffer[] = [];
  /** Bytes used of the last chunk. */
  private used = 0;
  private n = 0;
  private seqs = new Float64Array(FIRST_CAPACITY);
  /** Per event: chunk index, offset in it, length. */
  private where = new Uint32Array(FIRST_CAPACITY * 3);
  private terminals = new Uint8Array(FIRST_CAPACITY);
  private readonly types: JobEventType[] = [];
  /** The room the last `reserve` gave, until an `append` records it. */
  private reserved: Uint8Array | null = null;
  /** What the log has allocated: chunks and index arrays (what the hub's budget counts). */
  bytes = FIRST_CAPACITY * INDEX_BYTES;

  /**
   * Room for the next event's `size` bytes at the end of the log: an `append` of the view it gives records the
   * bytes where they already are. Until then the room is not the log's; the next `reserve` gives it again. An
   * arrow function: the hub hands it on for every event of a cached job.
   */
  readonly reserve = (size: number): Buffer => {
    let chunk = this.chunks.at(-1);
    if (chunk === undefined || chunk.length - this.used < size) {
      const next = Math.max(
        size,
        chunk === undefined ? FIRST_CHUNK_BYTES : Math.min(chunk.length * 2, MAX_CHUNK_BYTES),
      );
      // Uninitialised on purpose: only the written ranges are ever handed out.
      chunk = Buffer.allocUnsafeSlow(next);
      this.chunks.push(chunk);
      this.used = 0;
      this.bytes += next;
    }
    return (this.reserved = chunk.subarray(this.used, this.used + size));
  };

  /** Appends one event (seqs only grow: the hub appends in stream order). `m` may be a view `reserve` gave. */
  append(type: JobEventType, terminal: boolean, seq: number, m: Uint8Array): void {
    if (this.n === this.seqs.length) this.grow();
    if (m !== this.reserved) this.reserve(m.byteLength).set(m);
    this.reserved = null;
    const i = this.n++;
    this.seqs[i] = seq;
    this.where[i * 3] = this.chunks.length - 1;
    this.where[i * 3 + 1] = this.used;
    this.where[i * 3 + 2] = m.byteLength;
    this.terminals[i] = terminal ? 1 : 0;
    this.types.push(type);
    this.bytes += POINTER_BYTES;
    this.used += m.byteLength;
  }

  /** Events appended so far. */
  get length(): number {
    return this.n;
  }

  /** Index of the first event with `seq > after` (`length` when none). */
  indexAfter(after: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.seqs[mid]! <= after) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The events with `seq > after`, in order, each made by `make` from a view of its bytes (with `seq`). */
  after<T>(after: number, make: (type: JobEventType, terminal: boolean, seq: number, bytes: Uint8Array) => T): T[] {
    return this.slice(this.indexAfter(after), this.n, make);
  }

  /** The events at indexes `[from, to)`, in order, made as in `after`. */
  slice<T>(
    from: number,
    to: number,
    make: (type: JobEventType, terminal: boolean, seq: number, bytes: Uint8Array) => T,
  ): T[] {
    const end = Math.min(to, this.n);
    const out: T[] = new Array(Math.max(0, end - from));
    for (let i = from; i < end; i++) {
      const at = this.where[i * 3 + 1]!;
      const bytes = this.chunks[this.where[i * 3]!]!.subarray(at, at + this.where[i * 3 + 2]!);
      out[i - from] = make(this.types[i]!, this.terminals[i] === 1, this.seqs[i]!, bytes);
    }
    return out;
  }

  private grow(): void {
    const cap = this.seqs.length * 2;
    const seqs = new Float64Array(cap);
    seqs.set(this.seqs);
    const where = new Uint32Array(cap * 3);
    where.set(this.where);
    const terminals = new Uint8Array(cap);
    terminals.set(this.terminals);
    this.bytes += (cap - this.seqs.length) * INDEX_BYTES;
    this.seqs = seqs;
    this.where = where;
    this.terminals = terminals;
  }
}
