/**
 * Batched pulls keep the agent's promise: it never runs more jobs at once than `--max-jobs`, and it does run
 * that many side by side when the queue has them.
 */
import t from "tap";
import { api, mostAtOnce } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test("slots - an agent with --max-jobs 3 runs at most three jobs at a time, and three together", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "3"] });
  await api(s.url, "PUT", "/api/workflows/nap", {
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 3 } }], edges: [] },
  });
  // Submitted together, and long enough that three overlap even when each claim is slow: on a loaded machine (the
  // docker tests beside this one, copying image layers) claims were seen 0.5 s apart, and 0.4 s jobs never met.
  const ids = await Promise.all(
    Array.from({ length: 9 }, async () =>
      String((await api(s.url, "POST", "/api/workflows/nap/run", { params: {} })).body.job_id),
    ),
  );
  const recs = await check(
    async () => {
      const all = await Promise.all(ids.map(async (id) => (await api(s.url, "GET", `/api/jobs/${id}`)).body));
      return all.every((r) => r.status === "completed") ? all : null;
    },
    60_000,
    { name: "all nine complete" },
  );
  const most = mostAtOnce(recs);
  t.ok(most <= 3, `never more than three at once (${most})`);
  t.equal(most, 3, "and three side by side while nine waited");
});

t.test(
  "slots - with more pools than slots, the one slot rotates among them: each pool's job starts within a rotation, and never two at once",
  async (t) => {
    const pools = ["p1", "p2", "p3"];
    const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "1", "--pools", pools.join(",")] });
    await api(s.url, "PUT", "/api/workflows/nap", {
      graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 0.3 } }], edges: [] },
    });
    const run = async (pool: string) =>
      String((await api(s.url, "POST", "/api/workflows/nap/run", { params: {}, requirements: { pool } })).body.job_id);
    const done = (id: string) =>
      check(
        async () => {
          const r = (await api(s.url, "GET", `/api/jobs/${id}`)).body;
          return r.status === "completed" ? r : null;
        },
        30_000,
        { name: `job ${id} completes` },
      );
    // The first pulls open at once; past an idle pull's 5 s, every loop is in its steady rotation.
    await done(await run("p1"));
    await new Promise((r) => setTimeout(r, 6_000));
    const waits: number[] = [];
    for (const pool of [...pools, ...pools].reverse()) {
      const rec = await done(await run(pool));
      waits.push(Date.parse(String(rec.started_at)) - Date.parse(String(rec.created_at)));
    }
    // A rotation takes a second per pool; before, a pool waited for another's 5 s idle pull to expire.
    t.ok(Math.max(...waits) < 4_000, `every job was claimed within a rotation (waits ${waits.join(", ")} ms)`);

    const together = await Promise.all([...pools, ...pools].map(run));
    const recs = await Promise.all(together.map(done));
    t.equal(mostAtOnce(recs), 1, "six jobs in three pools on a one-slot agent ran one at a time");
  },
);
