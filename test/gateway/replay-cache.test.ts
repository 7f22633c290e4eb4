/**
 * The gateway's replay cache: a resume of a job the gateway saw from its first event replays from memory, and
 * gives exactly what a replay from JetStream gives (a second gateway with the cache off, same NATS); a job the
 * cache let go (byte budget) still resumes whole, from JetStream.
 */
import t from "tap";
import { startGateway } from "../../gateway/index.js";
import {
  api,
  metrics,
  readStream,
  runTokensJob,
  tokensWorkflow as tokens,
  WsClient,
  type Msg,
} from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

async function metric(url: string, name: string): Promise<number> {
  return (await metrics(url))[name] ?? NaN;
}

const wire = (events: Msg[]) => events.map((e) => JSON.stringify(e));

t.test("replay cache - resumes from memory match resumes from JetStream event for event", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const noCache = await startGateway({ natsUrl: s.ns.url, port: 0, replayCacheBytes: 0 });
  t.teardown(() => noCache.stop());
  await api(s.url, "PUT", "/api/workflows/tok", tokens(40, 400));

  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const jobId = String(((await ws.request("run_job", { workflow_id: "tok" })).result as { job_id: string }).job_id);
  await ws.waitTerminal(jobId);
  const live = ws.events(jobId);
  t.ok(live.length > 40, `the live client saw ${live.length} events`);

  for (const after of [
    0,
    1,
    7,
    Number(live[20]!.seq),
    Number(live[live.length - 2]!.seq),
    Number(live[live.length - 1]!.seq),
  ]) {
    const fromMemory = await readStream(`${s.url}/api/jobs/${jobId}/events?after=${after}`);
    const fromStream = await readStream(`${noCache.url}/api/jobs/${jobId}/events?after=${after}`);
    t.same(wire(fromMemory.events), wire(fromStream.events), `after=${after}: same events, same order, same bytes`);
    t.same(
      wire(fromMemory.events),
      wire(live.filter((e) => Number(e.seq) > after)),
      `after=${after}: what the live client saw`,
    );
  }
  t.equal(await metric(s.url, 'nodeway_replays_total{source="memory"}'), 6, "the caching gateway replayed from memory");
  t.equal(await metric(s.url, 'nodeway_replays_total{source="jetstream"}'), 0);
  t.equal(await metric(noCache.url, 'nodeway_replays_total{source="jetstream"}'), 6, "the other read JetStream");

  // A WS resume mid-run: memory replay, then live on the topic, no gap and no duplicate.
  await api(s.url, "PUT", "/api/workflows/slow", tokens(60, 60));
  const slow = await api(s.url, "POST", "/api/workflows/slow/run", { params: {} });
  const slowId = String(slow.body.job_id);
  const watcher = await WsClient.open(s.url, "msgpack");
  t.teardown(() => watcher.close());
  watcher.send({ command: "reconnect_job", data: { job_id: slowId, last_seq: 0 } });
  await check(async () => (watcher.events(slowId).length >= 10 ? true : null), 10_000);
  const cut = Number(watcher.events(slowId)[5]!.seq);
  const again = await WsClient.open(s.url, "json");
  t.teardown(() => again.close());
  again.send({ command: "reconnect_job", data: { job_id: slowId, last_seq: cut } });
  await again.waitTerminal(slowId);
  await watcher.waitTerminal(slowId);
  const seqs = again
    .events(slowId)
    .filter((e) => typeof e.seq === "number")
    .map((e) => Number(e.seq));
  const all = watcher
    .events(slowId)
    .filter((e) => typeof e.seq === "number")
    .map((e) => Number(e.seq));
  t.same(
    seqs,
    all.filter((q) => q > cut),
    "the resumed socket got every event after its cut, once, in order",
  );
});

