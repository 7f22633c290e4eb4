/**
 * Queue positions (NodeTool sends `job_update {status:"queued", queue_position}` too). Every gateway sees every
 * event, so each knows the queued jobs of every pool in stream order; it announces position changes for the
 * jobs it submitted. Updates carry a message id derived from the position, so if two gateways ever announce
 * the same change the stream keeps one.
 */
import { isTerminalEvent, type JobEvent } from "../protocol/index.js";
import type { Delivery } from "./event-hub.js";

interface Waiting {
  workflowId: string;
  mine: boolean;
  /** The position last announced (or the one the job was queued with). */
  shownPos: number;
}

/** Positions up to this are announced at every move; above it, once they fall by a tenth since the last one. */
const EXACT_POSITIONS = 10;
const NEVER = Number.MAX_SAFE_INTEGER / 4;

/**
 * The highest position at which a job last shown at `shown` is told again: every move up to 10, above that once it
 * has gained a tenth. A job queued at position P so gets about 10 + 22·log10(P / 10) updates over its wait, not P
 * (its events are capped, EVENTS_RESERVED_PER_JOB).
 */
function threshold(shown: number): number {
  return Math.max(Math.floor(shown * 0.9), Math.min(EXACT_POSITIONS, shown - 1));
}

/**
 * One pool's queued jobs in stream order, as slots of a segment tree holding per slot whether a job is there
 * (its position is the count up to its slot) and its slack: how many jobs ahead of it must leave before it is told
 * its position again. A job leaving takes one from the slack of every slot behind it (one range update), and the
 * jobs due are those whose slack reached 0: a dequeue costs O(log n) plus O(log n) per update announced, not a walk
 * of the queue.
 */
class PoolQueue {
  private cap = 0;
  /** Per tree node: least slack below it (lazy adds pending in `add`), count of jobs below it. */
  private minSlack = new Float64Array(0);
  private pending = new Float64Array(0);
  private count = new Int32Array(0);
  private jobAt: (string | null)[] = [];
  private readonly slotOf = new Map<string, number>();
  private readonly waiting = new Map<string, Waiting>();
  /** The next free slot: slots are taken in stream order and compacted when they run out. */
  private next = 0;

  get size(): number {
    return this.slotOf.size;
  }

  has(jobId: string): boolean {
    return this.slotOf.has(jobId);
  }

  /** A job joins at the end of the queue; `shownPos` is the position it was queued with. */
  push(jobId: string, w: Waiting): void {
    if (this.next >= this.cap) this.rebuild(this.size + 1);
    const slot = this.next++;
    this.slotOf.set(jobId, slot);
    this.waiting.set(jobId, w);
    this.jobAt[slot] = jobId;
    const position = this.size;
    this.setLeaf(slot, 1, w.mine ? position - threshold(w.shownPos) : NEVER);
  }

  remove(jobId: string): boolean {
    const slot = this.slotOf.get(jobId);
    if (slot === undefined) return false;
    this.slotOf.delete(jobId);
    this.waiting.delete(jobId);
    this.jobAt[slot] = null;
    this.setLeaf(slot, 0, NEVER);
    if (slot + 1 < this.cap) this.addRange(1, 0, this.cap - 1, slot + 1, this.cap - 1, -1);
    if (this.cap > 1024 && this.size * 8 < this.cap) this.rebuild(this.size);
    return true;
  }

  /** The jobs due an update, each with its position now (and shown as that from here on). */
  takeDue(): { jobId: string; workflowId: string; position: number }[] {
    const out: { jobId: string; workflowId: string; position: number }[] = [];
    while (this.cap > 0 && this.minSlack[1]! <= 0) {
      const slot = this.firstDue();
      const jobId = this.jobAt[slot]!;
      const w = this.waiting.get(jobId)!;
      const position = this.countTo(slot);
      w.shownPos = position;
      this.setLeaf(slot, 1, position - threshold(position));
      out.push({ jobId, workflowId: w.workflowId, position });
    }
    return out;
  }

  /** New arrays for at least `room` jobs, the queued ones compacted into the first slots. */
  private rebuild(room: number): void {
    const jobs = [...this.slotOf.keys()].sort((a, b) => this.slotOf.get(a)! - this.slotOf.get(b)!);
    this.cap = 64;
    while (this.cap < room * 2) this.cap *= 2;
    this.minSlack = new Float64Array(2 * this.cap).fill(NEVER);
    this.pending = new Float64Array(2 * this.cap);
    this.count = new Int32Array(2 * this.cap);
    this.jobAt = new Array<string | null>(this.cap).fill(null);
    jobs.forEach((jobId, i) => {
      const w = this.waiting.get(jobId)!;
      this.slotOf.set(jobId, i);
      this.jobAt[i] = jobId;
      this.count[this.cap + i] = 1;
      this.minSlack[this.cap + i] = w.mine ? i + 1 - threshold(w.shownPos) : NEVER;
    });
    this.next = jobs.length;
    for (let n = this.cap - 1; n >= 1; n--) this.pull(n);
  }

