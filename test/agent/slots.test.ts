/**
 * Batched pulls keep the agent's promise: it never runs more jobs at once than `--max-jobs`, and it does run
 * that many side by side when the queue has them.
 */
import t from "tap";
import { api } from "../helpers/clients.js";
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
  // Largest number of runs whose [started_at, finished_at) intervals overlap at one instant.
  const edges = recs.flatMap((r) => [
    { at: Date.parse(String(r.started_at)), d: 1 },
    { at: Date.parse(String(r.finished_at)), d: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let most = 0;
  for (const e of edges) most = Math.max(most, (now += e.d));
  t.ok(most <= 3, `never more than three at once (${most})`);
  t.equal(most, 3, "and three side by side while nine waited");
});
