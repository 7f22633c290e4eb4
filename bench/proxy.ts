/**
 * Benchmark 4 (B4, B5): our TLS proxy (`nodeway proxy --tls=self-signed`, access log off) against nginx (Debian,
 * one worker, TLS in, cleartext upstream with `keepalive 64`, access log off, same RSA-2048 self-signed kind of
 * certificate) in front of the same bare uWS.js upstream. Proxies are pinned to core 0; wrk, the upstream and the
 * latency client to core 1.
 * - requests per proxy CPU-second: `wrk -t1 -c32` over HTTPS for a fixed time; proxy CPU from /proc (nginx: master
 *   + worker).
 * - HTTP added p99 at a fixed sub-saturation rate (from the scheduled send time, or the actual one when a timer
 *   fired early) vs the upstream direct.
 * - WS stream added p99 (B5): N streams × 20 frames/s, each stream at its own phase like independent token
 *   streams; frames carry the upstream's send time; through the proxy vs direct. Proxy CPU per relayed frame is in
 *   the table, and so (table only) is the p99 of a burst: 200 sockets all sent their frame in the same tick, which
 *   measures how long a proxy takes to relay 200 frames back to back rather than what one message pays.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  addedGoal,
  alternate,
  emitGoal,
  invalid,
  log as mkLog,
  med,
  ratioGoal,
  rowsOf,
  type Arm,
  type GoalLine,
} from "./lib/report.js";
import { cpuOf, startNginx, wrkPerCpu } from "./lib/nginx.js";
import { ensureCommands, startTs } from "./lib/procs.js";
import { proxyUnavailable, startOurProxy } from "./lib/proxy.js";

const BENCH = "proxy";
const quick = process.argv.includes("--quick");
const log = mkLog(BENCH);
const cfg = quick
  ? { wrkS: 3, rate: 1000, latMs: 2000, streams: 100, rounds: 3 }
  : { wrkS: 5, rate: 1000, latMs: 4000, streams: 200, rounds: 5 };
/** The burst variant (every stream's frame in one tick) is table-only: it measures relaying N frames back to back. */
const BURST_STREAMS = 200;
const METRICS = ["req_per_cpu_s_vs_nginx", "http_added_p99_ms", "ws_added_p99_ms"];