t.test("replay cache - jobs past the byte budget leave it and still resume whole from JetStream", async (t) => {
  // One job may use an eighth of the budget (8.5 kB here; a job's log counts what it allocated, chunks of 1, 2
  // and 4 kB and its index, so a 20-token job's ~25 events take ~7.7 kB): one job fits, ten of them do not.
  const s = await startStack(t, { agents: 1, gateway: { replayCacheBytes: 68_000 } });
  await api(s.url, "PUT", "/api/workflows/tok", tokens(20, 1000));
  const ids: string[] = [];
  const lives: Msg[][] = [];
  for (let i = 0; i < 10; i++) {
    const r = await readStream(`${s.url}/api/workflows/tok/run?stream=true`, {
      method: "POST",
      body: JSON.stringify({ params: {} }),
    });
    ids.push(String(r.events[0]!.job_id));
    lives.push(r.events);
  }
  const bytes = await metric(s.url, "nodeway_replay_cache_bytes");
  t.ok(bytes > 0 && bytes <= 68_000, `the cache stays within its budget (${bytes} bytes)`);
  for (let i = 0; i < ids.length; i++) {
    const r = await readStream(`${s.url}/api/jobs/${ids[i]}/events?after=0`);
    t.same(wire(r.events), wire(lives[i]!), `job ${i + 1} resumes whole`);
  }
  t.ok((await metric(s.url, 'nodeway_replays_total{source="jetstream"}')) >= 1, "the oldest jobs came from JetStream");
  t.ok((await metric(s.url, 'nodeway_replays_total{source="memory"}')) >= 1, "the newest from memory");
});

t.test("replay cache - sockets that resume a running job move onto its topic once caught up", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const { runner, jobId } = await runTokensJob(s.url, 400, 100, 5);
  t.teardown(() => runner.close());
  const followers = await Promise.all(Array.from({ length: 10 }, () => WsClient.open(s.url, "msgpack")));
  t.teardown(() => Promise.all(followers.map((f) => f.close())));
  for (const f of followers) f.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
  const via = await check(
    async () => {
      const topic = await metric(s.url, 'nodeway_ws_follows{via="topic"}');
      const direct = await metric(s.url, 'nodeway_ws_follows{via="direct"}');
      return topic === 11 && direct === 0 ? { topic, direct } : null;
    },
    10_000,
    { name: "every follower on the topic" },
  );
  t.same(via, { topic: 11, direct: 0 }, "the runner and the ten followers all take events from the job's topic");
  await runner.request("cancel_job", { job_id: jobId });
});

t.test(
  "replay cache - a gateway started while a job streams loads its history once for a storm of resumes from its start",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    await api(s.url, "PUT", "/api/workflows/tok", tokens(400, 40));
    const first = await WsClient.open(s.url, "json");
    t.teardown(() => first.close());
    const jobId = String(
      ((await first.request("run_job", { workflow_id: "tok" })).result as { job_id: string }).job_id,
    );
    await check(() => first.events(jobId).filter((e) => e.type === "chunk").length >= 40, 20_000, {
      name: "the job is streaming",
    });
    // Joined midway: this gateway never saw the job's first event.
    const late = await startGateway({ natsUrl: s.ns.url, port: 0 });
    t.teardown(() => late.stop());
    await check(async () => (await metric(late.url, "nodeway_replay_cache_bytes")) >= 0, 10_000, {
      name: "the late gateway serves",
    });
    // The late gateway knows the job is running once it has seen one of its events live: a client resuming from
    // where the first one is waits for that.
    const pilot = await WsClient.open(late.url, "json");
    t.teardown(() => pilot.close());
    const seen = Math.max(...first.events(jobId).map((e) => Number(e.seq ?? 0)));
    pilot.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: seen } });
    await check(() => pilot.events(jobId).some((e) => e.type === "chunk"), 20_000, {
      name: "the late gateway has seen the job live",
    });
    const clients = await Promise.all(Array.from({ length: 40 }, () => WsClient.open(late.url, "json")));
    t.teardown(() => {
      for (const c of clients) c.close();
    });
    for (const c of clients) c.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
    await first.waitTerminal(jobId, 60_000);
    const want = wire(first.events(jobId));
    for (const c of await Promise.all(clients.map(async (c) => (await c.waitTerminal(jobId, 30_000), c)))) {
      const got = wire(c.events(jobId).filter((e) => e.type !== "job_resumed"));
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        t.same(got, want, "a resume from the start got the whole history, once, in order, then live");
        return;
      }
    }
    t.pass(`all 40 clients got the ${want.length} events the first gateway's client got, once each, in order`);
    const fromStream = await metric(late.url, 'nodeway_replays_total{source="jetstream"}');
    const fromMemory = await metric(late.url, 'nodeway_replays_total{source="memory"}');
    t.ok(fromMemory >= 39 && fromStream <= 1, `one load for the storm (memory ${fromMemory}, jetstream ${fromStream})`);
    const again = await readStream(`${late.url}/api/jobs/${jobId}/events?after=0`);
    t.same(wire(again.events), want, "and a later replay from memory is the same history");
  },
);

