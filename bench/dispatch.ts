/**
 * Benchmark 3: job dispatch. `POST /api/workflows/<id>/run?stream=true` → the first event from the runner at the
 * client (p50/p99, one job at a time), and sustained jobs/s of short jobs (hello-world, `?wait=true`,
 * C in flight) on this 2-core machine, nothing pinned. Peer (floor): the same dispatch as a bare uWS.js
 * `POST /run` that does one core NATS request/reply to a worker process and returns the reply.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { absGoal, alternate, emitGoal, invalid, log as mkLog, med, rowsOf, type Arm, type GoalLine } from "./lib/report.js";
import { startTs } from "./lib/procs.js";
import { NatsServer, example, startAgent, startGateway } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "dispatch";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const cfg = quick ? { n: 30, concurrency: 32, durationMs: 1_500, rounds: 5 } : { n: 200, concurrency: 32, durationMs: 4_000, rounds: 6 };

process.env.NODEWAY_HOME = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
const ns = await NatsServer.start();
process.on("exit", () => void ns.stop());
const lines: GoalLine[] = [];
try {
  const gw = await startGateway(ns.url);
  await startAgent(ns.url, gw.url, { maxJobs: 64 });
  const wf = example("hello-world");
  const saved = await fetch(`${gw.url}/api/workflows`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(wf) });
  if (saved.status !== 200) throw new Error(`cannot save the workflow: ${saved.status} ${await saved.text()}`);
  const workflow = ((await saved.json()) as { id: string }).id;
  const floor = startTs("floor-server", "peers/floor-server.ts", [ns.url]);
  const floorPort = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
  const pub = startTs("floor-pub", "peers/floor-pub.ts", [ns.url]);
  await pub.waitFor(/floor-pub ready/);
  const client = startTs("dispatch-client", "clients/dispatch-client.ts", [], { ipc: true });
  await client.waitFor(/client ready/);

  const errors = new Map<string, string[]>();
  const arm = (name: string, target: Record<string, unknown>): Arm => ({
    name,
    async run() {
      const l = await client.call<{ first: number[]; errors: string[]; errorCount: number }>({ op: "latency", ...target, n: cfg.n });
      const t = await client.call<{ jobsPerS: number; errors: string[]; errorCount: number }>({ op: "throughput", ...target, concurrency: cfg.concurrency, durationMs: cfg.durationMs });
      const errs = [...l.errors, ...t.errors];
      if (errs.length) errors.set(name, [...(errors.get(name) ?? []), `${l.errorCount + t.errorCount} failed: ${errs[0]}`]);
      const s = summarize(l.first);
      return { first_event_p50_ms: s.p50, first_event_p99_ms: s.p99, jobs_per_s: t.jobsPerS };
    },
  });
  const floorT = { mode: "floor", base: `http://127.0.0.1:${floorPort}` };
  const res = await alternate([arm("ours", { mode: "ours", base: gw.url, workflow }), arm("floor", floorT), arm("floor_aa", floorT)], cfg.rounds, log);
  rowsOf(BENCH, res, { first_event_p50_ms: "ms", first_event_p99_ms: "ms", jobs_per_s: "jobs/s" });
  const bad = ["ours", "floor", "floor_aa"].flatMap((a) => (errors.get(a) ?? []).map((e) => `${a}: ${e}`));
  const noise = (m: string) => Math.abs(med(res, "floor", m) - med(res, "floor_aa", m));
  if (bad.length) {
    lines.push(invalid(BENCH, "first_event_p50_ms", "ours <= 5 ms", `invalid run: ${bad.slice(0, 3).join("; ")}`));
    lines.push(invalid(BENCH, "jobs_per_s", "ours >= 500 jobs/s", `invalid run: ${bad.slice(0, 3).join("; ")}`));
  } else {
    lines.push(absGoal(BENCH, "first_event_p50_ms", med(res, "ours", "first_event_p50_ms"), med(res, "floor", "first_event_p50_ms"), "<=", 5, "ms", noise("first_event_p50_ms")));
    lines.push(absGoal(BENCH, "jobs_per_s", med(res, "ours", "jobs_per_s"), med(res, "floor", "jobs_per_s"), ">=", 500, "jobs/s", noise("jobs_per_s")));
  }
} catch (err) {
  for (const m of ["first_event_p50_ms", "jobs_per_s"]) if (!lines.some((l) => l.metric === m)) lines.push(invalid(BENCH, m, "-", `bench failed: ${(err as Error).message.slice(0, 300)}`));
} finally {
  for (const g of lines) emitGoal(g);
  await ns.stop();
}
process.exit(0);
