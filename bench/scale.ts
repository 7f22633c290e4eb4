/**
 * Cost as the work grows (issue #30). Three curves, each over sizes; every size is its own stack (nats-server and
 * gateway process, nothing pinned), the sizes are measured side by side in alternating rounds, and each figure is
 * judged as a ratio to the smallest size, which runs twice per round (`<smallest>_aa`) for the noise band.
 *
 *   - records: 1k, 100k (and 1M with `BENCH_SCALE_RECORDS=1000,100000,1000000`: filling 1M takes minutes on 2
 *     cores) job records written straight into `nw_jobs` (as the gateway writes them;
 *     80 % completed, 100 workflows): a cold `/metrics` scrape (over 5 s after the last), `/api/jobs` first
 *     page unfiltered, `?status=completed`, `?workflow_id=`, and `/api/jobs/<id>`.
 *   - queue: 0, 10k, 100k jobs queued through the gateway (`POST …/run`) in the `cpu` pool with no agent: submit
 *     p50 (one at a time), then gateway CPU per dequeue (the oldest queued jobs cancelled, position updates
 *     included) and the position updates each dequeue published.
 *   - agents: 10, 100, 1,000 agents' registrations written to `nw_agents` every 3 s (the agent's heartbeat write):
 *     `/api/agents` and gateway CPU over a quiet window.
 *
 *   - sockets: 1k, 10k, 50k WebSocket clients held by a gateway, idle then each watching one (queued) job, against
 *     a bare uWS.js server holding as many (idle, then each subscribed to one topic): resident bytes per socket and
 *     idle CPU, each arm a fresh process per round, the bare server twice (A/A); past 20k one measured round (50k
 *     sockets take a minute to open and close).
 *   - storm: 1k and 5k clients resuming at once, on one job and spread over 10, on a gateway started while the
 *     jobs stream (a restart's cold replay cache): time until every client has a live event, peak and steady
 *     gateway memory.
 *
 * `BENCH_SCALE_PARTS=records,queue,agents,sockets,storm` picks curves (diagnostics; the others' lines are invalid).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  KV_AGENTS,
  KV_JOBS,
  STREAM_EVENTS,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  jobKeys,
  newId,
  type AgentRegistration,
  type JobRecord,
} from "../protocol/index.js";
import { SERVER_NODE_ARGS, cpuNs, rssBytes, sleep, startCompiled, startTs, type Spawned } from "./lib/procs.js";
import { RawWs } from "./lib/rawws.js";
import { absGoal, alternate, emitGoal, invalid, log as mkLog, med, ratioGoal, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine, Metrics } from "./lib/report.js";
import { NatsServer, example, startAgent, startGateway, tokensGraph, type Gateway } from "./lib/stack.js";
import { summarize } from "./lib/stats.js";

const BENCH = "scale";
const log = mkLog(BENCH);
const ROUNDS = 4;
const sizesOf = (env: string | undefined, dflt: number[]) => (env ? env.split(",").map(Number) : dflt);
const RECORD_SIZES = sizesOf(process.env.BENCH_SCALE_RECORDS, [1_000, 100_000]);
const QUEUE_SIZES = sizesOf(process.env.BENCH_SCALE_QUEUE, [0, 10_000, 100_000]);
const AGENT_SIZES = sizesOf(process.env.BENCH_SCALE_AGENTS, [10, 100, 1_000]);
const SOCKET_SIZES = sizesOf(process.env.BENCH_SCALE_SOCKETS, [1_000, 10_000, 50_000]);
const STORM_SIZES = sizesOf(process.env.BENCH_SCALE_STORM, [1_000, 5_000]);
const PARTS = new Set((process.env.BENCH_SCALE_PARTS ?? "records,queue,agents,sockets,storm").split(","));
/** A Prometheus scrape more than this after the last one finds the gateway's cached counts expired. */
const COLD_SCRAPE_GAP_MS = 5_300;
const REQUEST_TIMEOUT_MS = 120_000;
const label = (n: number) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));

interface Stack {
  ns: NatsServer;
  gw: Gateway;
}

/** `nw_jobs` read straight from NATS (the floor of `/api/jobs/<id>`: one KV get, no gateway). */
async function jobsBucket(natsUrl: string): Promise<{ kv: KV; close: () => Promise<void> }> {
  const nc = await connect({ servers: natsUrl });
  return { kv: await new Kvm(nc).open(KV_JOBS), close: () => nc.close() };
}

