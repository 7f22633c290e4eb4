/**
 * Job lifecycle, and the NATS messages that carry jobs, cancels and the agent registry.
 */
import type { AgentModel } from "./chat.js";
import type { Graph } from "./graph.js";
import type { WireError } from "./errors.js";

/** Job states. `queued → running → completed | failed | cancelled | timed_out`, and `queued → cancelled`. */
export const JobState = {
  queued: "queued",
  running: "running",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
  timed_out: "timed_out",
} as const;
export type JobState = (typeof JobState)[keyof typeof JobState];

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set<JobState>([
  "completed",
  "failed",
  "cancelled",
  "timed_out",
]);
export const isTerminal = (s: JobState): boolean => TERMINAL_STATES.has(s);

/** Allowed transitions; anything else is refused by the writer (terminal states never change). */
const NEXT: Record<JobState, readonly JobState[]> = {
  queued: ["running", "cancelled", "failed", "timed_out"],
  // running → running is a new attempt after redelivery.
  running: ["running", "completed", "failed", "cancelled", "timed_out"],
  completed: [],
  failed: [],
  cancelled: [],
  timed_out: [],
};
export function canTransition(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}

/** How an agent runs a job, requested by the run and capped by the agent's policy. */
export const ExecutionStrategy = {
  threaded: "threaded",
  subprocess: "subprocess",
  docker: "docker",
  inline: "inline",
} as const;
export type ExecutionStrategy = (typeof ExecutionStrategy)[keyof typeof ExecutionStrategy];

/** Weakest to strongest isolation. */
const ISOLATION: readonly ExecutionStrategy[] = ["inline", "threaded", "subprocess", "docker"];

/**
 * A job's strategy under an agent's policy (`offered`, its default first): what the job asked for when offered,
 * else the weakest offered strategy that isolates more — never less isolation than asked for (refused, naming
 * what is offered). A job that asks nothing gets the agent's default. The agent applies it to every job it
 * pulls; the gateway, at submit, to the live agents of the job's pool.
 */
export function pickStrategy(
  requested: ExecutionStrategy | undefined,
  offered: readonly ExecutionStrategy[],
): { strategy: ExecutionStrategy } | { refused: string } {
  if (requested === undefined) return { strategy: offered[0] ?? "inline" };
  if (offered.includes(requested)) return { strategy: requested };
  const floor = ISOLATION.indexOf(requested);
  const stronger = ISOLATION.filter((s, i) => i > floor && offered.includes(s));
  if (stronger.length > 0) return { strategy: stronger[0]! };
  return {
    refused: `the job asks for the "${requested}" strategy; this agent offers ${offered.map((s) => `"${s}"`).join(", ")}`,
  };
}

/** The job record in KV `nw_jobs` (key `j.<id>`), written only by compare-and-set on its revision. */
export interface JobRecord {
  v: 1;
  id: string;
  workflow_id: string;
  status: JobState;
  pool: string;
  /** JetStream delivery count of the run that owns the job; 0 while never started. */
  attempt: number;
  agent_id: string | null;
  params: Record<string, unknown>;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  timeout_s: number | null;
  error: WireError | null;
  /** Output node name → every value it produced. Filled when the job completes. */
  outputs: Record<string, unknown[]> | null;
  idempotency_key?: string | null;
  cancel_requested?: boolean;
  /** The principal (NATS user) of the agent holding `attempt`: set by the gateway at the claim, never by an agent. */
  holder?: string | null;
  /** SHA-256 (hex) of the dispatch's `claim_secret`: only an agent that pulled the dispatch can claim the job. */
  claim_hash?: string;
  /**
   * The NW_JOBS sequence of the dispatch `holder` pulled, as its claim said: a gateway that finds the holder gone
   * and that message gone too knows nothing will deliver the job again (gateway/agent-records.ts `sweepLost`).
   */
  dispatch_seq?: number;
  /** A child job: the node of `job_id`'s attempt whose run was sent to this job's pool (docs/architecture.md). */
  parent?: { job_id: string; attempt: number; node_id: string };
  /** Assets the job's graph and params name: with its own and its family's, all its agent may read. */
  assets?: string[];
}

/** `nw.jobs.<pool>`: one per job. Carries the graph so an agent needs no other read to start. */
export interface JobDispatch {
  type: "job.dispatch";
  v: 1;
  job_id: string;
  workflow_id: string;
  graph: Graph;
  params: Record<string, unknown>;
  strategy?: ExecutionStrategy;
  timeout_s?: number | null;
  created_at: string;
  /**
   * The record and its KV revision, when the gateway stored the record before dispatching (a retried submit
   * re-dispatching its job): the agent claims with one compare-and-set write instead of a read and a write (a
   * stale copy only costs the read it saved). A first submit sends the dispatch with the record, not after it.
   */
  record?: { rec: JobRecord; revision: number };
  /** Random per job; its hash is in the record. Shown to a gateway, it proves the asker pulled this dispatch. */
  claim_secret?: string;
}

