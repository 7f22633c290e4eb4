/**
 * Lost agents and attempts: an agent killed mid-job, a paused
 * agent that comes back after its lease is gone, a long job kept alive by in-progress acks, and a poison job
 * that kills every agent that runs it. Short ack_wait on the gateway so redelivery is quick.
 */
import t from "tap";
import { Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeMsgpack, eventMsgId, jobKeys, subjects, type JobRecord } from "../../protocol/index.js";
import { History, readJobLog } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import {
  RecWs,
  assertHistory,
  check,
  getJob,
  natsConn,
  putWorkflow,
  sleepWorkflow,
  startAgent,
  startGateway,
  startNats,
  stats,
  summaryAtEnd,
  tokensWorkflow,
  waitJob,
  type Msg,
  type T,
} from "./lib.js";

const ACK_WAIT_MS = 2_000;

t.comment(`nats-server ${natsServerVersion()}, ack_wait ${ACK_WAIT_MS} ms`);
summaryAtEnd(t);

/** Every revision of a job record, as written (a KV watch from the test). */
async function watchRecord(t: T, nc: Awaited<ReturnType<typeof natsConn>>, jobId: string): Promise<JobRecord[]> {
  const kv = await new Kvm(nc).open("nw_jobs");
  const seen: JobRecord[] = [];
  const w = await kv.watch({ key: jobKeys.record(jobId) });
  t.teardown(() => w.stop());
  void (async () => {
    for await (const e of w) if (e.operation === "PUT" && e.length > 0) seen.push(JSON.parse(e.string()) as JobRecord);
  })();
  return seen;
}

/** Publishes a chunk event for `attempt` straight into NW_EVENTS, as a zombie agent would. */
async function zombiePublish(
  nc: Awaited<ReturnType<typeof natsConn>>,
  jobId: string,
  attempt: number,
  content: string,
): Promise<void> {
  const h = headers();
  h.set("Nats-Msg-Id", eventMsgId(jobId, attempt, 999_999));
  const ev = {
    type: "chunk",
    job_id: jobId,
    workflow_id: "tok",
    attempt,
    node_id: "tok",
    content_type: "text",
    content,
    done: false,
    ts: Date.now(),
  };
  await jetstream(nc).publish(subjects.jobEvents(jobId), encodeMsgpack(ev), { headers: h });
}

const runningUpdates = (c: RecWs, jobId: string) =>
  c.messages().filter((m) => m.job_id === jobId && m.type === "job_update" && m.status === "running");

t.test(
  "agents - SIGKILL mid-job: the job is redelivered after ack_wait and completes on the second agent with attempt 2",
  async (t) => {
    const ns = await startNats(t);
    const gw = await startGateway(t, ns.url, ["--ack-wait-ms", String(ACK_WAIT_MS)]);
    const a1 = await startAgent(t, ns.url, ["--max-jobs", "1", "--name", "first"]);
    // 6 s of tokens: the second agent's start (a node process, 1-3 s on a loaded 2-core machine) must come well
    // before the first agent would finish (with 3 s it once did, and no attempt 2 ever came).
    const TOKENS = 600;
    await putWorkflow(gw.url, "tok", tokensWorkflow(TOKENS, 100));
    const h = new History().tokens("tok", TOKENS);
    const c = await RecWs.open(gw.url, h.client("watcher"));
    const jobId = await c.run("tok");
    await check(() => c.log.count(jobId) >= 40, 20_000, { name: "40 events from the first agent" });
    t.equal((await getJob(gw.url, jobId)).agent_id, a1.id, "the first agent runs it");
    const a2 = await startAgent(t, ns.url, ["--max-jobs", "1", "--name", "second"]);
    const killedAt = Date.now();
    a1.proc.kill("SIGKILL");
    await a1.exited;
    stats.faults++;
    const second = await check(
      () => runningUpdates(c, jobId).find((m) => (m.attempt as number) >= 2),
      ACK_WAIT_MS + 15_000,
      { name: "running update of a second attempt" },
    ).catch((err: Error) => {
      t.comment(
        `job updates: ${JSON.stringify(c.messages().filter((m) => m.type === "job_update"))}\nsecond agent:\n${a2.stderr()}`,
      );
      throw err;
    });
    const redeliveredMs = Date.now() - killedAt;
    t.match(
      second,
      { status: "running", attempt: 2, agent_id: a2.id },
      `the client sees job_update {status: "running", attempt: 2} from the second agent (${redeliveredMs} ms after the kill)`,
    );
    t.ok(redeliveredMs <= ACK_WAIT_MS + 5_000, "redelivered within ack_wait + 5 s of the kill");
    await c.waitTerminal(jobId);
    const rec = await waitJob(gw.url, jobId, (j) => j.status === "completed");
    t.match(
      rec,
      { status: "completed", attempt: 2, agent_id: a2.id },
      "the record says completed, attempt 2, second agent",
    );
    const end = c
      .messages()
      .find((m) => m.job_id === jobId && m.type === "job_update" && m.status === "completed") as Msg;
    t.same(
      end.result,
      { text: [Array.from({ length: TOKENS }, (_, i) => `tok${i} `).join("")] },
      "the second attempt produced the whole output",
    );
    t.equal(
      c.messages().filter((m) => m.job_id === jobId && m.type === "job_update" && m.status === "completed").length,
      1,
      "one terminal result",
    );
    // A client that resumes from the start afterwards sees the same fenced history as the live one.
    const late = await RecWs.open(gw.url, h.client("late"));
    await late.resume(jobId, 0);
    await late.waitTerminal(jobId);
    await late.close();
    await c.close();
    const nc = await natsConn(t, ns.url);
    const log = await readJobLog(nc, jobId);
    const a1Events = log.admitted.filter((e) => e.attempt === 1);
    t.ok(a1Events.length >= 40, `the events of attempt 1 stay in the stream and are replayed (${a1Events.length})`);
    stats.jobs++;
    await assertHistory(t, h, ns.url, "SIGKILL history");
  },
);

