/**
 * `npm run bench` (everything) and `npm run bench -- --quick` (a ≤ 2 minute subset, what CI runs): runs each
 * benchmark in its own child process (its own process group, killed with everything it started on timeout),
 * prints a table of the medians, then per goal exactly one JSON line
 * `{"bench","metric","ours","peer","ratio","goal","verdict","met","noise"}` (+ `reason` unless met); verdicts are
 * judged against the A/A noise band (lib/report.ts). A bench that exits with an error or times out has every line
 * it reported made invalid. Never fails on a missed goal (exit 0); exits 1 only when the harness itself breaks.
 * Options: --quick, --only <name>[,<name>…] (codec, token-path, fanout, dispatch, proxy, strategies, scale).
 */
import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { invalid, invalidated, type GoalLine, type Row, type Verdict } from "./lib/report.js";

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes("--quick");
const onlyIdx = process.argv.indexOf("--only");
const only = onlyIdx > 0 ? new Set(process.argv[onlyIdx + 1]!.split(",")) : null;

interface Bench {
  name: string;
  script: string;
  quick: boolean;
  timeoutS: number;
  quickTimeoutS: number;
  /** Goal metrics this bench reports (so a crash still yields one line per goal). */
  metrics: (quick: boolean) => string[];
  bench: string;
}

const fanoutSizes = (q: boolean) => (q ? [100, 1000] : [100, 1000, 5000]);
/** The scale benchmark's goal lines, for the sizes it runs (`BENCH_SCALE_*`, as bench/scale.ts reads them). */
function scaleMetrics(): string[] {
  const sizes = (v: string | undefined, d: number[]) => (v ? v.split(",").map(Number) : d);
  const label = (n: number) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
  const [r, q, a] = [
    sizes(process.env.BENCH_SCALE_RECORDS, [1_000, 100_000]).map(label),
    sizes(process.env.BENCH_SCALE_QUEUE, [0, 10_000, 100_000]).map(label),
    sizes(process.env.BENCH_SCALE_AGENTS, [10, 100, 1_000]).map(String),
  ];
  const k = sizes(process.env.BENCH_SCALE_SOCKETS, [1_000, 10_000, 50_000]).map(label);
  const st = sizes(process.env.BENCH_SCALE_STORM, [1_000, 5_000]).map(label);
  const rec = ["scrape_ms", "list_ms", "list_status_ms", "list_workflow_ms", "get_ms"];
  return [
    ...rec.map((m) => `${m}_${r.at(-1)}_vs_${r[0]}`),
    `scrape_ms_${r.at(-1)}`,
    `get_ms_${r.at(-1)}_vs_kv_get`,
    `submit_p50_ms_${q.at(-1)}_vs_${q[0]}`,
    `agents_list_ms_${a.at(-1)}`,
    `dispatch_p50_ms_${a.at(-1)}_vs_${a[0]}`,
    `socket_bytes_${k.at(-1)}_vs_bare_uws`,
    `idle_cpu_pct_${k.at(-1)}`,
    `storm_all_live_ms_${st.at(-1)}`,
    `storm_peak_vs_steady_${st.at(-1)}`,
  ];
}
const BENCHES: Bench[] = [
  {
    name: "codec",
    bench: "codec",
    script: "codec.ts",
    quick: true,
    timeoutS: 120,
    quickTimeoutS: 30,
    metrics: () => ["token_roundtrip_speed", "token_encode_speed", "token_decode_speed", "bin4k_decode_speed"],
  },
  {
    name: "token-path",
    bench: "token_path",
    script: "token-path.ts",
    quick: true,
    timeoutS: 500,
    quickTimeoutS: 60,
    metrics: (q) => [
      ...["added_p50_ms", "added_p99_ms", "ttft_added_p50_ms", "added_p50_tls_proxy_ms", "added_p99_tls_proxy_ms"],
      ...(q ? [] : ["added_p50_r3_ms"]),
    ],
  },
  {
    name: "dispatch",
    bench: "dispatch",
    script: "dispatch.ts",
    quick: true,
    timeoutS: 600,
    quickTimeoutS: 45,
    metrics: (q) => [
      "first_event_p50_ms",
      "jobs_per_s",
      ...(q ? [] : ["first_event_p50_r3_vs_r1"]),
      ...(q
        ? []
        : ["fetch", "ws"].flatMap((k) => [
            `${k}_first_event_p50_vs_bullmq`,
            `${k}_first_event_p99_vs_bullmq`,
            `${k}_jobs_per_s_vs_bullmq_default`,
            `${k}_jobs_per_s_vs_bullmq_matched`,
          ])),
    ],
  },
  {
    name: "fanout",
    bench: "ws_fanout",
    script: "fanout.ts",
    quick: false,
    timeoutS: 3600,
    quickTimeoutS: 180,
    metrics: (q) =>
      fanoutSizes(q).flatMap((n) => [
        `cpu_per_msg_vs_uws_${n}`,
        `cpu_per_msg_vs_ws_${n}`,
        ...(n === 100 ? [`cpu_per_msg_vs_uws_js_${n}`] : []),
      ]),
  },
  {
    name: "proxy",
    bench: "proxy",
    script: "proxy.ts",
    quick: false,
    timeoutS: 600,
    quickTimeoutS: 90,
    metrics: () => ["req_per_cpu_s_vs_nginx", "http_added_p99_ms", "ws_added_p99_ms"],
  },
  // No goal (the issue sets none): what each step of isolation costs a job, in table rows.
  {
    name: "strategies",
    bench: "strategies",
    script: "strategies.ts",
    quick: false,
    timeoutS: 300,
    quickTimeoutS: 60,
    metrics: () => [],
  },
  {
    name: "scale",
    bench: "scale",
    script: "scale.ts",
    quick: false,
    timeoutS: 1800,
    quickTimeoutS: 600,
    metrics: scaleMetrics,
  },
];

