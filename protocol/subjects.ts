/**
 * The NATS grammar. Nothing outside this file writes a subject string.
 *
 *   nw.jobs.<pool>                 job dispatch (stream NW_JOBS, work-queue; Nats-Msg-Id = job id)
 *   nw.events.<job_id>.<source>    every event of a job (stream NW_EVENTS; Nats-Msg-Id = <job_id>:<attempt>:<n>);
 *                                  <source> is `gw` for the gateway's own events, else the publishing agent's
 *                                  principal (its NATS user: the server lets it publish only on its own token)
 *   nw.rec.<principal>             core request: an agent's claim, finish and read of a job record (gateways
 *                                  answer in queue group `nw-gateways`; the token says who asks)
 *   _INBOX_<principal>.>           an agent's inbox prefix (replies it may read; no other agent's)
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

/** The `<source>` token of the gateway's own events: no agent principal may be this. */
export const GATEWAY_SOURCE = "gw";
/** Header an agent's event carries: its lease token for the event's attempt (gateway-signed, see nats/lease.ts). */
export const LEASE_HEADER = "Nw-Lease";
/** Queue group of the gateways answering agents' record requests. */
export const RECORDS_QUEUE = "nw-gateways";

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
  /** A job's events from `source`: the gateway's by default (`GATEWAY_SOURCE`), else an agent principal's. */
  jobEvents: (jobId: string, source: string = GATEWAY_SOURCE) =>
    `nw.events.${checkToken(jobId, "job id")}.${checkToken(source, "event source")}`,
  /** Every event of one job, whoever published it (a replay's filter). */
  jobEventsAny: (jobId: string) => `nw.events.${checkToken(jobId, "job id")}.*`,
  eventsAll: () => "nw.events.>",
  /** Where agent `principal` sends its record requests; `recordsAll` is what gateways answer. */
  records: (principal: string) => `nw.rec.${checkPrincipal(principal)}`,
  recordsAll: () => "nw.rec.*",
  /** An agent's inbox prefix (nats.js `inboxPrefix`): its NATS user may subscribe under it only. */
  agentInbox: (principal: string) => `_INBOX_${checkPrincipal(principal)}`,
  cancel: (jobId: string) => `nw.cancel.${checkToken(jobId, "job id")}`,
  cancelAll: () => "nw.cancel.*",
  agentControl: (agentId: string) => `nw.agent.${checkToken(agentId, "agent id")}.control`,
  /** Where JetStream keeps a KV entry: a publish here is a KV put. Keys are dot-separated tokens (jobKeys). */
  kvEntry: (bucket: string, key: string) => `$KV.${checkToken(bucket, "bucket")}.${key}`,
  /** The entry of object `name` in an object store (JetStream's layout: the name in padded base64url). */
  objectMeta: (bucket: string, name: string) =>
    `$O.${checkToken(bucket, "bucket")}.M.${btoa(String.fromCharCode(...new TextEncoder().encode(name)))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")}`,
  /** The stream holding an object store's entries and chunks. */
  objectStream: (bucket: string) => `OBJ_${checkToken(bucket, "bucket")}`,
  /** The chunks of one object in an object store (JetStream's own layout; `nuid` from the object's info). */
  objectChunks: (bucket: string, nuid: string) =>
    `$O.${checkToken(bucket, "bucket")}.C.${checkToken(nuid, "object nuid")}`,
  /** Every object's chunks in an object store (a filter). */
  allObjectChunks: (bucket: string) => `$O.${checkToken(bucket, "bucket")}.C.>`,
} as const;

/** An agent principal (its NATS user name): a subject token that is not the gateway's own. */
export function checkPrincipal(principal: string): string {
  checkToken(principal, "agent principal");
  if (principal === GATEWAY_SOURCE || principal.length > 64) {
    throw new ProtocolError(ErrorCode.PROTO_ERR_BAD_TOKEN, `invalid agent principal: ${JSON.stringify(principal)}`);
  }
  return principal;
}

/** The job id inside an `nw.events.<job_id>.<source>` subject (the inverse of `subjects.jobEvents`). */
export function jobIdOfEventSubject(subject: string): string {
  const end = subject.lastIndexOf(".");
  return end > "nw.events.".length ? subject.slice("nw.events.".length, end) : subject.slice("nw.events.".length);
}

/** The `<source>` inside an event subject: `GATEWAY_SOURCE` or an agent principal ("" when there is none). */
export function sourceOfEventSubject(subject: string): string {
  const end = subject.lastIndexOf(".");
  return end > "nw.events.".length ? subject.slice(end + 1) : "";
}

/** The principal inside an `nw.rec.<principal>` subject. */
export function principalOfRecordsSubject(subject: string): string {
  return subject.slice("nw.rec.".length);
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

/** KV key layout of `nw_jobs`: records under `j.` (listings by workflow or state are the gateway's, from them). */
export const jobKeys = {
  record: (jobId: string) => `j.${checkToken(jobId, "job id")}`,
  allRecords: () => "j.*",
  idempotency: (key: string) => `i.${key}`,
  /** A child job of `parentId` (a node sent to another pool): a cancel of the parent finds its children here. */
  child: (parentId: string, childId: string) => `c.${checkToken(parentId, "job id")}.${checkToken(childId, "job id")}`,
  childrenOf: (parentId: string) => `c.${checkToken(parentId, "job id")}.*`,
  /** The gateways' shared key that signs agents' lease tokens (agents may not read `nw_jobs`). */
  leaseKey: () => "s.lease",
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

/**
 * KV key of an agent in `nw_agents`: under its principal (`<principal>.<agent_id>`, the keys its NATS user may
 * write), or the bare id when the agent is its own principal (no NATS users). A workflow's key in `nw_workflows`.
 */
export const agentKey = (agentId: string, principal: string = agentId) =>
  principal === agentId
    ? checkToken(agentId, "agent id")
    : `${checkPrincipal(principal)}.${checkToken(agentId, "agent id")}`;
/** KV key of a node catalog in `nw_nodes` (its hash), under its agent's principal as `agentKey` is. */
export const nodeCatalogKey = (hash: string, principal: string | null) =>
  principal === null
    ? checkToken(hash, "catalog hash")
    : `${checkPrincipal(principal)}.${checkToken(hash, "catalog hash")}`;
export const workflowKey = (workflowId: string) => checkToken(workflowId, "workflow id");

/**
 * Pools every deployment knows; operators may add labels of their own. Each language-model provider is a pool
 * too (protocol/chat.ts): the agents holding its key consume it.
 */
export const BUILTIN_POOLS = ["cpu", "gpu", "docker", "comfyui", ...LLM_PROVIDERS] as const;
