/** Agent options → a frozen, checked config (once, at start-up). */
import { availableParallelism, hostname } from "node:os";
import { readFileSync } from "node:fs";
import { DEFAULT_NODE_LIMITS, type NodeLimits } from "./engine/types.js";
import {
  InvalidConfigError,
  redactUrl,
  ErrorCode,
  checkToken,
  ExecutionStrategy,
  ASSETS_DEFAULTS,
  JOB_QUEUE_DEFAULTS,
} from "../protocol/index.js";
import { NATS_OPTION_KEYS, compileNatsConnection, type NatsSettings, type NatsOptions } from "../nats/index.js";

export interface AgentOptions extends NatsOptions {
  /** Display name. @default the host name */
  name?: string;
  /** Jobs run at once; the agent pulls only while it has a free slot (that is the backpressure). @default 2 */
  maxJobs?: number;
  /**
   * Pools with slots of their own, outside `maxJobs` (`openai=16,anthropic=16`, or an object in the config file):
   * jobs that mostly wait on a remote provider then never hold the slots local work needs, nor the other way round.
   * @default none (every pool shares `maxJobs`)
   */
  poolSlots?: string | string[] | Record<string, number | string>;
  /** Pools to consume; default: every pool the capabilities allow (`cpu`, plus `gpu`/`docker` when present). */
  pools?: string[];
  /** Operator labels; each is also a pool. @default [] */
  labels?: string[];
  /** How long SIGTERM waits for running jobs before handing them back. @default 30000 */
  drainGraceMs?: number;
  /** Heartbeat period of the registry entry. @default 3000 */
  heartbeatMs?: number;
  /**
   * Strategies this agent offers, its default first: `inline`, `threaded`, `subprocess`, `docker` (agent/strategies.ts;
   * a run asks, the agent caps). `docker` needs an engine, checked at start-up. By default a graph runs in a worker
   * thread (kept warm, `warmRunners`), where a node that holds its loop is terminated on cancel, timeout or lost
   * lease; an `inline` graph shares the agent's loop, and such a node would hold the agent. @default ["threaded"]
   */
  strategies?: string[];
  /**
   * Memory limit of a run, in MiB: for `threaded` or `subprocess` its heap (the worker's old generation; the child's
   * `--max-old-space-size`), for `docker` the container's memory (0 there means 1024). A run past it dies alone and
   * its job fails `JOB_ERR_RUNNER_CRASHED`. 0 = V8's default. `inline` runs share the agent's heap and have no
   * limit of their own. @default 0
   */
  jobMemoryMb?: number;
  /**
   * Threads and processes started ahead of their runs, per strategy offered (`threaded`, `subprocess`): a run
   * then starts without waiting ~0.1–0.2 s for its runner. Each is used once. 0 = none, at most 8. @default 1
   */
  warmRunners?: number;
  /**
   * Binary outputs (bytes in an output, preview or result) larger than this go to the asset store (`nw_assets`)
   * and travel as an `asset://` reference; smaller ones stay in the event. @default 262144 (256 KiB)
   */
  assetInlineMaxBytes?: number;
  /** What one job's outputs may store as assets, all together: past it the job fails `JOB_ERR_ASSET_FAILED`. @default 4 GiB */
  jobAssetMaxBytes?: number;
  /**
   * A ComfyUI server beside this agent (`http://127.0.0.1:8188`): the agent then offers `comfy.Workflow` nodes and
   * pulls `comfyui`-pool jobs while that server answers. It has no authentication: keep it on this host. @default none
   */
  comfyuiUrl?: string;
  /** CPUs a `docker` run may use; fractions allowed. @default 1 */
  jobCpus?: number;
  /** Processes and threads a `docker` run may have. @default 256 */
  jobPids?: number;
  /** Image of `docker` runs, with `node` on its PATH; by default one made from this host's node (agent/docker.ts). */
  dockerImage?: string;
  /** Network of `docker` runs: `none`, or a Docker network the operator allows them. @default "none" */
  dockerNetwork?: string;
  /**
   * GPUs the runs of `gpu`-pool jobs are given (agent/gpus.ts), by device id (an index or a UUID, as `nvidia-smi`
   * names them), or `none`. Runs of other pools get no GPU. @default every GPU the agent detects
   */
  gpus?: string[] | string;
  /**
   * GPUs each `gpu`-pool run is given of its own; the agent then pulls a `gpu` job only while that many are free.
   * 0 = every run is given all of them. @default 0
   */
  gpusPerRun?: number;
  /**
   * Offer the test and benchmark nodes (`nodeway.test.*`: a node that spins its thread, one that fills its heap):
   * for test and benchmark fleets only. @default false
   */
  testNodes?: boolean | string;
  /** Items in a list a node builds, and values one generator execution emits (`NodeLimits`). @default 1000000 */
  nodeListMaxItems?: number;
  /** UTF-8 bytes of a string a node builds. @default 67108864 (64 MiB) */
  nodeStringMaxBytes?: number;
  /** Keys of a dictionary a node builds. @default 100000 */
  nodeDictMaxKeys?: number;
  /**
   * Bytes of events NATS has not acknowledged that the agent keeps to republish, all jobs together; past it the
   * job that adds to them fails `JOB_ERR_EVENTS_UNSTORED`. @default 67108864 (64 MiB)
   */
  outboxMaxBytes?: number;
  /**
   * How long an event may go unacknowledged (NATS away) before its job fails `JOB_ERR_EVENTS_UNSTORED`; at most
   * NW_EVENTS's duplicate window, which deduplicates the republished copies. @default 120000
   */
  outboxMaxAgeMs?: number;
}

