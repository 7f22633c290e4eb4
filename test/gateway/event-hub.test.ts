/**
 * The event hub's replay cache on its own: messages are handed to it as its JetStream consumer would (seq,
 * subject, data), with no NATS behind it — the cache is memory only, and these cases need exact control over
 * what a listener does. The end-to-end behaviour (live vs replayed bytes, budget) is in replay-cache.test.ts.
 */
import t from "tap";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { decodeJobEvent, decodeMsgpack, encodeJson, encodeMsgpack, subjects } from "../../protocol/index.js";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { EventHub, type Delivery } from "../../gateway/event-hub.js";
import { LeaseSigner } from "../../nats/index.js";
import { LEASE_HEADER } from "../../protocol/subjects.js";

const jobId = "01JDQ7ZK3M8X4V5N6P7Q8R9S0T";
const base = { job_id: jobId, workflow_id: "wf", ts: 1 };
const events = [
  { type: "job_update", status: "queued", attempt: 0, pool: "cpu", ...base },
  { type: "job_update", status: "running", attempt: 1, ...base },
  ...Array.from({ length: 5 }, (_, i) => ({
    type: "chunk",
    node_id: "n",
    content_type: "text",
    content: `tok${i} `,
    done: false,
    attempt: 1,
    ...base,
  })),
  { type: "job_update", status: "completed", attempt: 1, result: { out: ["x"] }, ...base },
];

/** A hub whose fan-out callback is `onEvent`; `feed` hands it the events above as stream seqs 1..n. */
function hubWith(onEvent: (d: Delivery) => void): { hub: EventHub; feed: () => void; logs: string[] } {
  const logs: string[] = [];
  const unused = {} as { nc: NatsConnection; js: JetStreamClient } & JetStreamManager;
  const hub = new EventHub(
    unused,
    unused,
    (_job, d) => onEvent(d),
    (l) => logs.push(l),
  );
  const feed = () => {
    events.forEach((ev, i) => {
      const m = { seq: i + 1, subject: subjects.jobEvents(jobId), data: encodeMsgpack(ev) };
      (hub as unknown as { handleSafely(m: unknown, seq: number): void }).handleSafely(m, m.seq);
    });
  };
  return { hub, feed, logs };
}

t.test("event hub - a replay from memory gives the live bytes, msgpack and JSON, with seq", async (t) => {
  const live: { m: Buffer; j: string }[] = [];
  const { hub, feed } = hubWith((d) => live.push({ m: Buffer.from(d.msgpack()), j: d.json() }));
  feed();
  const r = await hub.replay(jobId, 0);
  t.equal(hub.replaysFromMemory, 1, "served from memory");
  t.equal(r.events.length, events.length);
  t.ok(r.ended, "the history reached its terminal event");
  r.events.forEach((d, i) => {
    t.same(Buffer.from(d.msgpack()), live[i]!.m, `event ${i + 1}: same MessagePack bytes`);
    t.equal(d.json(), live[i]!.j, `event ${i + 1}: same JSON`);
    t.same(
      decodeMsgpack(d.msgpack()),
      { ...events[i], seq: i + 1 },
      `event ${i + 1}: the agent's event with seq ${i + 1}`,
    );
  });
  t.equal(live[2]!.j, encodeJson({ ...events[2], seq: 3 }), "JSON as the encoder writes it");
  t.ok(r.events.at(-1)!.terminal, "the terminal flag survives the cache");
  // Replaying to JSON clients must not grow what the cache holds (it counted the bytes only).
  const held = r.events.map((d) => d as unknown as { e: unknown; j: unknown });
  t.ok(
    held.every((d) => d.e === null && d.j === null),
    "the cached entries still hold only their bytes after JSON replays",
  );
});

