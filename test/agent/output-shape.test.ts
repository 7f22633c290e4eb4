/**
 * Outputs no record may hold — a key that could reach a prototype (`constructor` from a parsed JSON document), or
 * nesting past the codec's depth — fail the job once with `JOB_ERR_OUTPUT_INVALID`, saying why. Before, the gateway
 * refused the agent's final record write each time, and the job ran again on every redelivery until its attempts
 * ran out.
 */
import t from "tap";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

const parsed = (text: string) => ({
  nodes: [
    { id: "p", type: "nodetool.text.ParseJSON", data: { text } },
    { id: "out", type: "nodetool.output.Output", data: { name: "doc" } },
  ],
  edges: [{ id: "e", source: "p", sourceHandle: "output", target: "out", targetHandle: "value" }],
});

t.test("output shape - outputs no record may hold fail the job once, saying why", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  for (const [what, text, why, strategy] of [
    ["a constructor key", '{"constructor": "Ferrari", "points": 12}', /forbidden key "constructor"/, undefined],
  ] as const) {
    const r = await ws.request("run_job", {
      graph: parsed(text),
      ...(strategy ? { execution_strategy: strategy } : {}),
    });
    t.notOk(r.error, `${what}: accepted`);
    const jobId = String((r.result as { job_id: string }).job_id);
    const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
    t.match(
      end,
      { status: "failed", error: { code: "JOB_ERR_OUTPUT_INVALID", message: why } },
      `${what}: fails saying why`,
    );
    const rec = (await api(s.url, "GET", `/api/jobs/${jobId}`)).body;
    t.match(rec, { status: "failed", attempt: 1 }, `${what}: on its first attempt, not run again`);
  }
  // Nesting past the codec's depth is refused where it is parsed, whatever the strategy (200,000 levels once
  // overflowed the stack of the run's next walk: "could not start").
  for (const [depth, strategy] of [
    [70, undefined],
    [100, "inline"],
    [200_000, undefined],
  ] as const) {
    const text = `${"[".repeat(depth)}${"]".repeat(depth)}`;
    const r = await ws.request("run_job", {
      graph: parsed(text),
      ...(strategy ? { execution_strategy: strategy } : {}),
    });
    const jobId = String((r.result as { job_id: string }).job_id);
    const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
    t.match(
      end,
      { status: "failed", error: { code: "JOB_ERR_NODE_FAILED", message: /the JSON nests deeper than 64 levels/ } },
      `${depth} levels${strategy ? `, ${strategy}` : ""}: the node fails saying so`,
    );
  }
  t.equal((await api(s.url, "GET", "/health")).status, 200, "the gateway goes on serving");
});
