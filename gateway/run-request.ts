/** The one reading of a run's options, for HTTP runs, `run_job` and chat turns alike. */
import { checkSchema, RunOptionsSchema, type ExecutionStrategy, type RunOptions } from "../protocol/index.js";

export interface RunSpec {
  params: Record<string, unknown>;
  strategy?: ExecutionStrategy;
  /** The job's own; null takes the gateway's default (`jobTimeoutDefaultS`). */
  timeoutS: number | null;
  pool?: string;
}

/** Checks `body` against the run options' schema. */
export function parseRunRequest(body: unknown, what = "run"): RunSpec {
  return runSpecOf(checkSchema(RunOptionsSchema, body, what));
}

/** A run's options already checked (a decoded `run_job`) → what `submit` takes (which applies the timeout limits). */
export function runSpecOf(o: RunOptions): RunSpec {
  return {
    params: o.params ?? {},
    timeoutS: o.timeout_s ?? null,
    ...(o.execution_strategy ? { strategy: o.execution_strategy } : {}),
    ...(o.requirements?.pool ? { pool: o.requirements.pool } : {}),
  };
}
