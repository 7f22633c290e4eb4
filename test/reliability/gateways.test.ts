/**
 * Gateways are stateless: a client resumes on another gateway process than
 * the one it started on, and a gateway SIGTERM closes sockets with 1001 and clients resume on the restarted
 * gateway without losing an event.
 */
import t from "tap";
import { History } from "../helpers/history.js";
import { isTerminalMsg } from "../helpers/clients.js";
import { freePort, natsServerVersion } from "../helpers/nats-server.js";
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
  waitExit,
  waitJob,
  type GatewayProc,
  type StreamResult,
} from "./lib.js";

t.comment(`nats-server ${natsServerVersion()}, seed ${SEED} (repeat with NW_SEED=${SEED})`);
summaryAtEnd(t);

t.test(
  "gateways - a job started on one gateway resumes on another (WS, SSE Last-Event-ID, events?after), cut at random points",
  async (t) => {
    const ns = await startNats(t);
    const gw1 = await startGateway(t, ns.url);
    const gw2 = await startGateway(t, ns.url);
    await startAgent(t, ns.url, ["--max-jobs", "6"]);
    await putWorkflow(gw1.url, "tok", tokensWorkflow(300, 600));
    const h = new History().tokens("tok", 300);
    const rand = rng(SEED + 1);
    const failures: string[] = [];
    const kinds = ["ws", "ws-msgpack", "sse", "ndjson"] as const;
    const runs = Array.from({ length: 24 }, (_, i) => ({
      i,
      kind: kinds[i % kinds.length]!,
      k: 1 + Math.floor(rand() * 300),
    }));
    await Promise.all(
      runs.map(async (p) => {
        try {
          const log = h.client(`run${p.i}-${p.kind}`);
          if (p.kind.startsWith("ws")) {
            const enc = p.kind === "ws-msgpack" ? "msgpack" : "json";
            const c1 = await RecWs.open(gw1.url, log, enc);
            const jobId = await c1.run("tok");
            await c1.cutAfter(jobId, p.k);
            const c2 = await RecWs.open(gw2.url, log, enc);
            const hdr = await c2.resume(jobId);
            if (hdr.type !== "job_resumed") throw new Error(`answered ${JSON.stringify(hdr)}`);
            await c2.waitTerminal(jobId);
            await c2.close();
          } else {
            const sse = p.kind === "sse";
            const r1 = await readEvents(`${gw1.url}/api/workflows/tok/run?stream=true`, {
              method: "POST",
              body: {},
              sse,
              stopAfter: p.k,
              log,
            });
            const jobId = String(r1.events[0]!.job_id);
            const last = log.lastSeq(jobId);
            const r2 = sse
              ? await readEvents(`${gw2.url}/api/jobs/${jobId}/events`, {
                  sse,
                  headers: { "last-event-id": String(last) },
                  log,
                  timeoutMs: 30_000,
                })
              : await readEvents(`${gw2.url}/api/jobs/${jobId}/events?after=${last}`, { sse, log, timeoutMs: 30_000 });
            if (!r2.ended) throw new Error("the resumed stream did not end");
          }
          stats.jobs++;
          stats.faults++;
        } catch (err) {
          failures.push(`run ${p.i} (${p.kind}, cut after ${p.k}): ${(err as Error).message}`);
        }
      }),
    );
    t.same(failures, [], "every run resumed on the second gateway and ended");
    // A watcher on gw2 that never saw gw1 follows a job submitted on gw1 live from its start.
    const c = await RecWs.open(gw1.url, h.client("submitter"));
    const jobId = await c.run("tok");
    const w = await RecWs.open(gw2.url, h.client("watcher-on-gw2"));
    await w.resume(jobId, 0);
    await w.waitTerminal(jobId);
    await c.waitTerminal(jobId);
    await Promise.all([c.close(), w.close()]);
    stats.jobs++;
    await assertHistory(t, h, ns.url, "cross-gateway history");
  },
);

