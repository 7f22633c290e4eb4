/**
 * Job dispatch. `POST /api/workflows/<id>/run?stream=true` → the first event from the runner at the client
 * (p50/p99, one job at a time), and sustained jobs/s of short jobs (hello-world, `?wait=true`, C in flight) on this
 * 2-core machine, nothing pinned. Peer (floor): the same dispatch as a bare uWS.js `POST /run` that does one core
 * NATS request/reply to a worker process and returns the reply. Full run only: the same stack on a 3-server
 * cluster, every stream at 3 replicas (`ours_r3`), judged as a ratio to the one-server stack, which runs twice
 * (`ours`, `ours_aa`) for that ratio's noise band; and BullMQ side by side (`bullmq`, `bullmq_aa`: Debian's
 * redis-server with AOF `everysec`, `Queue` + `QueueEvents` at the client, a `Worker` of concurrency C in its own
 * process) against `nodeway up` as a user starts it, with its default `--max-jobs` (`up_*`) and with
 * `--max-jobs C` (`up32_*`), each through `fetch` and through one WebSocket (`run_job`).
 * `BENCH_DISPATCH_ARMS=a,b,…` runs only those arms (diagnostics; lines whose arms did not run are invalid).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { absGoal, alternate, emitGoal, invalid, log as mkLog, med, ratioGoal, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine } from "./lib/report.js";
import { startTs, type Spawned } from "./lib/procs.js";
import { startRedis } from "./lib/redis.js";
import { NatsCluster, NatsServer, example, startAgent, startGateway, startUp, streamsNotAt } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "dispatch";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const cfg = quick
  ? { n: 30, concurrency: 32, durationMs: 1_500, rounds: 5 }
  : { n: 200, concurrency: 32, durationMs: 3_000, rounds: 6 };
const R3_GOAL = 2;
const chosen = process.env.BENCH_DISPATCH_ARMS?.split(",");
const wanted = (arm: string) => !chosen || chosen.includes(arm);

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

/** What a client process is asked to measure against (dispatch-client: `ours`/`floor`; queue-client: the rest). */
type Target =
  | { mode: "ours"; base: string; workflow: string }
  | { mode: "floor"; base: string }
  | {
      target:
        | { mode: "fetch" | "ws"; base: string; workflow: string }
        | { mode: "bullmq"; port: number; queue: string };
    };

/** One arm: latency then throughput against `target`; failures go to `errors` under the arm's name. */
function dispatchArm(client: Spawned, errors: Map<string, string[]>, name: string, target: Target): Arm {
  return {
    name,
    async run(round) {
      const l = await client.call<Latency>({ op: "latency", ...target, n: cfg.n });
      const load = { concurrency: cfg.concurrency, durationMs: cfg.durationMs };
      const t = await client.call<Throughput>({ op: "throughput", ...target, ...load });
      const errs = [...l.errors, ...t.errors];
      const failed = `${l.errorCount + t.errorCount} failed: ${errs[0]}`;
      // The warm-up round's failures are logged, not held against the line: its figures are dropped too.
      if (errs.length && round === 0) log(`warm-up ${name}: ${failed}`);
      else if (errs.length) errors.set(name, [...(errors.get(name) ?? []), failed]);
      const s = summarize(l.first);
      return { first_event_p50_ms: s.p50, first_event_p99_ms: s.p99, jobs_per_s: t.jobsPerS };
    },
  };
}

type Res = Map<string, Map<string, number[]>>;
const FE = "first_event_p50_ms";
const JPS = "jobs_per_s";
/** BullMQ's goal lines (full run): per client kind, first event p50/p99 ≤ BullMQ's; jobs/s ≥ 0.5× (default `up`), ≥ 1× (`--max-jobs` matched). */
const BULLMQ_GOALS = (["fetch", "ws"] as const).flatMap((kind) => [
  { metric: `${kind}_first_event_p50_vs_bullmq`, arm: `up_${kind}`, of: FE, op: "<=" as const, goal: 1 },
  {
    metric: `${kind}_first_event_p99_vs_bullmq`,
    arm: `up_${kind}`,
    of: "first_event_p99_ms",
    op: "<=" as const,
    goal: 1,
  },
  { metric: `${kind}_jobs_per_s_vs_bullmq_default`, arm: `up_${kind}`, of: JPS, op: ">=" as const, goal: 0.5 },
  { metric: `${kind}_jobs_per_s_vs_bullmq_matched`, arm: `up32_${kind}`, of: JPS, op: ">=" as const, goal: 1 },
]);

/** The lines judged against BullMQ, its A/A spread as the (relative) noise band. */
function bullmqLines(res: Res, bad: (arms: string[]) => string[]): GoalLine[] {
  return BULLMQ_GOALS.map((g) => {
    const goal = `ratio ${g.op} ${g.goal}`;
    const errs = bad([g.arm, "bullmq", "bullmq_aa"]);
    if (errs.length) return invalid(BENCH, g.metric, goal, `invalid run: ${errs.slice(0, 3).join("; ")}`);
    const peer = med(res, "bullmq", g.of);
    const rel = Math.abs(peer - med(res, "bullmq_aa", g.of)) / peer;
    return ratioGoal(BENCH, g.metric, med(res, g.arm, g.of), peer, g.op, g.goal, rel);
  });
}

