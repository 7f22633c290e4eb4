/**
 * Claims. A dispatch may arrive before its record (the gateway sends both in one burst): the agent waits for the
 * record, and a record that never comes ends the dispatch. A first attempt pulled fresh starts its graph while
 * claiming: what it emits waits behind `running`, and a claim that fails publishes none of it; a job that waited
 * in the queue is claimed before it starts.
 *
 * Claims after a NATS restart: the server may deliver a job message again under the same delivery count (its
 * consumer state is flushed periodically, and kill -9 loses the tail). An agent that finds the record held by
 * that attempt must leave the message alone, not end it: if the holder is gone, ack_wait hands the job to the
 * next attempt, which takes the record over and finishes the job.
 */
import { fileURLToPath } from "node:url";
import t, { type Test as Tap } from "tap";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { KV_JOBS, STREAM_JOBS, encodeMsgpack, jobKeys, poolConsumer, subjects } from "../../protocol/index.js";
import type { JobDispatch, JobRecord } from "../../protocol/index.js";
import { api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { readJobLog } from "../helpers/history.js";
import { EARLY_START_MAX_AGE_MS, RECORD_WAIT_MS } from "../../agent/job-runner.js";
import { startAgentProc } from "../helpers/procs.js";
import { startStack } from "../helpers/stack.js";

const tokensGraph = {
  nodes: [
    { id: "tok", type: "nodeway.test.Tokens", data: { count: 5, rate: 0 } },
    { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
  ],
  edges: [{ id: "e", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
};

function queuedRecord(jobId: string, over: Partial<JobRecord> = {}): JobRecord {
  return {
    v: 1,
    id: jobId,
    workflow_id: "adhoc",
    status: "queued",
    pool: "cpu",
    attempt: 0,
    agent_id: null,
    params: {},
    created_at: new Date().toISOString(),
    started_at: null,
    finished_at: null,
    timeout_s: null,
    error: null,
    outputs: null,
    ...over,
  };
}

/** A stack, a test connection to its NATS and the jobs bucket. */
async function claimStack(t: Tap, opts: Parameters<typeof startStack>[1] = {}) {
  const s = await startStack(t, opts);
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const kv = await new Kvm(nc).open(KV_JOBS);
  return { s, nc, kv };
}

/** Publishes a job's dispatch as the gateway would, with no record written (the test writes it, or not). */
async function dispatchRaw(
  nc: NatsConnection,
  jobId: string,
  graph: unknown,
  over: Partial<JobDispatch> = {},
): Promise<void> {
  const dispatch: JobDispatch = {
    type: "job.dispatch",
    v: 1,
    job_id: jobId,
    workflow_id: "adhoc",
    graph: graph as JobDispatch["graph"],
    params: {},
    timeout_s: null,
    created_at: new Date().toISOString(),
    ...over,
  };
  const h = headers();
  h.set("Nats-Msg-Id", jobId);
  await nc.request(subjects.jobs("cpu"), encodeMsgpack(dispatch), { headers: h, timeout: 5_000 });
}

/** A job cancelled while queued: its record says `cancelled`, and its dispatch is in the queue. */
async function dispatchCancelled(nc: NatsConnection, kv: KV, jobId: string): Promise<void> {
  await kv.create(
    jobKeys.record(jobId),
    JSON.stringify(queuedRecord(jobId, { status: "cancelled", finished_at: new Date().toISOString() })),
  );
  await dispatchRaw(nc, jobId, tokensGraph);
}

/** The job's record once it reaches `status`. */
function jobReaches(url: string, jobId: string, status: string, timeoutMs: number) {
  return check(
    async () => {
      const r = await api(url, "GET", `/api/jobs/${jobId}`);
      return r.body.status === status ? r.body : null;
    },
    timeoutMs,
    { name: `job ${jobId} ${status}` },
  );
}

t.test(
  "claim - a delivery that finds the record held by a vanished holder of its attempt leaves the message; the next attempt finishes the job",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 1, gateway: { ackWaitMs: 1_500 } });

    // A job an agent "ghost" claimed as attempt 1 before it died (its claim reached the record; its message is
    // what the server delivers again, as attempt 1).
    const jobId = "01claimheldbyghost000000000";
    const graph = {
      nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "x", value: "done" } }],
      edges: [],
    };
    const rec: JobRecord = {
      v: 1,
      id: jobId,
      workflow_id: "adhoc",
      status: "running",
      pool: "cpu",
      attempt: 1,
      agent_id: "ghost-00000000",
      params: {},
      created_at: new Date().toISOString(),
      started_at: new Date().toISOString(),
      finished_at: null,
      timeout_s: null,
      error: null,
      outputs: null,
    };
    await kv.create(jobKeys.record(jobId), JSON.stringify(rec));
    await dispatchRaw(nc, jobId, graph, { created_at: rec.created_at });

    const agent = s.agents[0]!;
    await check(() => /record held by attempt 1 \(ghost-00000000\)/.test(agent.stderr()), 10_000, {
      name: "the agent saw the record held",
    });
    t.pass("the first delivery found the record held by attempt 1 and left the message");
    const done = await jobReaches(s.url, jobId, "completed", 20_000);
    t.equal(done.attempt, 2, "attempt 2 took the record over after ack_wait");
    t.equal(done.agent_id, agent.id, "on the live agent");
    t.notMatch(
      agent.stderr(),
      /ends the job message: no job record/,
      "the message was never ended for want of a claimable record",
    );
  },
);

