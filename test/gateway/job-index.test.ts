/**
 * The records view (gateway/job-index.ts): `/metrics` job counts follow records through their states, on a second
 * gateway and after a restart; `/api/jobs` filtered by state, by workflow or both answers the right jobs newest
 * first, page after page, and a job that changes state moves between the filtered listings.
 */
import t from "tap";
import { Kvm, type KV } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { startGateway } from "../../gateway/index.js";
import { KV_JOBS, encodeJson, jobKeys, newId, type JobRecord, type JobState } from "../../protocol/index.js";
import { check } from "../helpers/check.js";
import { api, metrics } from "../helpers/clients.js";
import { NatsServer } from "../helpers/nats-server.js";

function record(id: string, workflowId: string, status: JobState): JobRecord {
  const at = new Date().toISOString();
  return {
    v: 1,
    id,
    workflow_id: workflowId,
    status,
    pool: "cpu",
    attempt: status === "queued" ? 0 : 1,
    agent_id: status === "queued" ? null : "a1",
    params: {},
    created_at: at,
    started_at: null,
    finished_at: null,
    timeout_s: 60,
    error: null,
    outputs: null,
    idempotency_key: null,
  };
}

async function jobsKv(t: { teardown(fn: () => unknown): void }, url: string): Promise<KV> {
  const nc = await connect({ servers: url });
  t.teardown(() => nc.close());
  return new Kvm(nc).open(KV_JOBS);
}

const put = (kv: KV, r: JobRecord) => kv.put(jobKeys.record(r.id), encodeJson(r));

const STATES: JobState[] = ["queued", "running", "completed", "failed", "cancelled", "timed_out"];
async function counts(url: string): Promise<Record<string, number>> {
  const m = await metrics(url);
  return Object.fromEntries(STATES.map((s) => [s, m[`nodeway_jobs{state="${s}"}`]!]));
}

t.test("job counts follow records through their states, on two gateways and across a restart", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const g1 = await startGateway({ natsUrl: ns.url, port: 0 });
  t.teardown(() => g1.stop());
  const kv = await jobsKv(t, ns.url);
  const ids = Array.from({ length: 6 }, (_, i) => newId(Date.now() - 1000 + i));
  for (const id of ids) await put(kv, record(id, "wf", "queued"));
  const want = (c: Record<string, number>) => async () => {
    const got = await counts(g1.url);
    return STATES.every((s) => got[s] === (c[s] ?? 0)) ? got : null;
  };
  await check(want({ queued: 6 }), 10_000, { name: "six queued" });
  // Jobs move: two run and one of them completes, one fails, one is cancelled through the gateway's API.
  await put(kv, record(ids[0]!, "wf", "running"));
  await put(kv, record(ids[1]!, "wf", "running"));
  await put(kv, record(ids[1]!, "wf", "completed"));
  await put(kv, record(ids[2]!, "wf", "failed"));
  t.equal((await api(g1.url, "POST", `/api/jobs/${ids[3]}/cancel`)).status, 200);
  const moved = { queued: 2, running: 1, completed: 1, failed: 1, cancelled: 1 };
  t.ok(await check(want(moved), 10_000, { name: "counts after the moves" }), "counts follow the moves");

  // A second gateway starts with the records as they are, and sees what the first one writes.
  const g2 = await startGateway({ natsUrl: ns.url, port: 0 });
  t.teardown(() => g2.stop());
  t.same(await counts(g2.url), { ...moved, timed_out: 0 }, "a second gateway counts the same at once");
  t.equal((await api(g1.url, "POST", `/api/jobs/${ids[4]}/cancel`)).status, 200);
  const later = { ...moved, queued: 1, cancelled: 2, timed_out: 0 };
  await check(async () => JSON.stringify(await counts(g2.url)) === JSON.stringify(later), 10_000);
  t.pass("a cancel through one gateway is counted by the other");

  // A restart reads every record again: same counts, and deleted records are gone from them.
  await g1.stop();
  await kv.delete(jobKeys.record(ids[5]!));
  const g3 = await startGateway({ natsUrl: ns.url, port: 0 });
  t.teardown(() => g3.stop());
  t.same(await counts(g3.url), { ...later, queued: 0 }, "a restarted gateway counts the same, the deleted one not");
});