export interface AgentConfig {
  /** Where NATS is and how to authenticate there (nats/settings.ts). */
  nats: NatsSettings;
  name: string;
  maxJobs: number;
  /** Pool → its own slot count (pools not named share `maxJobs`). */
  poolSlots: Readonly<Record<string, number>>;
  pools: string[] | null;
  labels: string[];
  drainGraceMs: number;
  heartbeatMs: number;
  strategies: ExecutionStrategy[];
  jobMemoryMb: number;
  warmRunners: number;
  assetInlineMaxBytes: number;
  jobAssetMaxBytes: number;
  comfyuiUrl: string | null;
  jobCpus: number;
  jobPids: number;
  dockerImage: string | null;
  dockerNetwork: string;
  /** Device ids for `gpu`-pool runs; null = the GPUs detected at start-up. */
  gpus: string[] | null;
  gpusPerRun: number;
  testNodes: boolean;
  /** Caps on what each node builds. */
  nodeLimits: Readonly<NodeLimits>;
  outboxMaxBytes: number;
  outboxMaxAgeMs: number;
}

export const AGENT_OPTION_KEYS: ReadonlySet<string> = new Set([
  ...NATS_OPTION_KEYS,
  "name",
  "maxJobs",
  "poolSlots",
  "pools",
  "labels",
  "drainGraceMs",
  "heartbeatMs",
  "strategies",
  "jobMemoryMb",
  "warmRunners",
  "assetInlineMaxBytes",
  "jobAssetMaxBytes",
  "comfyuiUrl",
  "jobCpus",
  "jobPids",
  "dockerImage",
  "dockerNetwork",
  "gpus",
  "gpusPerRun",
  "testNodes",
  "nodeListMaxItems",
  "nodeStringMaxBytes",
  "nodeDictMaxKeys",
  "outboxMaxBytes",
  "outboxMaxAgeMs",
]);

function bool(key: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === true || v === "true" || v === "1") return true;
  if (v === false || v === "false" || v === "0") return false;
  throw new InvalidConfigError(key, `must be true or false, got ${JSON.stringify(v)}`);
}

/**
 * Two jobs per core, 4 to 64: most jobs wait on a provider, ComfyUI or a GPU rather than compute, so one per core
 * would leave the host idle (and a host with more pools than slots rotates its pulls); more would crowd its memory.
 */
function defaultMaxJobs(): number {
  return Math.min(64, Math.max(4, 2 * availableParallelism()));
}