function runOne(b: Bench): Promise<{ rows: Row[]; goals: GoalLine[]; error: string | null }> {
  return new Promise((resolve) => {
    const rows: Row[] = [];
    const goals: GoalLine[] = [];
    const child = spawn(
      process.execPath,
      ["--import", join(here, "register.mjs"), join(here, b.script), ...(quick ? ["--quick"] : [])],
      {
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
        env: { ...process.env, NODE_NO_WARNINGS: "1" },
      },
    );
    const killGroup = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    };
    process.on("exit", killGroup);
    const limit = quick ? b.quickTimeoutS : b.timeoutS;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, limit * 1000);
    let buf = "";
    let errTail = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith("@row ")) rows.push(JSON.parse(line.slice(5)) as Row);
        else if (line.startsWith("@goal ")) goals.push(JSON.parse(line.slice(6)) as GoalLine);
      }
    });
    child.stderr!.on("data", (d: Buffer) => {
      process.stderr.write(d);
      errTail = (errTail + d.toString()).slice(-2000);
    });
    child.on("exit", (code, sig) => {
      clearTimeout(timer);
      killGroup(); // anything it left behind
      process.off("exit", killGroup);
      const failed = code === 0 ? null : `exited ${code ?? sig}: ${lastError(errTail)}`;
      const error = timedOut ? `timed out after ${limit} s` : failed;
      resolve({ rows, goals, error });
    });
  });
}

/** The last error message in a child's stderr tail (a stack's frames say less), else its last lines. */
function lastError(tail: string): string {
  const lines = tail.trim().split("\n");
  const err = lines.filter((l) => /^\w*Error\b|^\[\S+\] bench failed/.test(l.trim())).at(-1);
  return (err ?? lines.slice(-3).join(" | ")).trim().slice(0, 400);
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length));
const fmt = (x: number) => (Math.abs(x) >= 1000 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(2) : x.toFixed(3));

/**
 * Servers and loads left running by an earlier run or a diagnostic (nats-server, nginx, wrk, our processes):
 * idle, they still wake up, hold caches and pages, and skewed every figure of a run on this 2-core VM (26
 * leftover nats-servers were found once, after diagnostics that exited without stopping theirs). Counted by name
 * from /proc, ancestors of this process excepted.
 */
