/**
 * The queue tracker's positions, against a plain model of the rule it implements: after each batch of moves, every
 * job this gateway submitted is told its position when that reached its next threshold (every move up to 10, else
 * a gain of a tenth since it was last told), and no other is. Random runs: jobs join at the end (some another
 * gateway's), leave mostly from the front, sometimes from the middle (a cancel); several pools at once.
 */
import t from "tap";
import { QueueTracker } from "../../gateway/queue.js";
import type { JobEvent } from "../../protocol/index.js";

const queued = (jobId: string, pool: string, position: number) =>
  ({
    type: "job_update",
    job_id: jobId,
    workflow_id: "wf",
    attempt: 0,
    seq: 1,
    status: "queued",
    pool,
    queue_position: position,
  }) as unknown as JobEvent;
const running = (jobId: string) =>
  ({
    type: "job_update",
    job_id: jobId,
    workflow_id: "wf",
    attempt: 1,
    seq: 2,
    status: "running",
  }) as unknown as JobEvent;

/** The rule, spelled out: a walk of every queue at every flush. */
class Model {
  readonly pools = new Map<string, { id: string; mine: boolean; shown: number }[]>();
  join(pool: string, id: string, mine: boolean): number {
    const q = this.pools.get(pool) ?? [];
    this.pools.set(pool, q);
    q.push({ id, mine, shown: q.length + 1 });
    return q.length;
  }
  leave(id: string): void {
    for (const q of this.pools.values()) {
      const i = q.findIndex((j) => j.id === id);
      if (i >= 0) q.splice(i, 1);
    }
  }
  flush(): string[] {
    const told: string[] = [];
    for (const q of this.pools.values()) {
      q.forEach((j, i) => {
        const pos = i + 1;
        const due = pos <= 10 ? pos < j.shown : pos <= 0.9 * j.shown;
        if (!j.mine || !due) return;
        j.shown = pos;
        told.push(`${j.id}@${pos}`);
      });
    }
    return told.sort();
  }
}

t.test("queue tracker - tells exactly the positions the rule says, under random joins and leaves", async (t) => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let run = 0; run < 20; run++) {
    const told: string[] = [];
    const tracker = new QueueTracker((jobId, _wf, position) => told.push(`${jobId}@${position}`));
    const model = new Model();
    const pools = ["cpu", "gpu"];
    let n = 0;
    let mismatches = 0;
    for (let step = 0; step < 300; step++) {
      const batch = 1 + Math.floor(rand() * 40);
      for (let b = 0; b < batch; b++) {
        const pool = pools[Math.floor(rand() * pools.length)]!;
        const q = model.pools.get(pool) ?? [];
        if (q.length === 0 || rand() < 0.45) {
          const id = `j${n++}`;
          const mine = rand() < 0.7;
          if (mine) tracker.claim(id);
          tracker.observe(queued(id, pool, tracker.nextPosition(pool)));
          model.join(pool, id, mine);
        } else {
          // Mostly the head starts; sometimes one in the middle is cancelled.
          const j = rand() < 0.8 ? q[0]! : q[Math.floor(rand() * q.length)]!;
          tracker.observe(running(j.id));
          model.leave(j.id);
        }
      }
      told.length = 0;
      tracker.flush();
      const want = model.flush();
      if (JSON.stringify(told.sort()) !== JSON.stringify(want)) mismatches++;
      if (mismatches === 1 && JSON.stringify(told) !== JSON.stringify(want)) {
        t.same(told, want, `run ${run} step ${step}: the first difference`);
        mismatches++;
      }
    }
    tracker.stop();
    t.equal(mismatches, 0, `run ${run}: every flush told what the rule says (${n} jobs)`);
  }
});

t.test("queue tracker - a deep queue: a dequeue tells only the jobs due, and positions only go down", async (t) => {
  const told = new Map<string, number[]>();
  const tracker = new QueueTracker((jobId, _wf, position) => told.set(jobId, [...(told.get(jobId) ?? []), position]));
  const N = 100_000;
  for (let i = 0; i < N; i++) {
    tracker.claim(`j${i}`);
    tracker.observe(queued(`j${i}`, "cpu", tracker.nextPosition("cpu")));
  }
  tracker.flush();
  t.equal(told.size, 0, "joining at the end tells nobody");
  let updates = 0;
  for (let i = 0; i < 1_000; i++) {
    tracker.observe(running(`j${i}`));
    const before = [...told.values()].reduce((s, p) => s + p.length, 0);
    tracker.flush();
    updates += [...told.values()].reduce((s, p) => s + p.length, 0) - before;
  }
  // A job at position P is told again after P/10 dequeues: per dequeue about 10 + 10·ln(N/10) jobs are due, of N.
  const bound = 10 + 10 * Math.log(N / 10);
  t.ok(updates / 1_000 < bound, `${updates / 1_000} updates per dequeue (bound ${bound.toFixed(0)}), not ${N}`);
  const last = told.get("j1000");
  t.same(last?.at(-1), 1, "the job at the front is told it is first");
  for (const [id, positions] of told) {
    if (positions.some((p, i) => i > 0 && p >= positions[i - 1]!)) t.fail(`${id}'s positions went up: ${positions}`);
  }
  t.equal(tracker.nextPosition("cpu"), N - 1_000 + 1, "the next job would queue behind the rest");
  tracker.stop();
});
