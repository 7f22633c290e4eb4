/**
 * A quiet lease on several gateways: a job whose node emits nothing for longer than a third of the lease, run by a
 * live agent whose lease checks go to whichever gateway answers, must not be taken over by another agent that
 * holds the job's claim secret (a former holder's). Every gateway sees the holder's heartbeat naming the job.
 * Real nats-server, two gateways, an agent process.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { KV_JOBS, decodeMsgpack, encodeJson, encodeMsgpack, subjects } from "../../protocol/index.js";
import { loadLeaseSigner } from "../../nats/index.js";
import { startGateway } from "../../gateway/index.js";
import { WsClient, api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

/** Seconds the job's one node stays silent: past a third of the 30 s lease, the point a takeover is weighed at. */
const QUIET_S = 14;

t.test("quiet lease - a silent job of a live agent is not taken over through any gateway", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const gw2 = await startGateway({ natsUrl: s.ns.url, port: 0 });
  t.teardown(() => gw2.stop());
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const graph = {
    nodes: [
      { id: "quiet", type: "nodeway.test.Sleep", data: { seconds: QUIET_S } },
      { id: "out", type: "nodetool.output.Output", data: { name: "slept" } },
    ],
    edges: [{ id: "e", source: "quiet", sourceHandle: "output", target: "out", targetHandle: "value" }],
  };
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  await check(async () => (await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status === "running", 20_000, {
    name: "the job runs",
  });

  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const secret = (await loadLeaseSigner(await new Kvm(nc).open(KV_JOBS))).claimSecret(jobId);
  // Past a third of the lease with no event from the holder: each gateway weighs the takeover on what it sees.
  await new Promise((res) => setTimeout(res, 11_500));
  const answers: string[] = [];
  for (let i = 0; i < 6; i++) {
    const claim = {
      type: "record.update",
      v: 1,
      job_id: jobId,
      proof: secret,
      revision: 1,
      record_json: encodeJson({ id: jobId, status: "running", attempt: 7, agent_id: "thief" }),
    };
    const m = await nc.request(subjects.records("thief"), encodeMsgpack(claim), { timeout: 3_000 });
    const reply = decodeMsgpack(m.data) as { ok: boolean; code?: string; message?: string };
    answers.push(reply.ok ? "claimed" : `${reply.code}: ${reply.message}`);
  }
  t.ok(
    answers.every((a) => /GW_ERR_FORBIDDEN: .*held by a live lease/.test(a)),
    `every claim refused, whichever gateway answered (${answers.join(" | ")})`,
  );
  const end = await ws.waitTerminal(jobId, 30_000);
  t.equal(end.status, "completed", "the holder finishes the job");
  const rec = (await api(s.url, "GET", `/api/jobs/${jobId}`)).body as { attempt: number; outputs: unknown };
  t.equal(rec.attempt, 1, "as its first attempt");
  t.same(rec.outputs, { slept: [QUIET_S] }, "with its own result");
});