t.test("event hub - an event whose listener threw is still cached: the replay has no gap", async (t) => {
  let n = 0;
  const { hub, feed, logs } = hubWith(() => {
    if (++n === 4) throw new Error("listener bug");
  });
  feed();
  t.ok(
    logs.some((l) => /seq 4 broke a listener/.test(l)),
    "the failure is logged with its seq",
  );
  const r = await hub.replay(jobId, 0);
  t.same(
    r.events.map((d) => d.seq),
    events.map((_, i) => i + 1),
    "every seq, the broken one included",
  );
  t.equal(hub.lastSeq, events.length, "the hub went on past it");
});

t.test(
  "event hub - a binary-only fan-out never decodes a token event; JSON and listeners decode it on first use",
  async (t) => {
    const seen: { decodedBefore: boolean; m: Buffer; ev: unknown; j: string; decodedAfter: boolean; type: string }[] =
      [];
    const { feed } = hubWith((d) => {
      const held = d as unknown as { e: unknown };
      const decodedBefore = held.e !== null;
      const m = Buffer.from(d.msgpack());
      seen.push({ decodedBefore, m, ev: d.ev, j: d.json(), decodedAfter: held.e !== null, type: d.type });
    });
    feed();
    const tokens = seen.filter((s) => s.type === "chunk");
    t.equal(tokens.length, 5);
    t.ok(
      tokens.every((s) => !s.decodedBefore),
      "token events reach the fan-out undecoded",
    );
    tokens.forEach((s, k) => {
      const i = seen.indexOf(s);
      t.same(
        s.m,
        Buffer.from(encodeMsgpack({ ...events[i], seq: i + 1 })),
        `token ${k}: the bytes re-encoding would give, seq appended`,
      );
      t.same(s.ev, { ...events[i], seq: i + 1 }, `token ${k}: decoded on demand, with seq`);
      t.equal(s.j, encodeJson({ ...events[i], seq: i + 1 }), `token ${k}: JSON`);
      t.ok(s.decodedAfter, `token ${k}: kept decoded while live`);
    });
    t.ok(seen.at(-1)!.decodedBefore, "the completed update, not a flat map, came decoded whole");
  },
);

t.test("event hub - an event that arrives with a seq of its own is given ours, in both encodings", async (t) => {
  const got: Delivery[] = [];
  const logs: string[] = [];
  const unused = {} as { nc: NatsConnection; js: JetStreamClient } & JetStreamManager;
  const hub = new EventHub(
    unused,
    unused,
    (_job, d) => got.push(d),
    (l) => logs.push(l),
  );
  const ev = {
    type: "chunk",
    node_id: "n",
    content_type: "text",
    content: "x",
    done: false,
    attempt: 1,
    ...base,
    seq: 999,
  };
  (hub as unknown as { handleSafely(m: unknown, seq: number): void }).handleSafely(
    { subject: subjects.jobEvents(jobId), data: encodeMsgpack(ev) },
    5,
  );
  t.equal(got.length, 1);
  t.same(decodeMsgpack(got[0]!.msgpack()), { ...ev, seq: 5 }, "MessagePack carries the stream's seq");
  t.same(JSON.parse(got[0]!.json()), { ...ev, seq: 5 }, "so does JSON");
});

t.test(
  "event hub - the cache counts every byte its logs took, and gives them all back when a job leaves it",
  async (t) => {
    const { hub, feed } = hubWith(() => undefined);
    feed();
    const log = (hub as unknown as { views: Map<string, { log: { bytes: number } | null }> }).views.get(jobId)!.log!;
    t.ok(hub.cachedBytes > 0, `the job is cached (${hub.cachedBytes} B)`);
    t.equal(hub.cachedBytes, log.bytes, "what the hub counts is what the log allocated, chunks included");
    (hub as unknown as { forget(id: string): void }).forget(jobId);
    t.equal(hub.cachedBytes, 0, "forgetting the job returns all of it");
  },
);

