/**
 * Resume at random points: 100 runs of a 500-token job, each cut at a random event and
 * resumed — WS `reconnect_job {job_id, last_seq}`, SSE `Last-Event-ID`, and `GET /api/jobs/{id}/events?after=` —
 * some while the job runs, some after it finished. The history checker compares every client's log with NW_EVENTS.
 */
import t from "tap";
import { History } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import {
  SEED,
  RecWs,
  assertHistory,
  check,
  getJob,
  putWorkflow,
  readEvents,
  rng,
  startAgent,
  startGateway,
  startNats,
  stats,
  summaryAtEnd,
  tokensWorkflow,
  waitJob,
  type Msg,
} from "./lib.js";

const RUNS = 100;
const TOKENS = 500;
const RATE = 2_000;
const PARALLEL = 8;

t.comment(`nats-server ${natsServerVersion()}, seed ${SEED} (repeat with NW_SEED=${SEED})`);
summaryAtEnd(t);

t.test(
  "resume - 100 runs of a 500-token job cut at a random seq resume over WS, SSE Last-Event-ID and events?after with no gap or duplicate",
  async (t) => {
    const ns = await startNats(t);
    const gw = await startGateway(t, ns.url);
    await startAgent(t, ns.url, ["--max-jobs", String(PARALLEL / 2), "--name", "a1"]);
    await startAgent(t, ns.url, ["--max-jobs", String(PARALLEL / 2), "--name", "a2"]);
    await putWorkflow(gw.url, "tok", tokensWorkflow(TOKENS, RATE));
    const h = new History().tokens("tok", TOKENS);
    const rand = rng(SEED);

    // One uncut run tells how many events a whole run has, so every cut lands before the terminal event.
    const probe = h.client("probe");
    const first = await readEvents(`${gw.url}/api/workflows/tok/run?stream=true`, {
      method: "POST",
      body: { params: {} },
      sse: false,
      log: probe,
    });
    t.ok(first.ended, "an uncut NDJSON run ends after its terminal event");
    const total = first.events.filter((e) => typeof e.seq === "number").length;
    t.ok(total > TOKENS, `a run has ${total} events (${TOKENS} tokens plus updates)`);
    stats.jobs++;

    const variants = ["ws-json", "ws-msgpack", "ws-json", "sse", "ndjson"] as const;
    const plan = Array.from({ length: RUNS }, (_, i) => ({
      i,
      variant: variants[i % variants.length]!,
      // Cut after k events: 0 (before any was counted) up to total - 1 (just before the terminal event).
      k: Math.floor(rand() * total),
      afterEnd: rand() < 0.2,
    }));
    const failures: string[] = [];
    const byVariant: Record<string, number> = {};

    const one = async (p: (typeof plan)[number]): Promise<void> => {
      try {
        await run(p);
      } catch (err) {
        failures.push(
          `run ${p.i} (${p.variant}, cut after ${p.k}${p.afterEnd ? ", resumed after the end" : ""}): ${(err as Error).message}`,
        );
      }
    };
    const run = async (p: (typeof plan)[number]): Promise<void> => {
      const log = h.client(`run${p.i}-${p.variant}`);
      let jobId: string;
      if (p.variant.startsWith("ws")) {
        const enc = p.variant === "ws-msgpack" ? "msgpack" : "json";
        const c1 = await RecWs.open(gw.url, log, enc);
        jobId = await c1.run("tok");
        await c1.cutAfter(jobId, p.k);
        if (p.afterEnd) await waitJob(gw.url, jobId, (j) => j.status === "completed", 30_000);
        const c2 = await RecWs.open(gw.url, log, enc);
        const lastSeq = log.lastSeq(jobId);
        const before = c2.messages().length;
        const hdr = await c2.resume(jobId, lastSeq);
        if (hdr.type !== "job_resumed") throw new Error(`run ${p.i}: reconnect_job answered ${JSON.stringify(hdr)}`);
        await c2.waitTerminal(jobId);
        const after = c2.messages().slice(before);
        const replayed = after.filter(
          (m) => typeof m.seq === "number" && m.job_id === jobId && (m.seq as number) <= (hdr.last_seq as number),
        ).length;
        if (replayed !== hdr.replay_count)
          failures.push(
            `run ${p.i}: job_resumed replay_count ${String(hdr.replay_count)} but ${replayed} events up to its last_seq followed`,
          );
        if (after.findIndex((m) => m.type === "job_resumed") !== 0)
          failures.push(`run ${p.i}: job_resumed is not the first frame after reconnect_job`);
        if (p.afterEnd && hdr.status !== "completed")
          failures.push(`run ${p.i}: resumed a finished job but job_resumed.status is ${String(hdr.status)}`);
        await c2.close();
      } else {
        const sse = p.variant === "sse";
        const r1 = await readEvents(`${gw.url}/api/workflows/tok/run?stream=true`, {
          method: "POST",
          body: { params: {} },
          sse,
          stopAfter: Math.max(1, p.k),
          log,
        });
        jobId = String(r1.events[0]!.job_id);
        if (!r1.cut) failures.push(`run ${p.i}: the first stream ended before the cut`);
        if (p.afterEnd) await waitJob(gw.url, jobId, (j) => j.status === "completed", 30_000);
        const lastSeq = log.lastSeq(jobId);
        if (sse && r1.ids.at(-1) !== String(lastSeq))
          failures.push(`run ${p.i}: last SSE id ${String(r1.ids.at(-1))} is not the last seq ${lastSeq}`);
        const r2 = sse
          ? await readEvents(`${gw.url}/api/jobs/${jobId}/events`, {
              sse: true,
              headers: { "last-event-id": String(lastSeq) },
              log,
              timeoutMs: 30_000,
            })
          : await readEvents(`${gw.url}/api/jobs/${jobId}/events?after=${lastSeq}`, { sse: false, log });
        if (r2.status !== 200 || !r2.ended)
          failures.push(`run ${p.i}: resumed stream status ${r2.status}, ended ${r2.ended}`);
        const end = r2.events.at(-1) as Msg | undefined;
        if (end?.type !== "job_update" || end.status !== "completed")
          failures.push(`run ${p.i}: resumed stream does not end with the terminal update`);
        if (sse && r2.ids.join(",") !== r2.events.map((e) => String(e.seq)).join(","))
          failures.push(`run ${p.i}: SSE ids are not the seqs`);
      }
      byVariant[p.variant] = (byVariant[p.variant] ?? 0) + 1;
      stats.jobs++;
      stats.faults++;
    };

    const started = Date.now();
    const queue = [...plan];
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        for (let p = queue.shift(); p; p = queue.shift()) await one(p);
      }),
    );
    t.comment(
      `${RUNS} cut-and-resume runs in ${Date.now() - started} ms: ${JSON.stringify(byVariant)}, ${plan.filter((p) => p.afterEnd).length} resumed after the job finished`,
    );
    t.same(failures, [], "every resume answered a consistent header and ended with the terminal update");
    if (failures.length > 0) t.comment(`gateway stderr:\n${gw.stderr().slice(-4000)}`);
    const r = await assertHistory(t, h, ns.url, "resume history");
    t.equal(r.jobs, RUNS + 1, "every run is in the history");
    t.comment(`${r.fencedOff} stored events fenced off (late queue-position updates)`);
    const recs = await Promise.all(h.jobIds().map((j) => getJob(gw.url, j)));
    t.same(
      recs
        .filter((r) => r.status !== "completed" || r.attempt !== 1)
        .map((r) => `${r.id}: ${String(r.status)} attempt ${String(r.attempt)}`),
      [],
      "every run completed, once",
    );
  },
);

