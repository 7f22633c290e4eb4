/** The `job_update` builders and the graph event types (protocol/events.ts). */
import t from "tap";
import { GRAPH_EVENT_TYPES, JOB_EVENT_TYPES, jobUpdate, type JobRecord } from "../../protocol/index.js";

const rec: JobRecord = {
  v: 1,
  id: "j",
  workflow_id: "w",
  status: "completed",
  pool: "cpu",
  attempt: 1,
  agent_id: "a",
  params: {},
  created_at: "2026-01-01T00:00:00Z",
  started_at: null,
  finished_at: null,
  timeout_s: null,
  error: null,
  outputs: { out: [1] },
};

t.test("job_update builders - each status with the fields it is read with", async (t) => {
  t.same(jobUpdate.queued(2), { type: "job_update", status: "queued", queue_position: 2 });
  t.same(jobUpdate.queued(1, "gpu", "no agent"), {
    type: "job_update",
    status: "queued",
    pool: "gpu",
    queue_position: 1,
    message: "no agent",
  });
  t.match(jobUpdate.running("a1", "threaded", "attempt 2"), {
    type: "job_update",
    status: "running",
    agent_id: "a1",
    strategy: "threaded",
    message: "attempt 2",
  });
  const error = { code: "JOB_ERR_CANCELLED", message: "stop" };
  t.same(jobUpdate.ended("failed", error, "stop"), { type: "job_update", status: "failed", error, message: "stop" });
  t.same(jobUpdate.ended("cancelled", null, "cancelled while queued"), {
    type: "job_update",
    status: "cancelled",
    message: "cancelled while queued",
  });
  t.same(
    jobUpdate.ofRecord(rec),
    { type: "job_update", status: "completed", result: { out: [1] } },
    "completed: its outputs",
  );
  const failed = {
    ...rec,
    status: "failed" as const,
    outputs: null,
    error: { code: "JOB_ERR_NODE_FAILED", message: "boom" },
  };
  t.same(
    jobUpdate.ofRecord(failed),
    { type: "job_update", status: "failed", error: failed.error, message: "boom" },
    "failed: its error",
  );
});

t.test("graph event types - a subset of the job events, without job_update and error", async (t) => {
  for (const type of GRAPH_EVENT_TYPES) t.ok(JOB_EVENT_TYPES.has(type as never), type);
  t.notOk(GRAPH_EVENT_TYPES.has("job_update"));
  t.notOk(GRAPH_EVENT_TYPES.has("error"));
  t.notOk(GRAPH_EVENT_TYPES.has("notification"));
});
