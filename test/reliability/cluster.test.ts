/**
 * Lose nothing on many hosts: a fleet of separate processes (3 clustered nats-servers, 2 gateways behind the TLS
 * proxy, 3 agents) runs `nodeway.test.Tokens` jobs while servers and processes are killed. Clients follow their
 * jobs through the proxy, resuming from their last seq when a socket drops; the history checker then compares
 * every client's events with NW_EVENTS: each event once, in order, none missing.
 */
import t from "tap";
import { History, type ClientLog } from "../helpers/history.js";
import { Fleet } from "../helpers/fleet.js";
import { natsServerVersion, type NatsServer } from "../helpers/nats-server.js";
import {
  RecWs,
  SEED,
  assertHistory,
  type T,
  check,
  getJob,
  putWorkflow,
  stats,
  summary,
  tokensWorkflow,
} from "./lib.js";

const STREAMS = ["NW_JOBS", "NW_EVENTS", "KV_nw_jobs", "KV_nw_agents"];
/** Tokens per job and per second: about 3 s of streaming, long enough to fault mid-job. */
const TOKENS = 240;
const RATE = 80;
/**
 * The rolling restart's jobs: ~24 s of streaming at a lower rate, so that all 20 still stream when the last
 * server goes down (a roll takes 8–15 s on two busy cores) without more events than the other scenarios' total.
 */
const ROLL_TOKENS = 480;
const ROLL_RATE = 20;
const ROLL_JOBS = 20;
/** A client gives up on a job after this: a 24 s job ends within it across any one fault and its failover. */
const FOLLOW_MS = 75_000;

t.comment(`nats-server ${natsServerVersion()}, seed ${SEED}`);

// The proxy's certificate is self-signed: trust it for this process's fetches and sockets.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
// A job on a killed agent is redelivered after the ack wait: short, so the run fits the time box.
// 3 agents × 8 jobs: the rolling restart's 20 jobs all run at once.
// Runs inline: 20 jobs starting at once would start 20 runner threads on a loaded 2-core machine, which can take
// longer than the roll's window; this file is about NATS faults, not runner start-up.
const fleet = await Fleet.start({
  gatewayArgs: ["--ack-wait-ms", "3000"],
  agentArgs: ["--max-jobs", "8", "--strategies", "inline"],
});
t.teardown(() => fleet.stop());
await putWorkflow(fleet.front, "tok", tokensWorkflow(TOKENS, RATE));
await putWorkflow(fleet.front, "tok-roll", tokensWorkflow(ROLL_TOKENS, ROLL_RATE));

/** A client that runs one job through the proxy and follows it to its end, resuming on a new socket as needed. */
async function follow(log: ClientLog, timeoutMs: number, workflow: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let c = await RecWs.open(fleet.front, log);
  const jobId = await c.run(workflow);
  while (!log.ended(jobId)) {
    await check(() => log.ended(jobId) || !c.open, deadline - Date.now(), {
      name: `${jobId} ends or its socket drops`,
      intervalMs: 50,
    });
    if (log.ended(jobId)) break;
    c = await check(() => resume(log, jobId), deadline - Date.now(), {
      name: `${jobId} resumed through the proxy`,
      intervalMs: 200,
    });
  }
  await c.close();
  return jobId;
}

/** One try at `reconnect_job` on a new socket; null when it did not take. */
async function resume(log: ClientLog, jobId: string): Promise<RecWs | null> {
  const c = await RecWs.open(fleet.front, log).catch(() => null);
  if (!c) return null;
  const hdr = await c.resume(jobId).catch(() => null);
  if (hdr?.type === "job_resumed") return c;
  c.kill();
  return null;
}

/** What a fault sees: the jobs so far, and a way to start more while it goes on. */
interface Run {
  ids: Promise<string>[];
  more(): void;
}

interface Outcome {
  faults: number;
  /** Whatever the fault took down, started again (the fleet whole for the next scenario). */
  heal?: () => Promise<void>;
}

/**
 * Runs `jobs` jobs, calls `fault` once every job has streamed a little, waits for every job's end, heals the
 * fleet, and checks the history; prints the scenario's counts.
 */
