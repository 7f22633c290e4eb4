/**
 * A 10 s NATS outage on a single host (nats-server, gateway and agent with their default settings): a
 * `nodeway.test.Tokens` job streams while the only nats-server is SIGKILLed, and it comes back 10 s later on the
 * same port and store. Every token the node emitted is then in the job's stored history once and in order, or the
 * attempt failed with a code that says why — the job never ends `completed` with a hole. Seen as a user sees it:
 * the job's record and its history replayed through the gateway (`events?after=0`).
 */
import t from "tap";
import { ClientLog } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import { api, check, getJob, putWorkflow, readEvents, startAgent, startGateway, startNats, stats } from "./lib.js";
import { summary, tokensWorkflow, type Msg, type T } from "./lib.js";

t.comment(`nats-server ${natsServerVersion()}`);

const COUNT = 300;
const RATE = 50;
const OUTAGE_MS = 10_000;
const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);
/** Codes an attempt may fail with when its events could not all be stored (protocol/errors.ts). */
const UNSTORED = /^JOB_ERR_(EVENTS_UNSTORED|LEASE_LOST|MAX_DELIVERIES)$/;

t.test(
  "outage - 10 s without nats-server mid-stream: every emitted token stored once, in order, or the attempt fails saying why",
  async (t) => {
    const ns = await startNats(t);
    const gw = await startGateway(t, ns.url);
    const agent = await startAgent(t, ns.url);
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
    const killedAt = Date.now();
    await check(() => /nats disconnect/.test(agent.stderr()), 10_000, { name: "the agent notices NATS is gone" });
    await check(() => Date.now() - killedAt >= OUTAGE_MS, OUTAGE_MS + 1_000, { name: "the outage lasts 10 s" });
    await ns.restart();

    const rec = await check(
      async () => {
        const j = await getJob(gw.url, jobId).catch(() => null);
        return j && TERMINAL.has(String(j.status)) ? j : null;
      },
      120_000,
      { name: `end of ${jobId}`, intervalMs: 200 },
    ).catch((err: Error) => {
      t.comment(`agent:\n${agent.stderr().slice(-3000)}\ngateway:\n${gw.stderr().slice(-2000)}`);
      throw err;
    });
    const stored = await readEvents(`${gw.url}/api/jobs/${jobId}/events?after=0`, { sse: false, timeoutMs: 30_000 });
    await follow;
    t.equal(stored.status, 200, "history readable through the gateway");
    t.ok(stored.ended, "the history replay ends (after the terminal event)");
    const events = stored.events.filter((e) => e.job_id === jobId && typeof e.seq === "number");
    const report = checkHistory(t, rec, events);
    stats.jobs++;
    stats.faults++;
    stats.eventsChecked += events.length;
    stats.lost += report.lost;
    t.comment(
      `10 s outage on one host: jobs run 1, faults injected 1, events checked ${events.length}, lost ${report.lost}, duplicated ${report.duplicated} (job ${String(rec.status)}, attempt ${String(rec.attempt)})`,
    );
    summary(t);
  },
);

/**
 * The contract on one job's stored history: per attempt, the token chunks are tok0, tok1, … with none missing,
 * repeated or out of order; a `completed` job has all COUNT of them in its last attempt; a job that did not
 * complete failed with a code that says its events could not be stored. Answers the tokens lost and duplicated.
 */
function checkHistory(t: T, rec: Msg & Record<string, unknown>, events: Msg[]): { lost: number; duplicated: number } {
  const seqs = events.map((e) => e.seq as number);
  t.same(
    seqs.filter((s, i) => i > 0 && s !== seqs[i - 1]! + 1),
    [],
    "stored seqs without gap, duplicate or reordering",
  );
  const terminals = events.filter((e) => e.type === "job_update" && TERMINAL.has(String(e.status)));
  t.equal(terminals.length, 1, "one terminal update, at the end");
  t.equal(events.at(-1), terminals[0], "the history ends with it");
  let duplicated = 0;
  const byAttempt = new Map<number, string[]>();
  for (const e of events) {
    if (e.type !== "chunk" || e.content === "") continue;
    const a = Number(e.attempt ?? 1);
    byAttempt.set(a, [...(byAttempt.get(a) ?? []), String(e.content)]);
  }
  for (const [a, chunks] of byAttempt) {
    const firstWrong = chunks.findIndex((c, i) => c !== `tok${i} `);
    duplicated += chunks.length - new Set(chunks).size;
    t.equal(firstWrong, -1, `attempt ${a}: tok0…tok${chunks.length - 1} in order, none missing or repeated`, {
      got: chunks.slice(Math.max(0, firstWrong - 1), firstWrong + 4),
    });
  }
  const lastAttempt = byAttempt.get(Math.max(0, ...byAttempt.keys())) ?? [];
  if (rec.status === "completed") {
    t.equal(lastAttempt.length, COUNT, `completed: all ${COUNT} tokens stored (${lastAttempt.length})`);
    t.same(rec.outputs, { text: [Array.from({ length: COUNT }, (_, i) => `tok${i} `).join("")] }, "and output");
    return { lost: COUNT - new Set(lastAttempt).size, duplicated };
  }
  t.equal(rec.status, "failed", "not completed: failed");
  t.match(String((rec.error as { code?: string } | undefined)?.code), UNSTORED, "with a code that says why");
  return { lost: 0, duplicated };
}
