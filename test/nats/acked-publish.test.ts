/**
 * The NATS helpers in nats/ against a real nats-server: the acked publisher (PubAcks on one shared
 * subscription), KV writes through it (read back by the KV client), and compare-and-set on job records with a
 * known revision (the dispatch's queued record).
 */
import t from "tap";
import { connect, createInbox, headers } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { decodeJobDispatch, encodeMsgpack, jobKeys, type JobRecord } from "../../protocol/index.js";
import { AckedKv, AckedPublisher, PublishError, casJobRecord, type RecordStore } from "../../nats/index.js";
import { NatsServer } from "../helpers/nats-server.js";

async function setup(t: { teardown(fn: () => unknown): void }) {
  const ns = await NatsServer.start();
  const nc = await connect({ servers: ns.url });
  t.teardown(async () => {
    await nc.close();
    await ns.stop();
  });
  return { ns, nc };
}

t.test(
  "acked publisher - resolves each publish with the server's PubAck, in order, and reports duplicates",
  async (t) => {
    const { nc } = await setup(t);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "S", subjects: ["s.>"] });
    const pub = new AckedPublisher(nc, createInbox());
    t.teardown(() => pub.close());
    const acks = await Promise.all(
      Array.from({ length: 200 }, (_, i) => pub.publish(`s.${i % 3}`, new TextEncoder().encode(String(i)))),
    );
    t.same(
      acks.map((a) => a.seq),
      Array.from({ length: 200 }, (_, i) => i + 1),
      "every message stored, seq in publish order",
    );
    t.ok(acks.every((a) => a.stream === "S" && !a.duplicate));
    const h = headers();
    h.set("Nats-Msg-Id", "once");
    const first = await pub.publish("s.x", new Uint8Array([1]), h);
    const again = await pub.publish("s.x", new Uint8Array([1]), h);
    t.equal(again.duplicate, true, "a repeated Nats-Msg-Id is reported as a duplicate");
    t.equal(again.seq, first.seq, "and points at the stored message");
    t.equal(pub.inFlight, 0, "nothing left waiting");
  },
);

t.test("acked publisher - server refusals, no stream and no answer become PublishErrors", async (t) => {
  const { nc } = await setup(t);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "S", subjects: ["s.>"] });
  const pub = new AckedPublisher(nc, createInbox(), 400);
  t.teardown(() => pub.close());
  const h = headers();
  h.set("Nats-Expected-Last-Subject-Sequence", "41");
  const refused = await pub.publish("s.cas", new Uint8Array([1]), h).catch((e: unknown) => e);
  t.ok(refused instanceof PublishError, "wrong expected sequence is refused");
  t.equal((refused as PublishError).errCode, 10071, "with the server's error code");
  t.match((refused as Error).message, /wrong last sequence/);

  const none = await pub.publish("nostream.here", new Uint8Array([1])).catch((e: unknown) => e);
  t.ok(none instanceof PublishError, "a subject no stream listens on is refused");
  t.match((none as Error).message, /no stream/);

  // A core subscriber that never answers: the publish must time out, not hang.
  nc.subscribe("silent", { callback: () => undefined });
  const t0 = Date.now();
  const silent = await pub.publish("silent", new Uint8Array([1])).catch((e: unknown) => e);
  t.ok(silent instanceof PublishError, "no PubAck within the timeout is an error");
  t.match((silent as Error).message, /timed out/);
  t.ok(Date.now() - t0 < 2_000, "within the timeout and one sweep");
  t.equal(pub.inFlight, 0);

  const pending = pub.publish("silent", new Uint8Array([1]), undefined, 60_000);
  pub.close();
  await t.rejects(pending, /publisher closed/, "close rejects what is still waiting");
});

