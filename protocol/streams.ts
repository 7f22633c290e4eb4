/**
 * The shapes of the NATS streams, buckets and consumers, as plain data: the gateway creates them and the agent
 * checks them, so both read the same numbers from here (design §3).
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
} as const;

export const JOBS_KV_DEFAULTS = {
  /** How long job records are kept after their last write. */
  retentionMs: 7 * 24 * 3600_000,
} as const;

/** TTL of an agent's registry entry; the heartbeat refreshes it well within. */
export const AGENT_TTL_MS = 15_000;
export const AGENT_HEARTBEAT_MS = 3_000;

export const STREAM_NAMES = { jobs: STREAM_JOBS, events: STREAM_EVENTS } as const;
