/**
 * The jobs one WebSocket follows, by job id. Almost every socket follows none or one, and a `Map` costs about
 * 190 bytes empty: one follow is held inline, and a `Map` is made only for a second.
 */
import type { Following } from "./follow.js";

/**
 * How a socket takes one job's events: from the job's uWS topic (`ON_TOPIC`), or directly while catching up (an
 * entry of its own, `onTopic` false, whose `following` is set once the replay has started).
 */
export interface FollowEntry {
  following: Following | null;
  readonly onTopic: boolean;
}

/** The entry of every follow taken from its job's topic: shared, as it holds nothing of its socket. */
export const ON_TOPIC: FollowEntry = Object.freeze({ following: null, onTopic: true });

export class SocketFollows {
  private oneId: string | null = null;
  private one: FollowEntry | null = null;
  private many: Map<string, FollowEntry> | null = null;

  get size(): number {
    if (this.many !== null) return this.many.size;
    return this.oneId === null ? 0 : 1;
  }

  get(jobId: string): FollowEntry | undefined {
    if (this.many !== null) return this.many.get(jobId);
    return jobId === this.oneId ? (this.one ?? undefined) : undefined;
  }

  has(jobId: string): boolean {
    return this.get(jobId) !== undefined;
  }

  set(jobId: string, entry: FollowEntry): void {
    if (this.many !== null) {
      this.many.set(jobId, entry);
    } else if (this.oneId === null || this.oneId === jobId) {
      this.oneId = jobId;
      this.one = entry;
    } else {
      this.many = new Map([[this.oneId, this.one!]]);
      this.many.set(jobId, entry);
      this.oneId = null;
      this.one = null;
    }
  }

  delete(jobId: string): void {
    if (this.many !== null) this.many.delete(jobId);
    else if (jobId === this.oneId) {
      this.oneId = null;
      this.one = null;
    }
  }

  clear(): void {
    this.many = null;
    this.oneId = null;
    this.one = null;
  }

  /** Each followed job and its entry, in the order they were first followed. */
  *[Symbol.iterator](): IterableIterator<[string, FollowEntry]> {
    if (this.many !== null) yield* this.many;
    else if (this.oneId !== null) yield [this.oneId, this.one!];
  }

  *keys(): IterableIterator<string> {
    for (const [jobId] of this) yield jobId;
  }

  *values(): IterableIterator<FollowEntry> {
    for (const [, entry] of this) yield entry;
  }
}