t.test(
  "acked kv - its writes are KV writes: the KV client reads them, revisions and conflicts are the KV client's",
  async (t) => {
    const { nc } = await setup(t);
    const kv = await new Kvm(nc).create("akv_test", { history: 1 });
    const pub = new AckedPublisher(nc, createInbox());
    t.teardown(() => pub.close());
    const akv = new AckedKv(pub, "akv_test", (k) => kv.get(k));

    const r1 = await akv.create("j.a", "one");
    const e1 = await kv.get("j.a");
    t.equal(e1?.string(), "one", "the KV client reads what create wrote");
    t.equal(e1?.revision, r1, "create answers with the entry's revision");
    await t.rejects(akv.create("j.a", "twin"), /wrong last sequence/, "create refuses a key that exists");
    t.equal((await kv.get("j.a"))?.string(), "one", "and leaves it as it was");

    const r2 = await akv.update("j.a", "two", r1);
    t.ok(r2 > r1, "update answers with the new revision");
    await t.rejects(akv.update("j.a", "stale", r1), /wrong last sequence/, "update refuses a stale revision");
    t.equal((await akv.get("j.a"))?.string(), "two", "get reads through the KV client");

    // Mixed writers: the KV client's revisions and ours are one sequence.
    const r3 = await kv.update("j.a", "three", r2);
    t.ok((await akv.update("j.a", "four", r3)) > r3, "an update on a revision the KV client wrote lands");
    const p1 = await akv.put("w.wf.a", "");
    const e2 = await kv.get("w.wf.a");
    t.equal(e2?.revision, p1, "put writes whatever the key holds");
    t.equal(e2?.length, 0, "an empty value stays empty");
    t.same(
      await kv.keys("w.wf.*").then(async (it) => {
        const out: string[] = [];
        for await (const k of it) out.push(k);
        return out;
      }),
      ["w.wf.a"],
      "entries are listed by the KV client",
    );

    // Concurrent compare-and-set writers through it: each change lands once, none is lost.
    const rec: JobRecord = {
      v: 1,
      id: "job2",
      workflow_id: "wf",
      status: "running",
      pool: "cpu",
      attempt: 1,
      agent_id: null,
      params: { n: 0 },
      created_at: "2026-01-01T00:00:00Z",
      started_at: null,
      finished_at: null,
      timeout_s: null,
      error: null,
      outputs: null,
    };
    await akv.create(jobKeys.record("job2"), JSON.stringify(rec));
    await Promise.all(
      Array.from({ length: 20 }, () =>
        casJobRecord(akv, "job2", (r) => ({ ...r, params: { n: (r.params.n as number) + 1 } })),
      ),
    );
    t.equal(
      (JSON.parse((await kv.get(jobKeys.record("job2")))!.string()) as JobRecord).params.n,
      20,
      "20 concurrent increments, 20 counted",
    );
  },
);

t.test("casJobRecord - a known revision writes without a read; a stale one falls back to reading", async (t) => {
  const { nc } = await setup(t);
  const kv = await new Kvm(nc).create("cas_test", { history: 1 });
  let reads = 0;
  const store: RecordStore = {
    get: async (k) => {
      reads++;
      return kv.get(k);
    },
    update: (k, d, v) => kv.update(k, d, v),
  };
  const rec: JobRecord = {
    v: 1,
    id: "job1",
    workflow_id: "wf",
    status: "queued",
    pool: "cpu",
    attempt: 0,
    agent_id: null,
    params: {},
    created_at: "2026-01-01T00:00:00Z",
    started_at: null,
    finished_at: null,
    timeout_s: null,
    error: null,
    outputs: null,
  };
  const revision = await kv.create(jobKeys.record("job1"), JSON.stringify(rec));
  const claim = (r: JobRecord): JobRecord | null =>
    r.status === "queued" ? { ...r, status: "running", attempt: 1 } : null;

  const a = await casJobRecord(store, "job1", claim, { rec, revision });
  t.equal(reads, 0, "the known record was current: no read");
  t.ok(a?.written);
  t.equal(a?.rec.status, "running");
  t.ok(a!.revision > revision, "answers with the new revision");

  // Another writer moves the record; the old copy is stale now.
  await kv.update(jobKeys.record("job1"), JSON.stringify({ ...a!.rec, cancel_requested: true }), a!.revision);
  const finish = (r: JobRecord): JobRecord | null =>
    r.attempt === 1 && r.status === "running" ? { ...r, status: "completed" } : null;
  const b = await casJobRecord(store, "job1", finish, { rec: a!.rec, revision: a!.revision });
  t.equal(reads, 1, "the stale copy cost one read");
  t.ok(b?.written);
  t.equal(b?.rec.cancel_requested, true, "the other writer's change is kept, not overwritten by the stale copy");

  // A refusal based on a stale copy is not final: the stored record decides.
  const stale: JobRecord = { ...rec, status: "completed" };
  const c = await casJobRecord(
    store,
    "job1",
    (r) => (r.status === "completed" ? { ...r, outputs: { x: [1] } } : null),
    { rec: { ...stale, status: "running" }, revision: 1 },
  );
  t.equal(reads, 2);
  t.ok(c?.written, "written after reading the real record");
  t.same(c?.rec.outputs, { x: [1] });
});

t.test("job.dispatch - a carried record must be the job's own, with a positive integer revision", async (t) => {
  const base = {
    type: "job.dispatch",
    v: 1,
    job_id: "job1",
    workflow_id: "wf",
    graph: { nodes: [], edges: [] },
    params: {},
    created_at: "x",
  };
  const rec = { id: "job1", status: "queued" };
  t.equal(decodeJobDispatch(encodeMsgpack({ ...base, record: { rec, revision: 3 } })).record?.revision, 3, "accepted");
  t.ok(decodeJobDispatch(encodeMsgpack(base)), "absent is fine (older gateways)");
  for (const bad of [
    { rec: { ...rec, id: "other" }, revision: 3 },
    { rec, revision: 0 },
    { rec, revision: 1.5 },
    { rec },
    "x",
  ]) {
    t.throws(
      () => decodeJobDispatch(encodeMsgpack({ ...base, record: bad })),
      { code: "PROTO_ERR_SHAPE" },
      `refused: ${JSON.stringify(bad)}`,
    );
  }
});
