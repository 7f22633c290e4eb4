/**
 * Claims after a NATS restart: the server may deliver a job message again under the same delivery count (its
 * consumer state is flushed periodically, and kill -9 loses the tail). An agent that finds the record held by
 * that attempt must leave the message alone, not end it: if the holder is gone, ack_wait hands the job to the
 * next attempt, which takes the record over and finishes the job.
 */
import t from "tap";
import { connect, headers } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { KV_JOBS, encodeMsgpack, jobKeys, subjects, type JobDispatch, type JobRecord } from "../../protocol/index.js";
import { api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test("claim - a delivery that finds the record held by a vanished holder of its attempt leaves the message; the next attempt finishes the job", async (t) => {
  const s = await startStack(t, { agents: 1, gateway: { ackWaitMs: 1_500 } });
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const kv = await new Kvm(nc).open(KV_JOBS);

  // A job an agent "ghost" claimed as attempt 1 before it died (its claim reached the record; its message is
  // what the server delivers again, as attempt 1).
  const jobId = "01claimheldbyghost000000000";
  const graph = { nodes: [{ id: "out", type: "nodetool.output.Output", data: { name: "x", value: "done" } }], edges: [] };
  const rec: JobRecord = {
    v: 1, id: jobId, workflow_id: "adhoc", status: "running", pool: "cpu", attempt: 1, agent_id: "ghost-00000000", params: {},
    created_at: new Date().toISOString(), started_at: new Date().toISOString(), finished_at: null, timeout_s: null, error: null, outputs: null,
  };
  await kv.create(jobKeys.record(jobId), JSON.stringify(rec));
  const dispatch: JobDispatch = { type: "job.dispatch", v: 1, job_id: jobId, workflow_id: "adhoc", graph: graph as JobDispatch["graph"], params: {}, timeout_s: null, created_at: rec.created_at };
  const h = headers();
  h.set("Nats-Msg-Id", jobId);
  await nc.request(subjects.jobs("cpu"), encodeMsgpack(dispatch), { headers: h, timeout: 5_000 });

  const agent = s.agents[0]!;
  await check(() => /record held by attempt 1 \(ghost-00000000\)/.test(agent.stderr()), 10_000, { name: "the agent saw the record held" });
  t.pass("the first delivery found the record held by attempt 1 and left the message");
  const done = await check(async () => {
    const r = await api(s.url, "GET", `/api/jobs/${jobId}`);
    return r.body.status === "completed" ? r.body : null;
  }, 20_000, { name: "the job completes" });
  t.equal(done.attempt, 2, "attempt 2 took the record over after ack_wait");
  t.equal(done.agent_id, agent.id, "on the live agent");
  t.notMatch(agent.stderr(), /ends the job message: no job record/, "the message was never ended for want of a claimable record");
});
