/**
 * `--pool-slots`: a pool with slots of its own neither takes the shared `--max-jobs` slots nor waits for them.
 * Jobs that wait on a remote provider (a stalled LLM call holds its slot up to its stream limit) then cannot keep
 * an agent's local work from starting, and each budget still holds its own cap.
 */
import t from "tap";
import { api, mostAtOnce } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test("pool slots - a pool's own slots leave the shared ones free, and each budget keeps its cap", async (t) => {
  const s = await startStack(t, {
    agents: 1,
    agentArgs: ["--max-jobs", "1", "--pools", "cpu,remote", "--pool-slots", "remote=2"],
  });
  const nap = (seconds: number) => ({
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds } }], edges: [] },
  });
  await api(s.url, "PUT", "/api/workflows/long", nap(6));
  await api(s.url, "PUT", "/api/workflows/short", nap(0.5));
  const run = async (wf: string, pool: string) =>
    String((await api(s.url, "POST", `/api/workflows/${wf}/run`, { params: {}, requirements: { pool } })).body.job_id);
  const rec = async (id: string) => (await api(s.url, "GET", `/api/jobs/${id}`)).body;
  const done = (ids: string[], ms: number) =>
    check(
      async () => {
        const all = await Promise.all(ids.map(rec));
        return all.every((r) => r.status === "completed") ? all : null;
      },
      ms,
      { name: `${ids.length} jobs complete` },
    );

  const remote = await Promise.all([1, 2, 3].map(() => run("long", "remote")));
  await check(
    async () => (await Promise.all(remote.map(rec))).filter((r) => r.status === "running").length === 2,
    20_000,
    {
      name: "two remote jobs running",
    },
  );
  // Both remote slots are busy for seconds: the shared slot must still take local work at once.
  const local = [await run("short", "cpu"), await run("short", "cpu")];
  const localRecs = await done(local, 20_000);
  const stillRunning = (await Promise.all(remote.map(rec))).filter((r) => r.status === "running").length;
  t.ok(stillRunning >= 1, `cpu jobs completed while remote jobs still ran (${stillRunning} running)`);
  t.equal(mostAtOnce(localRecs), 1, "the shared budget (--max-jobs 1) ran one cpu job at a time");
  const remoteRecs = await done(remote, 60_000);
  t.equal(mostAtOnce(remoteRecs), 2, "the remote pool ran two at once, never three");
});

t.test("pool slots - a setting that is no pool=N list is refused at start, naming it", async (t) => {
  const { compileAgentConfig } = await import("../../agent/config.js");
  for (const bad of ["remote", "remote=0", "remote=x", "a=1,a=2", "=3", "a.b=1"])
    t.throws(
      () => compileAgentConfig({ natsUrl: "nats://127.0.0.1:4222", poolSlots: bad }),
      { name: "InvalidConfigError", message: /^poolSlots: / },
      bad,
    );
  t.same(compileAgentConfig({ natsUrl: "nats://127.0.0.1:4222", poolSlots: "openai=16, anthropic=4" }).poolSlots, {
    openai: 16,
    anthropic: 4,
  });
  t.same(compileAgentConfig({ natsUrl: "nats://127.0.0.1:4222", poolSlots: { ollama: 3 } }).poolSlots, { ollama: 3 });
});
