/**
 * The NATS grammar. Nothing outside this file writes a subject string.
 *
 *   nw.jobs.<pool>                 job dispatch (stream NW_JOBS, work-queue; Nats-Msg-Id = job id)
 *   nw.events.<job_id>             every event of a job (stream NW_EVENTS; Nats-Msg-Id = <job_id>:<attempt>:<n>)
 *   nw.cancel.<job_id>             core subject: cancel signal to the agent running the job
 *   nw.agent.<agent_id>.control    core subject: drain | resume | ping
 *   $KV.<bucket>.<key>             a KV bucket's entry (JetStream's own layout; written through `kvEntry`)
 *   $O.<bucket>.C.<nuid>           an object's chunks (the object store's layout; read through `objectChunks`)
 *
 * Tokens may not contain `.`, `*`, `>` or whitespace: a job id must never widen a subscription.
 */
import { LLM_PROVIDERS } from "./chat.js";
import { ErrorCode, ProtocolError } from "./errors.js";

export const STREAM_JOBS = "NW_JOBS";
export const STREAM_EVENTS = "NW_EVENTS";
export const KV_JOBS = "nw_jobs";
export const KV_WORKFLOWS = "nw_workflows";
export const KV_THREADS = "nw_threads";
export const KV_TOKENS = "nw_tokens";
export const KV_AGENTS = "nw_agents";
export const KV_NODES = "nw_nodes";
export const OBJ_ASSETS = "nw_assets";

const BAD_TOKEN = /[.*>\s]/;

/** Returns `token` if it is a safe single subject token, else throws `ProtocolError(PROTO_ERR_BAD_TOKEN)`. */
export function checkToken(token: string, what = "token"): string {
  if (typeof token !== "string" || token.length === 0 || token.length > 128 || BAD_TOKEN.test(token)) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_BAD_TOKEN, `invalid ${what} for a subject: ${JSON.stringify(token)}`);
  }
  return token;
}

export const subjects = {
  jobs: (pool: string) => `nw.jobs.${checkToken(pool, "pool")}`,
  jobsAll: () => "nw.jobs.>",
  jobEvents: (jobId: string) => `nw.events.${checkToken(jobId, "job id")}`,
  eventsAll: () => "nw.events.>",
  cancel: (jobId: string) => `nw.cancel.${checkToken(jobId, "job id")}`,
  cancelAll: () => "nw.cancel.*",
  agentControl: (agentId: string) => `nw.agent.${checkToken(agentId, "agent id")}.control`,
  /** Where JetStream keeps a KV entry: a publish here is a KV put. Keys are dot-separated tokens (jobKeys). */
  kvEntry: (bucket: string, key: string) => `$KV.${checkToken(bucket, "bucket")}.${key}`,
  /** The chunks of one object in an object store (JetStream's own layout; `nuid` from the object's info). */
  objectChunks: (bucket: string, nuid: string) =>
    `$O.${checkToken(bucket, "bucket")}.C.${checkToken(nuid, "object nuid")}`,
} as const;

/** The job id inside an `nw.events.<job_id>` subject (the inverse of `subjects.jobEvents`). */
export function jobIdOfEventSubject(subject: string): string {
  return subject.slice("nw.events.".length);
}

/** The job id inside an `nw.cancel.<job_id>` subject (the inverse of `subjects.cancel`). */
export function jobIdOfCancelSubject(subject: string): string {
  return subject.slice("nw.cancel.".length);
}

/** Durable consumer name for a pool. */
export function poolConsumer(pool: string): string {
  return `pool_${checkToken(pool, "pool")}`;
}

/** `Nats-Msg-Id` of an event: deduplicates a re-published event, distinct per attempt. */
export function eventMsgId(jobId: string, attempt: number, n: number | string): string {
  return `${jobId}:${attempt}:${n}`;
}

/** KV key layout of `nw_jobs`: records under `j.`, per-workflow index under `w.<workflow>.` (prefix scans). */
export const jobKeys = {
  record: (jobId: string) => `j.${checkToken(jobId, "job id")}`,
  allRecords: () => "j.*",
  byWorkflow: (workflowId: string, jobId: string) =>
    `w.${checkToken(workflowId, "workflow id")}.${checkToken(jobId, "job id")}`,
  workflowPrefix: (workflowId: string) => `w.${checkToken(workflowId, "workflow id")}.*`,
  idempotency: (key: string) => `i.${key}`,
} as const;

/**
 * KV key layout of `nw_threads`: threads under `t.`, each thread's messages under `m.<thread>.` (ids are
 * time-ordered, so a prefix scan sorted by key is the conversation in order).
 */
export const threadKeys = {
  thread: (threadId: string) => `t.${checkToken(threadId, "thread id")}`,
  allThreads: () => "t.*",
  message: (threadId: string, messageId: string) =>
    `m.${checkToken(threadId, "thread id")}.${checkToken(messageId, "message id")}`,
  messagesOf: (threadId: string) => `m.${checkToken(threadId, "thread id")}.*`,
  messageAnywhere: (messageId: string) => `m.*.${checkToken(messageId, "message id")}`,
} as const;

/** KV key of an agent in `nw_agents`, and of a workflow in `nw_workflows`. */
export const agentKey = (agentId: string) => checkToken(agentId, "agent id");
export const workflowKey = (workflowId: string) => checkToken(workflowId, "workflow id");

/**
 * Pools every deployment knows; operators may add labels of their own. Each language-model provider is a pool
 * too (protocol/chat.ts): the agents holding its key consume it.
 */
export const BUILTIN_POOLS = ["cpu", "gpu", "docker", "comfyui", ...LLM_PROVIDERS] as const;