t.test(
  "agents - SIGSTOP past ack_wait then SIGCONT: the paused agent's late events never reach clients and it does not change the record",
  async (t) => {
    const ns = await startNats(t);
    const gw = await startGateway(t, ns.url, ["--ack-wait-ms", String(ACK_WAIT_MS)]);
    const a1 = await startAgent(t, ns.url, ["--max-jobs", "1", "--name", "paused"]);
    await putWorkflow(gw.url, "tok", tokensWorkflow(400, 100));
    const nc = await natsConn(t, ns.url);
    const h = new History().tokens("tok", 400);
    const c = await RecWs.open(gw.url, h.client("watcher"));
    const jobId = await c.run("tok");
    const revisions = await watchRecord(t, nc, jobId);
    await check(() => c.log.count(jobId) >= 40, 20_000, { name: "40 events from the first agent" });
    const a2 = await startAgent(t, ns.url, ["--max-jobs", "1", "--name", "healthy"]);
    a1.proc.kill("SIGSTOP");
    t.teardown(() => a1.proc.kill("SIGCONT"));
    stats.faults++;
    // Paused for 2 × ack_wait: long enough for the job to move to the second agent.
    await new Promise((r) => setTimeout(r, 2 * ACK_WAIT_MS));
    await check(() => runningUpdates(c, jobId).find((m) => m.attempt === 2), 30_000, { name: "attempt 2 running" });
    const claimIdx = revisions.findIndex((r) => r.attempt === 2);
    t.ok(claimIdx >= 0, "attempt 2 claimed the record");
    // The paused agent fences itself on SIGCONT, so to exercise the gateway's fence too the test publishes what a
    // zombie that did not notice would: a late event of attempt 1, now that attempt 2 runs.
    await zombiePublish(nc, jobId, 1, "zombie-late");
    a1.proc.kill("SIGCONT");
    await c.waitTerminal(jobId);
    const rec = await waitJob(gw.url, jobId, (j) => j.status === "completed");
    t.match(
      rec,
      { status: "completed", attempt: 2, agent_id: a2.id },
      "attempt 2 on the healthy agent finished the job",
    );
    await check(() => /lease lost/.test(a1.stderr()), 10_000, { name: "paused agent notices its lease is gone" });
    t.pass("the resumed agent stopped its run: lease lost");
    const after = revisions.slice(claimIdx);
    t.same(
      after.filter((r) => r.agent_id === a1.id),
      [],
      "no record revision from the paused agent after the takeover",
    );
    t.equal(after.filter((r) => r.status === "completed").length, 1, "one terminal write");
    // The stream may hold late events of attempt 1; the fence keeps them from every client, live and replayed.
    // And an event of the winning attempt after its terminal event: nothing follows the end.
    await zombiePublish(nc, jobId, 2, "after-the-end");
    stats.faults += 2;
    const log = await readJobLog(nc, jobId);
    t.equal(
      log.fenced.filter(
        (e) => e.type === "chunk" && String((e.ev as { content?: unknown }).content).startsWith("zombie-late"),
      ).length,
      1,
      "the late attempt-1 event is in the stream and fenced off",
    );
    t.equal(
      log.fenced.filter((e) => String((e.ev as { content?: unknown }).content) === "after-the-end").length,
      1,
      "the event after the terminal one is in the stream and fenced off",
    );
    const firstA2 = log.stored.find((e) => e.attempt === 2)!.seq;
    const late = log.stored.filter((e) => e.attempt === 1 && e.seq > firstA2);
    t.comment(`${late.length} late events of attempt 1 were stored after attempt 2 started; all fenced`);
    t.ok(
      late.every((e) => log.fenced.includes(e)),
      "every late attempt-1 event is fenced off",
    );
    const replay = await RecWs.open(gw.url, h.client("replayer"));
    await replay.resume(jobId, 0);
    await replay.waitTerminal(jobId);
    await replay.close();
    await c.close();
    t.equal(a1.proc.exitCode, null, "the paused agent is still alive and serving");
    stats.jobs++;
    await assertHistory(t, h, ns.url, "SIGSTOP history");
  },
);

