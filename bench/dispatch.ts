/**
 * Job dispatch. `POST /api/workflows/<id>/run?stream=true` → the first event from the runner at the client
 * (p50/p99, one job at a time), and sustained jobs/s of short jobs (hello-world, `?wait=true`, C in flight) on this
 * 2-core machine, nothing pinned. Peer (floor): the same dispatch as a bare uWS.js `POST /run` that does one core
 * NATS request/reply to a worker process and returns the reply. Full run only: the same stack on a 3-server
 * cluster, every stream at 3 replicas (`ours_r3`), judged as a ratio to the one-server stack, which runs twice
 * (`ours`, `ours_aa`) for that ratio's noise band.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { absGoal, alternate, emitGoal, invalid, log as mkLog, med, ratioGoal, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine } from "./lib/report.js";
import { startTs, type Spawned } from "./lib/procs.js";
import { NatsCluster, NatsServer, example, startAgent, startGateway, streamsNotAt } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "dispatch";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const cfg = quick
  ? { n: 30, concurrency: 32, durationMs: 1_500, rounds: 5 }
  : { n: 200, concurrency: 32, durationMs: 4_000, rounds: 6 };
const R3_GOAL = 2;

/** Gateway and agent on `natsUrl`, each stack with its own home; returns the gateway's URL and the workflow's id. */
async function ourStack(natsUrl: string): Promise<{ url: string; workflow: string }> {
  const env = { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-bench-home-")) };
  const gw = await startGateway(natsUrl, { env });
  await startAgent(natsUrl, gw.url, { maxJobs: 64, env });
  const body = JSON.stringify(example("hello-world"));
  const headers = { "content-type": "application/json" };
  const saved = await fetch(`${gw.url}/api/workflows`, { method: "POST", headers, body });
  if (saved.status !== 200) throw new Error(`cannot save the workflow: ${saved.status} ${await saved.text()}`);
  return { url: gw.url, workflow: ((await saved.json()) as { id: string }).id };
}

type Latency = { first: number[]; errors: string[]; errorCount: number };
type Throughput = { jobsPerS: number; errors: string[]; errorCount: number };

type Target = { mode: "ours"; base: string; workflow: string } | { mode: "floor"; base: string };

/** One arm: latency then throughput against `target`; failures go to `errors` under the arm's name. */
function dispatchArm(client: Spawned, errors: Map<string, string[]>, name: string, target: Target): Arm {
  return {
    name,
    async run() {
      const l = await client.call<Latency>({ op: "latency", ...target, n: cfg.n });
      const load = { concurrency: cfg.concurrency, durationMs: cfg.durationMs };
      const t = await client.call<Throughput>({ op: "throughput", ...target, ...load });
      const errs = [...l.errors, ...t.errors];
      const failed = `${l.errorCount + t.errorCount} failed: ${errs[0]}`;
      if (errs.length) errors.set(name, [...(errors.get(name) ?? []), failed]);
      const s = summarize(l.first);
      return { first_event_p50_ms: s.p50, first_event_p99_ms: s.p99, jobs_per_s: t.jobsPerS };
    },
  };
}

process.env.NODEWAY_HOME = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
const ns = await NatsServer.start();
const cluster = quick ? null : await NatsCluster.start({ size: 3 });
process.on("exit", () => void ns.stop());
process.on("exit", () => void cluster?.stop());
const lines: GoalLine[] = [];
const metrics = ["first_event_p50_ms", "jobs_per_s", ...(cluster ? ["first_event_p50_r3_vs_r1"] : [])];
try {
  const r1 = await ourStack(ns.url);
  const r3 = cluster ? await ourStack(cluster.url) : null;
  const r3Off = cluster ? await streamsNotAt(cluster.url, 3) : [];
  const floor = startTs("floor-server", "peers/floor-server.ts", [ns.url]);
  const floorPort = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
  const pub = startTs("floor-pub", "peers/floor-pub.ts", [ns.url]);
  await pub.waitFor(/floor-pub ready/);
  const client = startTs("dispatch-client", "clients/dispatch-client.ts", [], { ipc: true });
  await client.waitFor(/client ready/);

  const errors = new Map<string, string[]>();
  const arm = (name: string, target: Target) => dispatchArm(client, errors, name, target);
  const ours = (name: string, s: { url: string; workflow: string }) =>
    arm(name, { mode: "ours", base: s.url, workflow: s.workflow });
  const floorT: Target = { mode: "floor", base: `http://127.0.0.1:${floorPort}` };
  const arms = [ours("ours", r1), arm("floor", floorT), arm("floor_aa", floorT)];
  if (r3) arms.push(ours("ours_r3", r3), ours("ours_aa", r1));
  const res = await alternate(arms, cfg.rounds, log);
  rowsOf(BENCH, res, { first_event_p50_ms: "ms", first_event_p99_ms: "ms", jobs_per_s: "jobs/s" });
  const bad = (names: string[]) => names.flatMap((a) => (errors.get(a) ?? []).map((e) => `${a}: ${e}`));
  const e1 = bad(["ours", "floor", "floor_aa"]);
  const noise = (m: string) => Math.abs(med(res, "floor", m) - med(res, "floor_aa", m));
  const fe = "first_event_p50_ms";
  if (e1.length) {
    lines.push(invalid(BENCH, fe, "ours <= 5 ms", `invalid run: ${e1.slice(0, 3).join("; ")}`));
    lines.push(invalid(BENCH, "jobs_per_s", "ours >= 500 jobs/s", `invalid run: ${e1.slice(0, 3).join("; ")}`));
  } else {
    lines.push(absGoal(BENCH, fe, med(res, "ours", fe), med(res, "floor", fe), "<=", 5, "ms", noise(fe)));
    const jps = "jobs_per_s";
    lines.push(absGoal(BENCH, jps, med(res, "ours", jps), med(res, "floor", jps), ">=", 500, "jobs/s", noise(jps)));
  }
  if (r3) {
    const e3 = [...bad(["ours", "ours_aa", "ours_r3"]), ...r3Off.map((s) => `not at 3 replicas: ${s}`)];
    const rel = Math.abs(med(res, "ours", fe) - med(res, "ours_aa", fe)) / med(res, "ours", fe);
    const goal = `ratio <= ${R3_GOAL}`;
    const name = "first_event_p50_r3_vs_r1";
    if (e3.length) lines.push(invalid(BENCH, name, goal, `invalid run: ${e3.slice(0, 3).join("; ")}`));
    else lines.push(ratioGoal(BENCH, name, med(res, "ours_r3", fe), med(res, "ours", fe), "<=", R3_GOAL, rel));
  }
} catch (err) {
  const why = `bench failed: ${(err as Error).message.split("\n")[0]!.slice(0, 300)}`;
  for (const m of metrics) if (!lines.some((l) => l.metric === m)) lines.push(invalid(BENCH, m, "-", why));
  process.exitCode = 1;
} finally {
  for (const g of lines) emitGoal(g);
  await ns.stop();
  await cluster?.stop();
}
process.exit(process.exitCode ?? 0);
