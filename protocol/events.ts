/**
 * Job events, by NodeTool's names and fields (reference/nodetool.md §2.6). An agent publishes each to
 * `nw.events.<job_id>`; the gateway adds `seq` (the NW_EVENTS stream sequence) when it delivers it.
 */
import type { ExecutionStrategy, JobRecord, JobState } from "./jobs.js";
import type { WireError } from "./errors.js";

/** Fields every job event carries. */
export interface EventBase {
  job_id: string;
  workflow_id: string;
  /** Attempt that produced the event; older attempts are fenced off by the gateway. */
  attempt: number;
  /** Emit time on the producer, ms since epoch (latency measurement, not ordering). */
  ts?: number;
  /** NW_EVENTS stream sequence, set by the gateway on delivery; clients only compare it. */
  seq?: number;
}

export interface JobUpdate extends EventBase {
  type: "job_update";
  status: JobState;
  message?: string;
  error?: WireError | string | null;
  /** Output node name → values, on `completed`. */
  result?: Record<string, unknown[]> | null;
  queue_position?: number;
  /** Pool the job waits in (on `queued` updates). */
  pool?: string;
  agent_id?: string;
  /** Where the run goes (on `running` updates): the execution strategy the agent gave it. */
  strategy?: ExecutionStrategy;
  duration?: number;
}

export const NodeStatus = { running: "running", completed: "completed", error: "error", waiting: "waiting" } as const;
export type NodeStatus = (typeof NodeStatus)[keyof typeof NodeStatus];

export interface NodeUpdate extends EventBase {
  type: "node_update";
  node_id: string;
  node_name: string;
  node_type: string;
  status: NodeStatus;
  error?: string | null;
  result?: Record<string, unknown> | null;
}

export interface NodeProgress extends EventBase {
  type: "node_progress";
  node_id: string;
  progress: number;
  total: number;
  chunk?: string;
}

export interface EdgeUpdate extends EventBase {
  type: "edge_update";
  edge_id: string;
  status: "active" | "completed";
  counter?: number;
}

export interface OutputUpdate extends EventBase {
  type: "output_update";
  node_id: string;
  node_name: string;
  output_name: string;
  value: unknown;
  output_type: string;
  metadata?: Record<string, unknown>;
}

/** A node saved a file (NodeTool's `save_update`): `name` as saved, `value` its asset reference. */
export interface SaveUpdate extends EventBase {
  type: "save_update";
  node_id: string;
  name: string;
  value: unknown;
  output_type: string;
  metadata?: Record<string, unknown>;
}

export interface Chunk extends EventBase {
  type: "chunk";
  node_id?: string;
  content_type: "text" | "audio" | "image" | "video" | "document";
  content: string | Uint8Array;
  content_metadata?: Record<string, unknown>;
  done: boolean;
  thinking?: boolean;
}

export interface LogUpdate extends EventBase {
  type: "log_update";
  node_id: string;
  node_name: string;
  content: string;
  severity: "info" | "warning" | "error";
}

export interface Notification extends EventBase {
  type: "notification";
  node_id: string;
  content: string;
  severity: "info" | "warning" | "error";
}

export interface PreviewUpdate extends EventBase {
  type: "preview_update";
  node_id: string;
  value: unknown;
}

export interface ErrorEvent extends EventBase {
  type: "error";
  message: string;
  code?: string;
}

/** The job event family. */
export type JobEvent =
  | JobUpdate
  | NodeUpdate
  | NodeProgress
  | EdgeUpdate
  | OutputUpdate
  | SaveUpdate
  | Chunk
  | LogUpdate
  | Notification
  | PreviewUpdate
  | ErrorEvent;

export type JobEventType = JobEvent["type"];

export const JOB_EVENT_TYPES: ReadonlySet<JobEventType> = new Set<JobEventType>([
  "job_update",
  "node_update",
  "node_progress",
  "edge_update",
  "output_update",
  "save_update",
  "chunk",
  "log_update",
  "notification",
  "preview_update",
  "error",
]);

