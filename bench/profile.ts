/**
 * Where the time goes: runs our stack with `node --cpu-prof` on the gateway and the agent under a load from one of
 * the benchmarks' clients, then prints the top self-time frames of each (share of busy time).
 * Usage: node --import ./bench/register.mjs bench/profile.ts [dispatch|tokens|tokens-proxy|fanout|fanout-floor]
 * [seconds] [N] [rate]
 * (`BENCH_FLOOR_MODE` picks the floor server's mode for `fanout-floor`: core, js-raw, js-lib, js-republish).
 */
import { mkdtempSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { topFrames } from "./lib/cpuprofile.js";
import { cpuNs, sleep, startTs, type Spawned } from "./lib/procs.js";
import { startOurProxy } from "./lib/proxy.js";
import { NatsServer, example, startAgent, startGateway, tokensGraph } from "./lib/stack.js";

const what = process.argv[2] ?? "dispatch";
/** The measured window (fan-out), in the clock V8 stamps profiles with: the profile then leaves out set-up. */
let windowUs: { from: number; to?: number } | undefined;
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const seconds = Number(process.argv[3] ?? 5);

/**
 * The fan-out load (argv N subscribers, default 100, at argv rate events/s, default 400) on a server: `start`
 * opens the sockets and starts the job; then one measured window, which also bounds the profile (`windowUs`).
 */
async function fanoutWindow(
  pid: number,
  start: (c: Spawned, n: number, rate: number) => Promise<string>,
): Promise<{ c: Spawned; jobId: string }> {
  const c = startTs("fanout-client", "clients/fanout-client.ts", [], { ipc: true });
  await c.waitFor(/client ready/);
  const jobId = await start(c, Number(process.argv[4] ?? 100), Number(process.argv[5] ?? 400));
  windowUs = { from: nowUs() };
  const w = await c.call<{ frames: number; userNs: number; errors: string[] }>({
    op: "window",
    ms: seconds * 1000,
    pid,
  });
  windowUs.to = nowUs();
  process.stdout.write(
    `load: ${w.frames} frames, ${(w.userNs / w.frames).toFixed(0)} ns user CPU/frame, ${w.errors.length} errors\n`,
  );
  return { c, jobId };
}
const dir = mkdtempSync(join(tmpdir(), "nw-bench-prof-"));
process.env.NODEWAY_HOME = dir;
const ns = await NatsServer.start({ monitorPort: await freePort() });
try {
  // BENCH_NOPROF=1: no profiler (its sampling thread alone costs ~6 % of a core), CPU figures only.
  const traceGc = process.env.BENCH_TRACE_GC !== undefined;
  const noProf = process.env.BENCH_NOPROF !== undefined || traceGc;
  // BENCH_NODE_ARGS: extra V8/Node flags for the gateway and the agent (e.g. GC tuning experiments).
  const extra = (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const prof = (who: string) => [
    ...extra,
    ...(traceGc ? ["--trace-gc"] : noProf ? [] : ["--cpu-prof", `--cpu-prof-dir=${join(dir, who)}`]),
  ];
  const gw = await startGateway(ns.url, { nodeArgs: prof("gateway") });
  // BENCH_MAX_JOBS: the agent's --max-jobs (default 32, the dispatch benchmark's jobs in flight).
  const maxJobs = Number(process.env.BENCH_MAX_JOBS ?? 32);
  // BENCH_AGENT_ARGS: extra agent flags (e.g. `--strategies inline`, `--warm-runners 8`).
  const args = (process.env.BENCH_AGENT_ARGS ?? "").split(" ").filter(Boolean);
  // BENCH_NO_TEST_NODES=1: an agent without `--test-nodes` (as `nodeway up` starts it).
  const testNodes = process.env.BENCH_NO_TEST_NODES === undefined;
  const agent = await startAgent(ns.url, gw.url, { maxJobs, nodeArgs: prof("agent"), args, testNodes });
  const pids: Record<string, number> = { gateway: gw.pid, agent: agent.pid, nats: ns.pid };
  /** Processes whose profiles are printed. */
  const profiled = ["gateway", "agent"];
  /** Extra processes to stop (SIGINT, so that their profiles are written) before the profiles are read. */
  const stops: Spawned[] = [];
  const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuNs(p)]));
  if (what === "dispatch") {
    const saved = await fetch(`${gw.url}/api/workflows`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(example("hello-world")),
    });
    const workflow = ((await saved.json()) as { id: string }).id;
    // BENCH_CLIENT=fetch|ws: queue-client's `fetch` or WebSocket (`run_job`) client; else dispatch-client's node:http.
    const kind = process.env.BENCH_CLIENT;
    const c = kind
      ? startTs("queue-client", "clients/queue-client.ts", [], { ipc: true })
      : startTs("dispatch-client", "clients/dispatch-client.ts", [], { ipc: true });
    await c.waitFor(/client ready/);
    const target = kind ? { target: { mode: kind, base: gw.url, workflow } } : { mode: "ours", base: gw.url, workflow };
    const before = await natsCounts(ns.monitorPort!);
    const r = await c.call<{ jobsPerS: number; done: number; errorCount: number }>({
      op: "throughput",
      ...target,
      concurrency: 32,
      durationMs: seconds * 1000,
    });
    process.stdout.write(`load: ${r.jobsPerS.toFixed(0)} jobs/s (${r.done} jobs), ${r.errorCount} errors\n`);
    await sleep(1_000); // the last jobs' trailing writes (records, leases) land
    printPerJob(before, await natsCounts(ns.monitorPort!), r.done);
    // One job's events as a client streams them: what each job stores in NW_EVENTS.
    const one = await fetch(`${gw.url}/api/workflows/${workflow}/run?stream=true`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ params: { name: "bench" } }),
    });
    const evs = (await one.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const names = evs.map((e) => [e.type, e.status, e.node_id].filter(Boolean).join(":"));
    process.stdout.write(`one job's events (${evs.length}): ${names.join(", ")}\n`);
  } else if (what === "fanout") {
    // N=100 subscribers of one job at 400 events/s (the fan-out benchmark's first size): 1 runs, 99 resume from 0.
    const { c, jobId } = await fanoutWindow(gw.pid, async (c, n, rate) => {
      const r = await c.call<{ jobId: string }>(
        { op: "ours", port: gw.port, n, graph: tokensGraph(rate), count: rate * 600, probe: 500 },
        300_000,
      );
      return r.jobId;
    });
    const m = await (await fetch(`${gw.url}/metrics`)).text();
    process.stdout.write(
      m
        .split("\n")
        .filter((l) => /ws_follows|replays_total|events_in/.test(l) && !l.startsWith("#"))
        .join("\n") + "\n",
    );
    await c.call({ op: "stop", jobId, ours: true });
  } else if (what === "fanout-floor") {
    // The same fan-out load on the floor (bare uWS.js publishing core NATS messages), profiled the same way:
    // the per-event JavaScript of the two servers side by side (`fanout` above profiles ours).
    // BENCH_FLOOR_MODE=js-lib (or js-raw, js-republish): one of the JetStream floors instead of the core one.
    const floor = startTs("floor-server", "peers/floor-server.ts", [ns.url, process.env.BENCH_FLOOR_MODE ?? "core"], {
      nodeArgs: prof("floor"),
    });
    const floorPort = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
    pids.floor = floor.pid;
    cpu0.floor = cpuNs(floor.pid);
    const pub = startTs("floor-pub", "peers/floor-pub.ts", [ns.url]);
    await pub.waitFor(/floor-pub ready/);
    const { c } = await fanoutWindow(floor.pid, async (c, n, rate) => {
      await c.call({ op: "peer", port: floorPort, n, job: "prof", count: rate * 600, rate, probe: 500 }, 300_000);
      return "prof";
    });
    await c.call({ op: "stop", jobId: "prof", ours: false });
    process.stdout.write(`floor: ${((cpuNs(floor.pid) - cpu0.floor) / 1e6).toFixed(0)} ms CPU\n`);
    delete pids.floor;
    await floor.stop("SIGINT");
    profiled.splice(0, profiled.length, "floor");
  } else if (what === "tokens" || what === "tokens-proxy") {
    // tokens-proxy: the same load through our TLS proxy (self-signed), profiled (or GC-traced) like the others.
    let url = gw.url.replace(/^http/, "ws");
    if (what === "tokens-proxy") {
      const proxy = await startOurProxy(gw.url, { nodeArgs: prof("proxy") });
      pids.proxy = proxy.pid;
      cpu0.proxy = cpuNs(proxy.pid);
      profiled.push("proxy");
      stops.push(proxy);
      url = `wss://127.0.0.1:${proxy.httpsPort}`;
    }
    const c = startTs("token-client", "clients/token-client.ts", [], { ipc: true });
    await c.waitFor(/client ready/);
    const r = await c.call<{ lat: number[] }>({
      op: "run",
      mode: "ours",
      url,
      graph: tokensGraph(50),
      jobs: 20,
      count: seconds * 50,
      rate: 50,
      staggerMs: 50,
    });
    const lat = [...r.lat].sort((a, b) => a - b);
    const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))]!.toFixed(2);
    process.stdout.write(
      `load: ${r.lat.length} tokens, latency p50 ${q(0.5)} p99 ${q(0.99)} p99.9 ${q(0.999)} max ${q(1)} ms\n`,
    );
  }
  for (const [k, p] of Object.entries(pids))
    process.stdout.write(`${k}: ${((cpuNs(p) - cpu0[k]!) / 1e6).toFixed(0)} ms CPU\n`);
  await gw.stop("SIGINT");
  await agent.stop("SIGINT");
  for (const p of stops) await p.stop("SIGINT");
  if (traceGc)
    for (const [who, p] of [["gateway", gw], ["agent", agent], ...stops.map((s) => ["proxy", s] as const)] as const)
      process.stdout.write(`${who}: ${gcSummary(p.out())}\n`);
  for (const who of noProf ? [] : profiled) {
    // A process started with the ts loader also profiles the loader's thread (CPU.<date>.<time>.<pid>.<thread>.<n>):
    // the main thread is thread 0.
    const files = readdirSync(join(dir, who)).filter((f) => /\.0\.\d+\.cpuprofile$/.test(f));
    if (files.length === 0) continue;
    const t = topFrames(
      join(dir, who, files[0]!),
      25,
      windowUs?.to ? { from: windowUs.from, to: windowUs.to } : undefined,
    );
    process.stdout.write(`${who}: ${t.total_ms.toFixed(0)} ms busy\n`);
    for (const f of t.frames) process.stdout.write(`${String(f.pct).padStart(5)}%  ${f.frame}\n`);
  }
} finally {
  await ns.stop();
}
process.exit(0);

