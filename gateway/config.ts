/** Gateway options → a frozen, checked config (once, at start-up). */
import { readFileSync } from "node:fs";
import {
  InvalidConfigError,
  ErrorCode,
  JOB_QUEUE_DEFAULTS,
  EVENTS_DEFAULTS,
  JOBS_KV_DEFAULTS,
  ASSETS_DEFAULTS,
} from "../protocol/index.js";
import { NATS_OPTION_KEYS, compileNatsConnection, type NatsSettings, type NatsOptions } from "../nats/index.js";
import { checkApiToken, readTokenFile, type ApiToken } from "./auth.js";
import { compileDefaultModels, DEFAULT_MODEL_KEYS, type DefaultModels } from "./default-model.js";

export interface GatewayOptions extends NatsOptions {
  /** Bind address. @default "127.0.0.1" */
  host?: string;
  /** Port; 0 picks a free one (read back from the running gateway). @default 8000 */
  port?: number;
  /** Redelivery delay of a job whose agent stopped acking. @default 30000 */
  ackWaitMs?: number;
  /** Runs a job may have before it ends failed. @default 3 */
  maxAttempts?: number;
  /** How long events stay replayable. @default 86400000 (24 h) */
  eventsMaxAgeMs?: number;
  /** How long job records are kept. @default 604800000 (7 d) */
  jobsRetentionMs?: number;
  /**
   * Replicas of every stream, bucket and the object store (existing ones are changed to it). @default the
   * cluster's server count, at most 3 (1 on a single server); the default never lowers an existing count
   */
  natsReplicas?: number;
  /** Largest accepted asset upload (`POST /api/assets`). @default 268435456 (256 MiB) */
  maxAssetBytes?: number;
  /** How long assets (uploaded and produced) are kept: the `nw_assets` bucket's TTL. @default 604800000 (7 d) */
  assetsMaxAgeMs?: number;
  /**
   * Bytes the `nw_assets` bucket may hold; past it new assets are refused (507), so assets cannot fill the disk
   * JetStream keeps events and jobs on. @default 17179869184 (16 GiB)
   */
  assetsMaxBytes?: number;
  /** Largest accepted request body. @default 8388608 */
  maxBodyBytes?: number;
  /** Largest accepted WebSocket frame. @default 1048576 */
  wsMaxPayloadBytes?: number;
  /** Unsent bytes a WebSocket or an NDJSON/SSE event stream may hold before its slow client is closed (it resumes from its last seq). @default 4194304 */
  wsMaxBackpressureBytes?: number;
  /** A quiet SSE event stream gets a comment line this often, so a proxy's read timeout (nginx: 60 s) does not cut it. @default 15000 */
  sseKeepAliveMs?: number;
  /** Memory for recent jobs' events, so a resume (and a mass reconnect) replays from memory, not JetStream. 0 = off. @default 67108864 */
  replayCacheBytes?: number;
  /** Events a replay (a resume) reads from JetStream and holds at a time. @default 1000 */
  replayBatchEvents?: number;
  /** Bytes `NW_EVENTS` keeps; past it the oldest events go. @default 4294967296 (4 GiB) */
  eventsMaxBytes?: number;
  /** Events one job may store (`NW_EVENTS` max_msgs_per_subject); an agent fails a job before it. @default 100000 */
  eventsMaxPerJob?: number;
  /** Job records or assets one listing call reads at most (a filtered page may come back short, with `next`). @default 2000 */
  listScanMaxRecords?: number;
  /**
   * Age after which an Idempotency-Key that still has no job record is taken over by a retry (its first request
   * stored the key, then failed before writing the job). Longer than any submit can take. @default 30000
   */
  idempotencyOrphanMs?: number;
  /** Allow uWebSockets.js's slow pure-JS fallback when no native binary loads. @default false */
  allowJsFallback?: boolean;
  /**
   * Browser origins allowed to open `/ws` and send requests that change things (absent Origin is always allowed;
   * same-origin and loopback origins too). @default [] = loopback only without tokens, any with tokens
   */
  allowedOrigins?: string[];
  /** Host names answered besides loopback and IP literals (DNS rebinding defence; gateway/browser.ts). @default [] */
  allowedHosts?: string[];
  /** Origins given CORS headers and preflight answers; CORS is off for every other. @default [] */
  corsOrigins?: string[];
  /** Jobs one WebSocket may follow at once; a `run_job` or `reconnect_job` past it is refused. @default 1000 */
  wsMaxFollowsPerSocket?: number;
  /** `timeout_s` of a job that gives none. @default 3600 */
  jobTimeoutDefaultS?: number;
  /** Largest `timeout_s` a job may ask for; more is refused at submit. @default 86400 */
  jobTimeoutMaxS?: number;
  /** Log one line per request to stderr. @default false */
  accessLog?: boolean;
  /**
   * API tokens a client must present (`Authorization: Bearer`; on `/ws` also `?api_key=` or a `bearer.<token>`
   * subprotocol). Prefer `apiTokensFile`: a value here shows in the process's environment or command line.
   * With neither set the API is open (fine on loopback; the gateway warns when it listens elsewhere). @default []
   */
  apiTokens?: string[];
  /** A file of API tokens, one per line (`#` comments); re-read on SIGHUP. @default none */
  apiTokensFile?: string;
  /**
   * The language model that fills a node's model left empty (NodeTool saves `{"type": "language_model"}` for the
   * user to pick), as `provider:id` (`openai:gpt-4o-mini`, `ollama:llama3.2:1b`); the job goes to that provider's
   * pool. @default none: such a node fails naming this setting
   */
  defaultModel?: string;
  /** As `defaultModel`, for image-generation model properties (`image_model`). @default none */
  defaultImageModel?: string;
  /** As `defaultModel`, for text-to-speech model properties (`tts_model`). @default none */
  defaultSpeechModel?: string;
  /** As `defaultModel`, for speech-recognition model properties (`asr_model`). @default none */
  defaultTranscriptionModel?: string;
}