  // The tree: node 1 is the root, node n's children are 2n and 2n+1, leaves are cap … 2·cap-1.

  private pull(n: number): void {
    this.minSlack[n] = Math.min(this.minSlack[2 * n]!, this.minSlack[2 * n + 1]!) + this.pending[n]!;
    this.count[n] = this.count[2 * n]! + this.count[2 * n + 1]!;
  }

  /** Sets a leaf (a slot's count and slack), with the adds pending above it taken off so it reads as given. */
  private setLeaf(slot: number, count: number, slack: number): void {
    let above = 0;
    for (let n = (this.cap + slot) >> 1; n >= 1; n >>= 1) above += this.pending[n]!;
    const leaf = this.cap + slot;
    this.count[leaf] = count;
    this.minSlack[leaf] = slack === NEVER ? NEVER : slack - above;
    for (let n = leaf >> 1; n >= 1; n >>= 1) this.pull(n);
  }

  /** Adds `d` to the slack of slots lo … hi (node n covers nl … nr). */
  private addRange(n: number, nl: number, nr: number, lo: number, hi: number, d: number): void {
    if (hi < nl || nr < lo) return;
    if (lo <= nl && nr <= hi) {
      this.minSlack[n] = this.minSlack[n]! + d;
      if (n < this.cap) this.pending[n] = this.pending[n]! + d;
      return;
    }
    const mid = (nl + nr) >> 1;
    this.addRange(2 * n, nl, mid, lo, hi, d);
    this.addRange(2 * n + 1, mid + 1, nr, lo, hi, d);
    this.pull(n);
  }

  /** The first slot whose slack is 0 or less (the root's least slack is). */
  private firstDue(): number {
    let n = 1;
    let above = 0;
    while (n < this.cap) {
      above += this.pending[n]!;
      n = this.minSlack[2 * n]! + above <= 0 ? 2 * n : 2 * n + 1;
    }
    return n - this.cap;
  }

  /** The position of `slot`: the jobs in slots 0 … slot. */
  private countTo(slot: number): number {
    let sum = 0;
    let n = this.cap + slot;
    sum += this.count[n]!;
    for (; n > 1; n >>= 1) if (n & 1) sum += this.count[n - 1]!;
    return sum;
  }
}

export class QueueTracker {
  private readonly pools = new Map<string, PoolQueue>();
  private readonly poolOf = new Map<string, string>();
  private readonly mine = new Set<string>();
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly announce: (jobId: string, workflowId: string, position: number) => void) {}

  /** Jobs this gateway submitted; call before their `queued` event is published. */
  claim(jobId: string): void {
    this.mine.add(jobId);
  }

  /** Position a new job would get in `pool`. */
  nextPosition(pool: string): number {
    return (this.pools.get(pool)?.size ?? 0) + 1;
  }

  /** The event hub's subscriber: positions move on job updates only (reading `d.ev` decodes the event). */
  readonly onEvent = (_jobId: string, d: Delivery): void => {
    if (d.type === "job_update") this.observe(d.ev);
  };

  observe(ev: JobEvent): void {
    if (ev.type !== "job_update") return;
    const jobId = ev.job_id;
    if (ev.status === "queued" && ev.attempt === 0 && ev.pool) {
      if (this.poolOf.has(jobId)) return; // a position update of a job we already track
      let q = this.pools.get(ev.pool);
      if (!q) this.pools.set(ev.pool, (q = new PoolQueue()));
      const mine = this.mine.delete(jobId);
      const pos = ev.queue_position ?? q.size + 1;
      q.push(jobId, { workflowId: ev.workflow_id, mine, shownPos: pos });
      this.poolOf.set(jobId, ev.pool);
      // A job joining at the end moves nobody: only one queued at another place than it was told may be due.
      if (pos !== q.size) this.markDirty(ev.pool);
      return;
    }
    if (ev.status === "running" || isTerminalEvent(ev)) {
      this.mine.delete(jobId); // claimed but never seen queued (a submit that failed before its `queued` event)
      const pool = this.poolOf.get(jobId);
      if (pool === undefined) return;
      this.poolOf.delete(jobId);
      const q = this.pools.get(pool);
      q?.remove(jobId);
      if (q?.size === 0) this.pools.delete(pool);
      else this.markDirty(pool);
    }
  }

  private markDirty(pool: string): void {
    this.dirty.add(pool);
    // Coalesce: a burst of starts moves everyone once, not once per start.
    this.timer ??= setTimeout(() => this.flush(), 50);
  }

  /** Announces the positions due (the jobs of this gateway whose position reached their next threshold). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const pool of this.dirty) {
      for (const d of this.pools.get(pool)?.takeDue() ?? []) this.announce(d.jobId, d.workflowId, d.position);
    }
    this.dirty.clear();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
