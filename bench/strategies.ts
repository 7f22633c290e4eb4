/**
 * Benchmark 6: what isolation costs a job. The same short job (`nodeway.test.Whereabouts` → an output) through
 * `POST /api/workflows/<id>/run?wait=true`, one at a time, under each execution strategy an agent offers —
 * `inline`, `threaded`, `subprocess`, `docker` — so the price of each step of isolation is in milliseconds of job
 * latency. Peers: the bare primitive each strategy is built on, started and ended the same way in this process —
 * a worker thread that posts one message, a forked node that sends one IPC message, a container of the runner
 * image (same limits, dockerode create + start + wait) that runs `node -e 0` — and the inline job itself, so that
 * what a strategy adds beyond its primitive is `job(strategy) − job(inline) − primitive`. The issue sets no goal
 * here: rows only. The docker arms need an engine; without one they are left out, and the bench says so.
 */
import { fork } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Docker from "dockerode";
import { alternate, emitRow, log as mkLog, med, rowsOf, type Arm } from "./lib/report.js";
import { NatsServer, startAgent, startGateway } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "strategies";
const log = mkLog(BENCH);
const quick = process.argv.includes("--quick");
const cfg = quick ? { jobs: 4, rounds: 3 } : { jobs: 10, rounds: 5 };
const IMAGE = `nodeway-runner:node-${process.versions.node}`;

process.env.NODEWAY_HOME = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
const docker = new Docker();
const haveDocker = await docker.ping().then(
  () => true,
  () => false,
);
const strategies = ["inline", "threaded", "subprocess", ...(haveDocker ? ["docker"] : [])];
if (!haveDocker) log("no Docker engine answers: the docker arms are left out");

const ns = await NatsServer.start();
process.on("exit", () => void ns.stop());
try {
  const gw = await startGateway(ns.url);
  // The agent makes the runner image when the engine lacks it (agent/docker.ts), before it registers.
  await startAgent(ns.url, gw.url, { maxJobs: 4, args: ["--strategies", strategies.join(",")] });
  const wf = {
    name: "whereabouts",
    graph: {
      nodes: [
        { id: "w", type: "nodeway.test.Whereabouts", data: {} },
        { id: "out", type: "nodetool.output.Output", data: { name: "where" } },
      ],
      edges: [{ id: "e", source: "w", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
  };
  const saved = await fetch(`${gw.url}/api/workflows`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(wf),
  });
  if (saved.status !== 200) throw new Error(`cannot save the workflow: ${saved.status} ${await saved.text()}`);
  const workflow = ((await saved.json()) as { id: string }).id;

  const errors: string[] = [];
  /** Job latencies (ms) of `n` jobs one at a time; each must complete having run where its strategy says. */
  const jobs = async (strategy: string, n: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await fetch(`${gw.url}/api/workflows/${workflow}/run?wait=true`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ params: {}, execution_strategy: strategy }),
      });
      const body = (await r.json()) as {
        status?: string;
        outputs?: { where?: { pid: number; thread_id: number; host: string }[] };
      };
      out.push(performance.now() - t0);
      const w = body.outputs?.where?.[0];
      if (r.status !== 200 || body.status !== "completed" || !w)
        errors.push(`${strategy}: ${r.status} ${JSON.stringify(body).slice(0, 200)}`);
      else if (strategy === "threaded" && w.thread_id === 0) errors.push("threaded: ran on a main thread");
      else if (strategy === "docker" && w.host === hostname()) errors.push("docker: ran on this host");
    }
    return out;
  };
  const dir = mkdtempSync(join(tmpdir(), "nw-bench-strategies-"));
  const child = join(dir, "child.cjs");
  writeFileSync(child, "process.send(1, () => process.disconnect());\n");
  const primitives: Record<string, () => Promise<void>> = {
    threaded: () =>
      new Promise((resolve, reject) => {
        // No flags of this process (its TypeScript loader): the agent's runners start with plain node too.
        const w = new Worker("require('node:worker_threads').parentPort.postMessage(1)", { eval: true, execArgv: [] });
        w.once("message", () => void w.terminate().then(() => resolve()));
        w.once("error", reject);
      }),
    subprocess: () =>
      new Promise((resolve, reject) => {
        const p = fork(child, [], { stdio: "ignore", serialization: "advanced", execArgv: [] });
        p.once("message", () => (p.kill("SIGKILL"), resolve()));
        p.once("error", reject);
      }),
    docker: async () => {
      const c = await docker.createContainer({
        Image: IMAGE,
        Cmd: ["/usr/local/bin/node", "-e", "0"],
        User: "65534:65534",
        NetworkDisabled: true,
        HostConfig: {
          AutoRemove: true,
          Init: true,
          NetworkMode: "none",
          ReadonlyRootfs: true,
          CapDrop: ["ALL"],
          SecurityOpt: ["no-new-privileges"],
          Memory: 1 << 30,
          MemorySwap: 1 << 30,
          NanoCpus: 1e9,
          PidsLimit: 256,
        },
      });
      const exit = c.wait({ condition: "next-exit" });
      await c.start();
      const r = (await exit) as { StatusCode: number };
      if (r.StatusCode !== 0) errors.push(`bare container exited ${r.StatusCode}`);
    },
  };
  const timed = async (fn: () => Promise<void>, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await fn();
      out.push(performance.now() - t0);
    }
    return out;
  };
  const arms: Arm[] = strategies.map((s) => ({
    name: s,
    run: async () => ({ job_p50_ms: summarize(await jobs(s, cfg.jobs)).p50 }),
  }));
  arms.push({ name: "inline_aa", run: async () => ({ job_p50_ms: summarize(await jobs("inline", cfg.jobs)).p50 }) });
  for (const s of strategies.filter((x) => x !== "inline"))
    arms.push({
      name: `bare_${s}`,
      run: async () => ({ start_end_p50_ms: summarize(await timed(primitives[s]!, cfg.jobs)).p50 }),
    });
  const res = await alternate(arms, cfg.rounds, log);
  if (errors.length) throw new Error(`invalid run: ${errors.length} bad jobs, first: ${errors[0]}`);
  rowsOf(BENCH, res, { job_p50_ms: "ms", start_end_p50_ms: "ms" });
  const inline = med(res, "inline", "job_p50_ms");
  emitRow({
    bench: BENCH,
    metric: "inline_aa_spread_ms",
    arm: "noise",
    value: Math.abs(inline - med(res, "inline_aa", "job_p50_ms")),
    unit: "ms",
  });
  for (const s of strategies.filter((x) => x !== "inline")) {
    const added = med(res, s, "job_p50_ms") - inline;
    emitRow({ bench: BENCH, metric: `${s}_added_over_inline_ms`, arm: "ours", value: added, unit: "ms" });
    emitRow({
      bench: BENCH,
      metric: `${s}_added_beyond_bare_ms`,
      arm: "ours",
      value: added - med(res, `bare_${s}`, "start_end_p50_ms"),
      unit: "ms",
    });
  }
} catch (err) {
  log(`bench failed: ${(err as Error).message.slice(0, 400)}`);
  process.exitCode = 1;
} finally {
  await ns.stop();
}
process.exit(process.exitCode ?? 0);