/**
 * `nw.rec.<principal>` (core request to the gateways): how an agent reads and writes the record of a job it pulled.
 * Agents have no access to `nw_jobs`; a gateway checks each write against the record (`gateway/agent-records.ts`).
 * `proof` is the dispatch's `claim_secret`; records travel as their JSON text, as `nw_jobs` stores them, in a
 * MessagePack request and reply.
 */
export type RecordRequest =
  | { type: "record.get"; v: 1; job_id: string; proof: string }
  | {
      type: "record.update";
      v: 1;
      job_id: string;
      proof: string;
      /** The revision the change was made on (compare-and-set). */
      revision: number;
      record_json: string;
      /** Seconds the run took, for the terminal update the gateway publishes when the write ends the job. */
      duration_s?: number;
    }
  | { type: "record.terminal"; v: 1; job_id: string; proof: string }
  /**
   * Claim `attempt` in one round trip: the gateway reads (or has) the record and writes the claim if the rules
   * allow it. The reply holds the record as stored after it, with the lease when the claim was written.
   */
  | {
      type: "record.claim";
      v: 1;
      job_id: string;
      proof: string;
      attempt: number;
      agent_id: string;
      /** The NW_JOBS sequence of the dispatch the attempt was delivered. */
      dispatch_seq: number;
    }
  /**
   * Run node `node_id` of the attempt the asker holds as a child job (its `graph`: the node with its inputs, and an
   * output per handle), in the pool the node needs; `call` numbers the node's runs in the attempt. Idempotent.
   */
  | {
      type: "child.submit";
      v: 1;
      job_id: string;
      proof: string;
      attempt: number;
      node_id: string;
      call: number;
      graph: Graph;
    }
  /**
   * The child's record once it has finished, or once it has events past `after_seq` to pass on (its node's
   * tokens, progress, logs and previews: `events`, MessagePack, and `last_seq` read), or after `wait_ms` (at most
   * `CHILD_WAIT_MAX_MS`), as it is then.
   */
  | { type: "child.wait"; v: 1; job_id: string; proof: string; child_id: string; wait_ms: number; after_seq?: number }
  | { type: "child.cancel"; v: 1; job_id: string; proof: string; child_id: string }
  /** Bytes of an asset the job may read, from `cursor` (0 first, then the reply's `next`). */
  | { type: "asset.read"; v: 1; job_id: string; proof: string; asset_id: string; cursor: number }
  /**
   * Make asset `name` (a new asset id) of the chunks the agent stored under `nuid` (`$O.nw_assets.C.<nuid>`,
   * `chunks` of at most `chunk_bytes`, `size` bytes, `digest` "SHA-256=<base64url>"): the gateway writes its entry,
   * once (an existing asset is never replaced), with the job as its owner.
   */
  | {
      type: "asset.seal";
      v: 1;
      job_id: string;
      proof: string;
      name: string;
      nuid: string;
      size: number;
      chunks: number;
      chunk_bytes: number;
      digest: string;
      content_type: string;
      file_name: string;
      node_id?: string;
    };

/** An `asset.read` answer: the asset's size, type and digest, bytes from the cursor, and the next cursor (null: done). */
export interface AssetPiece {
  size: number;
  content_type: string;
  digest: string;
  bytes: Uint8Array;
  next: number | null;
}

/** The longest a `child.wait` is held by a gateway before it answers with the record as it is. */
export const CHILD_WAIT_MAX_MS = 10_000;

/** A gateway's answer; `lease` is the asker's lease token when it holds the record's attempt. */
export type RecordReply =
  | {
      ok: true;
      record_json: string | null;
      revision: number;
      lease?: string;
      asset?: AssetPiece;
      events?: Uint8Array[];
      last_seq?: number;
    }
  | { ok: false; code: string; message: string };