/** The fields a producer's publisher stamps on every event (the gateway adds `seq` on delivery). */
export type EventEnvelope = Required<Pick<EventBase, "job_id" | "workflow_id" | "attempt" | "ts">>;

/** An event as its producer hands it to the publisher: without the envelope. */
export type Unstamped<E> = E extends EventBase ? Omit<E, keyof EventBase> : never;

/** Any job event before its envelope. */
export type JobEventBody = Unstamped<JobEvent>;

/**
 * The events a graph run emits (the engine's), before the runner's publisher stamps them. A runner in a thread,
 * process or container that sends any other (a `job_update` saying its job completed, say) is broken or hostile.
 */
export type GraphEvent = Unstamped<
  NodeUpdate | NodeProgress | EdgeUpdate | OutputUpdate | SaveUpdate | Chunk | LogUpdate | PreviewUpdate
>;
export type GraphEventType = GraphEvent["type"];

/** Every `GraphEvent` type, and only those. */
export const GRAPH_EVENT_TYPES: ReadonlySet<string> = new Set(
  Object.keys({
    node_update: 1,
    node_progress: 1,
    edge_update: 1,
    output_update: 1,
    save_update: 1,
    chunk: 1,
    log_update: 1,
    preview_update: 1,
  } satisfies Record<GraphEventType, 1>),
);

export type JobUpdateBody = Unstamped<JobUpdate>;
type Terminal = "completed" | "failed" | "cancelled" | "timed_out";

/** Builders for every `job_update` a producer publishes, so each status carries the fields it is read with. */
export const jobUpdate = {
  /** The job waits in `pool` at `position`; `message` says why nothing happens yet (no agent consumes it). */
  queued(position: number, pool?: string, message?: string): JobUpdateBody {
    const ev: JobUpdateBody = { type: "job_update", status: "queued" };
    if (pool !== undefined) ev.pool = pool;
    ev.queue_position = position;
    if (message !== undefined) ev.message = message;
    return ev;
  },
  /** An agent claimed the job and runs it with `strategy`. */
  running(agentId: string, strategy?: ExecutionStrategy, message?: string): JobUpdateBody {
    return { type: "job_update", status: "running", agent_id: agentId, strategy, message };
  },
  /** The job ended without a result: failed, cancelled or timed out. */
  ended(status: Exclude<Terminal, "completed">, error: WireError | null, message: string): JobUpdateBody {
    return error ? { type: "job_update", status, error, message } : { type: "job_update", status, message };
  },
  /** The terminal update that matches a finished record. */
  ofRecord(r: JobRecord): JobUpdateBody {
    const ev: JobUpdateBody = { type: "job_update", status: r.status };
    if (r.error) {
      ev.error = r.error;
      ev.message = r.error.message;
    }
    if (r.status === "completed") ev.result = r.outputs ?? {};
    return ev;
  },
};

/**
 * What the gateway reads of every event to route and fence it (`decodeEventHead`); the rest stays in the event's
 * bytes until a client asks for it decoded (JSON) or a listener reads it.
 */
export interface JobEventHead {
  type: JobEventType;
  job_id: string;
  attempt: number;
  /** On `job_update` (checked there). */
  status?: string;
  seq?: number;
}

/** A terminal `job_update` ends a job's stream. */
export function isTerminalEvent<E extends JobEventHead>(e: E): e is E & JobUpdate {
  return (
    e.type === "job_update" &&
    (e.status === "completed" || e.status === "failed" || e.status === "cancelled" || e.status === "timed_out")
  );
}

/** Progress frames may be coalesced for a slow client; nothing else may. */
export function isCoalescable(e: JobEvent): boolean {
  return e.type === "node_progress" || e.type === "edge_update";
}

/** Exhaustive handler map over a discriminated union. */
export type Handlers<U extends { type: string }, R = void> = { [K in U["type"]]: (m: Extract<U, { type: K }>) => R };