t.test("filtered listings: the right jobs, newest first, across pages", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const gw = await startGateway({ natsUrl: ns.url, port: 0, listScanMaxRecords: 10 });
  t.teardown(() => gw.stop());
  const kv = await jobsKv(t, ns.url);
  const mix: JobState[] = ["completed", "failed", "completed", "queued", "running"];
  const recs = Array.from({ length: 60 }, (_, i) =>
    record(newId(Date.now() - 60_000 + i * 100), i % 3 === 0 ? "wf-a" : "wf-b", mix[i % mix.length]!),
  );
  // Written out of order: the listing sorts by id (creation time), not by write.
  for (const r of [...recs].reverse()) await put(kv, r);
  const listed = async () => ((await api(gw.url, "GET", "/api/jobs?limit=100")).body.jobs as unknown[]).length;
  await check(async () => (await listed()) === 60, 10_000);

  const all = async (q: string) => {
    const ids: string[] = [];
    let cursor = "";
    for (let pages = 0; pages < 100; pages++) {
      const r = await api(gw.url, "GET", `/api/jobs?limit=4&${q}${cursor ? `&cursor=${cursor}` : ""}`);
      t.equal(r.status, 200);
      const body = r.body as unknown as { jobs: JobRecord[]; next: string | null };
      ids.push(...body.jobs.map((j) => j.id));
      if (body.next === null) return ids;
      cursor = body.next;
    }
    throw new Error("no last page");
  };
  const expect = (f: (r: JobRecord) => boolean) =>
    recs
      .filter(f)
      .map((r) => r.id)
      .reverse();
  t.same(
    await all(""),
    expect(() => true),
    "everything, newest first",
  );
  t.same(
    await all("status=completed"),
    expect((r) => r.status === "completed"),
    "by state",
  );
  t.same(
    await all("workflow_id=wf-a"),
    expect((r) => r.workflow_id === "wf-a"),
    "by workflow",
  );
  t.same(
    await all("workflow_id=wf-a&status=failed"),
    expect((r) => r.workflow_id === "wf-a" && r.status === "failed"),
    "by both, through short pages where the scan budget ends",
  );

  // A queued job completes: it leaves the queued listing and joins the completed one, in its place by id.
  const q = recs.find((r) => r.status === "queued")!;
  await put(kv, { ...q, status: "completed" });
  await check(async () => !(await all("status=queued")).includes(q.id), 10_000);
  const done = recs.map((r) => (r.id === q.id ? { ...r, status: "completed" as const } : r));
  t.same(
    await all("status=completed"),
    done
      .filter((r) => r.status === "completed")
      .map((r) => r.id)
      .reverse(),
    "the job moved to the completed listing, newest first",
  );
});

t.test(
  "job index - a record this gateway stored is listed at once, and the view's later reads move it on",
  async (t) => {
    const { JobIndex } = await import("../../gateway/job-index.js");
    const index = new JobIndex();
    index.loaded();
    const [a, b] = [newId(), newId()].sort();
    // Stored by this gateway: listed before any view read of it (a client that submits and then lists sees it).
    index.created(a!, "queued", "wf");
    index.created(b!, "queued", "wf");
    t.same(index.page({ workflowId: "wf", limit: 10 }, 100).ids, [b, a], "both listed, newest first");
    t.equal(index.stateCounts().get("queued"), 2, "and counted");
    // The view reads them back, then their later states.
    const text = (id: string, status: JobState) => new TextEncoder().encode(encodeJson(record(id, "wf", status)));
    index.put(jobKeys.record(a!), text(a!, "queued"));
    index.put(jobKeys.record(a!), text(a!, "completed"));
    t.same(index.page({ workflowId: "wf", limit: 10 }, 100).ids, [b, a], "listed once each");
    t.same(index.page({ status: "completed", limit: 10 }, 100).ids, [a], "the completed one under its state");
    t.same(
      [index.stateCounts().get("queued"), index.stateCounts().get("completed")],
      [1, 1],
      "counts follow the view's reads",
    );
  },
);