t.test("resume - a socket watching many jobs resumes each from its own last seq", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  await startAgent(t, ns.url, ["--max-jobs", "4"]);
  await putWorkflow(gw.url, "tok", tokensWorkflow(200, 200));
  const h = new History().tokens("tok", 200);
  const log = h.client("multi");
  const c1 = await RecWs.open(gw.url, log);
  const jobs = await Promise.all([0, 1, 2, 3].map(() => c1.run("tok")));
  await check(() => jobs.every((j) => log.count(j) >= 20), 20_000, { name: "20 events of each job" });
  c1.kill();
  stats.faults++;
  const c2 = await RecWs.open(gw.url, log, "msgpack");
  for (const j of jobs) {
    const hdr = await c2.resume(j);
    t.equal(hdr.type, "job_resumed", `job_resumed for ${j}`);
  }
  for (const j of jobs) await c2.waitTerminal(j);
  await c2.close();
  stats.jobs += jobs.length;
  await assertHistory(t, h, ns.url, "multi-job socket history");
});

t.test("resume - a seq older than retention answers replay_incomplete with the job's current state", async (t) => {
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url, ["--events-max-age-ms", "1500"]);
  await startAgent(t, ns.url);
  await putWorkflow(gw.url, "tok", tokensWorkflow(5, 1_000));
  const h = new History();
  const c = await RecWs.open(gw.url, h.client("old"));
  const jobId = await c.run("tok");
  await c.waitTerminal(jobId);
  await c.close();
  stats.jobs++;
  // Let retention remove the job's events (the stream's max age), then resume from the start.
  await check(
    async () => {
      const r = await readEvents(`${gw.url}/api/jobs/${jobId}/events?after=1`, { sse: false, timeoutMs: 5_000 });
      return r.events[0]?.replay_incomplete === true ? r : null;
    },
    20_000,
    { name: "events expired" },
  );
  const c2 = await RecWs.open(gw.url, h.client("late"));
  const hdr = await c2.resume(jobId, 1);
  t.match(
    hdr,
    { type: "job_resumed", job_id: jobId, status: "completed", replay_incomplete: true, replay_count: 0 },
    "job_resumed says the replay is incomplete",
  );
  const upd = await check(() => c2.messages().find((m) => m.type === "job_update" && m.job_id === jobId));
  t.match(upd, { status: "completed" }, "followed by the job's current state");
  await c2.close();
});
