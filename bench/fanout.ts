/**
 * Benchmark 2 (B2): one job's events to N WebSocket subscribers (N = 100, 1,000, 5,000). Primary metric: server
 * CPU per delivered message (server process CPU over a window ÷ frames all subscribers received in it), at a
 * fixed aggregate delivery rate, the same for both sides of a comparison (CPU per delivery falls with load). Two
 * pairs per N: our gateway (events from a real agent via JetStream; one socket runs the job, the others
 * `reconnect_job` from seq 0) against a bare uWS.js server that `app.publish`es each NATS message, at about half a
 * core of bare uWS; and our gateway against the same gateway shape written with `ws` (a loop over sockets), at the
 * rate `ws` sustains. At N = 100 a third pair: ours against bare uWS reading the same events from JetStream (the job
 * run by our gateway and agent, the floor's sockets fed from NW_EVENTS by a push consumer read on a core
 * subscription, the sequences taken from each reply subject, as the gateway's hub reads them). Each peer runs twice
 * (A/A) for the noise band. Servers are pinned to core 0; clients, nats-server, agent and publisher to core 1.
 * Diagnostics (`BENCH_FANOUT_JS_SIZES=100`, table only): bare uWS fed from a JetStream stream, by a hand-parsed
 * push consumer (`uws_js_raw`, the least a fan-out whose events carry stream sequences can do), by the library's
 * ordered consumer as the gateway used it before it read a push consumer itself (`uws_js_lib`), and by the stream's
 * republish to core NATS with the sequence read from the raw header bytes (`uws_js_republish`).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { alternate, emitGoal, invalid, log as mkLog, med, ratioGoal, rowsOf } from "./lib/report.js";
import type { Arm, GoalLine } from "./lib/report.js";
import { cpuNs, sleep, startCompiled, startTs, type Spawned } from "./lib/procs.js";
import { NatsServer, startAgent, startGateway, tokensGraph } from "./lib/stack.js";

const BENCH = "ws_fanout";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
/** `BENCH_FANOUT_SIZES=1000,5000` runs some sizes only (diagnostics); the goal lines of the others are then absent. */
const SIZES = process.env.BENCH_FANOUT_SIZES?.split(",").map(Number) ?? (quick ? [100, 1000] : [100, 1000, 5000]);
/** Sizes with every JetStream floor arm (`BENCH_FANOUT_JS_SIZES=100,1000`; none unless set). */
const JS_FLOOR_SIZES = (process.env.BENCH_FANOUT_JS_SIZES ?? "").split(",").filter(Boolean).map(Number);
/**
 * The size whose goal line also compares ours with a JetStream floor: bare uWS reading the agent's own events from
 * NW_EVENTS through a push consumer read on a core subscription (`uws_js_nw`, with its A/A), the job run by our
 * gateway and agent.
 */
const JS_GOAL_SIZE = 100;
/**
 * The uWS pair's deliveries per second for each N: about half a core of bare uWS here. CPU per delivery falls with
 * load (uWS drains a loop iteration's publishes to a socket in one write, the kernel batches loopback receives), so
 * both sides of a pair get the same rate. Less load leaves a few dozen /proc ticks per window; more (400k/s at
 * N = 1,000 and 5,000) puts servers at 94-100 % of their core. `BENCH_FANOUT_RATE` sets one rate for all N.
 */
const RATE_FOR_N: Record<number, number> = { 100: 400_000, 1000: 200_000, 5000: 200_000 };
const deliveriesPerS = (n: number): number => Number(process.env.BENCH_FANOUT_RATE ?? RATE_FOR_N[n] ?? 200_000);
/**
 * The `ws` pair's rate, for `ws` and for ours alike: above ~100k/s (a full core) `ws` falls behind, and its backlog
 * then drains on the core the next arm is measured on.
 */
const WS_DELIVERIES_PER_S = Number(process.env.BENCH_FANOUT_WS_RATE ?? 60_000);
/** An arm whose subscribers received less than this share of the offered deliveries did not do the same work. */
const MIN_DELIVERED = 0.85;
/** `/proc/<pid>/stat` counts user CPU in 10 ms ticks: a window's figure is uncertain by one tick. */
const TICK_MS = 10;
/** Bare uWS uses 40-100 ms of user CPU a second at these rates: 8 s hold 30-80 ticks of it. */
const WINDOW_MS = quick ? 3_000 : 8_000;
/**
 * The kernel splits a process's CPU into user and system by sampling at each of its ticks (250 Hz here), so a
 * window's user figure is a count of samples. At N = 100 user time is about a tenth of each server's CPU: some
 * 100 samples in 8 s, ±10 % a window. Its arms get twice the window (in a full run).
 */
