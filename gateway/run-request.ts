/** The one reading of a run's options, for HTTP runs, `run_job` and chat turns alike. */
import { createHash, type Hash } from "node:crypto";
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

/**
 * A digest of what a run asks for (graph, params, options), the same for the same request whatever its key order:
 * a retry under an Idempotency-Key must ask for what the first request did.
 */
export function runFingerprint(graph: unknown, spec: Partial<RunSpec>): string {
  const h = createHash("sha256");
  feed(h, [graph, spec.params ?? {}, spec.strategy ?? null, spec.timeoutS ?? null, spec.pool ?? null]);
  return h.digest("base64url").slice(0, 22);
}

/** Hashes `v` with object keys in sorted order, bytes as bytes; each value is tagged so no two forms collide. */
function feed(h: Hash, v: unknown): void {
  if (v instanceof Uint8Array) {
    h.update(`b${v.byteLength}:`).update(v);
  } else if (Array.isArray(v)) {
    h.update(`a${v.length}[`);
    for (const x of v) feed(h, x);
    h.update("]");
  } else if (v !== null && typeof v === "object") {
    const keys = Object.keys(v).sort();
    h.update(`o${keys.length}{`);
    for (const k of keys) {
      h.update(`${JSON.stringify(k)}:`);
      feed(h, (v as Record<string, unknown>)[k]);
    }
    h.update("}");
  } else {
    h.update(`${JSON.stringify(v) ?? "u"};`);
  }
}
