/**
 * Follow one job from a point: replay what is stored after `after`, then live events, with no gap and no
 * duplicate (a live listener is registered before the replay reads, and everything is filtered by seq).
 */
import type { Delivery, EventHub, ReplayResult } from "./event-hub.js";

export interface FollowSink {
  /** Called once, after the replay was read and before any event is sent (`null` when not replaying). */
  header?(r: ReplayResult | null): void;
  send(d: Delivery): void;
  /** The terminal event was sent, or there will be no more (the follow was stopped). */
  end?(): void;
}

export interface Following {
  /** Highest seq sent so far. */
  readonly lastSent: number;
  stop(): void;
}

export async function follow(hub: EventHub, jobId: string, after: number, sink: FollowSink, opts: { replay: boolean }): Promise<Following> {
  let lastSent = after;
  let live = false;
  let ended = false;
  const buffer: Delivery[] = [];
  const deliver = (d: Delivery) => {
    if (ended || d.seq <= lastSent) return;
    lastSent = d.seq;
    sink.send(d);
    if (d.terminal) finish();
  };
  const unlisten = hub.listen(jobId, (d) => (live ? deliver(d) : buffer.push(d)));
  const finish = () => {
    if (ended) return;
    ended = true;
    unlisten();
    sink.end?.();
  };
  const handle: Following = {
    get lastSent() {
      return lastSent;
    },
    stop: () => {
      if (ended) return;
      ended = true;
      unlisten();
    },
  };
  if (opts.replay) {
    let r: ReplayResult;
    try {
      r = await hub.replay(jobId, after);
    } catch (err) {
      unlisten();
      throw err;
    }
    sink.header?.(r);
    for (const d of r.events) deliver(d);
    // Resumed at or past the terminal event: nothing more will come, so the follow is over now.
    if (r.ended) finish();
  } else {
    sink.header?.(null);
  }
  live = true;
  for (const d of buffer.splice(0)) deliver(d);
  return handle;
}