/** The BullMQ peer and two `nodeway up`s (default `--max-jobs`, and matched to the worker's concurrency). */
async function queueArms(arm: (name: string, t: Target) => Arm, stops: (() => Promise<void>)[]): Promise<Arm[]> {
  const arms: Arm[] = [];
  if (wanted("bullmq") || wanted("bullmq_aa")) {
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const conc = String(cfg.concurrency);
    const worker = startTs("bullmq-worker", "peers/bullmq-worker.ts", [String(redis.port), "bench", conc]);
    await worker.waitFor(/bullmq worker ready/);
    const t: Target = { target: { mode: "bullmq", port: redis.port, queue: "bench" } };
    arms.push(arm("bullmq", t), arm("bullmq_aa", t));
  }
  for (const [prefix, args] of [
    ["up", []],
    ["up32", ["--max-jobs", String(cfg.concurrency)]],
  ] as const) {
    if (!wanted(`${prefix}_fetch`) && !wanted(`${prefix}_ws`)) continue;
    const up = await startUp([...args], { name: prefix });
    stops.push(() => up.stop());
    for (const mode of ["fetch", "ws"] as const)
      arms.push(arm(`${prefix}_${mode}`, { target: { mode, base: up.url, workflow: "hello-world" } }));
  }
  return arms;
}

process.env.NODEWAY_HOME = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
const ns = await NatsServer.start();
const cluster = quick || !wanted("ours_r3") ? null : await NatsCluster.start({ size: 3 });
process.on("exit", () => void ns.stop());
process.on("exit", () => void cluster?.stop());
const stops: (() => Promise<void>)[] = [];
const lines: GoalLine[] = [];
const metrics = [FE, JPS, ...(quick ? [] : ["first_event_p50_r3_vs_r1", ...BULLMQ_GOALS.map((g) => g.metric)])];
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
  const qclient = quick ? client : startTs("queue-client", "clients/queue-client.ts", [], { ipc: true });
  await qclient.waitFor(/client ready/);

  const errors = new Map<string, string[]>();
  const arm = (name: string, target: Target) =>
    dispatchArm("target" in target ? qclient : client, errors, name, target);
  const ours = (name: string, s: { url: string; workflow: string }) =>
    arm(name, { mode: "ours", base: s.url, workflow: s.workflow });
  const floorT: Target = { mode: "floor", base: `http://127.0.0.1:${floorPort}` };
  const arms = [ours("ours", r1), arm("floor", floorT), arm("floor_aa", floorT)];
  if (r3) arms.push(ours("ours_r3", r3), ours("ours_aa", r1));
  if (!quick) arms.push(...(await queueArms(arm, stops)));
  const res = await alternate(
    arms.filter((a) => wanted(a.name)),
    cfg.rounds,
    log,
  );
  rowsOf(BENCH, res, { first_event_p50_ms: "ms", first_event_p99_ms: "ms", jobs_per_s: "jobs/s" });
  const bad = (names: string[]) => [
    ...names.flatMap((a) => (errors.get(a) ?? []).map((e) => `${a}: ${e}`)),
    ...names.filter((a) => !res.has(a)).map((a) => `${a}: not run`),
  ];
  const e1 = bad(["ours", "floor", "floor_aa"]);
  const noise = (m: string) => Math.abs(med(res, "floor", m) - med(res, "floor_aa", m));
  if (e1.length) {
    lines.push(invalid(BENCH, FE, "ours <= 5 ms", `invalid run: ${e1.slice(0, 3).join("; ")}`));
    lines.push(invalid(BENCH, JPS, "ours >= 500 jobs/s", `invalid run: ${e1.slice(0, 3).join("; ")}`));
  } else {
    lines.push(absGoal(BENCH, FE, med(res, "ours", FE), med(res, "floor", FE), "<=", 5, "ms", noise(FE)));
    lines.push(absGoal(BENCH, JPS, med(res, "ours", JPS), med(res, "floor", JPS), ">=", 500, "jobs/s", noise(JPS)));
  }
  if (r3) {
    const e3 = [...bad(["ours", "ours_aa", "ours_r3"]), ...r3Off.map((s) => `not at 3 replicas: ${s}`)];
    const rel = Math.abs(med(res, "ours", FE) - med(res, "ours_aa", FE)) / med(res, "ours", FE);
    const goal = `ratio <= ${R3_GOAL}`;
    const name = "first_event_p50_r3_vs_r1";
    if (e3.length) lines.push(invalid(BENCH, name, goal, `invalid run: ${e3.slice(0, 3).join("; ")}`));
    else lines.push(ratioGoal(BENCH, name, med(res, "ours_r3", FE), med(res, "ours", FE), "<=", R3_GOAL, rel));
  }
  if (!quick) lines.push(...bullmqLines(res, bad));
} catch (err) {
  const why = `bench failed: ${(err as Error).message.split("\n")[0]!.slice(0, 300)}`;
  for (const m of metrics) if (!lines.some((l) => l.metric === m)) lines.push(invalid(BENCH, m, "-", why));
  process.exitCode = 1;
} finally {
  for (const g of lines) emitGoal(g);
  for (const stop of stops) await stop().catch(() => undefined);
  await ns.stop();
  await cluster?.stop();
}
process.exit(process.exitCode ?? 0);
