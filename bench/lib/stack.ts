/** Our stack for a benchmark: nats-server (ephemeral port, temp store), gateway and agent processes. */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { NatsCluster, NatsServer } from "../../test/helpers/nats-server.js";
import { ROOT, sleep, startNodeway, type Spawned } from "./procs.js";

export { NatsCluster, NatsServer };

/**
 * Streams (KV buckets and the object store included) whose replica count is not `want`, as "name Rn"; empty when
 * all match. A gateway on a 3-server cluster makes R3 by default; this checks the run measured what it says.
 */
export async function streamsNotAt(natsUrl: string, want: number): Promise<string[]> {
  const nc = await connect({ servers: natsUrl.split(",") });
  try {
    const jsm = await jetstreamManager(nc);
    const off: string[] = [];
    let n = 0;
    for await (const s of jsm.streams.list()) {
      n++;
      if (s.config.num_replicas !== want) off.push(`${s.config.name} R${s.config.num_replicas}`);
    }
    return n === 0 ? ["no streams at all"] : off;
  } finally {
    await nc.close();
  }
}

export interface Gateway extends Spawned {
  url: string;
  port: number;
}

export async function startGateway(
  natsUrl: string,
  opts: { cpu?: string; nodeArgs?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<Gateway> {
  const p = startNodeway("gateway", ["gateway", "--nats", natsUrl, "--port", "0"], opts);
  const url = (await p.waitFor(/gateway listening on (\S+)/))[1]!;
  return Object.assign(p, { url, port: Number(new URL(url).port) });
}

export async function startAgent(
  natsUrl: string,
  gatewayUrl: string,
  opts: {
    cpu?: string;
    maxJobs?: number;
    name?: string;
    nodeArgs?: string[];
    args?: string[];
    env?: NodeJS.ProcessEnv;
    /** `--test-nodes` (the default): the demo nodes the token benchmarks run. */
    testNodes?: boolean;
  } = {},
): Promise<Spawned> {
  const p = startNodeway(
    opts.name ?? "agent",
    [
      "agent",
      "--nats",
      natsUrl,
      ...(opts.testNodes === false ? [] : ["--test-nodes"]),
      "--max-jobs",
      String(opts.maxJobs ?? 64),
      "--name",
      opts.name ?? "bench-agent",
      ...(opts.args ?? []),
    ],
    opts,
  );
  await p.waitFor(/agent (\S+) running/);
  // The gateway validates graphs against the node catalog of live agents (cached for a second).
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${gatewayUrl}/api/nodes/metadata`)
      .then((x) => x.text())
      .catch(() => "");
    if (r.includes(opts.testNodes === false ? "nodetool.text.FormatText" : "nodeway.test.Tokens")) return p;
    await sleep(100);
  }
  throw new Error("agent's node catalog never reached the gateway");
}

export interface Graph {
  nodes: { id: string; type: string; data: Record<string, unknown> }[];
  edges: unknown[];
}

export function example(name: string): { id: string; graph: Graph } {
  return JSON.parse(readFileSync(join(ROOT, "examples", `${name}.json`), "utf8")) as { id: string; graph: Graph };
}

/** The streaming-tokens workflow with its Tokens node set to `rate` tokens/s. */
export function tokensGraph(rate: number): Graph {
  const g = example("streaming-tokens").graph;
  for (const n of g.nodes) if (n.type === "nodeway.test.Tokens") n.data = { ...n.data, rate };
  return g;
}

export interface Up extends Spawned {
  url: string;
}

/**
 * `nodeway up` as a user starts it (its own nats-server, the gateway in-process, one agent child, the examples
 * saved), with `args` added (`--max-jobs 32`), in its own home; `--port 0` and a free NATS port. `stop` ends it
 * with SIGTERM, so that it stops its nats-server and agent itself.
 */
export async function startUp(args: string[], opts: { nodeArgs?: string[]; name?: string } = {}): Promise<Up> {
  const env = { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-bench-up-")) };
  const p = startNodeway(opts.name ?? "up", ["up", "--port", "0", ...args], { env, nodeArgs: opts.nodeArgs });
  const url = (await p.waitFor(/nodeway is up: (\S+)/, 60_000))[1]!;
  // Its nats-server and agent, so that none outlives the benchmark if `up` is killed before it stopped them.
  const children = childPids(p.pid);
  const killChildren = () => {
    for (const pid of children) signal(pid, "SIGKILL");
  };
  process.on("exit", killChildren);
  const stop = async () => {
    if (p.proc.exitCode === null && p.proc.signalCode === null) {
      p.proc.kill("SIGTERM");
      const t = setTimeout(() => p.proc.kill("SIGKILL"), 15_000);
      await p.exited;
      clearTimeout(t);
    }
    killChildren();
  };
  return Object.assign(p, { url, stop });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** The pids whose parent is `ppid` (from /proc). */
function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === ppid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}