/** Checks a record request's shape (the gateway's edge); throws a message naming the fault. */
export function asRecordRequest(x: unknown): RecordRequest {
  const o = x as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) throw new Error("a record request must be an object");
  if (typeof o.job_id !== "string" || typeof o.proof !== "string" || o.proof.length > 256) {
    throw new Error('a record request needs "job_id" and "proof" strings');
  }
  switch (o.type) {
    case "record.get":
    case "record.terminal":
      return o as unknown as RecordRequest;
    case "child.submit":
      if (!Number.isSafeInteger(o.attempt) || !Number.isSafeInteger(o.call) || typeof o.node_id !== "string")
        throw new Error('child.submit needs integer "attempt" and "call" and a "node_id" string');
      if (typeof o.graph !== "object" || o.graph === null) throw new Error('child.submit needs a "graph" object');
      return o as unknown as RecordRequest;
    case "child.wait":
      if (typeof o.child_id !== "string" || typeof o.wait_ms !== "number" || !(o.wait_ms >= 0))
        throw new Error('child.wait needs a "child_id" string and a "wait_ms" number');
      if (o.after_seq !== undefined && !(Number.isSafeInteger(o.after_seq) && (o.after_seq as number) >= 0))
        throw new Error('"after_seq" is a whole number');
      return o as unknown as RecordRequest;
    case "child.cancel":
      if (typeof o.child_id !== "string") throw new Error('child.cancel needs a "child_id" string');
      return o as unknown as RecordRequest;
    case "asset.read":
      if (typeof o.asset_id !== "string" || !Number.isSafeInteger(o.cursor) || (o.cursor as number) < 0)
        throw new Error('asset.read needs an "asset_id" string and an integer "cursor"');
      return o as unknown as RecordRequest;
    case "asset.seal":
      return asSeal(o);
    case "record.claim":
      if (!Number.isSafeInteger(o.attempt) || (o.attempt as number) < 1 || typeof o.agent_id !== "string")
        throw new Error('record.claim needs an integer "attempt" from 1 and an "agent_id" string');
      if (!Number.isSafeInteger(o.dispatch_seq) || (o.dispatch_seq as number) < 1)
        throw new Error('record.claim needs an integer "dispatch_seq" from 1');
      return o as unknown as RecordRequest;
    case "record.update":
      if (typeof o.record_json !== "string" || !Number.isInteger(o.revision) || (o.revision as number) < 0) {
        throw new Error('record.update needs "record_json" and an integer "revision"');
      }
      if (o.duration_s !== undefined && typeof o.duration_s !== "number") throw new Error('"duration_s" is a number');
      return o as unknown as RecordRequest;
    default:
      throw new Error(`unknown record request type ${JSON.stringify(o.type)}`);
  }
}

/** Checks an `asset.seal`'s fields (sizes are whole numbers, texts bounded). */
function asSeal(o: Record<string, unknown>): RecordRequest {
  const ints = ["size", "chunks", "chunk_bytes"] as const;
  if (!ints.every((k) => Number.isSafeInteger(o[k]) && (o[k] as number) >= 0))
    throw new Error('asset.seal needs whole numbers "size", "chunks" and "chunk_bytes"');
  const texts = ["name", "nuid", "digest", "content_type", "file_name"] as const;
  if (!texts.every((k) => typeof o[k] === "string" && (o[k] as string).length <= 1024))
    throw new Error('asset.seal needs "name", "nuid", "digest", "content_type" and "file_name" strings');
  if (o.node_id !== undefined && typeof o.node_id !== "string") throw new Error('"node_id" is a string');
  return o as unknown as RecordRequest;
}

/** `nw.cancel.<job_id>`. */
export interface JobCancel {
  type: "job.cancel";
  v: 1;
  job_id: string;
  reason: CancelReason;
}

export const CancelReason = {
  user: "user_requested",
  timeout: "timed_out",
  drain: "agent_draining",
} as const;
export type CancelReason = (typeof CancelReason)[keyof typeof CancelReason];

/** `nw.agent.<id>.control`. */
export type AgentControl =
  | { type: "agent.drain"; v: 1 }
  | { type: "agent.resume"; v: 1 }
  | { type: "agent.ping"; v: 1 };

export const AgentState = { starting: "starting", idle: "idle", busy: "busy", draining: "draining" } as const;
export type AgentState = (typeof AgentState)[keyof typeof AgentState];

export interface GpuInfo {
  index: number;
  name: string;
  memory_total_mb: number;
  uuid?: string;
}

export interface AgentCapabilities {
  gpus: GpuInfo[];
  docker: boolean;
  providers: string[];
  max_jobs: number;
  strategies: ExecutionStrategy[];
  node_types: number;
  /** GPU ids `gpu`-pool runs are given, and how many each gets of its own (0: all to every run). */
  run_gpus?: { ids: string[]; per_run: number };
  /** Threads and processes kept started ahead of their runs, per strategy (`warmRunners`). */
  warm_runners?: number;
  /**
   * The language models its providers offer it, refreshed every minute (`/v1/models` is their union over live
   * agents); a provider that did not answer its listing is left out until it does.
   */
  models?: AgentModel[];
  /** The ComfyUI server beside the agent (`comfyuiUrl`): whether it answers, its version and devices. */
  comfyui?: {
    url: string;
    reachable: boolean;
    version: string | null;
    devices: { name: string; type: string; vram_total?: number }[];
  };
  /** ffmpeg on the agent's PATH (the video and audio nodes need it): its version, or null when absent. */
  ffmpeg?: { version: string | null } | null;
}

/** Registry entry in KV `nw_agents` (key = agent id), refreshed by the heartbeat; TTL removes dead agents. */
export interface AgentRegistration {
  type: "agent.registration";
  v: 1;
  id: string;
  name: string;
  version: string;
  labels: string[];
  pools: string[];
  capabilities: AgentCapabilities;
  state: AgentState;
  running_jobs: string[];
  /** Key in KV `nw_nodes` of the node metadata this agent offers (a content hash: agents share entries). */
  node_catalog: string;
  started_at: string;
  heartbeat_at: string;
}

/** Every message family that travels over NATS (not to clients). */
export type NatsMessage = JobDispatch | JobCancel | AgentControl | AgentRegistration;
