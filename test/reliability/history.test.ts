/** The history checker itself: it must flag every kind of wrong delivery (no processes; synthetic logs). */
import t from "tap";
import type { JobEvent } from "../../protocol/index.js";
import { ClientLog, compareLog, compareSource, type JobLog, type StoredEvent } from "../helpers/history.js";
import { Fence } from "../../gateway/fence.js";

type Row = [seq: number, type: string, attempt: number, statusOrContent?: string];

/** The event a row stands for: a job_update's 4th field is its status, a chunk's its content. */
function event(type: string, attempt: number, extra?: string, result?: string): Record<string, unknown> {
  const ev: Record<string, unknown> = { type, attempt, job_id: "j", workflow_id: "w" };
  if (type === "job_update") ev.status = extra;
  if (type === "chunk") ev.content = extra ?? `c${attempt}`;
  if (extra === "completed") ev.result = { text: [result] };
  return ev;
}

/** A stored log from rows, fenced as the gateway fences; a completed update carries `result` as its text. */
function log(rows: Row[], result = ""): JobLog {
  const stored: StoredEvent[] = rows.map(([seq, type, attempt, extra]) => ({
    seq,
    type,
    attempt,
    ...(type === "job_update" ? { status: extra } : {}),
    ev: event(type, attempt, extra, result) as unknown as JobEvent,
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

/** A client log of the given deliveries (by default, each exactly as stored in JOB). */
function client(rows: Row[], opts: { after?: number; partial?: boolean } = {}) {
  const c = new ClientLog("c");
  if (opts.after) c.from("j", opts.after);
  if (opts.partial) c.partial("j");
  for (const [seq, type, attempt, extra] of rows) c.record({ ...event(type, attempt, extra), seq });
  return c.jobs.get("j")!;
}
const asStored = (seq: number): Row => {
  const s = JOB.stored.find((e) => e.seq === seq)!;
  const ev = s.ev as unknown as Record<string, string>;
  return [seq, s.type, s.attempt, s.type === "chunk" ? ev.content : s.status];
};
const kinds = (rows: Row[], opts?: { after?: number; partial?: boolean }) =>
  compareLog("c", "j", client(rows, opts), JOB).map((p) => `${p.kind}@${p.seq}`);

const WHOLE: Row[] = [1, 3, 4, 7, 8, 10, 12].map(asStored);

t.test("history - a complete, ordered log matches", async (t) => {
  t.same(kinds(WHOLE), []);
  t.same(kinds(WHOLE.slice(3), { after: 4 }), [], "a log that starts after a seq owes only what follows it");
});

t.test(
  "history - missing, duplicated, out-of-order, fenced-off and wrong-type deliveries are each reported",
  async (t) => {
    t.same(kinds(WHOLE.filter(([s]) => s !== 7)), ["missing@7"], "a gap");
    t.same(kinds([...WHOLE.slice(0, 4), asStored(4), ...WHOLE.slice(4)]), ["duplicated@4"], "a duplicate");
    t.same(kinds([WHOLE[0]!, WHOLE[2]!, WHOLE[1]!, ...WHOLE.slice(3)]), ["out_of_order@3"], "a reordering");
    t.same(
      kinds([...WHOLE.slice(0, 5), asStored(9), ...WHOLE.slice(5)]),
      ["unexpected@9"],
      "a late event of an old attempt",
    );
    t.same(kinds([...WHOLE, asStored(13)]), ["unexpected@13"], "an event after the terminal one");
    t.same(
      kinds([...WHOLE.slice(0, 3), [7, "node_update", 1], ...WHOLE.slice(4)]),
      ["wrong_type@7"],
      "a frame whose type differs from the stored event",
    );
    t.same(kinds(WHOLE.slice(0, 4)), ["missing@8", "missing@10", "missing@12"], "a log that stops early");
    t.same(kinds(WHOLE.slice(0, 4), { partial: true }), [], "unless the client stopped on purpose");
    t.same(
      kinds([WHOLE[0]!, WHOLE[3]!], { partial: true }),
      ["missing@3", "missing@4"],
      "a partial log still owes everything before its last event",
    );
  },
);

t.test("history - a delivery at the right seq with the wrong content, attempt or status is reported", async (t) => {
  const swap = (seq: number, row: Row) => WHOLE.map((r) => (r[0] === seq ? row : r));
  t.same(kinds(swap(7, [7, "chunk", 1, "other text"])), ["wrong_content@7"], "a chunk whose content differs");
  t.same(kinds(swap(10, [10, "chunk", 1, "c2"])), ["wrong_content@10"], "a chunk labelled with another attempt");
  t.same(kinds(swap(12, [12, "job_update", 2, "failed"])), ["wrong_content@12"], "a job_update whose status differs");
});

/** A Tokens job of 3 tokens: attempt 1 emitted two before it died, attempt 2 all three. */
const TOK = log(
  [
    [1, "job_update", 1, "running"],
    [2, "chunk", 1, "tok0 "],
    [3, "chunk", 1, "tok1 "],
    [4, "job_update", 2, "running"],
    [5, "chunk", 2, "tok0 "],
    [6, "chunk", 2, "tok1 "],
    [7, "chunk", 2, "tok2 "],
    [8, "chunk", 2, ""],
    [9, "job_update", 2, "completed"],
  ],
  "tok0 tok1 tok2 ",
);
const tokRows = (seqs: number[], job = TOK): Row[] =>
  seqs.map((seq) => {
    const s = job.stored.find((e) => e.seq === seq)!;
    return [seq, s.type, s.attempt, s.type === "chunk" ? (s.ev as unknown as { content: string }).content : s.status];
  });
const sourceKinds = (rows: Row[], opts?: { after?: number; partial?: boolean }, job = TOK) =>
  compareSource("c", "j", client(rows, opts), job, { count: 3, output: "text" }).map((p) => `${p.kind}@${p.seq}`);

t.test("history - a Tokens job's clients are checked against the tokens the node emitted", async (t) => {
  const all = [1, 2, 3, 4, 5, 6, 7, 8, 9];
  t.same(sourceKinds(tokRows(all)), [], "every token of each attempt, the completing one whole");
  t.same(sourceKinds(tokRows(all.slice(3)), { after: 3 }), [], "a client that starts after seq 3 owes the rest");
  t.same(sourceKinds(tokRows([1, 3, 4, 5, 6, 7, 8, 9])), ["token_gap@3"], "a hole inside an interrupted attempt");
  t.same(
    sourceKinds(tokRows([1, 2, 3, 4, 5, 7, 8, 9])),
    ["token_gap@7", "tokens_missing@9"],
    "a hole in the completing attempt",
  );
  const rows = tokRows(all).map((r): Row => (r[0] === 6 ? [6, "chunk", 2, "tok9 "] : r));
  t.same(sourceKinds(rows), ["token_gap@6"], "a wrong token (the stream check flags it too)");
  t.same(sourceKinds(tokRows([1, 2, 3, 4, 5, 6])), [], "a client that did not reach the end owes no completion");
  // What NATS stored can itself lack a token (dropped before it was published): the stream check passes, this not.
  const dropped = log(
    [
      [1, "job_update", 1, "running"],
      [2, "chunk", 1, "tok0 "],
      [3, "chunk", 1, "tok2 "],
      [4, "job_update", 1, "completed"],
    ],
    "tok0 tok1 tok2 ",
  );
  const got = tokRows([1, 2, 3, 4], dropped);
  t.same(compareLog("c", "j", client(got), dropped), [], "the stream check alone sees nothing wrong");
  t.same(sourceKinds(got, {}, dropped), ["token_gap@3", "tokens_missing@4"], "the source check does");
  const wrongResult = log(
    [
      [1, "chunk", 1, "tok0 "],
      [2, "chunk", 1, "tok1 "],
      [3, "chunk", 1, "tok2 "],
      [4, "job_update", 1, "completed"],
    ],
    "tok0 ",
  );
  t.same(
    sourceKinds(tokRows([1, 2, 3, 4], wrongResult), {}, wrongResult),
    ["wrong_result@4"],
    "a result the tokens do not spell",
  );
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