const windowMs = (n: number) => (n === JS_GOAL_SIZE && !quick ? 2 * WINDOW_MS : WINDOW_MS);
const ROUNDS = quick ? 3 : 5;
/** Its rounds still spread by ±10-15 % with the longer window: the N = 100 arms get two more in a full run. */
const roundsFor = (n: number) => (n === JS_GOAL_SIZE && !quick ? ROUNDS + 2 : ROUNDS);
/** Events a job is asked for: more than any arm's probe and window use (it is stopped after its window). */
const COUNT = (rate: number) => Math.ceil(rate * 600);
/** Long enough for ~20 events per probe. */
const PROBE_MS = (rate: number) => Math.max(500, Math.ceil((20 / rate) * 1000));

process.env.NODEWAY_HOME = mkdtempSync(join(tmpdir(), "nw-bench-home-"));
const ns = await NatsServer.start();
process.on("exit", () => void ns.stop());
const pin = (pid: number, cpu: string) => {
  try {
    execFileSync("taskset", ["-a", "-p", "-c", cpu, String(pid)], { stdio: "ignore" });
  } catch {
    /* best effort */
  }
};
pin((ns as unknown as { proc: { pid: number } }).proc.pid, "1");

/**
 * Waits (with a deadline) until a server is idle: an arm measured at its limit (`ws`) still has frames buffered
 * when its job stops, and draining them on core 0 would take CPU from the next arm's window.
 */
async function settled(pid: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  let before = cpuNs(pid);
  while (Date.now() < deadline) {
    await sleep(200);
    const now = cpuNs(pid);
    if (now - before < 0.05 * 200e6) return; // < 5 % of a core
    before = now;
  }
  throw new Error(`server ${pid} still busy 60 s after its job stopped`);
}

/**
 * Goals use user CPU: on this VM each delivery also costs 1-4 µs of kernel time (one loopback TCP send per socket,
 * the receive path charged to the sender), about the same for every server; total CPU is in the table.
 */
const METRIC = "user_ns_per_msg";
type Res = Map<string, Map<string, number[]>>;

/**
 * The noise band of a pair, relative: the peer's A/A spread plus the tick resolution of our user CPU in a window
 * (ours at the `ws` pair's rate uses a few dozen ticks a window, so one tick is a few per cent).
 */
function pairNoise(res: Res, ours: string, peer: string): number {
  const aa = Math.abs(med(res, peer, METRIC) - med(res, `${peer}_aa`, METRIC)) / med(res, peer, METRIC);
  return aa + TICK_MS / med(res, ours, "user_cpu_ms");
}

/**
 * The goal lines of one N: ours against bare uWS, and ours against `ws`, each pair at its own common rate; at
 * `JS_GOAL_SIZE` also ours against bare uWS fed the same events from NW_EVENTS, at the uWS pair's rate.
 */
function pairLines(n: number, res: Res, errors: Map<string, string[]>): GoalLine[] {
  const bad = (arms: string[]) => arms.flatMap((a) => (errors.get(a) ?? []).map((e) => `${a}: ${e}`));
  const pairs: (readonly [string, string, string, number])[] = [
    [`cpu_per_msg_vs_uws_${n}`, "ours", "uws", 1.3],
    [`cpu_per_msg_vs_ws_${n}`, "ours_at_ws_rate", "ws", 0.1],
    ...(n === JS_GOAL_SIZE ? ([[`cpu_per_msg_vs_uws_js_${n}`, "ours", "uws_js_nw", 1.3]] as const) : []),
  ];
  return pairs.map(([metric, ours, peer, target]) => {
    const e = bad([ours, peer, `${peer}_aa`]);
    if (e.length) return invalid(BENCH, metric, `ratio <= ${target}`, `invalid run: ${e.slice(0, 3).join("; ")}`);
    const [o, p] = [med(res, ours, METRIC), med(res, peer, METRIC)];
    return ratioGoal(BENCH, metric, o, p, "<=", target, pairNoise(res, ours, peer));
  });
}

function logJsFloors(n: number, res: Res, errors: Map<string, string[]>): void {
  for (const a of ["uws_js_raw", "uws_js_lib", "uws_js_republish"]) {
    if (errors.has(a)) log(`N=${n}: ${a} run invalid: ${errors.get(a)!.slice(0, 3).join("; ")}`);
  }
  const r = (a: string, b: string) => (med(res, a, METRIC) / med(res, b, METRIC)).toFixed(2);
  log(
    `N=${n}: JetStream floors vs the core floor: republished to core ${r("uws_js_republish", "uws")}×, ` +
      `raw push consumer ${r("uws_js_raw", "uws")}×, library ordered consumer ${r("uws_js_lib", "uws")}×; ` +
      `ours ${r("ours", "uws_js_lib")}× the library floor`,
  );
}