async function stack(): Promise<Stack> {
  const ns = await NatsServer.start();
  const gw = await startGateway(ns.url, { env: { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-bench-home-")) } });
  return { ns, gw };
}

/** One timed request; throws unless it answers `want` (200 by default). */
async function timed(url: string, init: RequestInit = {}, want = 200): Promise<{ ms: number; body: string }> {
  const t0 = performance.now();
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const body = await r.text();
  const ms = performance.now() - t0;
  if (r.status !== want) throw new Error(`${init.method ?? "GET"} ${url}: ${r.status} ${body.slice(0, 200)}`);
  return { ms, body };
}

async function medianOf(n: number, f: () => Promise<number>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await f());
  return summarize(xs).p50;
}

/** Publishes `make(i)` for i < n, `window` in flight, each awaited for its PubAck. */
async function publishAll(nc: NatsConnection, n: number, make: (i: number) => [string, Uint8Array][]): Promise<void> {
  const js = jetstream(nc);
  const window = 2_000;
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await Promise.all(make(i).map(([s, d]) => js.publish(s, d)));
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
}

// ---------------------------------------------------------------- records

const STATUS_MIX: JobRecord["status"][] = [
  ...Array<JobRecord["status"]>(80).fill("completed"),
  ...Array<JobRecord["status"]>(10).fill("failed"),
  ...Array<JobRecord["status"]>(5).fill("cancelled"),
  ...Array<JobRecord["status"]>(3).fill("timed_out"),
  "running",
  "queued",
];
const WORKFLOWS = 100;
const wfOf = (i: number) => `wf-${String(i % WORKFLOWS).padStart(3, "0")}`;

function record(id: string, i: number, atMs: number): JobRecord {
  const status = STATUS_MIX[i % STATUS_MIX.length]!;
  const at = new Date(atMs).toISOString();
  const done = status !== "queued" && status !== "running";
  return {
    v: 1,
    id,
    workflow_id: wfOf(i),
    status,
    pool: "cpu",
    attempt: status === "queued" ? 0 : 1,
    agent_id: status === "queued" ? null : "bench-agent",
    params: { name: `user ${i}` },
    created_at: at,
    started_at: status === "queued" ? null : at,
    finished_at: done ? at : null,
    timeout_s: 600,
    error: done && status !== "completed" ? { code: "JOB_ERR_FAILED", message: "failed in the bench" } : null,
    outputs: status === "completed" ? { greeting: [`Hello, user ${i}!`] } : null,
    idempotency_key: null,
  };
}

/** `n` job records, written as the gateway writes them; returns their ids. */
async function fillRecords(natsUrl: string, n: number): Promise<string[]> {
  const nc = await connect({ servers: natsUrl });
  const t0 = Date.now();
  const ids = Array.from({ length: n }, (_, i) => newId(t0 - (n - i) * 10));
  const kv = (key: string) => `$KV.${KV_JOBS}.${key}`;
  const utf8 = new TextEncoder();
  await publishAll(nc, n, (i) => [
    [kv(jobKeys.record(ids[i]!)), utf8.encode(encodeJson(record(ids[i]!, i, t0 - (n - i) * 10)))],
  ]);
  await nc.close();
  log(`records: ${label(n)} written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return ids;
}

const RECORD_METRICS = ["scrape_ms", "list_ms", "list_status_ms", "list_workflow_ms", "get_ms"] as const;

function recordsArm(name: string, s: Stack, ids: string[], last: { scrapeMs: number }, kv: KV): Arm {
  const base = s.gw.url;
  const page = async (q: string) => {
    const r = await timed(`${base}/api/jobs${q}`);
    const jobs = (JSON.parse(r.body) as { jobs: JobRecord[] }).jobs;
    if (jobs.length === 0) throw new Error(`${name}: /api/jobs${q} answered an empty page`);
    return r.ms;
  };
  return {
    name,
    async run(): Promise<Metrics> {
      await sleep(Math.max(0, last.scrapeMs + COLD_SCRAPE_GAP_MS - Date.now()));
      const cold = await timed(`${base}/metrics`);
      last.scrapeMs = Date.now();
      if (!/nodeway_jobs\{state="completed"\} [1-9]/.test(cold.body)) throw new Error(`${name}: no completed count`);
      const warm = await medianOf(5, async () => (await timed(`${base}/metrics`)).ms);
      return {
        scrape_ms: cold.ms,
        scrape_warm_ms: warm,
        list_ms: await medianOf(5, () => page("")),
        list_status_ms: await medianOf(5, () => page("?status=completed")),
        // A page of 10 at every size: a workflow holds 10 jobs at 1k records, so the default page of 50 would
        // compare reading 10 records with reading 50.
        list_workflow_ms: await medianOf(5, () => page(`?workflow_id=${wfOf(42)}&limit=10`)),
        get_ms: await medianOf(
          20,
          async () => (await timed(`${base}/api/jobs/${ids[(Math.random() * ids.length) | 0]}`)).ms,
        ),
        kv_get_ms: await medianOf(20, async () => {
          const t0 = performance.now();
          if (!(await kv.get(jobKeys.record(ids[(Math.random() * ids.length) | 0]!))))
            throw new Error(`${name}: a record is missing from nw_jobs`);
          return performance.now() - t0;
        }),
        gateway_rss_mb: rssBytes(s.gw.pid) / 2 ** 20,
      };
    },
  };
}

async function recordsCurve(stops: (() => Promise<void>)[]): Promise<GoalLine[]> {
  const arms: Arm[] = [];
  for (const n of RECORD_SIZES) {
    const s = await stack();
    stops.push(
      () => s.gw.stop(),
      () => s.ns.stop(),
    );
    const ids = await fillRecords(s.ns.url, n);
    const bucket = await jobsBucket(s.ns.url);
    stops.push(bucket.close);
    const last = { scrapeMs: 0 };
    arms.push(recordsArm(label(n), s, ids, last, bucket.kv));
    if (n === RECORD_SIZES[0]) arms.push(recordsArm(`${label(n)}_aa`, s, ids, last, bucket.kv));
  }
  const res = await alternate(arms, ROUNDS, log);
  rowsOf(BENCH, res, {
    gateway_rss_mb: "MiB",
    scrape_warm_ms: "ms",
    kv_get_ms: "ms",
    ...Object.fromEntries(RECORD_METRICS.map((m) => [m, "ms"])),
  });
  const [lo, hi] = [label(RECORD_SIZES[0]!), label(RECORD_SIZES.at(-1)!)];
  const lines = RECORD_METRICS.map((m) => curveGoal(res, m, lo, hi, 2));
  const band = Math.abs(med(res, lo, "scrape_ms") - med(res, `${lo}_aa`, "scrape_ms"));
  lines.push(
    absGoal(BENCH, `scrape_ms_${hi}`, med(res, hi, "scrape_ms"), med(res, lo, "scrape_ms"), "<=", 50, "ms", band),
  );
  // A random record at 1M is a cold filestore block in nats-server: the KV get alone grows ~8-20x. The gateway's
  // share is judged against that floor at the same size.
  const getRel = Math.abs(med(res, lo, "get_ms") - med(res, `${lo}_aa`, "get_ms")) / med(res, lo, "get_ms");
  lines.push(
    ratioGoal(BENCH, `get_ms_${hi}_vs_kv_get`, med(res, hi, "get_ms"), med(res, hi, "kv_get_ms"), "<=", 1.5, getRel),
  );
  return lines;
}

/** `metric` at the largest size ≤ `limit` × at the smallest; the smallest size's A/A spread is the band. */
function curveGoal(res: Map<string, Map<string, number[]>>, metric: string, lo: string, hi: string, limit: number) {
  const base = med(res, lo, metric);
  const rel = Math.abs(base - med(res, `${lo}_aa`, metric)) / base;
  return ratioGoal(BENCH, `${metric}_${hi}_vs_${lo}`, med(res, hi, metric), base, "<=", limit, rel);
}

// ---------------------------------------------------------------- queue depth

interface QueueStack extends Stack {
  /** Queued job ids, oldest first. */
  queued: string[];
}

async function submit(base: string): Promise<{ ms: number; id: string }> {
  const r = await timed(
    `${base}/api/workflows/hello-world/run`,
    {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ params: { name: "Ada" } }),
    },
    202,
  );
  return { ms: r.ms, id: (JSON.parse(r.body) as { job_id: string }).job_id };
}

async function queueStack(depth: number): Promise<QueueStack> {
  const s = await stack();
  const body = JSON.stringify(example("hello-world"));
  await timed(`${s.gw.url}/api/workflows`, { method: "POST", headers: { "content-type": "application/json" }, body });
  const queued: string[] = [];
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next++ < depth) queued.push((await submit(s.gw.url)).id);
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  log(`queue: ${label(depth)} submitted in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { ...s, queued };
}

async function eventCount(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  try {
    return (await (await jetstreamManager(nc)).streams.info(STREAM_EVENTS)).state.messages;
  } finally {
    await nc.close();
  }
}

const PER_ROUND = 100;

function queueArm(name: string, s: QueueStack): Arm {
  const base = s.gw.url;
  return {
    name,
    async run(): Promise<Metrics> {
      const ms: number[] = [];
      for (let i = 0; i < PER_ROUND; i++) {
        const r = await submit(base);
        ms.push(r.ms);
        s.queued.push(r.id);
      }
      // The oldest queued jobs leave the queue: every job behind them moves up.
      await sleep(300);
      const [cpu0, ev0] = [cpuNs(s.gw.pid), await eventCount(s.ns.url)];
      for (const id of s.queued.splice(0, PER_ROUND)) await timed(`${base}/api/jobs/${id}/cancel`, { method: "POST" });
      await sleep(300); // the coalesced position updates (50 ms) and their publishes
      const cpu = cpuNs(s.gw.pid) - cpu0;
      const events = (await eventCount(s.ns.url)) - ev0;
      return {
        submit_p50_ms: summarize(ms).p50,
        cpu_per_dequeue_ms: cpu / 1e6 / PER_ROUND,
        // Each cancel publishes its own terminal event: the rest are position updates.
        position_updates_per_dequeue: (events - PER_ROUND) / PER_ROUND,
      };
    },
  };
}

async function queueCurve(stops: (() => Promise<void>)[]): Promise<GoalLine[]> {
  const arms: Arm[] = [];
  for (const n of QUEUE_SIZES) {
    const s = await queueStack(n);
    stops.push(
      () => s.gw.stop(),
      () => s.ns.stop(),
    );
    arms.push(queueArm(label(n), s));
    if (n === QUEUE_SIZES[0]) arms.push(queueArm(`${label(n)}_aa`, s));
  }
  const res = await alternate(arms, ROUNDS, log);
  rowsOf(BENCH, res, { submit_p50_ms: "ms", cpu_per_dequeue_ms: "ms", position_updates_per_dequeue: "" });
  const [lo, hi] = [label(QUEUE_SIZES[0]!), label(QUEUE_SIZES.at(-1)!)];
  return [curveGoal(res, "submit_p50_ms", lo, hi, 1.5)];
}

// ---------------------------------------------------------------- agents

function registration(id: string, i: number): AgentRegistration {
  const at = new Date().toISOString();
  return {
    type: "agent.registration",
    v: 1,
    id,
    name: `bench-agent-${String(i).padStart(4, "0")}`,
    version: "0.1.0",
    labels: [],
    pools: ["cpu"],
    capabilities: {
      gpus: [],
      docker: false,
      providers: [],
      max_jobs: 8,
      strategies: ["inline", "threaded", "subprocess"],
      node_types: 233,
      warm_runners: 1,
      ffmpeg: { version: "5.1.6" },
    },
    state: "idle",
    running_jobs: [],
    node_catalog: "0".repeat(64),
    started_at: at,
    heartbeat_at: at,
  };
}

/** `n` agents' heartbeats: each registration rewritten every 3 s, spread over the period. Returns a stop. */
async function heartbeats(natsUrl: string, n: number): Promise<() => Promise<void>> {
  const nc = await connect({ servers: natsUrl });
  const kv: KV = await new Kvm(nc).open(KV_AGENTS);
  const ids = Array.from({ length: n }, () => newId());
  await Promise.all(ids.map((id, i) => kv.put(id, JSON.stringify(registration(id, i)))));
  const periodMs = 3_000;
  let i = 0;
  const timer = setInterval(
    () => {
      const id = ids[i % n]!;
      void kv.put(id, JSON.stringify(registration(id, i++ % n))).catch(() => undefined);
    },
    Math.max(1, periodMs / n),
  );
  return async () => {
    clearInterval(timer);
    await nc.close();
  };
}

/** Jobs per round whose dispatch is timed, one after another (the dispatch benchmark's client and workflow). */
const DISPATCH_JOBS = 40;

/** A stack with `n` agents: one real agent (the one that runs the jobs) and `n - 1` heartbeating registrations. */
interface AgentsStack extends Stack {
  workflow: string;
}

function agentsArm(name: string, s: AgentsStack, n: number, client: Spawned): Arm {
  return {
    name,
    async run(): Promise<Metrics> {
      const list = await medianOf(5, async () => {
        const r = await timed(`${s.gw.url}/api/agents`);
        const got = (JSON.parse(r.body) as { agents: unknown[] }).agents.length;
        if (got !== n) throw new Error(`${name}: /api/agents listed ${got} agents, not ${n}`);
        return r.ms;
      });
      const target = { mode: "ours", base: s.gw.url, workflow: s.workflow };
      const l = await client.call<{ first: number[]; errors: string[] }>({
        op: "latency",
        ...target,
        n: DISPATCH_JOBS,
      });
      if (l.errors.length > 0) throw new Error(`${name}: dispatch failed: ${l.errors[0]}`);
      const windowMs = 4_000;
      const [gw0, ns0] = [cpuNs(s.gw.pid), cpuNs(s.ns.pid)];
      await sleep(windowMs);
      const pct = (ns: number) => (ns / 1e6 / windowMs) * 100;
      return {
        agents_list_ms: list,
        dispatch_p50_ms: summarize(l.first).p50,
        idle_cpu_pct: pct(cpuNs(s.gw.pid) - gw0),
        nats_idle_cpu_pct: pct(cpuNs(s.ns.pid) - ns0),
      };
    },
  };
}

/** A stack for the agents curve: gateway, one real agent, the dispatch benchmark's workflow saved. */
async function agentsStack(stops: (() => Promise<void>)[]): Promise<AgentsStack> {
  const s = await stack();
  stops.push(
    () => s.gw.stop(),
    () => s.ns.stop(),
  );
  const agent = await startAgent(s.ns.url, s.gw.url, { maxJobs: 8, testNodes: false });
  stops.unshift(() => agent.stop());
  const saved = await timed(
    `${s.gw.url}/api/workflows`,
    { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(example("hello-world")) },
    200,
  );
  return { ...s, workflow: (JSON.parse(saved.body) as { id: string }).id };
}

async function agentsCurve(stops: (() => Promise<void>)[]): Promise<GoalLine[]> {
  const client = startTs("dispatch-client", "clients/dispatch-client.ts", [], { ipc: true });
  stops.push(() => client.stop());
  const arms: Arm[] = [];
  for (const n of AGENT_SIZES) {
    const s = await agentsStack(stops);
    stops.unshift(await heartbeats(s.ns.url, n - 1));
    arms.push(agentsArm(String(n), s, n, client));
    if (n === AGENT_SIZES[0]) arms.push(agentsArm(`${n}_aa`, s, n, client));
  }
  await sleep(3_500); // one full heartbeat period
  const res = await alternate(arms, ROUNDS, log);
  rowsOf(BENCH, res, { agents_list_ms: "ms", dispatch_p50_ms: "ms", idle_cpu_pct: "%", nats_idle_cpu_pct: "%" });
  const [lo, hi] = [String(AGENT_SIZES[0]!), String(AGENT_SIZES.at(-1)!)];
  const band = Math.abs(med(res, lo, "agents_list_ms") - med(res, `${lo}_aa`, "agents_list_ms"));
  const list = (a: string) => med(res, a, "agents_list_ms");
  return [
    absGoal(BENCH, `agents_list_ms_${hi}`, list(hi), list(lo), "<=", 50, "ms", band),
    curveGoal(res, "dispatch_p50_ms", lo, hi, 1.5),
  ];
}

// ---------------------------------------------------------------- sockets

/** Client sockets per source address: under the loopback's ephemeral port range (about 28k ports here). */
const SOCKETS_PER_ADDRESS = 20_000;
/** Open files the processes holding the sockets are given (root may raise it; elsewhere large sizes fail). */
const FILES = 200_000;

function raiseFiles(pid: number): void {
  try {
    execFileSync("prlimit", ["--pid", String(pid), `--nofile=${FILES}:${FILES}`], { stdio: "ignore" });
  } catch {
    // Not root, or no prlimit: the limit stays, and a size past it fails naming the error.
  }
}

async function openSockets(port: number, n: number, path: string, protocol?: string): Promise<RawWs[]> {
  const out: RawWs[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = Array.from({ length: Math.min(500, n - i) }, (_, k) => {
      const from = `127.0.0.${2 + Math.floor((i + k) / SOCKETS_PER_ADDRESS)}`;
      return RawWs.open(port, path, protocol, false, from);
    });
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/**
 * Sockets a fresh server first opens, each watching, and holds through the measurement: its one-off costs (code
 * compiled for these paths, tables grown) are paid before it, so the figures are what each further socket costs.
 * They stay open: sockets closed before the measurement would leave freed memory that later ones reuse.
 */
const SOCKET_WARM = 1_000;

/**
 * What `pid` costs holding `n` sockets: bytes of resident memory per socket idle (watching nothing), its CPU over a
 * quiet 5 s, then bytes per socket once each watches one job (`watch` sends what asks for that), and of V8's heap
 * in use where `heapUsed` reads it (the gateway's /metrics): resident memory keeps the heap the joins grew.
 */
async function holdSockets(
  pid: number,
  port: number,
  n: number,
  protocol: string | undefined,
  watch: (ws: RawWs) => void,
  heapUsed: () => Promise<number> = async () => NaN,
): Promise<Metrics> {
  const warm = await openSockets(port, SOCKET_WARM, "/ws", protocol);
  for (const ws of warm) watch(ws);
  await sleep(1_000);
  const rss0 = rssBytes(pid);
  const heap0 = await heapUsed();
  const socks = await openSockets(port, n, "/ws", protocol);
  try {
    await sleep(2_000);
    const rss1 = rssBytes(pid);
    const cpu0 = cpuNs(pid);
    await sleep(5_000);
    const idleCpuPct = ((cpuNs(pid) - cpu0) / 1e6 / 5_000) * 100;
    for (let i = 0; i < socks.length; i += 500) {
      for (const ws of socks.slice(i, i + 500)) watch(ws);
      await sleep(5);
    }
    await sleep(3_000);
    const rss2 = rssBytes(pid);
    const heap2 = await heapUsed();
    const closed = socks.filter((ws) => ws.closed).length;
    if (closed > 0) throw new Error(`${closed} of ${n} sockets were closed by the server`);
    return {
      idle_bytes_per_socket: (rss1 - rss0) / n,
      watching_bytes_per_socket: (rss2 - rss0) / n,
      idle_cpu_pct: idleCpuPct,
      ...(Number.isFinite(heap0) ? { watching_heap_bytes_per_socket: (heap2 - heap0) / n } : {}),
    };
  } finally {
    for (const ws of [...warm, ...socks]) ws.reset();
  }
}

/** `n` sockets on a fresh gateway (with one queued job to watch, no agent). */
async function gatewaySockets(n: number): Promise<Metrics> {
  const s = await stack();
  try {
    for (const pid of [process.pid, s.gw.pid]) raiseFiles(pid);
    const body = JSON.stringify(example("hello-world"));
    await timed(`${s.gw.url}/api/workflows`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const jobId = (await submit(s.gw.url)).id;
    const reconnect = encodeMsgpack({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
    const heapUsed = async () => {
      const text = (await timed(`${s.gw.url}/metrics`)).body;
      return Number(/^nodeway_nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1] ?? NaN);
    };
    return await holdSockets(s.gw.pid, s.gw.port, n, "nodeway.msgpack", (ws) => ws.send(0x2, reconnect), heapUsed);
  } finally {
    await s.gw.stop();
    await s.ns.stop();
  }
}

/** `n` sockets on a fresh bare uWS.js server, each subscribing to one topic; it runs with the gateway's V8 flags. */
async function bareSockets(n: number): Promise<Metrics> {
  const ns = await NatsServer.start();
  const floor = startCompiled("floor-server", "peers/floor-server.ts", [ns.url], { nodeArgs: [...SERVER_NODE_ARGS] });
  try {
    const port = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
    for (const pid of [process.pid, floor.pid]) raiseFiles(pid);
    const watchFrame = JSON.stringify({ watch: "j1" });
    return await holdSockets(floor.pid, port, n, undefined, (ws) => ws.send(0x1, watchFrame));
  } finally {
    await floor.stop();
    await ns.stop();
  }
}

/** Rounds per size: a round of 50k sockets costs a minute per arm, so past 20k one measured round. */
const socketRounds = (n: number) => (n > 20_000 ? 2 : ROUNDS);

/** Open files this process may have after trying to raise the limit (both ends of a socket need one each). */
function filesLimit(): number {
  raiseFiles(process.pid);
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  return Number(line?.split(/\s+/)[3] ?? Number.POSITIVE_INFINITY);
}

/**
 * Sockets held per size, each arm a fresh process per round (ours, bare uWS, bare uWS again), alternated: rows, and
 * two goal lines at the largest size. A size past the open-files limit (not raisable without root) is not run: its
 * lines are invalid, saying so, and the two goals are also judged at the largest size that ran.
 */
async function socketsCurve(): Promise<GoalLine[]> {
  const limit = filesLimit();
  const fits = SOCKET_SIZES.filter((n) => n + SOCKET_WARM <= limit - 2_000);
  const skipped = SOCKET_SIZES.filter((n) => !fits.includes(n));
  const why = `the open-files limit is ${limit} here and cannot be raised (prlimit refused)`;
  if (skipped.length) log(`sockets: ${skipped.map(label).join(", ")} not run: ${why}`);
  const res = new Map<string, Map<string, number[]>>();
  for (const n of fits) {
    const arms: Arm[] = [
      { name: label(n), run: () => gatewaySockets(n) },
      { name: `${label(n)}_bare_uws`, run: () => bareSockets(n) },
      { name: `${label(n)}_bare_uws_aa`, run: () => bareSockets(n) },
    ];
    for (const [arm, per] of await alternate(arms, socketRounds(n), log)) res.set(arm, per);
  }
  rowsOf(BENCH, res, {
    idle_bytes_per_socket: "B",
    watching_bytes_per_socket: "B",
    watching_heap_bytes_per_socket: "B",
    idle_cpu_pct: "%",
  });
  const lines = fits.length ? socketGoals(label(fits.at(-1)!), res) : [];
  if (!skipped.length) return lines;
  const hi = label(SOCKET_SIZES.at(-1)!);
  return [...lines, ...SCALE_METRICS.sockets(hi).map((m) => invalid(BENCH, m, "-", `${hi} not run: ${why}`))];
}

/** The goal lines at size `hi`: bytes per watching socket against bare uWS's, and idle CPU; bands from its A/A. */
function socketGoals(hi: string, res: Map<string, Map<string, number[]>>): GoalLine[] {
  const at = (arm: string, m: string) => med(res, arm, m);
  const bare = at(`${hi}_bare_uws`, "watching_bytes_per_socket");
  const ours = at(hi, "watching_bytes_per_socket");
  const rel = Math.abs(bare - at(`${hi}_bare_uws_aa`, "watching_bytes_per_socket")) / bare;
  const cpuBand = Math.abs(at(`${hi}_bare_uws`, "idle_cpu_pct") - at(`${hi}_bare_uws_aa`, "idle_cpu_pct"));
  // Resident memory that fell while sockets were added measured the process's own GC, not the sockets.
  const unmeasured = !(ours > 0 && bare > 0);
  const bytesLine = `socket_bytes_${hi}_vs_bare_uws`;
  return [
    unmeasured
      ? invalid(
          BENCH,
          bytesLine,
          "ratio <= 2",
          `resident memory fell while sockets were added (ours ${ours}, bare ${bare} B)`,
        )
      : ratioGoal(BENCH, bytesLine, ours, bare, "<=", 2, rel),
    absGoal(
      BENCH,
      `idle_cpu_pct_${hi}`,
      at(hi, "idle_cpu_pct"),
      at(`${hi}_bare_uws`, "idle_cpu_pct"),
      "<=",
      2,
      "%",
      cpuBand,
    ),
  ];
}

// ---------------------------------------------------------------- resume storm

/** Jobs streaming while clients storm a fresh gateway: 20 tokens/s each, long enough for every storm. */
const STORM_JOBS = 10;
const STORM_RATE = 20;

interface StormStack extends Stack {
  agent: Spawned;
  jobs: string[];
  /** The last seq each job's watcher (one client on the first gateway) has seen: where a resuming client was. */
  lastSeq: Map<string, number>;
  watchers: RawWs[];
}

/** A gateway and an agent running `STORM_JOBS` token jobs, each a few seconds into its stream. */
async function stormStack(): Promise<StormStack> {
  const s = await stack();
  const agent = await startAgent(s.ns.url, s.gw.url, { maxJobs: STORM_JOBS });
  const json = { "content-type": "application/json" };
  const workflow = { ...example("streaming-tokens"), graph: tokensGraph(STORM_RATE) };
  await timed(`${s.gw.url}/api/workflows`, { method: "POST", headers: json, body: JSON.stringify(workflow) });
  const jobs: string[] = [];
  for (let i = 0; i < STORM_JOBS; i++) {
    const body = JSON.stringify({ params: { count: 100_000 } });
    const r = await timed(
      `${s.gw.url}/api/workflows/streaming-tokens/run`,
      { method: "POST", headers: json, body },
      202,
    );
    jobs.push((JSON.parse(r.body) as { job_id: string }).job_id);
  }
  const lastSeq = new Map<string, number>();
  const watchers = await openSockets(s.gw.port, jobs.length, "/ws", "nodeway.msgpack");
  watchers.forEach((ws, i) => {
    const job = jobs[i]!;
    ws.onFrame = (_op, payload) => {
      const seq = (decodeMsgpack(payload) as { seq?: number }).seq;
      if (typeof seq === "number") lastSeq.set(job, Math.max(lastSeq.get(job) ?? 0, seq));
    };
    ws.send(0x2, encodeMsgpack({ command: "reconnect_job", data: { job_id: job, last_seq: 0 } }));
  });
  await sleep(5_000);
  return { ...s, agent, jobs, lastSeq, watchers };
}

/**
 * `n` clients resume at once on a gateway started just now (its replay cache cold, as after a restart), each from
 * the last seq a client of the first gateway saw of its job (`fromStart`: from its start): time until every one
 * has had a live event (past its replay), the gateway's peak resident memory meanwhile (sampled every 100 ms), and
 * its memory 5 s after (steady, every client still watching).
 */
async function storm(st: StormStack, n: number, sameJob: boolean, fromStart = false): Promise<Metrics> {
  const gw = await startGateway(st.ns.url, { env: { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-bench-home-")) } });
  try {
    await sleep(1_000);
    let peak = rssBytes(gw.pid);
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(gw.pid))), 100);
    const t0 = performance.now();
    const live = new Array<number>(n).fill(0);
    let liveCount = 0;
    const socks: RawWs[] = [];
    try {
      for (let i = 0; i < n; i += 500) {
        const batch = await openSockets(gw.port, Math.min(500, n - i), "/ws", "nodeway.msgpack");
        batch.forEach((ws, k) => {
          const idx = i + k;
          let replay = -1;
          let frames = 0;
          ws.onFrame = (_op, payload) => {
            frames++;
            if (replay < 0) {
              const m = decodeMsgpack(payload) as { type?: string; replay_count?: number };
              if (m.type === "job_resumed") replay = m.replay_count ?? 0;
              return;
            }
            // Past the header and the replay: a live event.
            if (live[idx] === 0 && frames > replay + 1) {
              live[idx] = performance.now() - t0;
              liveCount++;
            }
          };
          const job = sameJob ? st.jobs[0]! : st.jobs[idx % st.jobs.length]!;
          const lastSeq = fromStart ? 0 : (st.lastSeq.get(job) ?? 0);
          ws.send(0x2, encodeMsgpack({ command: "reconnect_job", data: { job_id: job, last_seq: lastSeq } }));
        });
        socks.push(...batch);
      }
      const deadline = performance.now() + 60_000;
      while (liveCount < n && performance.now() < deadline) await sleep(50);
      if (liveCount < n) {
        const closed = socks.filter((ws) => ws.closed).length;
        const frames = socks.reduce((a, ws) => a + ws.frames, 0);
        const silent = socks.filter((ws) => ws.frames === 0).length;
        throw new Error(
          `${n - liveCount} of ${n} clients not live after 60 s (${closed} closed by the gateway, ${silent} got nothing, ${frames} frames in all)`,
        );
      }
      const allLiveMs = Math.max(...live);
      await sleep(5_000);
      clearInterval(sampler);
      const steady = rssBytes(gw.pid);
      return {
        all_live_ms: allLiveMs,
        peak_rss_mib: peak / 2 ** 20,
        steady_rss_mib: steady / 2 ** 20,
        peak_vs_steady: peak / steady,
      };
    } finally {
      clearInterval(sampler);
      for (const ws of socks) ws.reset();
    }
  } finally {
    await gw.stop();
  }
}

/** The storm at each size, same job and different jobs, measured once each; goals at the largest size. */
async function stormCurve(stops: (() => Promise<void>)[]): Promise<GoalLine[]> {
  const st = await stormStack();
  stops.push(
    async () => {
      for (const ws of st.watchers) ws.reset();
    },
    () => st.agent.stop(),
    () => st.gw.stop(),
    () => st.ns.stop(),
  );
  const res = new Map<string, Map<string, number[]>>();
  const measure = async (arm: string, run: () => Promise<Metrics>) => {
    const m = await run();
    log(`storm ${arm}: ${JSON.stringify(m)}`);
    res.set(arm, new Map(Object.entries(m).map(([k, v]) => [k, [v]])));
  };
  for (const n of STORM_SIZES) {
    for (const same of [true, false])
      await measure(`${label(n)}_${same ? "same_job" : "10_jobs"}`, () => storm(st, n, same));
  }
  // Shown for scale: every client replaying the whole history of one job (a row, not a goal; a failure is logged).
  await measure(`${label(STORM_SIZES[0]!)}_same_job_from_start`, () => storm(st, STORM_SIZES[0]!, true, true)).catch(
    (err: Error) => log(`storm from the start: ${err.message}`),
  );
  rowsOf(BENCH, res, { all_live_ms: "ms", peak_rss_mib: "MiB", steady_rss_mib: "MiB", peak_vs_steady: "×" });
  const hi = label(STORM_SIZES.at(-1)!);
  const worst = (m: string) => Math.max(med(res, `${hi}_same_job`, m), med(res, `${hi}_10_jobs`, m));
  const best = (m: string) => Math.min(med(res, `${hi}_same_job`, m), med(res, `${hi}_10_jobs`, m));
  return [
    absGoal(BENCH, `storm_all_live_ms_${hi}`, worst("all_live_ms"), best("all_live_ms"), "<=", 10_000, "ms", 500),
    absGoal(BENCH, `storm_peak_vs_steady_${hi}`, worst("peak_vs_steady"), best("peak_vs_steady"), "<=", 2, "×", 0.1),
  ];
}

// ---------------------------------------------------------------- main

/** The goal metrics of each curve (bench/run.ts names the same), so that a failed curve still yields its lines. */
const SCALE_METRICS = {
  records: (hi: string, lo: string) => [...RECORD_METRICS.map((m) => `${m}_${hi}_vs_${lo}`), `scrape_ms_${hi}`],
  queue: (hi: string, lo: string) => [`submit_p50_ms_${hi}_vs_${lo}`],
  agents: (hi: string, lo: string) => [`agents_list_ms_${hi}`, `dispatch_p50_ms_${hi}_vs_${lo}`],
  sockets: (hi: string) => [`socket_bytes_${hi}_vs_bare_uws`, `idle_cpu_pct_${hi}`],
  storm: (hi: string) => [`storm_all_live_ms_${hi}`, `storm_peak_vs_steady_${hi}`],
};

const curves: [string, (stops: (() => Promise<void>)[]) => Promise<GoalLine[]>, string[]][] = [
  ["records", recordsCurve, SCALE_METRICS.records(label(RECORD_SIZES.at(-1)!), label(RECORD_SIZES[0]!))],
  ["queue", queueCurve, SCALE_METRICS.queue(label(QUEUE_SIZES.at(-1)!), label(QUEUE_SIZES[0]!))],
  ["agents", agentsCurve, SCALE_METRICS.agents(String(AGENT_SIZES.at(-1)!), String(AGENT_SIZES[0]!))],
  ["sockets", socketsCurve, SCALE_METRICS.sockets(label(SOCKET_SIZES.at(-1)!))],
  ["storm", stormCurve, SCALE_METRICS.storm(label(STORM_SIZES.at(-1)!))],
];
for (const [part, curve, metrics] of curves) {
  if (!PARTS.has(part)) continue;
  const stops: (() => Promise<void>)[] = [];
  const t0 = Date.now();
  try {
    for (const g of await curve(stops)) emitGoal(g);
  } catch (err) {
    const why = `${part} failed: ${(err as Error).message.split("\n")[0]!.slice(0, 300)}`;
    log(why);
    for (const m of metrics) emitGoal(invalid(BENCH, m, "-", why));
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    log(`${part}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
}
process.exit(0);