t.test(
  "gateways - SIGTERM closes sockets with 1001 and clients resume on the restarted gateway without loss",
  async (t) => {
    const ns = await startNats(t);
    const port = await freePort();
    const gw = await startGateway(t, ns.url, ["--port", String(port)]);
    await startAgent(t, ns.url, ["--max-jobs", "8", "--name", "a1"]);
    await startAgent(t, ns.url, ["--max-jobs", "8", "--name", "a2"]);
    await putWorkflow(gw.url, "tok", tokensWorkflow(1_200, 300));
    const h = new History().tokens("tok", 1_200);
    const rand = rng(SEED + 2);
    const N_WS = 12;
    const N_SSE = 4;
    const ws = await Promise.all(
      Array.from({ length: N_WS }, async (_, i) => RecWs.open(gw.url, h.client(`ws${i}`), i % 2 ? "msgpack" : "json")),
    );
    const wsJobs = await Promise.all(ws.map((c) => c.run("tok")));
    // SSE followers of jobs submitted over REST.
    const sseJobs: string[] = [];
    for (let i = 0; i < N_SSE; i++)
      sseJobs.push(
        String(
          (
            (await (
              await fetch(`${gw.url}/api/workflows/tok/run`, {
                method: "POST",
                body: "{}",
                headers: { "content-type": "application/json" },
              })
            ).json()) as { job_id: string }
          ).job_id,
        ),
      );
    const sseLogs = sseJobs.map((_, i) => h.client(`sse${i}`));
    const opened: Promise<void>[] = [];
    const sseFirst: Promise<StreamResult>[] = sseJobs.map((j, i) => {
      let open!: () => void;
      opened.push(new Promise<void>((r) => (open = r)));
      return readEvents(`${gw.url}/api/jobs/${j}/events`, {
        sse: true,
        log: sseLogs[i]!,
        allowDrop: true,
        timeoutMs: 60_000,
        onOpen: open,
      });
    });
    await Promise.all(opened);
    await check(
      () => wsJobs.every((j, i) => ws[i]!.log.count(j) >= 30) && sseJobs.every((j, i) => sseLogs[i]!.count(j) >= 30),
      20_000,
      { name: "every client is streaming" },
    );

    gw.proc.kill("SIGTERM");
    stats.faults++;
    t.equal(await waitExit(gw), 0, "the gateway exits 0 on SIGTERM");
    await check(() => ws.every((c) => c.closeCode !== null), 5_000, { name: "all sockets closed" });
    t.same([...new Set(ws.map((c) => c.closeCode))], [1001], "every WebSocket was closed with 1001 (going away)");
    const first = await Promise.all(sseFirst);
    // Jobs of 4 s, 30 events in: each stream was cut mid-job. One that ended cleanly must end at a terminal event.
    const how = first.map((r) =>
      r.dropped
        ? "dropped"
        : r.ended && isTerminalMsg(r.events.at(-1) ?? {})
          ? "terminal"
          : r.ended
            ? `ended at ${JSON.stringify(r.events.at(-1)?.type)}`
            : "open",
    );
    t.same(
      how.filter((h) => h !== "dropped" && h !== "terminal"),
      [],
      `SSE streams stopped: dropped, or ended at a terminal event (${how.join(", ")})`,
    );

    const gw2 = await startGateway(t, ns.url, ["--port", String(port)]);
    t.equal(gw2.url, gw.url, "the gateway is back on the same address");
    // Clients reconnect with jitter and resume from their last seq.
    await Promise.all([
      ...ws.map(async (c, i) => {
        await new Promise((r) => setTimeout(r, Math.floor(rand() * 300)));
        const c2 = await RecWs.open(gw2.url, c.log, i % 2 ? "msgpack" : "json");
        const hdr = await c2.resume(wsJobs[i]!);
        if (hdr.type !== "job_resumed") t.fail(`ws${i}: reconnect_job answered ${JSON.stringify(hdr)}`);
        await c2.waitTerminal(wsJobs[i]!, 30_000);
        await c2.close();
      }),
      ...sseJobs.map(async (j, i) => {
        const last = sseLogs[i]!.lastSeq(j);
        const r = await readEvents(`${gw2.url}/api/jobs/${j}/events`, {
          sse: true,
          headers: { "last-event-id": String(last) },
          log: sseLogs[i]!,
          timeoutMs: 30_000,
        });
        t.ok(r.ended, `sse${i} resumed from Last-Event-ID ${last} and ended`);
      }),
    ]);
    const recs = await Promise.all([...wsJobs, ...sseJobs].map((j) => getJob(gw2.url, j)));
    t.same(
      recs.filter((r) => r.status !== "completed" || r.attempt !== 1).map((r) => `${String(r.id)} ${String(r.status)}`),
      [],
      "every job completed on its first attempt",
    );
    stats.jobs += wsJobs.length + sseJobs.length;
    await assertHistory(t, h, ns.url, "gateway-restart history");
  },
);

t.test(
  "gateways - gateways started while jobs stream come up, and a client of the last one follows a job to its end",
  async (t) => {
    const ns = await startNats(t);
    const gw0 = await startGateway(t, ns.url);
    await startAgent(t, ns.url, ["--max-jobs", "4"]);
    await putWorkflow(gw0.url, "tok", tokensWorkflow(6_000, 1_500));
    const jobs: string[] = [];
    for (let i = 0; i < 4; i++)
      jobs.push(
        String(
          (
            (await (
              await fetch(`${gw0.url}/api/workflows/tok/run`, {
                method: "POST",
                body: "{}",
                headers: { "content-type": "application/json" },
              })
            ).json()) as { job_id: string }
          ).job_id,
        ),
      );
    await waitJob(gw0.url, jobs[0]!, (j) => j.status === "running", 20_000, "the first job runs");
    // Events reach each new gateway's hub while it is still starting; uWS once crashed on that (pinned on its own,
    // deterministically, in test/gateway/ws-publish.test.ts).
    const started: GatewayProc[] = [];
    for (let i = 0; i < 6; i++) started.push(await startGateway(t, ns.url));
    const h = new History().tokens("tok", 6_000);
    const c = await RecWs.open(started.at(-1)!.url, h.client("late"), "msgpack");
    const hdr = await c.resume(jobs[0]!);
    t.equal(hdr.type, "job_resumed", "a client of the last gateway started follows the job");
    await c.waitTerminal(jobs[0]!, 30_000);
    await c.close();
    t.same(
      started.map((g) => g.proc.exitCode ?? g.proc.signalCode),
      [null, null, null, null, null, null],
      "every gateway started during the stream still runs",
    );
    stats.jobs += jobs.length;
    await assertHistory(t, h, ns.url, "late-gateway history");
  },
);