async function scenario(
  t: T,
  name: string,
  jobs: number,
  fault: (run: Run) => Promise<Outcome>,
  workflow = "tok",
): Promise<void> {
  const h = new History();
  const run: Run = {
    ids: [],
    more() {
      const p = follow(h.client(`c${this.ids.length}`), FOLLOW_MS, workflow);
      p.catch(() => undefined);
      this.ids.push(p);
    },
  };
  for (let i = 0; i < jobs; i++) run.more();
  const why = run.ids.map(() => "no job yet");
  for (const [i, p] of run.ids.entries()) p.catch((err: unknown) => (why[i] = `failed: ${String(err).slice(0, 200)}`));
  const streaming = () => h.clients.every((l) => [...l.jobs.values()].some((f) => f.got.length >= 20));
  await check(streaming, 30_000, { name: "every job streams" }).catch(async (err: unknown) => {
    const seen = h.clients.map(
      (l, i) => [...l.jobs.entries()].map(([j, f]) => `${j}: ${f.got.length} events`).join() || why[i],
    );
    t.comment(`gateways said:\n${gatewayLines()}`);
    throw new Error(`${(err as Error).message} (${seen.join("; ")})`);
  });
  const outcome = await fault(run);
  const ids = run.ids;
  const done = await Promise.allSettled(ids);
  const failed = done.filter((d) => d.status === "rejected").map((d) => String((d as PromiseRejectedResult).reason));
  t.same(failed, [], "every client followed its job to the end");
  await outcome.heal?.();
  await fleet.nats.waitHealed(STREAMS, 60_000);
  const ended = done.filter((d): d is PromiseFulfilledResult<string> => d.status === "fulfilled").map((d) => d.value);
  // A record follows its job's terminal event by a moment (longer while the agent's outbox drains after a fault).
  const notCompleted = async () => {
    const recs = await Promise.all(ended.map((id) => getJob(fleet.front, id)));
    return recs.filter((r) => r.status !== "completed").map((r) => `${String(r.id)} ${String(r.status)}`);
  };
  let left: string[] = [];
  await check(async () => (left = await notCompleted()).length === 0, 30_000, { name: "records completed" }).catch(
    () => undefined,
  );
  t.same(left, [], "every job completed");
  const r = await assertHistory(t, h, fleet.nats.liveUrl(), name);
  const duplicated = r.problems.filter((p) => p.kind === "duplicated").length;
  stats.jobs += ids.length;
  stats.faults += outcome.faults;
  if (!r.ok || failed.length > 0) t.comment(`gateways said:\n${gatewayLines()}`);
  t.comment(
    `${name}: jobs run ${ids.length}, faults injected ${outcome.faults}, events checked ${r.eventsChecked}, lost ${r.lost}, duplicated ${duplicated}`,
  );
}

/** What the gateways logged about NATS and their event consumer (evidence when a scenario fails). */
function gatewayLines(): string {
  const lines = fleet.gateways.flatMap((g, i) =>
    (g.stdout() + g.stderr())
      .split("\n")
      .filter((l) => /nats|consumer|event/i.test(l))
      .map((l) => `gw${i} ${l.slice(0, 200)}`),
  );
  return lines.slice(-30).join("\n");
}

/** SIGKILL of one nats-server; it comes back (same port and store) when the scenario heals. */
async function killServer(node: NatsServer): Promise<Outcome> {
  await node.kill9();
  return { faults: 1, heal: () => node.restart() };
}

/** The first server with a client connection whose name starts with `prefix`. */
async function serverOf(prefix: string): Promise<NatsServer> {
  for (const n of fleet.nats.nodes) if (n.running && (await fleet.nats.connections(n, prefix)) > 0) return n;
  throw new Error(`no nats-server has a ${prefix} connection`);
}

t.test("cluster - SIGKILL of the NW_EVENTS stream leader mid-job", async (t) => {
  await scenario(t, "events leader killed", 6, async () => killServer(await fleet.nats.leaderOf("NW_EVENTS")));
});

t.test("cluster - SIGKILL of the nats-server a gateway is connected to", async (t) => {
  await scenario(t, "gateway's server killed", 6, async () => killServer(await serverOf("nodeway-gateway")));
});

t.test("cluster - SIGKILL of the nats-server an agent is connected to", async (t) => {
  await scenario(t, "agent's server killed", 6, async () => killServer(await serverOf("nodeway-agent-")));
});

t.test("cluster - rolling restart of the three servers while 20 jobs stream", async (t) => {
  // 20 jobs of ~24 s each, all started before the roll and streaming through it; every job must still be
  // streaming when the last server goes down (checked: the roll fits in their time). Submits come before the
  // faults: one whose PubAck was lost with its server is answered 503 with the job failed (half-submit tests that).
  await scenario(
    t,
    "rolling restart",
    ROLL_JOBS,
    async (run) => {
      let faults = 0;
      const settled = new Set<number>();
      run.ids.forEach((p, i) => void p.finally(() => settled.add(i)).catch(() => undefined));
      for (const node of fleet.nats.nodes) {
        t.equal(settled.size, 0, `no job ended before server ${faults + 1} of 3 went down`);
        await node.terminate();
        faults++;
        await node.restart();
        await fleet.nats.waitHealed(STREAMS, 60_000);
      }
      return { faults };
    },
    "tok-roll",
  );
});

t.test("cluster - SIGKILL of a gateway and of an agent in the same run", async (t) => {
  await scenario(t, "gateway and agent killed", 6, async () => {
    await Promise.all([fleet.gateways[0]!.kill("SIGKILL"), fleet.agents[0]!.kill("SIGKILL")]);
    return { faults: 2, heal: async () => void (await Promise.all([fleet.startGateway(0), fleet.startAgent(0)])) };
  });
});

t.test("cluster - summary", async (t) => {
  t.equal(stats.lost, 0, "no event lost in this file");
  summary(t);
});
