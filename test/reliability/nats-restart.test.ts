/**
 * NATS restart under load: `kill -9` of nats-server while jobs stream and submits keep
 * coming, then a restart on the same port and store. Gateway and agents reconnect by themselves, running jobs
 * finish, every submit the gateway acknowledged exists afterwards, and every event the server acknowledged
 * reaches clients — those that kept their socket and those that resume on a new one. Every token a job emitted,
 * the outage included, reaches each of its clients once and in order (the agent's outbox republishes them).
 */
import t, { type Test } from "tap";
import { jetstreamManager } from "@nats-io/jetstream";
import { History, readJobLog } from "../helpers/history.js";
import { natsServerVersion } from "../helpers/nats-server.js";
import {
  RecWs,
  api,
  assertHistory,
  check,
  getJob,
  natsConn,
  putWorkflow,
  readEvents,
  startAgent,
  startGateway,
  startNats,
  stats,
  summaryAtEnd,
  tokensWorkflow,
} from "./lib.js";

t.comment(`nats-server ${natsServerVersion()}`);
summaryAtEnd(t);

const TOKENS = 900;

/** The text a Tokens job of TOKENS tokens outputs: what its record must hold. */
const TEXT = Array.from({ length: TOKENS }, (_, i) => `tok${i} `).join("");

/**
 * `long`: NATS stays down ~10 s (the gateway's health says so at once), past the end of the runs: the
 * agents record their results after the restart, or the job runs again (attempt 2). Short: restarted as soon as
 * every process noticed the loss; the runs carry on.
 */
