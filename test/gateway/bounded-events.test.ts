/**
 * A job that emits more events than NW_EVENTS keeps of one job ends failed with JOB_ERR_TOO_MANY_EVENTS, rather than
 * completing while the stream silently drops its oldest events (a resume would then not be whole).
 */
import t from "tap";
import { startStack } from "../helpers/stack.js";
import { api, readStream, tokensWorkflow } from "../helpers/clients.js";
import { check } from "../helpers/check.js";

t.test(
  "events cap - a job past the per-job event cap fails JOB_ERR_TOO_MANY_EVENTS and its history is whole",
  async (t) => {
    const s = await startStack(t, { agents: 1, gateway: { eventsMaxPerJob: 300 } });
    t.equal((await api(s.url, "PUT", "/api/workflows/many", tokensWorkflow(2_000, 5_000))).status, 200);
    const run = await api(s.url, "POST", "/api/workflows/many/run", {});
    t.equal(run.status, 202);
    const jobId = String(run.body.job_id);
    const rec = await check(
      async () => {
        const r = await api(s.url, "GET", `/api/jobs/${jobId}`);
        return r.body.status === "failed" ? r.body : null;
      },
      30_000,
      { name: "the job failed" },
    );
    t.match(rec.error, { code: "JOB_ERR_TOO_MANY_EVENTS" }, "the record says why");
    const { events } = await readStream(`${s.url}/api/jobs/${jobId}/events?after=0`);
    const seqs = events.map((e) => e.seq as number);
    t.ok(seqs.length <= 300, `the stream kept every event (${seqs.length} ≤ 300)`);
    t.same(
      seqs,
      seqs.map((_, i) => i + 1),
      "from seq 1 without a gap: nothing was dropped from the head",
    );
    t.match(events.at(-1), { type: "job_update", status: "failed" }, "the history ends with the failure");
  },
);
