/**
 * Follow one job from a point: replay what is stored after `after`, then live events, with no gap and no
 * duplicate (a live listener is registered before the replay reads, and everything is filtered by seq). The
 * replay is read and sent a batch at a time: a long history is never held whole.
 */
import type { Delivery, EventHub, Replay, ReplayHeader } from "./event-hub.js";

export interface FollowSink {
  /** Called once, after the replay was read and before any event is sent (`null` when not replaying). */
  header?(r: ReplayHeader | null): void;
  send(d: Delivery): void;
  /** Runs `fn`, which sends a batch of events, so that they leave in one write (a socket's cork). */
  batch?(fn: () => void): void;
  /** The terminal event was sent, or there will be no more (the follow was stopped). */
  end?(): void;
}

export interface Following {
  /** Highest seq sent so far. */
  readonly lastSent: number;
  stop(): void;
}

export async function follow(
  hub: EventHub,
  jobId: string,
  after: number,
  sink: FollowSink,
  opts: { replay: boolean },
): Promise<Following> {
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
    let r: Replay;
    try {
      r = await hub.openReplay(jobId, after);
    } catch (err) {
      unlisten();
      throw err;
    }
    try {
      sink.header?.(r);
      // Once the terminal event is out, the rest (nothing admitted) is left unread.
      const batch = sink.batch ?? ((fn: () => void) => fn());
      for (let b = await r.next(); b.length > 0 && !ended; b = await r.next()) batch(() => b.forEach(deliver));
    } catch (err) {
      unlisten();
      throw err;
    } finally {
      r.close();
    }
    // Resumed at or past the terminal event: nothing more will come, so the follow is over now.
    if (r.ended) finish();
  } else {
    sink.header?.(null);
  }
  live = true;
  const held = buffer.splice(0);
  if (held.length > 0) (sink.batch ?? ((fn: () => void) => fn()))(() => held.forEach(deliver));
  return handle;
}
