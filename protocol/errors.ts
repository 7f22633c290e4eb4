/**
 * Stable error codes. Anything that crosses a process boundary carries one of these strings, never a class.
 * Codes are never reused or renamed: add new ones at the end of their group.
 */
export const ErrorCode = {
  // protocol: bytes that could not become a typed message
  PROTO_ERR_DECODE: "PROTO_ERR_DECODE",
  PROTO_ERR_TOO_LARGE: "PROTO_ERR_TOO_LARGE",
  PROTO_ERR_FORBIDDEN_KEY: "PROTO_ERR_FORBIDDEN_KEY",
  PROTO_ERR_SHAPE: "PROTO_ERR_SHAPE",
  PROTO_ERR_UNKNOWN_TYPE: "PROTO_ERR_UNKNOWN_TYPE",
  PROTO_ERR_BAD_TOKEN: "PROTO_ERR_BAD_TOKEN",
  // graph validation
  GRAPH_ERR_UNKNOWN_NODE_TYPE: "GRAPH_ERR_UNKNOWN_NODE_TYPE",
  GRAPH_ERR_DANGLING_EDGE: "GRAPH_ERR_DANGLING_EDGE",
  GRAPH_ERR_CYCLE: "GRAPH_ERR_CYCLE",
  GRAPH_ERR_DUPLICATE_NODE: "GRAPH_ERR_DUPLICATE_NODE",
  GRAPH_ERR_MISSING_PARAM: "GRAPH_ERR_MISSING_PARAM",
  GRAPH_ERR_PARAM_TYPE: "GRAPH_ERR_PARAM_TYPE",
  GRAPH_ERR_UNKNOWN_PARAM: "GRAPH_ERR_UNKNOWN_PARAM",
  // gateway
  GW_ERR_NOT_FOUND: "GW_ERR_NOT_FOUND",
  GW_ERR_BAD_REQUEST: "GW_ERR_BAD_REQUEST",
  GW_ERR_BODY_TOO_LARGE: "GW_ERR_BODY_TOO_LARGE",
  GW_ERR_UNAVAILABLE: "GW_ERR_UNAVAILABLE",
  /** A request body of a kind this gateway cannot take (multipart on the pure-JS uWS fallback). */
  GW_ERR_UNSUPPORTED_MEDIA: "GW_ERR_UNSUPPORTED_MEDIA",
  GW_ERR_INTERNAL: "GW_ERR_INTERNAL",
  GW_ERR_CONFLICT: "GW_ERR_CONFLICT",
  /** An Idempotency-Key (or a `run_job`'s `job_id`) sent again with a different request than its first. */
  GW_ERR_IDEMPOTENCY_MISMATCH: "GW_ERR_IDEMPOTENCY_MISMATCH",
  GW_ERR_UNAUTHORIZED: "GW_ERR_UNAUTHORIZED",
  /** A browser-facing check refused the request: its Host, its Origin. */
  GW_ERR_FORBIDDEN: "GW_ERR_FORBIDDEN",
  /** No live agent consumes the pool a child job would need (gateway/child-jobs.ts). */
  GW_ERR_NO_AGENT: "GW_ERR_NO_AGENT",
  /** A client passed a limit of its own (jobs followed by one socket). */
  GW_ERR_LIMIT: "GW_ERR_LIMIT",
  /** The asset store holds `assetsMaxBytes`: nothing more is stored until assets are deleted or age out. */
  GW_ERR_STORE_FULL: "GW_ERR_STORE_FULL",
  // jobs as run by agents
  JOB_ERR_NODE_FAILED: "JOB_ERR_NODE_FAILED",
  JOB_ERR_MAX_DELIVERIES: "JOB_ERR_MAX_DELIVERIES",
  JOB_ERR_TIMEOUT: "JOB_ERR_TIMEOUT",
  JOB_ERR_CANCELLED: "JOB_ERR_CANCELLED",
  JOB_ERR_LEASE_LOST: "JOB_ERR_LEASE_LOST",
  JOB_ERR_INVALID: "JOB_ERR_INVALID",
  /** The submit could not store everything a queued job needs (its client got an error): the job never runs. */
  JOB_ERR_NOT_QUEUED: "JOB_ERR_NOT_QUEUED",
  /**
   * The job's agent stopped while running it and its dispatch was no longer in NW_JOBS (acknowledged by another
   * NATS user, or removed), so nothing would deliver it again: a gateway ends it rather than leave it running.
   */
  JOB_ERR_DISPATCH_LOST: "JOB_ERR_DISPATCH_LOST",
  /** The job asks for more isolation (an execution strategy) than the agent that pulled it offers. */
  JOB_ERR_STRATEGY_UNAVAILABLE: "JOB_ERR_STRATEGY_UNAVAILABLE",
  /** The worker thread or subprocess running the graph died (a crash, its memory limit, a kill from outside). */
  JOB_ERR_RUNNER_CRASHED: "JOB_ERR_RUNNER_CRASHED",
  /** An event or the job's record would be larger than NATS carries (the server's max_payload): the job fails. */
  JOB_ERR_OUTPUT_TOO_LARGE: "JOB_ERR_OUTPUT_TOO_LARGE",
  /**
   * An output no record or event may hold: nested deeper than the codec's limit, or with a key that could reach a
   * prototype (`__proto__`, `constructor`, `prototype`). The job fails rather than be retried.
   */
  JOB_ERR_OUTPUT_INVALID: "JOB_ERR_OUTPUT_INVALID",
  /** A binary output could not be stored as an asset (the object store refused it or was unreachable). */
  JOB_ERR_ASSET_FAILED: "JOB_ERR_ASSET_FAILED",
  /** The job published more events than the events stream keeps per job (`eventsMaxPerJob`): it is ended. */
  JOB_ERR_TOO_MANY_EVENTS: "JOB_ERR_TOO_MANY_EVENTS",
  /** Events of the job NATS would not store within the agent's outbox bounds (`outboxMaxAgeMs`, `outboxMaxBytes`). */
  JOB_ERR_EVENTS_UNSTORED: "JOB_ERR_EVENTS_UNSTORED",
  // configuration
  CONFIG_ERR_INVALID: "CONFIG_ERR_INVALID",
  CONFIG_ERR_UNKNOWN_KEY: "CONFIG_ERR_UNKNOWN_KEY",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Thrown by every decoder and validator in `protocol/` for input that is not a valid message. */
export class ProtocolError extends Error {
  readonly code: ErrorCode;
  /** The command a malformed client frame named, so its answer can carry its `request_id`. */
  command?: { command: string; request_id?: string };
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** A graph that cannot run: unknown node type, dangling edge, cycle, bad param. Names the offender. */
export class GraphError extends Error {
  readonly code: ErrorCode;
  /** The node or edge id at fault, when there is one. */
  readonly ref: string | undefined;
  constructor(code: ErrorCode, message: string, ref?: string) {
    super(message);
    this.name = "GraphError";
    this.code = code;
    this.ref = ref;
  }
}

/** Bad configuration, found once at start-up. `key` names the setting. */
export class InvalidConfigError extends Error {
  readonly code: ErrorCode;
  readonly key: string;
  constructor(key: string, message: string, code: ErrorCode = ErrorCode.CONFIG_ERR_INVALID) {
    super(`${key}: ${message}`);
    this.name = "InvalidConfigError";
    this.code = code;
    this.key = key;
  }
}

/** The wire form of an error: data with a stable code. */
export interface WireError {
  code: ErrorCode | string;
  message: string;
  retryable?: boolean;
}

/** Exhaustiveness guard for `switch` over discriminated unions. */
export function assertNever(x: never, what = "value"): never {
  throw new ProtocolError(ErrorCode.PROTO_ERR_UNKNOWN_TYPE, `unexpected ${what}: ${JSON.stringify(x)}`);
}

/** What stands in for a credential in a message or a URL shown to anyone. */
export const REDACTED = "***";

/**
 * `url` as it may be shown (a log line, an error, the agent's registration): without its userinfo, every query
 * value replaced by `REDACTED` (a `?key=…` is as secret as a password). A URL with neither is returned as given;
 * text that is not a URL, with what `redactSecretsIn` removes.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return redactSecretsIn(url);
  }
  if (!u.username && !u.password && !u.search) return url;
  u.username = "";
  u.password = "";
  for (const k of [...new Set(u.searchParams.keys())]) u.searchParams.set(k, REDACTED);
  return u.href;
}

/**
 * `text` with what looks like a credential in a URL removed: the userinfo of every `scheme://user:pass@host`, and
 * the value of every query parameter; then every string of `secrets` (of 3 characters or more) that is still in it.
 */
export function redactSecretsIn(text: string, secrets: readonly string[] = []): string {
  let out = text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]*@/gi, `$1${REDACTED}@`)
    .replace(
      /(\b[a-z][a-z0-9+.-]*:\/\/[^\s?#]*\?)([^\s#]*)/gi,
      (_m, head: string, query: string) => head + query.replace(/(^|&)([^=&]*)=[^&]*/g, `$1$2=${REDACTED}`),
    );
  for (const s of secrets) if (s.length >= 3) out = out.split(s).join(REDACTED);
  return out;
}

/** The strings of `url` that are credentials (its password, query values; raw and decoded), for `redactSecretsIn`. */
export function secretsOfUrl(url: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return [];
  }
  const raw = [
    u.password,
    ...u.search
      .slice(1)
      .split("&")
      .map((p) => p.slice(p.indexOf("=") + 1)),
  ];
  const decoded = raw.map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return [...new Set([...raw, ...decoded, ...u.searchParams.values()])].filter(Boolean);
}