function posInt(key: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
    throw new InvalidConfigError(key, `must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function nonNegInt(key: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0)
    throw new InvalidConfigError(key, `must be an integer ≥ 0, got ${JSON.stringify(v)}`);
  return n;
}

function list(key: string, v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  const arr =
    typeof v === "string"
      ? v
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)
      : v;
  if (!Array.isArray(arr) || !arr.every((x) => typeof x === "string"))
    throw new InvalidConfigError(key, "must be a list of strings");
  for (const x of arr) {
    try {
      checkToken(x, key);
    } catch {
      throw new InvalidConfigError(key, `"${x}" may not contain ".", "*", ">" or spaces`);
    }
  }
  return arr;
}

/** `poolSlots`: `pool=N` pairs (a comma list, repeated flags, or an object), each pool named once, N ≥ 1. */
function poolSlots(v: unknown): Readonly<Record<string, number>> {
  if (v === undefined) return Object.freeze({});
  const pairs: [string, unknown][] =
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.entries(v)
      : (list("poolSlots", v) ?? []).map((item) => {
          const at = item.indexOf("=");
          if (at <= 0) throw new InvalidConfigError("poolSlots", `"${item}" is no pool=N pair`);
          return [item.slice(0, at), item.slice(at + 1)];
        });
  const out: Record<string, number> = Object.create(null);
  for (const [pool, n] of pairs) {
    list("poolSlots", [pool]);
    if (Object.hasOwn(out, pool)) throw new InvalidConfigError("poolSlots", `pool "${pool}" is named twice`);
    out[pool] = posInt("poolSlots", n, 0);
  }
  return Object.freeze(out);
}

/** `gpus`: `none` → [], a list of device ids (indexes or UUIDs) as given, unset → null (detected). */
function gpuIds(v: unknown): string[] | null {
  const arr = list("gpus", v);
  if (arr === undefined) return null;
  if (arr.length === 0) throw new InvalidConfigError("gpus", "must be `none` or a list of GPU ids");
  if (arr.length === 1 && arr[0] === "none") return [];
  for (const id of arr) {
    // What nvidia-smi prints: an index, or a UUID such as GPU-5f3c…; a comma would split Docker's own list.
    if (!/^(\d{1,3}|(GPU|MIG)-[\w-]{1,80})$/.test(id))
      throw new InvalidConfigError("gpus", `not a GPU index or UUID: ${JSON.stringify(id)}`);
  }
  return arr;
}

/** Checks options once; throws `InvalidConfigError` naming the key. */
export function compileAgentConfig(opts: AgentOptions): Readonly<AgentConfig> {
  for (const k of Object.keys(opts)) {
    if (!AGENT_OPTION_KEYS.has(k)) throw new InvalidConfigError(k, "unknown setting", ErrorCode.CONFIG_ERR_UNKNOWN_KEY);
  }
  const nats = compileNatsConnection(opts, (path) => readFileSync(path, "utf8"));
  const strategies = (list("strategies", opts.strategies) ?? ["threaded"]) as ExecutionStrategy[];
  for (const s of strategies) {
    if (!(s in ExecutionStrategy)) throw new InvalidConfigError("strategies", `unknown strategy "${s}"`);
  }
  const jobCpus =
    opts.jobCpus === undefined ? 1 : typeof opts.jobCpus === "string" ? Number(opts.jobCpus) : opts.jobCpus;
  if (typeof jobCpus !== "number" || !Number.isFinite(jobCpus) || jobCpus <= 0 || jobCpus > 1024) {
    throw new InvalidConfigError("jobCpus", `must be a number of CPUs > 0, got ${JSON.stringify(opts.jobCpus)}`);
  }
  const comfyuiUrl = opts.comfyuiUrl === undefined || opts.comfyuiUrl === "" ? null : String(opts.comfyuiUrl);
  if (comfyuiUrl !== null) {
    let u: URL | null = null;
    try {
      u = new URL(comfyuiUrl);
    } catch {
      u = null;
    }
    if (!u || !/^https?:$/.test(u.protocol) || u.pathname !== "/" || u.search !== "") {
      throw new InvalidConfigError(
        "comfyuiUrl",
        `must be ComfyUI's base URL such as http://127.0.0.1:8188, got ${JSON.stringify(redactUrl(comfyuiUrl))}`,
      );
    }
  }
  const dockerImage = opts.dockerImage ?? null;
  // A Docker reference: [registry/]name[:tag][@digest], no spaces.
  if (dockerImage !== null && (typeof dockerImage !== "string" || !/^[\w][\w./:@-]*$/.test(dockerImage))) {
    throw new InvalidConfigError("dockerImage", `not an image reference: ${JSON.stringify(dockerImage)}`);
  }
  const dockerNetwork = opts.dockerNetwork ?? "none";
  if (typeof dockerNetwork !== "string" || !/^[\w][\w.-]*$/.test(dockerNetwork)) {
    throw new InvalidConfigError("dockerNetwork", `not a network name: ${JSON.stringify(dockerNetwork)}`);
  }
  const gpus = gpuIds(opts.gpus);
  const outboxMaxAgeMs = posInt("outboxMaxAgeMs", opts.outboxMaxAgeMs, JOB_QUEUE_DEFAULTS.duplicateWindowMs);
  if (outboxMaxAgeMs > JOB_QUEUE_DEFAULTS.duplicateWindowMs) {
    const windowMs = JOB_QUEUE_DEFAULTS.duplicateWindowMs;
    throw new InvalidConfigError(
      "outboxMaxAgeMs",
      `must be at most NW_EVENTS's duplicate window (${windowMs} ms), got ${outboxMaxAgeMs}`,
    );
  }
  const name = opts.name ?? hostname();
  if (typeof name !== "string" || name.trim() === "")
    throw new InvalidConfigError("name", "must be a non-empty string");
  return Object.freeze({
    nats,
    name,
    maxJobs: posInt("maxJobs", opts.maxJobs, defaultMaxJobs()),
    poolSlots: poolSlots(opts.poolSlots),
    pools: list("pools", opts.pools) ?? null,
    labels: list("labels", opts.labels) ?? [],
    drainGraceMs: posInt("drainGraceMs", opts.drainGraceMs, 30_000),
    heartbeatMs: posInt("heartbeatMs", opts.heartbeatMs, 3_000),
    strategies,
    jobMemoryMb: nonNegInt("jobMemoryMb", opts.jobMemoryMb, 0),
    warmRunners: Math.min(nonNegInt("warmRunners", opts.warmRunners, 1), 8),
    comfyuiUrl,
    assetInlineMaxBytes: nonNegInt("assetInlineMaxBytes", opts.assetInlineMaxBytes, ASSETS_DEFAULTS.inlineMaxBytes),
    jobAssetMaxBytes: posInt("jobAssetMaxBytes", opts.jobAssetMaxBytes, ASSETS_DEFAULTS.jobMaxBytes),
    jobCpus,
    jobPids: posInt("jobPids", opts.jobPids, 256),
    dockerImage,
    dockerNetwork,
    gpus,
    gpusPerRun: nonNegInt("gpusPerRun", opts.gpusPerRun, 0),
    testNodes: bool("testNodes", opts.testNodes, false),
    nodeLimits: Object.freeze({
      listMaxItems: posInt("nodeListMaxItems", opts.nodeListMaxItems, DEFAULT_NODE_LIMITS.listMaxItems),
      stringMaxBytes: posInt("nodeStringMaxBytes", opts.nodeStringMaxBytes, DEFAULT_NODE_LIMITS.stringMaxBytes),
      dictMaxKeys: posInt("nodeDictMaxKeys", opts.nodeDictMaxKeys, DEFAULT_NODE_LIMITS.dictMaxKeys),
    }),
    outboxMaxBytes: posInt("outboxMaxBytes", opts.outboxMaxBytes, 64 * 1024 * 1024),
    outboxMaxAgeMs,
  });
}
