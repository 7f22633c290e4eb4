/**
 * The replay cache's per-job log on its own: bytes packed into chunks, an index in typed arrays. What a replay
 * reads back must be exactly what was appended, whatever the sizes, across chunk and index growth.
 */
import t from "tap";
import { randomBytes } from "node:crypto";
import { ReplayLog } from "../../gateway/replay-log.js";
import type { JobEventType } from "../../protocol/index.js";

interface Entry {
  type: JobEventType;
  terminal: boolean;
  seq: number;
  bytes: Uint8Array;
}
const read = (log: ReplayLog, after: number): Entry[] =>
  log.after(after, (type, terminal, seq, bytes) => ({ type, terminal, seq, bytes: Uint8Array.from(bytes) }));

/** Events of sizes from 1 B to 3 kB, seqs with gaps (other jobs' events lie between them in the stream). */
function filled(n: number): { log: ReplayLog; entries: Entry[] } {
  const log = new ReplayLog();
  const entries: Entry[] = [];
  let seq = 0;
  for (let i = 0; i < n; i++) {
    seq += 1 + (i % 7);
    const e: Entry = {
      type: i === n - 1 ? "job_update" : "chunk",
      terminal: i === n - 1,
      seq,
      bytes: randomBytes(1 + ((i * 7919) % 3000)),
    };
    log.append(e.type, e.terminal, e.seq, e.bytes);
    entries.push(e);
  }
  return { log, entries };
}

t.test(
  "replay log - gives back every event's bytes, type, terminal flag and seq, across chunk and index growth",
  async (t) => {
    const { log, entries } = filled(700);
    const got = read(log, 0);
    t.equal(got.length, entries.length, "every event");
    let same = 0;
    for (let i = 0; i < got.length; i++) {
      const a = got[i]!;
      const b = entries[i]!;
      if (a.seq === b.seq && a.type === b.type && a.terminal === b.terminal && Buffer.compare(a.bytes, b.bytes) === 0)
        same++;
    }
    t.equal(same, entries.length, "each one as appended, in order");
    t.ok(got.at(-1)!.terminal && !got.at(-2)!.terminal, "the terminal flag is per event");
  },
);

t.test("replay log - after(seq) starts right after seq, for every seq, gaps included", async (t) => {
  const { log, entries } = filled(120);
  const last = entries.at(-1)!.seq;
  let wrong = 0;
  for (let after = 0; after <= last + 2; after++) {
    const want = entries.filter((e) => e.seq > after).map((e) => e.seq);
    const have = read(log, after).map((e) => e.seq);
    if (JSON.stringify(want) !== JSON.stringify(have)) wrong++;
  }
  t.equal(wrong, 0, `all ${last + 3} starting points give exactly the events after them`);
  t.same(read(log, last), [], "nothing after the last");
});

t.test("replay log - an event larger than a chunk gets one of its own and its neighbours stay whole", async (t) => {
  const log = new ReplayLog();
  const small = randomBytes(100);
  const big = randomBytes(300 * 1024);
  log.append("chunk", false, 1, small);
  log.append("output_update", false, 2, big);
  log.append("chunk", false, 3, small);
  const got = read(log, 0);
  t.same(
    got.map((e) => e.bytes.byteLength),
    [100, big.byteLength, 100],
  );
  t.ok(Buffer.compare(got[1]!.bytes, big) === 0 && Buffer.compare(got[2]!.bytes, small) === 0, "bytes intact");
});

t.test("replay log - views handed out stay valid while the log grows", async (t) => {
  const log = new ReplayLog();
  const first = randomBytes(500);
  log.append("chunk", false, 1, first);
  const view = log.after(0, (_t, _x, _s, bytes) => bytes)[0]!;
  for (let i = 2; i < 2_000; i++) log.append("chunk", false, i, randomBytes(200));
  t.ok(Buffer.compare(view, first) === 0, "the first event's view still reads its bytes");
});

t.test("replay log - counts what it allocated: at least the bytes held, at most about twice", async (t) => {
  const { log, entries } = filled(2_000);
  const held = entries.reduce((n, e) => n + e.bytes.byteLength, 0);
  t.ok(log.bytes >= held, `counts ${log.bytes} B for ${held} B of events`);
  t.ok(log.bytes <= 2 * held + 2_000 * 40, `no more than twice the bytes and the index (${log.bytes} B)`);
  const tiny = new ReplayLog();
  tiny.append("job_update", false, 1, randomBytes(150));
  t.ok(tiny.bytes < 2_048, `a job of one event costs little (${tiny.bytes} B)`);
});

t.test(
  "replay log - bytes written into reserved room are recorded where they lie; unused room is given again",
  async (t) => {
    const log = new ReplayLog();
    const a = randomBytes(300);
    const room = log.reserve(a.byteLength);
    room.set(a);
    log.append("chunk", false, 1, room);
    const abandoned = log.reserve(50);
    abandoned.fill(7);
    const again = log.reserve(50);
    t.ok(
      again.buffer === abandoned.buffer && again.byteOffset === abandoned.byteOffset,
      "room never appended is given again",
    );
    const b = randomBytes(900); // larger than what is left of the first chunk: a new one
    const roomB = log.reserve(b.byteLength);
    roomB.set(b);
    log.append("chunk", false, 2, roomB);
    log.append("chunk", false, 3, a); // not a reserved view: copied
    const views = log.after(0, (_t, _x, _s, bytes) => bytes);
    t.equal(views[0]!.buffer, room.buffer, "the first event is the reserved room itself");
    t.equal(views[0]!.byteOffset, room.byteOffset);
    t.same(
      views.map((v) => Buffer.from(v).toString("hex")),
      [a, b, a].map((x) => x.toString("hex")),
      "every event's bytes, in order",
    );
  },
);