function freePort(): Promise<number> {
  return new Promise((res) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/** Per client connection (by name) messages in/out as nats-server counts them, and per stream stored messages. */
type Counts = { conns: Map<string, { in: number; out: number }>; streams: Map<string, number> };
async function natsCounts(monitorPort: number): Promise<Counts> {
  const base = `http://127.0.0.1:${monitorPort}`;
  const connz = (await (await fetch(`${base}/connz?limit=1024`)).json()) as {
    connections?: { name?: string; cid: number; in_msgs: number; out_msgs: number }[];
  };
  const conns = new Map<string, { in: number; out: number }>();
  for (const c of connz.connections ?? []) {
    const k = c.name || `cid ${c.cid}`;
    const prev = conns.get(k) ?? { in: 0, out: 0 };
    conns.set(k, { in: prev.in + c.in_msgs, out: prev.out + c.out_msgs });
  }
  const jsz = (await (await fetch(`${base}/jsz?accounts=true&streams=true`)).json()) as {
    account_details?: { stream_detail?: { name: string; state: { messages: number; last_seq: number } }[] }[];
  };
  const streams = new Map<string, number>();
  for (const a of jsz.account_details ?? [])
    for (const st of a.stream_detail ?? []) streams.set(st.name, st.state.last_seq);
  return { conns, streams };
}

/** Messages per job: what each connection published (in) and was delivered (out), and stream appends. */
function printPerJob(a: Counts, b: Counts, jobs: number): void {
  const per = (x: number) => (x / jobs).toFixed(2);
  process.stdout.write(`NATS messages per job (${jobs} jobs; in = published by the client, out = delivered to it)\n`);
  for (const [k, v] of b.conns) {
    const o = a.conns.get(k) ?? { in: 0, out: 0 };
    if (v.in - o.in + v.out - o.out > jobs / 10)
      process.stdout.write(`  ${k}: in ${per(v.in - o.in)}, out ${per(v.out - o.out)}\n`);
  }
  for (const [k, v] of b.streams) {
    const d = v - (a.streams.get(k) ?? 0);
    if (d > 0) process.stdout.write(`  stream ${k}: ${per(d)} appended\n`);
  }
}

/** `--trace-gc` lines → pauses by kind: how many, how many over 1 and 2 ms, the longest. */
function gcSummary(out: string): string {
  const kinds = new Map<string, number[]>();
  for (const m of out.matchAll(
    /(Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact)\b[^,\n]*, ([\d.]+) \/ [\d.]+ ms/g,
  )) {
    const list = kinds.get(m[1]!) ?? [];
    list.push(Number(m[2]));
    kinds.set(m[1]!, list);
  }
  if (kinds.size === 0) return "no GC lines";
  return [...kinds]
    .map(
      ([k, v]) =>
        `${k} ${v.length}× (>1 ms ${v.filter((x) => x > 1).length}, >2 ms ${v.filter((x) => x > 2).length}, max ${Math.max(...v).toFixed(2)} ms)`,
    )
    .join("; ");
}