t.test(
  "event hub - an agent's event is admitted only with its lease token for the event's attempt, from its own subject",
  async (t) => {
    const leases = new LeaseSigner(new Uint8Array(32).fill(7));
    const got: Delivery[] = [];
    const unused = {} as { nc: NatsConnection; js: JetStreamClient } & JetStreamManager;
    const hub = new EventHub(
      unused,
      unused,
      (_job, d) => got.push(d),
      () => undefined,
      0,
      Infinity,
      1000,
      leases,
    );
    const hand = (seq: number, source: string, ev: Record<string, unknown>, lease?: string) => {
      const h = headers();
      if (lease !== undefined) h.set(LEASE_HEADER, lease);
      const m = {
        seq,
        subject: subjects.jobEvents(jobId, source),
        data: encodeMsgpack({ ...base, ...ev }),
        headers: h,
      };
      (hub as unknown as { handleSafely(m: unknown, seq: number): void }).handleSafely(m, m.seq);
    };
    const chunk = (content: string) => ({ type: "chunk", node_id: "n", content_type: "text", content, done: false });
    hand(1, "gw", { type: "job_update", status: "queued", attempt: 0 });
    hand(2, "agent-1", { type: "job_update", status: "running", attempt: 1 }, leases.sign(jobId, 1, "agent-1"));
    hand(3, "agent-1", { ...chunk("mine"), attempt: 1 }, leases.sign(jobId, 1, "agent-1"));
    hand(4, "agent-2", { ...chunk("no token"), attempt: 1 });
    hand(5, "agent-2", { ...chunk("another's token"), attempt: 1 }, leases.sign(jobId, 1, "agent-1"));
    hand(6, "agent-2", { ...chunk("its token for another job"), attempt: 1 }, leases.sign("other", 1, "agent-2"));
    hand(7, "agent-2", { ...chunk("its token, a higher attempt"), attempt: 2 }, leases.sign(jobId, 1, "agent-2"));
    hand(8, "agent-1", { ...chunk("a made-up token"), attempt: 1 }, "AAAAAAAAAAAAAAAAAAAAAA");
    hand(9, "agent-1", { type: "job_update", status: "completed", attempt: 1 }, leases.sign(jobId, 1, "agent-1"));
    t.same(
      got.map((d) => d.seq),
      [1, 2, 3, 9],
      "the gateway's, and the holder's with its token; none of the rest",
    );
    t.equal(hub.unleasedEvents, 5, "each dropped one counted");
  },
);

t.test(
  "event hub - an event nested past the codec's depth is dropped as malformed; the next one goes out",
  async (t) => {
    const got: Delivery[] = [];
    const { hub, logs } = hubWith((d) => got.push(d));
    const fields = { type: "output_update", node_id: "n", output_name: "out", attempt: 1, ...base };
    const head = encodeMsgpack(fields);
    // The same map with one more key, `value`: an array in an array ... 200,000 deep (what a hostile publisher sends).
    const depth = 200_000;
    const key = encodeMsgpack("value");
    const deep = new Uint8Array(head.length + key.length + depth + 1);
    deep.set(head);
    deep[0] = head[0]! + 1;
    deep.set(key, head.length);
    deep.fill(0x91, head.length + key.length, head.length + key.length + depth);
    deep[deep.length - 1] = 0xc0;
    const feed = (seq: number, data: Uint8Array) =>
      (hub as unknown as { handleSafely(m: unknown, seq: number): void }).handleSafely(
        { subject: subjects.jobEvents(jobId), data },
        seq,
      );
    feed(1, deep);
    feed(2, encodeMsgpack({ ...fields, value: [[["fine"]]] }));
    t.equal(hub.badEvents, 1, "the deep event counts as malformed");
    t.match(logs.join("\n"), /dropping malformed event at seq 1: nested deeper than 64 levels/);
    t.same(
      got.map((d) => d.seq),
      [2],
      "only the next event goes out",
    );
    t.same(JSON.parse(got[0]!.json()).value, [[["fine"]]], "and JSON clients can read it");
    t.throws(() => decodeJobEvent(deep), { code: "PROTO_ERR_SHAPE" }, "the typed decoder refuses it too");
  },
);