interface Servers {
  gw: Spawned & { port: number };
  floor: Spawned;
  floorPort: number;
  wsgw: Spawned;
  wsPort: number;
  js: {
    jsRaw: Spawned;
    jsRawPort: number;
    jsLib: Spawned;
    jsLibPort: number;
    jsRep: Spawned;
    jsRepPort: number;
    jsNw: Spawned;
    jsNwPort: number;
  };
}
type Window = { frames: number; cpuNs: number; userNs: number; sysNs: number; medPer: number; errors: string[] };

/**
 * One arm's round: starts the job (`start`), measures a window of the server's CPU and the frames delivered, stops
 * the job and waits for the server to go idle. Failures go to `errors` under the arm's name.
 */
interface FanArm {
  name: string;
  server: Spawned;
  ours: boolean;
  /** Deliveries per second offered. */
  offered: number;
  windowMs: number;
}

type Errors = Map<string, string[]>;
async function measure(
  client: Spawned,
  errors: Errors,
  arm: FanArm,
  start: () => Promise<{ jobId: string }>,
  round: number,
): Promise<Record<string, number>> {
  const { jobId } = await start();
  const w = await client.call<Window>({ op: "window", ms: arm.windowMs, pid: arm.server.pid });
  await client.call({ op: "stop", jobId, ours: arm.ours });
  await settled(arm.server.pid);
  // An uneven window (sockets still catching up on the replay when it opened) only spoils that window's figures,
  // and the warm-up's are dropped anyway; a gap, a disorder or a closed socket spoils the run in any round.
  const uneven = round === 0 ? w.errors.filter((e) => /far from the median/.test(e)) : [];
  const errs = w.errors.filter((e) => !uneven.includes(e));
  if (uneven.length) log(`${arm.name}: warm-up window uneven (${uneven[0]}), not counted`);
  const perS = w.frames / (arm.windowMs / 1000);
  const short = round > 0 && perS < MIN_DELIVERED * arm.offered;
  if (short) errs.push(`delivered ${perS.toFixed(0)}/s of ${arm.offered}/s offered`);
  if (errs.length) errors.set(arm.name, [...(errors.get(arm.name) ?? []), ...errs]);
  const per = (ns: number) => ns / w.frames;
  const cpuPct = (w.cpuNs / 1e6 / arm.windowMs) * 100;
  const { userNs, sysNs, cpuNs } = w;
  return {
    user_ns_per_msg: per(userNs),
    sys_ns_per_msg: per(sysNs),
    cpu_ns_per_msg: per(cpuNs),
    deliveries_per_s: perS,
    server_cpu_pct: cpuPct,
    user_cpu_ms: userNs / 1e6,
  };
}

const UNITS = {
  user_ns_per_msg: "ns user CPU/msg",
  sys_ns_per_msg: "ns sys CPU/msg",
  cpu_ns_per_msg: "ns CPU/msg",
  deliveries_per_s: "msg/s",
  server_cpu_pct: "% core",
  user_cpu_ms: "ms user CPU/window",
};

/** Every arm at one N, alternating rounds; returns the N's goal lines. */
async function measureSize(n: number, client: Spawned, s: Servers): Promise<GoalLine[]> {
  const errors = new Map<string, string[]>();
  let jobN = 0;
  const peer = (name: string, server: Spawned, port: number, total: number): Arm => {
    const rate = total / n;
    const probe = PROBE_MS(rate);
    const job = () => ({ op: "peer", port, n, job: `fan${n}x${++jobN}`, count: COUNT(rate), rate, probe });
    const arm = { name, server, ours: false, offered: total, windowMs: windowMs(n) };
    return { name, run: (round) => measure(client, errors, arm, () => client.call(job()), round) };
  };
  const oursAt = (name: string, total: number): Arm => {
    const rate = total / n;
    const job = { op: "ours", port: s.gw.port, n, graph: tokensGraph(rate), count: COUNT(rate), probe: PROBE_MS(rate) };
    const arm = { name, server: s.gw, ours: true, offered: total, windowMs: windowMs(n) };
    return { name, run: (round) => measure(client, errors, arm, () => client.call(job, 300_000), round) };
  };
  /** Bare uWS fed from NW_EVENTS while our gateway and agent run the job (`peer-nw`). */
  const peerNw = (name: string, total: number): Arm => {
    const rate = total / n;
    const { jsNw, jsNwPort } = s.js;
    const job = { op: "peer-nw", gwPort: s.gw.port, port: jsNwPort, n, graph: tokensGraph(rate), count: COUNT(rate) };
    const arm = { name, server: jsNw, ours: false, offered: total, windowMs: windowMs(n) };
    const start = () => client.call<{ jobId: string }>({ ...job, probe: PROBE_MS(rate) }, 300_000);
    return { name, run: (round) => measure(client, errors, arm, start, round) };
  };
  const total = deliveriesPerS(n);
  const { jsRaw, jsRawPort, jsLib, jsLibPort, jsRep, jsRepPort } = s.js;
  const jsArms = [
    peer("uws_js_raw", jsRaw, jsRawPort, total),
    peer("uws_js_lib", jsLib, jsLibPort, total),
    peer("uws_js_republish", jsRep, jsRepPort, total),
  ];
  const nwArms = n === JS_GOAL_SIZE ? [peerNw("uws_js_nw", total), peerNw("uws_js_nw_aa", total)] : [];
  const allArms: Arm[] = [
    oursAt("ours", total),
    peer("uws", s.floor, s.floorPort, total),
    peer("uws_aa", s.floor, s.floorPort, total),
    oursAt("ours_at_ws_rate", WS_DELIVERIES_PER_S),
    peer("ws", s.wsgw, s.wsPort, WS_DELIVERIES_PER_S),
    peer("ws_aa", s.wsgw, s.wsPort, WS_DELIVERIES_PER_S),
    ...nwArms,
    ...(JS_FLOOR_SIZES.includes(n) ? jsArms : []),
  ];
  // `BENCH_FANOUT_ARMS=ours,uws_js_lib` runs some arms only (diagnostics: lines needing an absent arm are NaN).
  const only = process.env.BENCH_FANOUT_ARMS?.split(",");
  const arms = only ? allArms.filter((a) => only.includes(a.name)) : allArms;
  log(
    `N=${n}: ${total} deliveries/s (uws pair), ${WS_DELIVERIES_PER_S} (ws pair), ${windowMs(n)} ms, ${roundsFor(n)} rounds`,
  );
  const res = await alternate(arms, roundsFor(n), log);
  rowsOf(`${BENCH}_${n}`, res, UNITS);
  if (JS_FLOOR_SIZES.includes(n)) logJsFloors(n, res, errors);
  return pairLines(n, res, errors);
}

