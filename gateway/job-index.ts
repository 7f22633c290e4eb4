/**
 * Every job record's state and workflow, kept from a live view of `nw_jobs` (kv-view.ts): counts by state for
 * `/metrics`, and job ids by state, by workflow and overall, newest first, so a page of `/api/jobs` reads only the
 * records it returns. Memory: about 150 bytes per record kept (the bucket's retention bounds them).
 *
 * Ids sort by creation time (protocol/ids.ts). Each list is kept sorted; an id that leaves a state stays in that
 * state's list until the list is compacted (when over half of it is stale), and readers skip it.
 */
import { parseJson, type JobRecord, type JobState } from "../protocol/index.js";
import type { KvViewSink } from "./kv-view.js";

const utf8 = new TextDecoder();

interface Entry {
  status: JobState;
  workflowId: string;
  writtenMs: number;
}

/** Ids ascending, with stale ones (no longer matching) among them until compaction. */
class IdList {
  ids: string[] = [];
  stale = 0;
  /** Appended out of order while loading; sorted before the next read. */
  private unsorted = false;

  add(id: string, loading: boolean): void {
    const a = this.ids;
    if (a.length === 0 || a[a.length - 1]! < id) a.push(id);
    else if (loading) {
      a.push(id);
      this.unsorted = true;
    } else {
      this.sort();
      const at = lowerBound(a, id);
      if (a[at] !== id) a.splice(at, 0, id);
    }
  }

  sort(): void {
    if (!this.unsorted) return;
    this.ids.sort();
    this.ids = this.ids.filter((id, i, a) => i === 0 || a[i - 1] !== id);
    this.unsorted = false;
  }

  /** One id left: compacts with `live` once stale ids outnumber live ones. */
  drop(live: (id: string) => boolean): void {
    this.stale++;
    if (this.stale > 1024 && this.stale * 2 > this.ids.length) {
      this.ids = this.ids.filter(live);
      this.stale = 0;
    }
  }
}

/** The first index whose id is ≥ `id`. */
function lowerBound(a: readonly string[], id: string): number {
  let [lo, hi] = [0, a.length];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export interface IndexQuery {
  status?: string;
  workflowId?: string;
  limit: number;
  /** The last id of the previous page. */
  cursor?: string;
}

export class JobIndex implements KvViewSink {
  private readonly entries = new Map<string, Entry>();
  private readonly all = new IdList();
  private readonly byStatus = new Map<JobState, IdList>();
  private readonly byWorkflow = new Map<string, IdList>();
  private readonly counts = new Map<JobState, number>();
  private loading = true;
  /** Who waits for a job's state to change (`changed`), by job id. */
  private readonly waiters = new Map<string, Set<() => void>>();

  /** Jobs by state, as the records say now. */
  stateCounts(): ReadonlyMap<JobState, number> {
    return this.counts;
  }

  /** The view has read the bucket as it was: lists are sorted from here on. */
  loaded(): void {
    this.loading = false;
    for (const l of [this.all, ...this.byStatus.values(), ...this.byWorkflow.values()]) l.sort();
  }

  put(key: string, value: Uint8Array, writtenMs = Date.now()): void {
    if (!key.startsWith("j.")) return;
    const id = key.slice(2);
    const rec = parseJson(utf8.decode(value)) as Pick<JobRecord, "status" | "workflow_id">;
    const had = this.entries.get(id);
    if (!had) {
      this.created(id, rec.status, rec.workflow_id);
      this.entries.get(id)!.writtenMs = writtenMs;
      return;
    }
    had.writtenMs = writtenMs;
    if (had.status === rec.status) return;
    this.leave(had.status);
    had.status = rec.status;
    this.enter(id, rec.status);
    const waiting = this.waiters.get(id);
    this.waiters.delete(id);
    for (const w of waiting ?? []) w();
  }

  /**
   * A record this gateway has just stored: listed at once, before the view reads it back (a client that submits
   * and then lists sees its job). The view's own read of it later finds it here.
   */
  created(id: string, status: JobState, workflowId: string): void {
    if (this.entries.has(id)) return;
    const e: Entry = { status, workflowId, writtenMs: Date.now() };
    this.entries.set(id, e);
    this.all.add(id, this.loading);
    this.listOf(this.byWorkflow, workflowId).add(id, this.loading);
    this.enter(id, status);
  }

  /** Resolves when this view sees job `id` change state, or after `ms`, whichever is first. */
  changed(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(id) === set) this.waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  delete(key: string): void {
    if (!key.startsWith("j.")) return;
    const id = key.slice(2);
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.leave(e.status);
    const live = (x: string) => this.entries.has(x);
    this.all.drop(live);
    this.byWorkflow.get(e.workflowId)?.drop(live);
  }

  /** Forgets records written before `cutoffMs`: the bucket's retention has removed them. */
  expire(cutoffMs: number): void {
    for (const [id, e] of this.entries) if (e.writtenMs < cutoffMs) this.delete(`j.${id}`);
    for (const [wf, l] of this.byWorkflow) if (l.ids.length === l.stale) this.byWorkflow.delete(wf);
  }

  /**
   * Ids of a page, newest first, and the cursor of the next page (null at the end). With a state and a workflow
   * both, the workflow's list is walked, at most `scanMax` ids per call: `next` then continues the walk.
   */
  page(q: IndexQuery, scanMax: number): { ids: string[]; next: string | null } {
    const list = q.workflowId
      ? this.byWorkflow.get(q.workflowId)
      : q.status
        ? this.byStatus.get(q.status as JobState)
        : this.all;
    if (!list) return { ids: [], next: null };
    list.sort();
    const a = list.ids;
    const ids: string[] = [];
    let scanned = 0;
    for (let i = (q.cursor === undefined ? a.length : lowerBound(a, q.cursor)) - 1; i >= 0; i--) {
      const id = a[i]!;
      const e = this.entries.get(id);
      if (e !== undefined && (!q.status || e.status === q.status)) {
        if (ids.length === q.limit) return { ids, next: ids[ids.length - 1]! };
        ids.push(id);
      } else if (++scanned >= scanMax) return { ids, next: id };
    }
    return { ids, next: null };
  }

  private listOf<K>(m: Map<K, IdList>, k: K): IdList {
    let l = m.get(k);
    if (!l) m.set(k, (l = new IdList()));
    return l;
  }

  private enter(id: string, s: JobState): void {
    this.counts.set(s, (this.counts.get(s) ?? 0) + 1);
    this.listOf(this.byStatus, s).add(id, this.loading);
  }

  private leave(s: JobState): void {
    this.counts.set(s, (this.counts.get(s) ?? 1) - 1);
    this.byStatus.get(s)?.drop((x) => this.entries.get(x)?.status === s);
  }
}
