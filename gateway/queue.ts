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
  lastPos: number;
  /** The position last announced (or the one the job was queued with). */
  shownPos: number;
}

/** Positions up to this are announced at every move; above it, once they fall by a tenth since the last one. */
const EXACT_POSITIONS = 10;

export class QueueTracker {
  /** pool → queued jobs in stream order (Map keeps insertion order). */
  private readonly pools = new Map<string, Map<string, Waiting>>();
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
      if (!q) this.pools.set(ev.pool, (q = new Map()));
      const mine = this.mine.delete(jobId);
      const pos = ev.queue_position ?? q.size + 1;
      q.set(jobId, { workflowId: ev.workflow_id, mine, lastPos: pos, shownPos: pos });
      this.poolOf.set(jobId, ev.pool);
      // A job joining at the end moves nobody: the walk is needed only when it was queued at another place.
      if (pos !== q.size) this.markDirty(ev.pool);
      return;
    }
    if (ev.status === "running" || isTerminalEvent(ev)) {
      this.mine.delete(jobId); // claimed but never seen queued (a submit that failed before its `queued` event)
      const pool = this.poolOf.get(jobId);
      if (pool === undefined) return;
      this.poolOf.delete(jobId);
      this.pools.get(pool)?.delete(jobId);
      this.markDirty(pool);
    }
  }

  private markDirty(pool: string): void {
    this.dirty.add(pool);
    // Coalesce: a burst of starts moves everyone once, not once per start.
    this.timer ??= setTimeout(() => this.flush(), 50);
  }

  private flush(): void {
    this.timer = null;
    for (const pool of this.dirty) {
      const q = this.pools.get(pool);
      if (!q) continue;
      let pos = 0;
      for (const [jobId, w] of q) {
        pos++;
        if (w.lastPos === pos) continue;
        w.lastPos = pos;
        // Bounded per job (its events are capped, EVENTS_RESERVED_PER_JOB): a job queued at position P gets
        // about 10 + 22·log10(P / 10) updates, not P.
        if (pos > EXACT_POSITIONS && pos > w.shownPos * 0.9) continue;
        w.shownPos = pos;
        if (w.mine) this.announce(jobId, w.workflowId, pos);
      }
    }
    this.dirty.clear();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
