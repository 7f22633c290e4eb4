/**
 * The agent's outbox (agent/outbox.ts): a job streaming while nats-server is killed (`kill -9`) and restarted keeps
 * every event it emitted meanwhile and stores it, once and in order, when NATS is back; an outage longer than
 * `outboxMaxAgeMs` fails the attempt `JOB_ERR_EVENTS_UNSTORED` rather than complete with a hole in its history.
 * Counted as a user sees it: the job's record, and its history replayed through the gateway (`events?after=0`).
 */
import t, { type Test } from "tap";
import { compileAgentConfig } from "../../agent/index.js";
import { ClientLog } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import {
  api,
  check,
  getJob,
  putWorkflow,
  readEvents,
  startAgent,
  startGateway,
  startNats,
  stats,
  summaryAtEnd,
} from "./lib.js";
import { tokensWorkflow, type Msg } from "./lib.js";

t.comment(`nats-server ${natsServerVersion()}`);
summaryAtEnd(t);

const COUNT = 300;
const RATE = 50;
const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);

/**
 * Runs a COUNT-token job at RATE tokens/s; once ~40 tokens streamed, kills nats-server and restarts it on the same
 * port and store `outageMs` later. Answers the job's final record and its stored history, read back after=0.
 */
async function tokensThroughOutage(t: Test, outageMs: number, agentArgs: string[] = []) {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  const agent = await startAgent(t, ns.url, agentArgs);
  await putWorkflow(gw.url, "tok", tokensWorkflow(COUNT, RATE));
  const submit = await api(gw.url, "POST", "/api/workflows/tok/run", {});
  t.equal(submit.status, 202, "job submitted");
  const jobId = String(submit.body.job_id);

  // A live follower only tells when ~40 tokens went out; what it sees across the outage is not asserted here.
  const live = new ClientLog("live");
  const liveOpts = { sse: false, log: live, timeoutMs: 120_000, allowDrop: true };
  const follow = readEvents(`${gw.url}/api/jobs/${jobId}/events`, liveOpts).catch(() => null);
  await check(() => live.count(jobId) >= 45, 30_000, { name: "~40 tokens streamed" });
  await ns.kill9();
  stats.faults++;
  const killedAt = Date.now();
  await check(() => /nats disconnect/.test(agent.stderr()), 10_000, { name: "the agent notices NATS is gone" });
  await new Promise((r) => setTimeout(r, Math.max(0, killedAt + outageMs - Date.now())));
  await ns.restart();

  const rec = await check(
    async () => {
      const j = await getJob(gw.url, jobId);
      return TERMINAL.has(String(j.status)) ? j : null;
    },
    90_000,
    { name: `end of ${jobId}`, intervalMs: 100 },
  ).catch((err: Error) => {
    t.comment(`agent:\n${agent.stderr().slice(-3000)}\ngateway:\n${gw.stderr().slice(-2000)}`);
    throw err;
  });
  const stored = await readEvents(`${gw.url}/api/jobs/${jobId}/events?after=0`, { sse: false, timeoutMs: 30_000 });
  t.equal(stored.status, 200, "history readable through the gateway");
  t.ok(stored.ended, "the history replay ends (after the terminal event)");
  await follow;
  stats.jobs++;
  return { rec, events: stored.events.filter((e) => e.job_id === jobId && typeof e.seq === "number"), agent };
}

/** The token chunks of a history, as text (the Tokens node ends with an empty `done` chunk). */
function tokenChunks(events: Msg[]): string[] {
  return events.filter((e) => e.type === "chunk" && e.content !== "").map((e) => String(e.content));
}

t.test(
  "outbox - nats-server killed mid-stream for 1.5 s: the job completes and its stored history holds every token once, in order",
  async (t) => {
    const { rec, events, agent } = await tokensThroughOutage(t, 1_500);
    const expected = Array.from({ length: COUNT }, (_, i) => `tok${i} `);
    t.equal(rec.status, "completed", "the job completed");
    t.same(rec.outputs, { text: [expected.join("")] }, `its record's output holds all ${COUNT} tokens`);

    const chunks = tokenChunks(events);
    t.equal(chunks.length, COUNT, `the stored history has ${COUNT} token chunks (it had ${chunks.length})`);
    const firstWrong = chunks.findIndex((c, i) => c !== expected[i]);
    t.equal(firstWrong, -1, "tok0…tok299, in order", { got: chunks.slice(Math.max(0, firstWrong), firstWrong + 5) });
    stats.eventsChecked += events.length;
    stats.lost += Math.max(0, COUNT - new Set(chunks).size);

    const seqs = events.map((e) => e.seq as number);
    const gaps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1]! + 1);
    t.same(gaps, [], `seqs ${seqs[0]}..${seqs.at(-1)} without gap, duplicate or reordering (one job in the stream)`);
    t.equal(seqs[0], 1, "the history starts at the stream's first event");
    const last = events.at(-1);
    t.match(last, { type: "job_update", status: "completed" }, "and ends with the terminal update");
    const terminals = events.filter((e) => e.type === "job_update" && TERMINAL.has(String(e.status)));
    t.equal(terminals.length, 1, "one terminal update");
    t.match(agent.stderr(), /republishing them in order/, "the agent republished what NATS had not acknowledged");
  },
);

t.test(
  "outbox - NATS away longer than outboxMaxAgeMs: the attempt fails JOB_ERR_EVENTS_UNSTORED instead of completing",
  async (t) => {
    const { rec, events, agent } = await tokensThroughOutage(t, 5_000, ["--outbox-max-age-ms", "2000"]);
    t.equal(rec.status, "failed", "the job failed");
    const why = { code: "JOB_ERR_EVENTS_UNSTORED", message: /outboxMaxAgeMs \(2000 ms\)/ };
    t.match(rec.error, why, "with the new code, saying why");
    t.equal(rec.attempt, 1, "the attempt that lost events recorded its failure (no silent rerun)");
    const failed = { type: "job_update", status: "failed", error: { code: "JOB_ERR_EVENTS_UNSTORED" } };
    t.match(events.at(-1), failed, "the history ends with the failure");
    t.equal(events.filter((e) => e.type === "job_update" && e.status === "completed").length, 0, "never completed");
    t.ok(tokenChunks(events).length < COUNT, "the history is not whole, and says so");
    t.match(agent.stderr(), /were not stored/, "the agent logged why");
  },
);

t.test("outbox - its bounds are checked once, and its age may not pass NW_EVENTS's duplicate window", async (t) => {
  const c = compileAgentConfig({});
  t.same([c.outboxMaxBytes, c.outboxMaxAgeMs], [64 * 1024 * 1024, 120_000], "64 MiB and 120 s by default");
  t.equal(compileAgentConfig({ outboxMaxAgeMs: "2000" as never }).outboxMaxAgeMs, 2000, "from a flag's string form");
  const tooOld = { key: "outboxMaxAgeMs", message: /duplicate window/ };
  t.throws(() => compileAgentConfig({ outboxMaxAgeMs: 200_000 }), tooOld);
  t.throws(() => compileAgentConfig({ outboxMaxBytes: 0 }), { key: "outboxMaxBytes", message: /positive integer/ });
});
