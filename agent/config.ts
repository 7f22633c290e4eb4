/** Agent options → a frozen, checked config (once, at start-up). */
import { hostname } from "node:os";
import { InvalidConfigError, ErrorCode, checkToken, ExecutionStrategy } from "../protocol/index.js";
import { RUNNABLE_STRATEGIES } from "./strategies.js";

export interface AgentOptions {
  /** NATS server URL(s), comma-separated. @default "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** Display name. @default the host name */
  name?: string;
  /** Jobs run at once; the agent pulls only while it has a free slot (that is the backpressure). @default 2 */
  maxJobs?: number;
  /** Pools to consume; default: every pool the capabilities allow (`cpu`, plus `gpu`/`docker` when present). */
  pools?: string[];
  /** Operator labels; each is also a pool. @default [] */
  labels?: string[];
  /** How long SIGTERM waits for running jobs before handing them back. @default 30000 */
  drainGraceMs?: number;
  /** Heartbeat period of the registry entry. @default 3000 */
  heartbeatMs?: number;
  /** Strategies this agent offers, its default first: `inline`, `threaded`, `subprocess` (agent/strategies.ts; a run asks, the agent caps). @default ["inline"] */
  strategies?: string[];
  /**
   * Heap limit of a `threaded` or `subprocess` run, in MiB (the worker's old generation; the child's
   * `--max-old-space-size`): a run past it dies alone and its job fails `JOB_ERR_RUNNER_CRASHED`. 0 = V8's default.
   * `inline` runs share the agent's heap and have no limit of their own. @default 0
   */
  jobMemoryMb?: number;
}

export interface AgentConfig {
  natsServers: string[];
  name: string;
  maxJobs: number;
  pools: string[] | null;
  labels: string[];
  drainGraceMs: number;
  heartbeatMs: number;
  strategies: ExecutionStrategy[];
  jobMemoryMb: number;
}

export const AGENT_OPTION_KEYS: ReadonlySet<string> = new Set(["natsUrl", "name", "maxJobs", "pools", "labels", "drainGraceMs", "heartbeatMs", "strategies", "jobMemoryMb"]);

function posInt(key: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1) throw new InvalidConfigError(key, `must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function nonNegInt(key: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) throw new InvalidConfigError(key, `must be an integer ≥ 0, got ${JSON.stringify(v)}`);
  return n;
}

function list(key: string, v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  const arr = typeof v === "string" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(arr) || !arr.every((x) => typeof x === "string")) throw new InvalidConfigError(key, "must be a list of strings");
  for (const x of arr) {
    try {
      checkToken(x, key);
    } catch {
      throw new InvalidConfigError(key, `"${x}" may not contain ".", "*", ">" or spaces`);
    }
  }
  return arr;
}

/** Checks options once; throws `InvalidConfigError` naming the key. */
export function compileAgentConfig(opts: AgentOptions): Readonly<AgentConfig> {
  for (const k of Object.keys(opts)) {
    if (!AGENT_OPTION_KEYS.has(k)) throw new InvalidConfigError(k, "unknown setting", ErrorCode.CONFIG_ERR_UNKNOWN_KEY);
  }
  const nats = (opts.natsUrl ?? "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean);
  for (const u of nats) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$/.test(u) && !/^[\w.-]+:\d+$/.test(u)) throw new InvalidConfigError("natsUrl", `not a NATS URL: ${u}`);
  }
  const strategies = (list("strategies", opts.strategies) ?? ["inline"]) as ExecutionStrategy[];
  for (const s of strategies) {
    if (!(s in ExecutionStrategy)) throw new InvalidConfigError("strategies", `unknown strategy "${s}"`);
    // Offering what it cannot run would let a job that asked for isolation run without it.
    if (!RUNNABLE_STRATEGIES.has(s)) throw new InvalidConfigError("strategies", `"${s}" is not built on this agent (it runs ${[...RUNNABLE_STRATEGIES].join(", ")})`);
  }
  const name = opts.name ?? hostname();
  if (typeof name !== "string" || name.trim() === "") throw new InvalidConfigError("name", "must be a non-empty string");
  return Object.freeze({
    natsServers: nats,
    name,
    maxJobs: posInt("maxJobs", opts.maxJobs, 2),
    pools: list("pools", opts.pools) ?? null,
    labels: list("labels", opts.labels) ?? [],
    drainGraceMs: posInt("drainGraceMs", opts.drainGraceMs, 30_000),
    heartbeatMs: posInt("heartbeatMs", opts.heartbeatMs, 3_000),
    strategies,
    jobMemoryMb: nonNegInt("jobMemoryMb", opts.jobMemoryMb, 0),
  });
}
