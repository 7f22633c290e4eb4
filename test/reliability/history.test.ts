/** The history checker itself: it must flag every kind of wrong delivery (no processes; synthetic logs). */
import t from "tap";
import type { JobEvent } from "../../protocol/index.js";
import { ClientLog, compareLog, type JobLog, type StoredEvent } from "../helpers/history.js";
import { Fence } from "../../gateway/fence.js";

/** A stored log from `[seq, type, attempt, status?]` rows, fenced as the gateway fences. */
function log(rows: [number, string, number, string?][]): JobLog {
  const stored: StoredEvent[] = rows.map(([seq, type, attempt, status]) => ({
    seq,
    type,
    attempt,
    ...(status ? { status } : {}),
    ev: { type, attempt, job_id: "j", workflow_id: "w", ...(status ? { status } : {}) } as unknown as JobEvent,
  }));
  const f = new Fence();
  const admitted: StoredEvent[] = [];
  const fenced: StoredEvent[] = [];
  for (const s of stored) (f.admit(s.ev) ? admitted : fenced).push(s);
  return { stored, admitted, fenced, terminal: admitted.find((e) => e.status === "completed") ?? null };
}

const JOB = log([
  [1, "job_update", 0, "queued"],
  [3, "job_update", 1, "running"],
  [4, "chunk", 1],
  [7, "chunk", 1],
  [8, "job_update", 2, "running"],
  [9, "chunk", 1], // late event of attempt 1: fenced
  [10, "chunk", 2],
  [12, "job_update", 2, "completed"],
  [13, "chunk", 2], // after the end: fenced
]);

function client(seqs: [number, string][], opts: { after?: number; partial?: boolean } = {}) {
  const c = new ClientLog("c");
  if (opts.after) c.from("j", opts.after);
  if (opts.partial) c.partial("j");
  for (const [seq, type] of seqs) c.record({ job_id: "j", seq, type, ...(type === "job_update" && seq === 12 ? { status: "completed" } : {}) });
  return c.jobs.get("j")!;
}
const kinds = (seqs: [number, string][], opts?: { after?: number; partial?: boolean }) => compareLog("c", "j", client(seqs, opts), JOB).map((p) => `${p.kind}@${p.seq}`);

const WHOLE: [number, string][] = [[1, "job_update"], [3, "job_update"], [4, "chunk"], [7, "chunk"], [8, "job_update"], [10, "chunk"], [12, "job_update"]];

t.test("history - a complete, ordered log matches", async (t) => {
  t.same(kinds(WHOLE), []);
  t.same(kinds(WHOLE.slice(3), { after: 4 }), [], "a log that starts after a seq owes only what follows it");
});

t.test("history - missing, duplicated, out-of-order, fenced-off and wrong-type deliveries are each reported", async (t) => {
  t.same(kinds(WHOLE.filter(([s]) => s !== 7)), ["missing@7"], "a gap");
  t.same(kinds([...WHOLE.slice(0, 4), [4, "chunk"], ...WHOLE.slice(4)]), ["duplicated@4"], "a duplicate");
  t.same(kinds([WHOLE[0]!, WHOLE[2]!, WHOLE[1]!, ...WHOLE.slice(3)]), ["out_of_order@3"], "a reordering");
  t.same(kinds([...WHOLE.slice(0, 5), [9, "chunk"], ...WHOLE.slice(5)]), ["unexpected@9"], "a late event of an old attempt");
  t.same(kinds([...WHOLE, [13, "chunk"]]), ["unexpected@13"], "an event after the terminal one");
  t.same(kinds([...WHOLE.slice(0, 3), [7, "node_update"], ...WHOLE.slice(4)]), ["wrong_type@7"], "a frame whose type differs from the stored event");
  t.same(kinds(WHOLE.slice(0, 4)), ["missing@8", "missing@10", "missing@12"], "a log that stops early");
  t.same(kinds(WHOLE.slice(0, 4), { partial: true }), [], "unless the client stopped on purpose");
  t.same(kinds([WHOLE[0]!, WHOLE[3]!], { partial: true }), ["missing@3", "missing@4"], "a partial log still owes everything before its last event");
});

t.test("history - lastSeq and ended follow what the client received", async (t) => {
  const c = new ClientLog("c");
  t.equal(c.lastSeq("j"), 0);
  c.record({ job_id: "j", seq: 5, type: "chunk" });
  c.record({ type: "job_resumed", job_id: "j" });
  t.equal(c.lastSeq("j"), 5, "messages without a seq are not events");
  t.notOk(c.ended("j"));
  c.record({ job_id: "j", seq: 6, type: "job_update", status: "cancelled" });
  t.ok(c.ended("j"), "a terminal job_update ends it");
});