export interface GatewayConfig {
  host: string;
  port: number;
  /** Where NATS is and how to authenticate there (nats/settings.ts). */
  nats: NatsSettings;
  ackWaitMs: number;
  maxAttempts: number;
  eventsMaxAgeMs: number;
  jobsRetentionMs: number;
  /** null: follow the cluster (gateway/nats.ts). */
  natsReplicas: number | null;
  maxBodyBytes: number;
  maxAssetBytes: number;
  assetsMaxAgeMs: number;
  assetsMaxBytes: number;
  wsMaxPayloadBytes: number;
  wsMaxBackpressureBytes: number;
  sseKeepAliveMs: number;
  replayCacheBytes: number;
  replayBatchEvents: number;
  eventsMaxBytes: number;
  eventsMaxPerJob: number;
  listScanMaxRecords: number;
  idempotencyOrphanMs: number;
  allowJsFallback: boolean;
  allowedOrigins: string[];
  allowedHosts: string[];
  corsOrigins: string[];
  wsMaxFollowsPerSocket: number;
  jobTimeoutDefaultS: number;
  jobTimeoutMaxS: number;
  accessLog: boolean;
  /** Every accepted token: `apiTokens` then the file's (which alone may carry an expiry), read at start-up. */
  apiTokens: readonly ApiToken[];
  apiTokensFile: string | null;
  /** Model property type → the model that fills it when empty (gateway/default-model.ts). */
  defaultModels: DefaultModels;
}

export const GATEWAY_OPTION_KEYS: ReadonlySet<string> = new Set([
  "host",
  "port",
  ...NATS_OPTION_KEYS,
  "ackWaitMs",
  "maxAttempts",
  "eventsMaxAgeMs",
  "jobsRetentionMs",
  "natsReplicas",
  "maxBodyBytes",
  "maxAssetBytes",
  "assetsMaxAgeMs",
  "assetsMaxBytes",
  "wsMaxPayloadBytes",
  "wsMaxBackpressureBytes",
  "sseKeepAliveMs",
  "replayCacheBytes",
  "replayBatchEvents",
  "eventsMaxBytes",
  "eventsMaxPerJob",
  "listScanMaxRecords",
  "idempotencyOrphanMs",
  "allowJsFallback",
  "allowedOrigins",
  "allowedHosts",
  "corsOrigins",
  "wsMaxFollowsPerSocket",
  "jobTimeoutDefaultS",
  "jobTimeoutMaxS",
  "accessLog",
  "apiTokens",
  "apiTokensFile",
  ...DEFAULT_MODEL_KEYS,
]);

