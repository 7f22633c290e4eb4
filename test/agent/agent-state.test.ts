/**
 * An agent's registration says whether it is busy: a job that runs a while shows it busy with the job named, and
 * idle once it ends. A job shorter than the registration's state delay (250 ms) writes nothing (agent/agent.ts
 * `stateChanged`): back-to-back short jobs cost no registration writes of their own.
 */
import t from "tap";
import { KvWatchInclude, Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { KV_AGENTS } from "../../protocol/index.js";
import { check } from "../helpers/check.js";
import { api, tokensWorkflow } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

type Listed = { state: string; running_jobs: string[] };
const agentOf = async (base: string): Promise<Listed | undefined> =>
  ((await api(base, "GET", "/api/agents")).body.agents as Listed[] | undefined)?.[0];

t.test("agent state - busy with its job while it runs, idle after; short jobs write nothing", async (t) => {
  const s = await startStack(t, { agents: 1 });
  await check(async () => (await agentOf(s.url))?.state === "idle", 20_000, { name: "the agent registered idle" });

  await api(s.url, "PUT", "/api/workflows/slow", tokensWorkflow(40, 20));
  const run = await api(s.url, "POST", "/api/workflows/slow/run", { params: {} });
  const jobId = String(run.body.job_id);
  const busy = await check(
    async () => {
      const a = await agentOf(s.url);
      return a?.state === "busy" && a.running_jobs.includes(jobId) ? a : null;
    },
    10_000,
    { name: "busy with the job" },
  );
  t.ok(busy, "the registration says busy and names the running job");
  await check(async () => (await agentOf(s.url))?.state === "idle", 20_000, { name: "idle after the job" });
  t.pass("and idle once it ended");

  // Short jobs one after another: the registration's revision moves only with the periodic heartbeat.
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const kv = await new Kvm(nc).open(KV_AGENTS);
  await api(s.url, "PUT", "/api/workflows/quick", tokensWorkflow(1, 1000));
  const writes: number[] = [];
  const watch = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
  void (async () => {
    for await (const e of watch) writes.push(e.revision);
  })();
  const t0 = Date.now();
  for (let i = 0; i < 10; i++) {
    const r = await api(s.url, "POST", "/api/workflows/quick/run?wait=true", { params: {} });
    t.equal(r.body.status, "completed", `quick job ${i} completed`);
  }
  const elapsedS = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 400));
  watch.stop();
  // The heartbeat writes every 3 s; state changes would add up to two writes per job (20 for these 10).
  t.ok(
    writes.length <= Math.ceil(elapsedS / 3) + 2,
    `${writes.length} registration writes over ${elapsedS} s of 10 jobs`,
  );
});