t.test(
  "agents - a job running 5 × ack_wait keeps its lease with in-progress acks: one attempt, no redelivery",
  async (t) => {
    const ns = await startNats(t);
    const ackWait = 1_000;
    const gw = await startGateway(t, ns.url, ["--ack-wait-ms", String(ackWait)]);
    await startAgent(t, ns.url, ["--max-jobs", "1"]);
    await startAgent(t, ns.url, ["--max-jobs", "1"]);
    await putWorkflow(gw.url, "long", sleepWorkflow((5 * ackWait) / 1000));
    const h = new History();
    const c = await RecWs.open(gw.url, h.client("watcher"));
    const jobId = await c.run("long");
    await c.waitTerminal(jobId, 20_000);
    const rec = await getJob(gw.url, jobId);
    t.match(rec, { status: "completed", attempt: 1 }, "completed on the first attempt");
    t.equal(runningUpdates(c, jobId).length, 1, "one running update: never redelivered");
    await c.close();
    stats.jobs++;
    await assertHistory(t, h, ns.url, "long-job history");
  },
);

t.test(
  "agents - a poison job that kills its agent every time ends failed with max deliveries reached, and the queue keeps flowing",
  async (t) => {
    const ns = await startNats(t);
    const maxAttempts = 3;
    const gw = await startGateway(t, ns.url, ["--ack-wait-ms", "1500", "--max-attempts", String(maxAttempts)]);
    const agents = new Map<string, Awaited<ReturnType<typeof startAgent>>>();
    const spawn = async () => {
      const a = await startAgent(t, ns.url, ["--max-jobs", "1"]);
      agents.set(a.id, a);
    };
    await spawn();
    await spawn();
    await putWorkflow(gw.url, "poison", sleepWorkflow(60));
    await putWorkflow(gw.url, "ok", tokensWorkflow(20, 1_000));
    const h = new History().tokens("ok", 20);
    const c = await RecWs.open(gw.url, h.client("watcher"));
    const jobId = await c.run("poison");
    const killed: string[] = [];
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      // The "poison": whichever agent runs the job dies (test-only: the test kills it, as a crash would).
      // Killed once the client has seen the attempt start (its running event is in the stream).
      const ev = await check(() => runningUpdates(c, jobId).find((m) => m.attempt === attempt), 20_000, {
        name: `attempt ${attempt} running`,
      });
      const victim = agents.get(String(ev.agent_id))!;
      victim.proc.kill("SIGKILL");
      await victim.exited;
      agents.delete(victim.id);
      killed.push(victim.id);
      stats.faults++;
      await spawn();
    }
    const end = (await check(
      () => c.messages().find((m) => m.job_id === jobId && m.type === "job_update" && m.status === "failed"),
      20_000,
      { name: "failed update" },
    )) as Msg;
    t.match(
      String(end.message ?? (end.error as Msg)?.message),
      /max deliveries reached/,
      `the client sees job_update failed: ${String(end.message)}`,
    );
    const rec = await waitJob(gw.url, jobId, (j) => j.status === "failed");
    t.match(
      rec,
      {
        status: "failed",
        attempt: maxAttempts,
        error: { code: "JOB_ERR_MAX_DELIVERIES", message: /max deliveries reached/ },
      },
      "the record ends failed after max attempts",
    );
    t.equal(killed.length, maxAttempts, `${maxAttempts} agents died running it`);
    t.same(
      runningUpdates(c, jobId).map((m) => m.attempt),
      [1, 2, 3],
      "one running update per attempt",
    );
    const next = await c.run("ok");
    await c.waitTerminal(next);
    t.match(await getJob(gw.url, next), { status: "completed", attempt: 1 }, "a following job still runs");
    await c.close();
    stats.jobs += 2;
    await assertHistory(t, h, ns.url, "poison history");
  },
);