function int(key: string, v: unknown, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw new InvalidConfigError(key, `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return n;
}

function bool(key: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === true || v === "true" || v === "1") return true;
  if (v === false || v === "false" || v === "0") return false;
  throw new InvalidConfigError(key, `must be true or false, got ${JSON.stringify(v)}`);
}

/** Checks options once; throws `InvalidConfigError` naming the key. */
export function compileGatewayConfig(opts: GatewayOptions): Readonly<GatewayConfig> {
  for (const k of Object.keys(opts)) {
    if (!GATEWAY_OPTION_KEYS.has(k))
      throw new InvalidConfigError(k, "unknown setting", ErrorCode.CONFIG_ERR_UNKNOWN_KEY);
  }
  const nats = compileNatsConnection(opts, (path) => readFileSync(path, "utf8"));
  const strings = (v: string[] | string | undefined) =>
    v === undefined
      ? []
      : typeof v === "string"
        ? v
            .split(",")
            .map((x) => x.trim())
            .filter(Boolean)
        : v;
  const jobTimeoutMaxS = int("jobTimeoutMaxS", opts.jobTimeoutMaxS, 86_400, 1);
  return Object.freeze({
    host: opts.host ?? "127.0.0.1",
    port: int("port", opts.port, 8000, 0, 65535),
    nats,
    ackWaitMs: int("ackWaitMs", opts.ackWaitMs, JOB_QUEUE_DEFAULTS.ackWaitMs, 500),
    maxAttempts: int("maxAttempts", opts.maxAttempts, JOB_QUEUE_DEFAULTS.maxAttempts, 1, 100),
    eventsMaxAgeMs: int("eventsMaxAgeMs", opts.eventsMaxAgeMs, EVENTS_DEFAULTS.maxAgeMs, 1000),
    jobsRetentionMs: int("jobsRetentionMs", opts.jobsRetentionMs, JOBS_KV_DEFAULTS.retentionMs, 1000),
    natsReplicas: opts.natsReplicas === undefined ? null : int("natsReplicas", opts.natsReplicas, 1, 1, 5),
    maxBodyBytes: int("maxBodyBytes", opts.maxBodyBytes, 8 * 1024 * 1024, 1024),
    maxAssetBytes: int("maxAssetBytes", opts.maxAssetBytes, ASSETS_DEFAULTS.maxUploadBytes, 1),
    assetsMaxAgeMs: int("assetsMaxAgeMs", opts.assetsMaxAgeMs, ASSETS_DEFAULTS.maxAgeMs, 1000),
    assetsMaxBytes: int("assetsMaxBytes", opts.assetsMaxBytes, ASSETS_DEFAULTS.storeMaxBytes, 1024 * 1024),
    wsMaxPayloadBytes: int("wsMaxPayloadBytes", opts.wsMaxPayloadBytes, 1024 * 1024, 1024),
    wsMaxBackpressureBytes: int("wsMaxBackpressureBytes", opts.wsMaxBackpressureBytes, 4 * 1024 * 1024, 1024),
    sseKeepAliveMs: int("sseKeepAliveMs", opts.sseKeepAliveMs, 15_000, 100),
    replayCacheBytes: int("replayCacheBytes", opts.replayCacheBytes, 64 * 1024 * 1024, 0),
    replayBatchEvents: int("replayBatchEvents", opts.replayBatchEvents, 1_000, 1, 100_000),
    eventsMaxBytes: int("eventsMaxBytes", opts.eventsMaxBytes, EVENTS_DEFAULTS.maxBytes, 1024 * 1024),
    eventsMaxPerJob: int("eventsMaxPerJob", opts.eventsMaxPerJob, EVENTS_DEFAULTS.maxEventsPerJob, 100),
    listScanMaxRecords: int("listScanMaxRecords", opts.listScanMaxRecords, 2_000, 10),
    idempotencyOrphanMs: int("idempotencyOrphanMs", opts.idempotencyOrphanMs, 30_000, 100),
    allowJsFallback: bool("allowJsFallback", opts.allowJsFallback, false),
    allowedOrigins: strings(opts.allowedOrigins),
    allowedHosts: strings(opts.allowedHosts),
    corsOrigins: strings(opts.corsOrigins),
    wsMaxFollowsPerSocket: int("wsMaxFollowsPerSocket", opts.wsMaxFollowsPerSocket, 1000, 1),
    jobTimeoutDefaultS: int(
      "jobTimeoutDefaultS",
      opts.jobTimeoutDefaultS,
      Math.min(3600, jobTimeoutMaxS),
      1,
      jobTimeoutMaxS,
    ),
    jobTimeoutMaxS,
    accessLog: bool("accessLog", opts.accessLog, false),
    ...apiTokensOf(opts),
    defaultModels: compileDefaultModels(opts),
  });
}

/** The accepted tokens from `apiTokens` and `apiTokensFile`; throws `InvalidConfigError` on a malformed one. */
export function apiTokensOf(opts: Pick<GatewayOptions, "apiTokens" | "apiTokensFile">): {
  apiTokens: readonly ApiToken[];
  apiTokensFile: string | null;
} {
  const listed =
    opts.apiTokens === undefined
      ? []
      : typeof opts.apiTokens === "string"
        ? String(opts.apiTokens).split(",")
        : opts.apiTokens;
  const tokens: ApiToken[] = listed.map((t, i) => ({
    token: checkApiToken("apiTokens", String(t).trim(), `entry ${i + 1}`),
    expiresAtMs: null,
  }));
  const file = opts.apiTokensFile === undefined || opts.apiTokensFile === "" ? null : String(opts.apiTokensFile);
  if (file !== null) {
    const fromFile = readTokenFile("apiTokensFile", file);
    if (fromFile.length === 0)
      throw new InvalidConfigError("apiTokensFile", `${file} holds no token (an empty file would leave the API open)`);
    tokens.push(...fromFile);
  }
  return { apiTokens: Object.freeze(tokens), apiTokensFile: file };
}