const dir = mkdtempSync(join(tmpdir(), "nw-bench-nginx-"));
process.env.NODEWAY_HOME = dir;
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const lines: GoalLine[] = [];
try {
  const unavailable = (await proxyUnavailable()) ?? ensureCommands({ wrk: "wrk", nginx: "nginx" });
  if (unavailable) throw new Error(`skipped: ${unavailable}`);
  const up = startTs("upstream", "peers/upstream.ts", [String(20)], { cpu: "1" });
  const upPort = Number((await up.waitFor(/upstream listening (\d+)/))[1]);
  const ours = await startOurProxy(`http://127.0.0.1:${upPort}`, { cpu: "0" });
  const nginx = await startNginx(dir, upPort);
  const client = startTs("proxy-client", "clients/proxy-client.ts", [], { cpu: "1", ipc: true });
  await client.waitFor(/client ready/);
  const errors: string[] = [];

  const arm = (name: string, base: string, wsBase: string, pids: (() => number[]) | null): Arm => ({
    name,
    async run() {
      const m: Record<string, number> = {};
      if (pids) {
        const w = wrkPerCpu(`${base}/`, cfg.wrkS, pids);
        if (w.errors) errors.push(`${name}: ${w.errors}`);
        m.wrk_rps = w.rps;
        m.req_per_cpu_s = w.perCpuS;
        m.proxy_cpu_pct = (w.cpuS / cfg.wrkS) * 100;
      }
      const h = await client.call<{
        p50: number;
        p99: number;
        n: number;
        errors: string[];
        errorCount: number;
        expected: number;
      }>({ op: "http", url: `${base}/`, rate: cfg.rate, durationMs: cfg.latMs, conns: 16 });
      if (h.errorCount || h.n !== h.expected)
        errors.push(`${name}: http ${h.n}/${h.expected} ok; ${h.errors.join("; ")}`);
      type WsResult = { p50: number; p99: number; n: number; frames: number; errors: string[]; errorCount: number };
      const w0 = pids ? cpuOf(pids()) : 0;
      const s = await client.call<WsResult>({ op: "ws", url: wsBase, streams: cfg.streams, durationMs: cfg.latMs });
      if (pids) m.ws_cpu_us_per_frame = (cpuOf(pids()) - w0) / 1e3 / s.frames;
      const b = await client.call<WsResult>({
        op: "ws",
        url: wsBase,
        streams: BURST_STREAMS,
        durationMs: cfg.latMs,
        burst: true,
      });
      for (const [what, r] of [
        ["ws", s],
        ["ws burst", b],
      ] as const) {
        if (r.errorCount || r.n === 0) errors.push(`${name}: ${what} ${r.n} frames; ${r.errors.join("; ")}`);
      }
      Object.assign(m, {
        http_p50_ms: h.p50,
        http_p99_ms: h.p99,
        ws_p50_ms: s.p50,
        ws_p99_ms: s.p99,
        ws_burst_p99_ms: b.p99,
      });
      return m;
    },
  });
  const res = await alternate(
    [
      arm("ours", `https://127.0.0.1:${ours.httpsPort}`, `wss://127.0.0.1:${ours.httpsPort}`, () => [ours.pid]),
      arm("nginx", `https://127.0.0.1:${nginx.port}`, `wss://127.0.0.1:${nginx.port}`, nginx.pids),
      arm("nginx_aa", `https://127.0.0.1:${nginx.port}`, `wss://127.0.0.1:${nginx.port}`, nginx.pids),
      arm("direct", `http://127.0.0.1:${upPort}`, `ws://127.0.0.1:${upPort}`, null),
    ],
    cfg.rounds,
    log,
  );
  rowsOf(BENCH, res, {
    wrk_rps: "req/s",
    req_per_cpu_s: "req/CPU-s",
    proxy_cpu_pct: "% core",
    http_p50_ms: "ms",
    http_p99_ms: "ms",
    ws_p50_ms: "ms",
    ws_p99_ms: "ms",
    ws_cpu_us_per_frame: "µs CPU",
    ws_burst_p99_ms: "ms",
  });
  if (errors.length) throw new Error(`invalid run: ${errors.slice(0, 3).join("; ")}`);
  const n = (m: string, rel: boolean) =>
    Math.abs(med(res, "nginx", m) - med(res, "nginx_aa", m)) / (rel ? med(res, "nginx", m) : 1);
  lines.push(
    ratioGoal(
      BENCH,
      "req_per_cpu_s_vs_nginx",
      med(res, "ours", "req_per_cpu_s"),
      med(res, "nginx", "req_per_cpu_s"),
      ">=",
      0.4,
      n("req_per_cpu_s", true),
    ),
  );
  lines.push(
    addedGoal(
      BENCH,
      "http_added_p99_ms",
      med(res, "ours", "http_p99_ms"),
      med(res, "direct", "http_p99_ms"),
      1,
      n("http_p99_ms", false),
    ),
  );
  lines.push(
    addedGoal(
      BENCH,
      "ws_added_p99_ms",
      med(res, "ours", "ws_p99_ms"),
      med(res, "direct", "ws_p99_ms"),
      1,
      n("ws_p99_ms", false),
    ),
  );
} catch (err) {
  for (const m of METRICS)
    if (!lines.some((l) => l.metric === m))
      lines.push(invalid(BENCH, m, "-", (err as Error).message.split("\n")[0]!.slice(0, 300)));
} finally {
  for (const g of lines) emitGoal(g);
}
process.exit(0);