async function natsBounce(t: Test, long: boolean): Promise<void> {
  const t0 = Date.now();
  const phases: string[] = [];
  const mark = (name: string) => phases.push(`${name} +${Date.now() - t0}`);
  const ns = await startNats(t);
  const gw = await startGateway(t, ns.url);
  const a1 = await startAgent(t, ns.url, ["--max-jobs", "6", "--name", "a1"]);
  const a2 = await startAgent(t, ns.url, ["--max-jobs", "6", "--name", "a2"]);
  await putWorkflow(gw.url, "tok", tokensWorkflow(TOKENS, 300));
  await putWorkflow(gw.url, "short", tokensWorkflow(10, 1_000));
  // Every client of a "tok" job is checked against the tokens the node emitted, per attempt, and its result.
  const h = new History().tokens("tok", TOKENS);

  // Six streaming jobs: three clients keep their socket through the outage, three resume on a new one after it;
  // two more follow over NDJSON (GET …/events) on connections that stay open.
  const keepers = await Promise.all(
    [0, 1, 2].map((i) => RecWs.open(gw.url, h.client(`keep${i}`), i % 2 ? "msgpack" : "json")),
  );
  const resumers = await Promise.all(
    [0, 1, 2].map((i) => RecWs.open(gw.url, h.client(`resume${i}`), i % 2 ? "json" : "msgpack")),
  );
  const keepJobs = await Promise.all(keepers.map((c) => c.run("tok")));
  const resJobs = await Promise.all(resumers.map((c) => c.run("tok")));
  const ndLogs = [h.client("nd0"), h.client("nd1")];
  const ndJobs = [keepJobs[0]!, resJobs[0]!];
  const nd = ndJobs.map((j, i) =>
    readEvents(`${gw.url}/api/jobs/${j}/events`, { sse: false, log: ndLogs[i]!, timeoutMs: 90_000 }),
  );

  // A steady trickle of submits across the outage: every one answered 202 must exist afterwards.
  const acked: string[] = [];
  let refused = 0;
  let submitting = true;
  const submitter = (async () => {
    while (submitting) {
      const r = await api(gw.url, "POST", "/api/workflows/short/run", {}).catch(() => null);
      if (r?.status === 202) acked.push(String(r.body.job_id));
      else refused++;
      await new Promise((res) => setTimeout(res, 50));
    }
  })();

  const counts = () => [...keepers, ...resumers].map((c, i) => c.log.count([...keepJobs, ...resJobs][i]!));
  await check(() => counts().every((n) => n >= 100), 20_000, { name: "every job streaming" }).catch((err: Error) => {
    t.comment(
      `events per job: ${counts().join(", ")}\na1:\n${a1.stderr().slice(-1500)}\na2:\n${a2.stderr().slice(-1500)}`,
    );
    throw err;
  });
  const ackedBefore = acked.length;
  mark("const ackedBefore = ");
  await ns.kill9();
  stats.faults++;
  const killedAt = Date.now();
  await check(() => [gw, a1, a2].every((p) => /nats disconnect/.test(p.stderr())), 15_000, {
    name: "gateway and agents notice NATS is gone",
  });
  t.pass(`gateway and agents noticed the disconnect within ${Date.now() - killedAt} ms`);
  if (long) {
    // The gateway noticed the loss (above): its health must say so at once, not after JetStream requests time out.
    const noticed = Date.now();
    const health = await api(gw.url, "GET", "/health");
    t.equal(
      health.status,
      503,
      `health says unavailable as soon as the gateway knows (${Date.now() - noticed} ms to answer)`,
    );
    t.match(health.body, { nats: "disconnected", streams: false });
    // Keep NATS away ~10 s in all: past the end of the runs and well past the agents' in-progress ack period.
    while (Date.now() - killedAt < 10_000) await new Promise((r) => setTimeout(r, 100));
  }
  for (const c of resumers) c.kill();
  await ns.restart();
  mark("await ns.restart();");
  const restartedAt = Date.now();
  await check(async () => (await api(gw.url, "GET", "/health")).status === 200, 30_000, {
    name: "gateway reconnected",
  });
  t.pass(`the gateway reconnected by itself (${Date.now() - restartedAt} ms after the restart)`);
  await check(async () => ((await api(gw.url, "GET", "/api/agents")).body.agents as unknown[]).length === 2, 30_000, {
    name: "both agents registered again",
  }).catch(async (err: Error) => {
    t.comment(
      `agents: ${JSON.stringify((await api(gw.url, "GET", "/api/agents")).body)}\na1:\n${a1.stderr().slice(-3000)}\ngateway:\n${gw.stderr().slice(-2000)}`,
    );
    throw err;
  });
  t.pass("both agents reconnected and heartbeat again");
  mark('t.pass("both agents ');
  await check(() => acked.length > ackedBefore + 5, 30_000, { name: "submits accepted again" });
  submitting = false;
  await submitter;
  mark("submitting = false;\n");

  const retries: string[] = [];
  // Every connection each resuming client had, in order: together they are what its user saw.
  const resumedOn: RecWs[][] = resumers.map((c) => [c]);
  const diag = async (err: Error) => {
    t.comment(`failed: ${err.message}; gateway exit code ${gw.proc.exitCode}, signal ${gw.proc.signalCode}`);
    const metrics =
      ((await api(gw.url, "GET", "/metrics").catch(() => null))?.body.raw as string | undefined) ??
      "(gateway not answering)";
    t.comment(`gateway events in: ${/nodeway_events_in_total (\d+)/.exec(metrics)?.[1]}`);
    const nc = await natsConn(t, ns.url);
    for (const j of resJobs) {
      const log = await readJobLog(nc, j);
      t.comment(
        `${j}: stored ${log.stored.length}, last seq ${log.stored.at(-1)?.seq}, terminal ${JSON.stringify(log.terminal?.seq)}`,
      );
    }
    const recs = await Promise.all(
      [...keepJobs, ...resJobs].map((j) =>
        getJob(gw.url, j).catch((e: Error) => ({ id: j, error: e.message }) as Record<string, unknown>),
      ),
    );
    t.comment(
      `records: ${JSON.stringify(recs.map((r) => [r.id, (r as Record<string, unknown>).status, (r as Record<string, unknown>).attempt, (r as Record<string, unknown>).agent_id]))}`,
    );
    t.comment(
      `a1:\n${a1.stderr().slice(-3000)}\na2:\n${a2.stderr().slice(-3000)}\ngateway:\n${gw.stderr().slice(-3000)}`,
    );
    throw err;
  };
  // Clients that lost their socket resume on a new one.
  await Promise.all(
    resumers.map(async (c, i) => {
      // A client retries a resume the gateway could not serve yet (JetStream still recovering), as a real one would.
      // If the stream then stalls (seen under heavy load right after the restart), it reconnects from its last
      // seq, as a client with a stall timer does; the history check below still catches any loss.
      for (let attempt = 1; !c.log.ended(resJobs[i]!); attempt++) {
        const c2 = await RecWs.open(gw.url, c.log);
        resumedOn[i]!.push(c2);
        await check(
          async () => {
            const hdr = await c2.resume(resJobs[i]!);
            if (hdr.type === "job_resumed") return true;
            retries.push(`resume${i}: ${JSON.stringify(hdr.error)}`);
            return false;
          },
          30_000,
          { name: `resume${i} accepted`, intervalMs: 500 },
        );
        try {
          await c2.waitTerminal(resJobs[i]!, 25_000);
        } catch (err) {
          retries.push(`resume${i}: stalled, reconnecting`);
          if (attempt >= 3) throw err;
        }
        await c2.close();
      }
    }),
  ).catch(diag);
  if (retries.length > 0) t.comment(`resume retries: ${retries.join("; ")}`);
  for (const [i, c] of keepers.entries()) await c.waitTerminal(keepJobs[i]!, 60_000);
  t.pass("clients that kept their socket received their jobs' terminal events live");
  mark('t.pass("clients that');
  const ndRes = await Promise.all(nd);
  t.ok(
    ndRes.every((r) => r.ended),
    "NDJSON followers ended after the terminal event",
  );

  const all = [...keepJobs, ...resJobs];
  const recs = await Promise.all(all.map((j) => getJob(gw.url, j)));
  t.same(
    recs.filter((r) => r.status !== "completed").map((r) => `${String(r.id)} ${String(r.status)}`),
    [],
    "every running job finished (completed)",
  );
  t.comment(`attempts of the streaming jobs: ${recs.map((r) => String(r.attempt)).join(",")}`);
  const wrongText = recs.filter((r) => (r.outputs as { text?: string[] } | null)?.text?.[0] !== TEXT).map((r) => r.id);
  t.same(wrongText, [], `every record's output is the ${TOKENS} tokens`);
  const missing: string[] = [];
  for (const id of acked) if ((await api(gw.url, "GET", `/api/jobs/${id}`)).status !== 200) missing.push(id);
  t.same(
    missing,
    [],
    `every acknowledged submit exists afterwards (${acked.length} acknowledged, ${refused} refused during the outage)`,
  );
  const unfinished = await check(
    async () => {
      const states = await Promise.all(acked.map((id) => getJob(gw.url, id)));
      const open = states.filter((s) => s.status !== "completed");
      return open.length === 0 ? [] : null;
    },
    60_000,
    { name: "every acknowledged submit completes" },
  ).catch(async (err: Error) => {
    const states = await Promise.all(
      acked.map((id) => getJob(gw.url, id).catch((e: Error) => ({ id, status: e.message }) as Record<string, unknown>)),
    );
    const open = states.filter((s) => s.status !== "completed");
    t.comment(`unfinished: ${JSON.stringify(open.map((r) => [r.id, r.status, r.attempt, r.agent_id]))}`);
    const jsm = await jetstreamManager(await natsConn(t, ns.url));
    const info = await jsm.streams.info("NW_JOBS").catch(() => null);
    t.comment(`NW_JOBS: ${JSON.stringify(info?.state)}`);
    for (const c of ["pool_cpu"])
      t.comment(
        `${c}: ${JSON.stringify((await jsm.consumers.info("NW_JOBS", c).catch(() => null))?.num_pending)} pending, ${JSON.stringify((await jsm.consumers.info("NW_JOBS", c).catch(() => null))?.num_ack_pending)} ack pending, ${JSON.stringify((await jsm.consumers.info("NW_JOBS", c).catch(() => null))?.num_waiting)} waiting pulls`,
      );
    for (const r of open) {
      for (const [name, a] of [
        ["a1", a1],
        ["a2", a2],
      ] as const) {
        t.comment(
          `${name} on ${String(r.id)}:\n${a
            .stderr()
            .split("\n")
            .filter((l) => l.includes(String(r.id)))
            .join("\n")}`,
        );
      }
    }
    t.comment(`a1:\n${a1.stderr().slice(-2000)}\na2:\n${a2.stderr().slice(-2000)}`);
    throw err;
  });
  t.same(unfinished, [], "and every one of them completes");
  mark("t.same(unfinished, [");
  for (const c of keepers) await c.close();
  t.equal(a1.proc.exitCode, null, "agent 1 survived");
  t.equal(a2.proc.exitCode, null, "agent 2 survived");
  stats.jobs += all.length + acked.length;
  await assertHistory(t, h, ns.url, "nats-restart history");
  mark("history");
  t.comment(phases.join(", "));
}

t.test(
  "nats - kill -9 of nats-server mid-stream, restarted at once: gateway and agents reconnect, running jobs finish, no acknowledged submit or event is lost",
  (t) => natsBounce(t, false),
);
t.test(
  "nats - kill -9 of nats-server for ~10 s, past the end of the runs: every job still finishes after the restart, no acknowledged submit or event is lost",
  (t) => natsBounce(t, true),
);