t.test(
  "replay cache - a storm of resumes from many points of a streaming job: each socket gets every later event once, in order",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const { runner, jobId } = await runTokensJob(s.url, 300, 100, 20);
    t.teardown(() => runner.close());
    const clients = await Promise.all(
      Array.from({ length: 60 }, (_, i) => WsClient.open(s.url, i % 2 ? "json" : "msgpack")),
    );
    t.teardown(() => Promise.all(clients.map((c) => c.close())));
    // Resumed while tokens arrive, each from another point of what the runner has seen so far (0: the whole history).
    const from: number[] = [];
    for (const [i, c] of clients.entries()) {
      const seen = runner.events(jobId).map((e) => Number(e.seq));
      const lastSeq = i === 0 ? 0 : seen[Math.floor((seen.length * i) / clients.length)]!;
      from.push(lastSeq);
      c.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: lastSeq } });
      if (i % 10 === 9) await new Promise((r) => setImmediate(r));
    }
    await runner.waitTerminal(jobId, 30_000);
    const all = runner.events(jobId);
    for (const [i, c] of clients.entries()) {
      await c.waitTerminal(jobId, 10_000);
      const want = wire(all.filter((e) => Number(e.seq) > from[i]!));
      const got = wire(c.events(jobId));
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        t.same(got, want, `socket ${i} resumed after seq ${from[i]}: every later event once, in order`);
        return;
      }
      const header = c.messages.find((m) => m.type === "job_resumed");
      t.equal(header?.job_id, jobId, `socket ${i} got its job_resumed header first`);
    }
    t.pass(`all ${clients.length} sockets got every event after their last seq, once each, in order`);
  },
);

t.test(
  "replay cache - resumes of a job that does not exist, sent together, are each answered with their own error",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const clients = await Promise.all(Array.from({ length: 20 }, () => WsClient.open(s.url, "json")));
    t.teardown(() => Promise.all(clients.map((c) => c.close())));
    // One socket leaves before its answer can come: the others are still answered, and the gateway keeps serving.
    const gone = await WsClient.open(s.url, "json");
    gone.send({ command: "reconnect_job", data: { job_id: "no-such-job", last_seq: 0 }, request_id: "gone" });
    await gone.close();
    const answers = await Promise.all(
      clients.map((c) => c.request("reconnect_job", { job_id: "no-such-job", last_seq: 0 })),
    );
    for (const a of answers) {
      t.equal((a.error as { code?: string } | undefined)?.code, "GW_ERR_NOT_FOUND", "answered: no such job");
    }
    t.equal(answers.length, 20, "every socket got its own answer, by its request_id");
    const health = await fetch(`${s.url}/health`);
    t.equal(health.status, 200, "the gateway still serves");
  },
);