t.test(
  "claim - a dispatch that arrives before its record waits for it; what the early run emitted follows `running`",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 1 });
    const jobId = "01claimrecordlate0000000000";
    await dispatchRaw(nc, jobId, tokensGraph);
    // The agent holds the dispatch unacked: it is claiming, its early run under way (5 unpaced tokens).
    const jsm = await jetstreamManager(nc);
    await check(
      async () => (await jsm.consumers.info(STREAM_JOBS, poolConsumer("cpu"))).num_ack_pending === 1,
      10_000,
      { name: "the agent holds the dispatch" },
    );
    t.equal((await readJobLog(nc, jobId)).stored.length, 0, "nothing is published while the record is missing");
    await kv.create(jobKeys.record(jobId), JSON.stringify(queuedRecord(jobId)));
    const done = await jobReaches(s.url, jobId, "completed", 10_000);
    t.same(done.outputs, { text: ["tok0 tok1 tok2 tok3 tok4 "] }, "with the early run's output");
    const log = await readJobLog(nc, jobId);
    const kinds = log.stored.map((e) => (e.type === "job_update" ? `job_update:${e.status}` : e.type));
    t.equal(
      kinds[0],
      "job_update:running",
      "`running` is the first event stored: nothing the early run emitted went out before it",
    );
    t.equal(
      kinds.filter((k) => k === "chunk").length,
      6,
      "every chunk the early run emitted is stored (5 tokens and the done marker)",
    );
    t.equal(kinds[kinds.length - 1], "job_update:completed", "the terminal update is last");
    t.equal(log.fenced.length, 0, "nothing fenced off");
  },
);

t.test(
  "claim - a dispatch whose record never appears is ended after the wait, and its early run publishes nothing",
  async (t) => {
    const { s, nc } = await claimStack(t, { agents: 1 });
    const jobId = "01claimrecordnever000000000";
    const sentMs = Date.now();
    await dispatchRaw(nc, jobId, tokensGraph);
    const agent = s.agents[0]!;
    await check(() => /ends the job message: no job record/.test(agent.stderr()), RECORD_WAIT_MS + 10_000, {
      name: "the agent ends the dispatch",
    });
    t.ok(Date.now() - sentMs >= RECORD_WAIT_MS, `not before the record had ${RECORD_WAIT_MS} ms to appear`);
    t.equal((await readJobLog(nc, jobId)).stored.length, 0, "no event was published for the job");
    // The slot is free again: a real job runs.
    await api(s.url, "PUT", "/api/workflows/hello", {
      graph: { nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "g", value: "hi" } }], edges: [] },
    });
    const sub = await api(s.url, "POST", "/api/workflows/hello/run", { params: {} });
    const next = await jobReaches(s.url, sub.body.job_id as string, "completed", 10_000);
    t.same(next.outputs, { g: ["hi"] }, "the agent goes on with other jobs");
  },
);

