/**
 * The shapes of the NATS streams, buckets and consumers, as plain data: the gateway creates them and the agent
 * checks them, so both read the same numbers from here.
 */
import { STREAM_EVENTS, STREAM_JOBS } from "./subjects.js";

/** Defaults for the job queue; the operator may change them in the gateway's config. */
export const JOB_QUEUE_DEFAULTS = {
  /** How long a pulled job may go without an ack or in-progress ack before it is redelivered. */
  ackWaitMs: 30_000,
  /** Runs a job may have before it ends `failed` ("max deliveries reached"). */
  maxAttempts: 3,
  /** Dedup window for `Nats-Msg-Id` (job id) on NW_JOBS, and event ids on NW_EVENTS. */
  duplicateWindowMs: 120_000,
} as const;

export const EVENTS_DEFAULTS = {
  /** How long events stay replayable. */
  maxAgeMs: 24 * 3600_000,
  /** Bytes the stream keeps (oldest events go first past it). */
  maxBytes: 4 * 1024 * 1024 * 1024,
  /** Events one job may store (the stream's max_msgs_per_subject). */
  maxEventsPerJob: 100_000,
} as const;

/**
 * Events a job may publish before its agent must end it `JOB_ERR_TOO_MANY_EVENTS`, given the stream's per-job cap
 * (`max_msgs_per_subject`, -1 or 0 = none): the cap less room for the gateway's own updates and the terminal one.
 * Past the cap the stream would drop the job's oldest events, and a resume would no longer be whole.
 */
export function jobEventBudget(maxMsgsPerSubject: number): number {
  if (!(maxMsgsPerSubject > 0)) return Number.POSITIVE_INFINITY;
  return Math.max(1, maxMsgsPerSubject - EVENTS_RESERVED_PER_JOB);
}

/**
 * Room kept under the per-job cap for events agents do not count: the gateway's `queued` and queue-position
 * updates (gateway/queue.ts bounds them to ~120 for a million queued jobs), a cancel, and the terminal update.
 */
export const EVENTS_RESERVED_PER_JOB = 256;

export const JOBS_KV_DEFAULTS = {
  /** How long job records are kept after their last write. */
  retentionMs: 7 * 24 * 3600_000,
} as const;

/** TTL of an agent's registry entry; the heartbeat refreshes it well within. */
export const AGENT_TTL_MS = 15_000;
export const AGENT_HEARTBEAT_MS = 3_000;

export const STREAM_NAMES = { jobs: STREAM_JOBS, events: STREAM_EVENTS } as const;