function strayProcesses(): string[] {
  const ancestors = new Set<number>();
  for (let pid = process.pid; pid > 1; ) {
    ancestors.add(pid);
    let stat = "";
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      break;
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (!(ppid > 0)) break;
    pid = ppid;
  }
  const counts = new Map<string, number>();
  for (const d of readdirSync("/proc")) {
    const pid = Number(d);
    if (!Number.isInteger(pid) || ancestors.has(pid)) continue;
    let comm = "";
    let cmd = "";
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      continue; // gone meanwhile
    }
    const what = ["nats-server", "nginx", "wrk", "pebble"].includes(comm)
      ? comm
      : comm === "node" && /\/(bench|dist)\/|nodeway/.test(cmd)
        ? "node (nodeway or bench)"
        : null;
    if (what) counts.set(what, (counts.get(what) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k} ×${n}`);
}

const started = Date.now();
process.stderr.write(
  `bench: ${quick ? "quick" : "full"} run on ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), load average ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}, node ${process.version}\n`,
);
const strays = strayProcesses();
const strayWarning =
  strays.length > 0
    ? `warning: processes left from earlier runs were running when this run started (${strays.join(", ")}); its figures may be skewed\n`
    : "";
process.stderr.write(strayWarning);
const allRows: Row[] = [];
const allGoals: GoalLine[] = [];
for (const b of BENCHES) {
  if (only ? !only.has(b.name) : quick && !b.quick) continue;
  const t0 = Date.now();
  process.stderr.write(`\n=== ${b.name} ===\n`);
  const r = await runOne(b);
  allRows.push(...r.rows);
  // A line reported before the bench failed is not vouched for: it may stand on a round that broke later.
  const why = `the benchmark failed after reporting this line: ${r.error}`;
  const demote = (g: GoalLine) => (g.verdict === "invalid" ? g : invalidated(g, why));
  const goals = r.error ? r.goals.map(demote) : r.goals;
  for (const m of b.metrics(quick)) {
    const g = goals.find((x) => x.metric === m);
    allGoals.push(g ?? invalid(b.bench, m, "-", r.error ?? "the benchmark reported nothing for this goal"));
  }
  for (const g of goals) if (!b.metrics(quick).includes(g.metric)) allGoals.push(g);
  process.stderr.write(`=== ${b.name}: ${((Date.now() - t0) / 1000).toFixed(1)} s${r.error ? ` (${r.error})` : ""}\n`);
}

// Table: one line per bench/metric, arms side by side.
const table = new Map<string, Map<string, Row>>();
const arms: string[] = [];
for (const r of allRows) {
  const k = `${r.bench} ${r.metric}${r.unit ? ` (${r.unit})` : ""}`;
  if (!table.has(k)) table.set(k, new Map());
  table.get(k)!.set(r.arm, r);
  if (!arms.includes(r.arm)) arms.push(r.arm);
}
const w0 = Math.max(20, ...[...table.keys()].map((k) => k.length)) + 2;
const wArm = (a: string) => Math.max(15, a.length + 2);
process.stdout.write(
  `\nmedians of measured rounds (warm-up dropped)\n${pad("bench metric", w0)}${arms.map((a) => pad(a, wArm(a))).join("")}\n`,
);
for (const [k, per] of table)
  process.stdout.write(
    `${pad(k, w0)}${arms.map((a) => pad(per.has(a) ? fmt(per.get(a)!.value) : "", wArm(a))).join("")}\n`,
  );
const count = (v: Verdict) => allGoals.filter((g) => g.verdict === v).length;
const tally = (["met", "missed", "inconclusive", "invalid"] as const).map((v) => `${count(v)} ${v}`).join(", ");
process.stdout.write(`\ngoals (${allGoals.length} lines: ${tally}; ${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
for (const g of allGoals) process.stdout.write(`${JSON.stringify(g)}\n`);
process.stdout.write(strayWarning);
process.exit(0);
