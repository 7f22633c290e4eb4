import t from "tap";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test("queue - a queued job is told its queue_position each time it changes, then runs", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "1"] });
  await api(s.url, "PUT", "/api/workflows/slow", {
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 1 } }], edges: [] },
  });
  const ws = await WsClient.open(s.url, "json");
  const ids: string[] = [];
  for (let i = 0; i < 4; i++)
    ids.push(String(((await ws.request("run_job", { workflow_id: "slow" })).result as { job_id: string }).job_id));
  const last = ids[3]!;
  await ws.waitTerminal(last, 30_000);
  const updates = ws.events(last).filter((e) => e.type === "job_update");
  const positions = updates.filter((e) => e.status === "queued").map((e) => e.queue_position);
  // Job 1 may already run when job 4 is queued; jobs 2 and 3 surely wait (one slot, 1 s each: long enough that a
  // position update, delayed by a loaded machine, still lands before the job starts and is not fenced off).
  t.ok(Number(positions[0]) >= 3, `starts behind the two waiting jobs (${positions[0]})`);
  t.same(
    positions.slice(1),
    [...positions.slice(1)].sort((a, b) => Number(b) - Number(a)),
    "positions only go down",
  );
  t.ok(positions.includes(1), `reaches the front (${positions.join(",")})`);
  t.equal(new Set(positions).size, positions.length, "each position is announced once");
  const statuses = updates.map((e) => e.status);
  t.ok(statuses.lastIndexOf("queued") < statuses.indexOf("running"), "no queued update after it started");
  const rec = await check(async () => (await api(s.url, "GET", `/api/jobs/${last}`)).body, 5_000);
  t.equal(rec.status, "completed");
  await ws.close();
});