const lines: GoalLine[] = [];
try {
  const gw = await startGateway(ns.url, { cpu: "0" });
  await startAgent(ns.url, gw.url, { maxJobs: 8, cpu: "1" });
  const floor = startCompiled("floor-server", "peers/floor-server.ts", [ns.url], { cpu: "0" });
  const floorPort = Number((await floor.waitFor(/floor listening (\d+)/))[1]);
  const jsRaw = startCompiled("floor-js-raw", "peers/floor-server.ts", [ns.url, "js-raw"], { cpu: "0" });
  const jsRawPort = Number((await jsRaw.waitFor(/floor listening (\d+)/))[1]);
  const jsLib = startCompiled("floor-js-lib", "peers/floor-server.ts", [ns.url, "js-lib"], { cpu: "0" });
  const jsLibPort = Number((await jsLib.waitFor(/floor listening (\d+)/))[1]);
  const jsRep = startCompiled("floor-js-republish", "peers/floor-server.ts", [ns.url, "js-republish"], { cpu: "0" });
  const jsRepPort = Number((await jsRep.waitFor(/floor listening (\d+)/))[1]);
  const jsNw = startCompiled("floor-js-nw", "peers/floor-server.ts", [ns.url, "js-nw"], { cpu: "0" });
  const jsNwPort = Number((await jsNw.waitFor(/floor listening (\d+)/))[1]);
  const wsgw = startTs("ws-gateway", "peers/ws-gateway.ts", [ns.url], { cpu: "0" });
  const wsPort = Number((await wsgw.waitFor(/ws listening (\d+)/))[1]);
  const pub = startTs("floor-pub", "peers/floor-pub.ts", [ns.url], { cpu: "1" });
  await pub.waitFor(/floor-pub ready/);
  const client = startTs("fanout-client", "clients/fanout-client.ts", [], { cpu: "1", ipc: true });
  await client.waitFor(/client ready/);

  const servers = {
    gw,
    floor,
    floorPort,
    wsgw,
    wsPort,
    js: { jsRaw, jsRawPort, jsLib, jsLibPort, jsRep, jsRepPort, jsNw, jsNwPort },
  };
  for (const n of SIZES) lines.push(...(await measureSize(n, client, servers)));
} catch (err) {
  process.exitCode = 1;
  const why = `bench failed: ${(err as Error).message.split("\n")[0]!.slice(0, 300)}`;
  log(why);
  for (const n of SIZES) {
    const metrics = [`cpu_per_msg_vs_uws_${n}`, `cpu_per_msg_vs_ws_${n}`];
    for (const m of n === JS_GOAL_SIZE ? [...metrics, `cpu_per_msg_vs_uws_js_${n}`] : metrics) {
      if (!lines.some((l) => l.metric === m)) lines.push(invalid(BENCH, m, "-", why));
    }
  }
} finally {
  for (const g of lines) emitGoal(g);
  await ns.stop();
}
process.exit(process.exitCode ?? 0);