t.test(
  "claim - a claim that fails (cancelled while queued) aborts the early run and publishes none of its events",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 1 });
    const jobId = "01claimcancelledqueued00000";
    await dispatchCancelled(nc, kv, jobId);
    const agent = s.agents[0]!;
    await check(() => /ends the job message: job already finished/.test(agent.stderr()), 10_000, {
      name: "the agent ends the dispatch",
    });
    t.match(
      agent.stderr(),
      /not claimed \(finished\); aborted the run it had started while claiming/,
      "the fresh dispatch had started early",
    );
    t.equal(
      (await readJobLog(nc, jobId)).stored.length,
      0,
      "no event of the early run (nor a `running`) was published",
    );
    t.equal((await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status, "cancelled", "the record is untouched");
  },
);

t.test(
  "claim - a job that waited in the queue is claimed before it starts: cancelled while queued, it never starts",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 0 });
    const jobId = "01claimstalecancelled000000";
    await dispatchCancelled(nc, kv, jobId);
    // No agent yet: the dispatch waits in the queue past the early-start window.
    await new Promise((r) => setTimeout(r, EARLY_START_MAX_AGE_MS + 500));
    const agent = await startAgentProc(s.ns.url, ["--name", "late"]);
    t.teardown(() => agent.kill("SIGKILL"));
    await check(() => /ends the job message: job already finished/.test(agent.stderr()), 15_000, {
      name: "the agent ends the dispatch",
    });
    t.notMatch(agent.stderr(), /aborted the run it had started while claiming/, "the run was never started");
    t.equal((await readJobLog(nc, jobId)).stored.length, 0, "nothing was published");
  },
);

t.test(
  "claim - an agent whose clock runs 5 s behind the server's still claims a queued dispatch before starting it, and starts a fresh one early",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 0 });
    const stale = "01claimskewstale00000000000";
    await dispatchCancelled(nc, kv, stale);
    await new Promise((r) => setTimeout(r, EARLY_START_MAX_AGE_MS + 500));
    // By its own clock the 1.5 s old dispatch was stored 3.5 s in the future: without the correction it reads as fresh.
    const behind = {
      NODE_OPTIONS: `--require ${fileURLToPath(new URL("../fixtures/clock-behind.cjs", import.meta.url))}`,
      NODEWAY_TEST_CLOCK_BEHIND_MS: "5000",
    };
    const agent = await startAgentProc(s.ns.url, ["--name", "behind"], behind);
    t.teardown(() => agent.kill("SIGKILL"));
    await check(() => /ends the job message: job already finished/.test(agent.stderr()), 15_000, {
      name: "the agent ends the stale dispatch",
    });
    t.match(
      agent.stderr(),
      /clock runs at least (4[89]\d\d|5000) ms behind the NATS server's/,
      "the lag was measured and reported",
    );
    t.notMatch(
      agent.stderr(),
      /aborted the run it had started while claiming/,
      "the stale dispatch's run was never started",
    );

    const fresh = "01claimskewfresh00000000000";
    await dispatchCancelled(nc, kv, fresh);
    await check(
      () =>
        new RegExp(`job ${fresh}: not claimed \\(finished\\); aborted the run it had started while claiming`).test(
          agent.stderr(),
        ),
      10_000,
      {
        name: "the fresh dispatch started early (the correction does not make fresh dispatches look old)",
      },
    );
    t.equal(
      (await readJobLog(nc, stale)).stored.length + (await readJobLog(nc, fresh)).stored.length,
      0,
      "nothing was published for either",
    );
  },
);

t.test(
  "claim - a first attempt's timeout counts from its graph's start, which precedes a late record's claim",
  async (t) => {
    const { s, nc, kv } = await claimStack(t, { agents: 1 });
    const jobId = "01claimtimeoutearly00000000";
    const graph = { nodes: [{ id: "nap", type: "nodeway.test.Sleep", data: { seconds: 30 } }], edges: [] };
    await dispatchRaw(nc, jobId, graph, { timeout_s: 1 });
    // The record comes 2.5 s later: past the 1 s timeout of the run that started at once.
    await new Promise((r) => setTimeout(r, 2_500));
    const recordMs = Date.now();
    await kv.create(jobKeys.record(jobId), JSON.stringify(queuedRecord(jobId, { timeout_s: 1 })));
    const done = await jobReaches(s.url, jobId, "timed_out", 10_000);
    const afterRecordMs = Date.parse(done.finished_at as string) - recordMs;
    t.ok(
      afterRecordMs < 700,
      `it ended as soon as it was claimed (${afterRecordMs} ms after its record), not a timeout after the claim`,
    );
  },
);
