/**
 * Benchmark 1 (B12): the token path end to end. `nodeway.test.Tokens` jobs at 1k tokens/s aggregate (jobs × rate)
 * → agent → NATS JetStream → gateway → WS clients, against the floor chain: a publisher emitting the same
 * events, paced the same way, on core NATS → a bare uWS.js server that subscribes and `app.publish`es → the
 * same clients. Per token: receive − emit (same host clock); per job: start request → first token (TTFT).
 * Gateway and floor server are pinned to core 0, the client process to core 1. Variant: our chain through the
 * TLS proxy (self-signed), when the proxy is there. Full run only: our chain on a 3-server cluster with every
 * stream at 3 replicas (`ours_r3`, its own gateway and agent), judged against the same floor, shown as a ratio to
 * ours.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addedGoal, alternate, emitGoal, emitRow, invalid, log as mkLog, med, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine } from "./lib/report.js";
import { startTs } from "./lib/procs.js";
import { proxyUnavailable, startOurProxy } from "./lib/proxy.js";
import { NatsCluster, NatsServer, startAgent, startGateway, streamsNotAt, tokensGraph } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "token_path";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const cfg = quick
  ? { jobs: 20, rate: 50, count: 50, rounds: 5, staggerMs: 20 }
  : { jobs: 20, rate: 50, count: 250, rounds: 6, staggerMs: 50 };

const home = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
process.env.NODEWAY_HOME = home;
const ns = await NatsServer.start();
const cluster = quick ? null : await NatsCluster.start({ size: 3 });
process.on("exit", () => void ns.stop());
process.on("exit", () => void cluster?.stop());
try {
  const gw = await startGateway(ns.url, { cpu: "0" });
  await startAgent(ns.url, gw.url, { maxJobs: 64 });
  const r3Env = { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-bench-home-")) };
  const gw3 = cluster ? await startGateway(cluster.url, { cpu: "0", env: r3Env }) : null;
  if (cluster && gw3) await startAgent(cluster.url, gw3.url, { maxJobs: 64, env: r3Env });
  const r3Off = cluster ? await streamsNotAt(cluster.url, 3) : [];
  const floor = startTs("floor-server", "peers/floor-server.ts", [ns.url], { cpu: "0" });
  const floorPort = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
  const pub = startTs("floor-pub", "peers/floor-pub.ts", [ns.url]);
  await pub.waitFor(/floor-pub ready/);
  let noProxy = await proxyUnavailable();
  const proxy =
    noProxy === null
      ? await startOurProxy(gw.url).catch(
          (err: Error) => ((noProxy = `proxy did not start: ${err.message.slice(0, 300)}`), null),
        )
      : null;
  if (noProxy) log(`TLS proxy variant skipped: ${noProxy}`);
  const client = startTs("token-client", "clients/token-client.ts", [], { cpu: "1", ipc: true });
  await client.waitFor(/client ready/);

  const graph = tokensGraph(cfg.rate);
  const errors = new Map<string, string[]>();
  const arm = (name: string, mode: "ours" | "floor", url: string): Arm => ({
    name,
    async run(round) {
      const r = await client.call<{
        lat: number[];
        ttft: number[];
        errors: string[];
        phases: Record<string, number[]>;
      }>({ op: "run", mode, url, graph, ...cfg });
      const expected = cfg.jobs * cfg.count;
      const errs = [...r.errors, ...(r.lat.length === expected ? [] : [`${r.lat.length}/${expected} tokens arrived`])];
      // The warm-up round's failures are logged, not held against the line: its figures are dropped too.
      if (errs.length && round === 0) log(`warm-up ${name}: ${errs.slice(0, 3).join("; ")}`);
      else if (errs.length) errors.set(name, [...(errors.get(name) ?? []), ...errs]);
      const l = summarize(r.lat);
      const t = summarize(r.ttft);
      const ph: Record<string, number> = {};
      for (const [k, v] of Object.entries(r.phases)) if (v.length) ph[`ttft_${k}_p50_ms`] = summarize(v).p50;
      return {
        p50_ms: l.p50,
        p99_ms: l.p99,
        p999_ms: l.p999,
        ttft_p50_ms: t.p50,
        ttft_p99_ms: t.p99,
        tokens: r.lat.length,
        ...ph,
      };
    },
  });
  const arms: Arm[] = [
    arm("ours", "ours", gw.url.replace(/^http/, "ws")),
    arm("floor", "floor", `ws://127.0.0.1:${floorPort}`),
    arm("floor_aa", "floor", `ws://127.0.0.1:${floorPort}`),
  ];
  if (proxy) arms.push(arm("ours_tls_proxy", "ours", `wss://127.0.0.1:${proxy.httpsPort}`));
  if (gw3) arms.push(arm("ours_r3", "ours", gw3.url.replace(/^http/, "ws")));
  log(
    `${cfg.jobs} jobs × ${cfg.rate} tok/s (${cfg.jobs * cfg.rate} tok/s aggregate), ${cfg.count} tokens each, ${cfg.rounds} rounds`,
  );
  const res = await alternate(arms, cfg.rounds, log);
  rowsOf(BENCH, res, {
    p50_ms: "ms",
    p99_ms: "ms",
    p999_ms: "ms",
    ttft_p50_ms: "ms",
    ttft_p99_ms: "ms",
    tokens: "",
    ttft_submit_p50_ms: "ms",
    ttft_dispatch_p50_ms: "ms",
    ttft_start_p50_ms: "ms",
    ttft_deliver_p50_ms: "ms",
  });

  const noise = (m: string) => Math.abs(med(res, "floor", m) - med(res, "floor_aa", m));
  const goals: [string, string, number][] = [
    ["added_p50_ms", "p50_ms", 1],
    ["added_p99_ms", "p99_ms", 3],
    ["ttft_added_p50_ms", "ttft_p50_ms", 2],
  ];
  const floorErr = [...(errors.get("floor") ?? []), ...(errors.get("floor_aa") ?? [])];
  const lines: GoalLine[] = [];
  for (const [variant, armName] of [
    ["", "ours"],
    ["_tls_proxy", "ours_tls_proxy"],
  ] as const) {
    for (const [metric, m, limit] of goals) {
      if (variant && variant === "_tls_proxy" && metric === "ttft_added_p50_ms") continue;
      const name = `${metric.replace("_ms", "")}${variant}_ms`;
      const goal = `ours - peer <= ${limit} ms`;
      if (armName === "ours_tls_proxy" && !proxy) lines.push(invalid(BENCH, name, goal, `skipped: ${noProxy}`));
      else if (errors.has(armName))
        lines.push(
          invalid(BENCH, name, goal, `invalid run (${armName}): ${errors.get(armName)!.slice(0, 3).join("; ")}`),
        );
      else if (floorErr.length)
        lines.push(invalid(BENCH, name, goal, `invalid run (floor): ${floorErr.slice(0, 3).join("; ")}`));
      else lines.push(addedGoal(BENCH, name, med(res, armName, m), med(res, "floor", m), limit, noise(m)));
    }
  }
  if (gw3) {
    const [name, goal] = ["added_p50_r3_ms", "ours - peer <= 1 ms"];
    const r3Err = [...(errors.get("ours_r3") ?? []), ...r3Off.map((x) => `not at 3 replicas: ${x}`)];
    const [ours3, floorP50] = [med(res, "ours_r3", "p50_ms"), med(res, "floor", "p50_ms")];
    if (r3Err.length) lines.push(invalid(BENCH, name, goal, `invalid run (ours_r3): ${r3Err.slice(0, 3).join("; ")}`));
    else if (floorErr.length) lines.push(invalid(BENCH, name, goal, `invalid run (floor): ${floorErr.slice(0, 3)}`));
    else lines.push(addedGoal(BENCH, name, ours3, floorP50, 1, noise("p50_ms")));
    for (const m of ["p50_ms", "p99_ms", "ttft_p50_ms"]) {
      const value = med(res, "ours_r3", m) / med(res, "ours", m);
      emitRow({ bench: BENCH, metric: `${m.replace("_ms", "")}_r3_vs_r1`, arm: "ours_r3", value, unit: "ratio" });
    }
  }
  for (const g of lines) emitGoal(g);
} finally {
  await ns.stop();
  await cluster?.stop();
}
process.exit(0);
