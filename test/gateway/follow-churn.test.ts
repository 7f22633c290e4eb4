/**
 * Watchers that vanish leave nothing behind in the gateway: WebSocket clients killed right after asking to resume
 * or once they follow a job's topic, HTTP event streams whose clients leave while the gateway waits on NATS, and
 * `?wait=true` requests whose clients give up. What would leak is counted on /metrics (`nodeway_hub_listeners`,
 * `nodeway_ws_topic_memberships`, `nodeway_ws_follows`); a running job keeps events flowing the whole time, so a
 * listener left behind would still be reachable. Checked by breaking the code: without the close handler's
 * topic-set cleanup the first test fails; with `Reply.onAbort` ignoring a client already gone, the second (20
 * listeners left); without the wait's abort handling, the third (10 left).
 */
import t from "tap";
import { api, metrics, runTokensJob, tokensWorkflow, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

const state = async (url: string) => {
  const m = await metrics(url);
  return {
    listeners: m.nodeway_hub_listeners,
    topic: m['nodeway_ws_follows{via="topic"}'],
    direct: m['nodeway_ws_follows{via="direct"}'],
    memberships: m.nodeway_ws_topic_memberships,
  };
};

t.test(
  "follow churn - WebSocket watchers killed right after resuming or on the topic leave no follow behind",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const { runner, jobId } = await runTokensJob(s.url, 3000, 200, 20);
    t.teardown(() => runner.close());

    // Half are killed right after asking to resume (before or while their resume is handled), half once they are live.
    const early = await Promise.all(Array.from({ length: 20 }, () => WsClient.open(s.url, "msgpack")));
    for (const w of early) {
      w.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
      setImmediate(() => w.terminate());
    }
    const late = await Promise.all(Array.from({ length: 20 }, () => WsClient.open(s.url, "msgpack")));
    for (const w of late) w.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
    await check(async () => ((await state(s.url)).topic === 21 ? true : null), 15_000, {
      name: "the runner and 20 followers on the topic",
    });
    for (const w of late) w.terminate();

    const after = await check(
      async () => {
        const st = await state(s.url);
        return st.topic === 1 && st.direct === 0 && st.listeners === 0 && st.memberships === 1 ? st : null;
      },
      10_000,
      { name: "only the runner left" },
    ).catch(() => state(s.url));
    t.same(after, { listeners: 0, topic: 1, direct: 0, memberships: 1 }, "only the runner's topic follow is left");
    const seen = runner.events(jobId).length;
    await check(async () => (runner.events(jobId).length > seen ? true : null), 10_000);
    t.pass("the runner still receives the job's events");
    await runner.request("cancel_job", { job_id: jobId });
  },
);

t.test("follow churn - HTTP event streams cut while the gateway waits on NATS leave no listener behind", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/slow", tokensWorkflow(60_000, 1000));
  const run = await api(s.url, "POST", "/api/workflows/slow/run", { params: {} });
  const jobId = String(run.body.job_id);
  await check(async () => ((await metrics(s.url)).nodeway_events_in_total >= 200 ? true : null), 10_000, {
    name: "a history to replay",
  });

  // NATS stalls (SIGSTOP) while 20 clients open the job's event stream and give up: each request is parked in an
  // await on NATS (the record read, then the replay) when its client leaves. Once NATS is back the requests go
  // on; each must notice its client is gone rather than register a follow nobody will ever stop.
  process.kill(s.ns.pid, "SIGSTOP");
  t.teardown(() => void process.kill(s.ns.pid, "SIGCONT"));
  const clients = Array.from({ length: 20 }, () => {
    const ac = new AbortController();
    const done = fetch(`${s.url}/api/jobs/${jobId}/events?after=0`, { signal: ac.signal }).then(
      (r) => r.body?.cancel(),
      () => undefined,
    );
    return { ac, done };
  });
  await new Promise((r) => setTimeout(r, 300)); // the requests reach the gateway and wait on NATS
  for (const c of clients) c.ac.abort();
  await Promise.all(clients.map((c) => c.done));
  await new Promise((r) => setTimeout(r, 200)); // the gateway sees the connections close
  process.kill(s.ns.pid, "SIGCONT");

  const left = await check(
    async () => {
      const st = await state(s.url);
      return st.listeners === 0 ? st : null;
    },
    10_000,
    { name: "every listener removed" },
  ).catch(() => state(s.url));
  t.equal(left.listeners, 0, "20 streams cut while waiting: no listener left while the job still runs");
  t.equal((await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status, "running", "the job was running all along");
  await api(s.url, "POST", `/api/jobs/${jobId}/cancel`, {});
});

t.test("follow churn - ?wait=true requests whose clients leave stop waiting", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await api(s.url, "PUT", "/api/workflows/slow", tokensWorkflow(60_000, 1000));
  const clients = Array.from({ length: 10 }, () => {
    const ac = new AbortController();
    const done = fetch(`${s.url}/api/workflows/slow/run?wait=true`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
      signal: ac.signal,
    }).then(
      () => "answered",
      () => "aborted",
    );
    return { ac, done };
  });
  await check(async () => ((await state(s.url)).listeners === 10 ? true : null), 10_000, {
    name: "ten requests waiting",
  });
  for (const c of clients) c.ac.abort();
  t.same(
    await Promise.all(clients.map((c) => c.done)),
    Array(10).fill("aborted"),
    "the clients gave up before their jobs ended",
  );
  const left = await check(async () => ((await state(s.url)).listeners === 0 ? 0 : null), 10_000, {
    name: "every wait stopped",
  }).catch(async () => (await state(s.url)).listeners);
  t.equal(left, 0, "no listener left behind while the ten jobs still run (each takes a minute)");
});
