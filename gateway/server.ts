/**
 * The gateway: a uWebSockets.js app with the REST API (routes/), `/ws`, `/health` and `/metrics`, over NATS.
 * Stateless: any number can run against one NATS. This file only wires the parts together.
 */
import type { TemplatedApp, us_listen_socket } from "uWebSockets.js";
import { payloadLimitBytes } from "../nats/index.js";
import { ErrorCode } from "../protocol/index.js";
import { AssetsApi } from "./assets.js";
import { RefusalLog, TokenCheck, TokenExpiry, expiredCount } from "./auth.js";
import { isLoopbackName } from "./browser.js";
import { apiTokensOf, compileGatewayConfig, type GatewayConfig, type GatewayOptions } from "./config.js";
import { GatewayError, log } from "./errors.js";
import { EventHub } from "./event-hub.js";
import { JobManager } from "./jobs.js";
import { ModelDirectory } from "./models.js";
import { connectNats } from "./nats.js";
import { ChildJobs } from "./child-jobs.js";
import { AgentAssets } from "./agent-assets.js";
import { AgentRecords, PoolConsumers } from "./agent-records.js";
import { GatewayMetrics, Router, registerRoutes } from "./routes/index.js";
import { ThreadStore } from "./threads.js";
import { loadUws } from "./uws.js";
import { WorkflowStore } from "./workflows.js";
import { WsHub } from "./ws.js";

export interface RunningGateway {
  readonly config: Readonly<GatewayConfig>;
  /** The port actually listened on (useful with `port: 0`). */
  readonly port: number;
  readonly url: string;
  /** Which uWebSockets.js build is serving. */
  readonly build: string;
  /**
   * Re-reads the API tokens (`apiTokens` and the token file, as at start-up) and closes the WebSockets and event
   * streams opened with a token no longer accepted. Throws `InvalidConfigError` (the old tokens stay) when the
   * file is unreadable, empty or malformed. Returns how many tokens are accepted now.
   */
  reloadTokens(): number;
  /** Closes every socket with 1001, stops listening, drains NATS. */
  stop(): Promise<void>;
}

const info = (line: string): void => log.info(line);
const warn = (line: string): void => log.warn(line);
/** The event hub's reports: a failure behind one is logged with its stack. */
const hubLog = (line: string, err?: unknown): void => (err === undefined ? log.warn(line) : log.error({ err }, line));

/** Warnings about the tokens and the address, before anything starts. */
function checkExposure(config: Readonly<GatewayConfig>, auth: TokenCheck): void {
  const lapsed = expiredCount(config.apiTokens);
  if (lapsed > 0) warn(`${lapsed} of ${config.apiTokens.length} API token(s) have expired already and are refused`);
  if (!auth.enabled && !isLoopbackName(config.host)) {
    warn(
      `WARNING: listening on ${config.host} with no API token: anyone who reaches this port can run and cancel jobs ` +
        "(set apiTokensFile / NODEWAY_API_TOKENS_FILE)",
    );
  }
}

function listen(app: TemplatedApp, config: Readonly<GatewayConfig>): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    app.listen(config.host, config.port, (s) => {
      if (s) resolve(s);
      else reject(new GatewayError(ErrorCode.GW_ERR_UNAVAILABLE, `cannot listen on ${config.host}:${config.port}`));
    });
  });
}

/** How often a gateway looks for asset chunks no entry names, and how old they must be to go. */
const UNSEALED_SWEEP_MS = 10 * 60_000;
const UNSEALED_CHUNKS_MAX_AGE_MS = 60 * 60_000;

/** Running jobs checked for a lost dispatch per lease (`AgentRecords.sweepLost`), the next ones at the next turn. */
const LOST_SWEEP_BATCH = 500;

/** Every lease, the next batch of running jobs is checked for a dead holder whose dispatch is gone. */
function sweepLostDispatches(jobs: JobManager, records: AgentRecords, ackWaitMs: number): NodeJS.Timeout {
  let cursor: string | undefined;
  let busy = false;
  const timer = setInterval(
    function sweepLost() {
      if (busy) return;
      busy = true;
      const { ids, next } = jobs.index.page({ status: "running", limit: LOST_SWEEP_BATCH, cursor }, LOST_SWEEP_BATCH);
      cursor = next ?? undefined;
      records
        .sweepLost(ids)
        .catch((err: unknown) =>
          warn(`the sweep of running jobs for lost dispatches failed: ${(err as Error).message}`),
        )
        .finally(() => {
          busy = false;
        });
    },
    Math.max(1_000, ackWaitMs),
  );
  timer.unref();
  return timer;
}

/** Starts the gateway; throws `InvalidConfigError`, or when NATS or the port cannot be had. */
export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const config = compileGatewayConfig(options);
  const { uws, native, build } = loadUws();
  info(`serving with ${build}`);
  const auth = new TokenCheck(config.apiTokens);
  checkExposure(config, auth);
  if (!native && !config.allowJsFallback) {
    throw new GatewayError(
      ErrorCode.GW_ERR_UNAVAILABLE,
      "refusing to start on the uWebSockets.js pure-JS fallback " +
        "(set allowJsFallback / NODEWAY_ALLOW_JS_FALLBACK=true to allow)",
    );
  }
  const n = await connectNats(config, info);
  const jobs = new JobManager(n, config);
  await jobs.start(hubLog);
  const workflows = new WorkflowStore(n.workflowsKv, payloadLimitBytes(n.nc));
  const app = uws.App();
  const { replayCacheBytes, eventsMaxAgeMs, replayBatchEvents } = config;
  const hub = new EventHub(n, n.jsm, null, hubLog, replayCacheBytes, eventsMaxAgeMs, replayBatchEvents, n.leases);
  const agentAssets = new AgentAssets(n, config.maxAssetBytes);
  // Agents reach job records and get their pools' consumers only through the gateways.
  const agentRecords = new AgentRecords(n, n.leases, config.ackWaitMs, warn, new ChildJobs(n, jobs, hub), agentAssets);
  agentRecords.start();
  jobs.recordCreated = (rec, text, revision) => agentRecords.remember(rec, text, revision);
  const sweep = setInterval(function sweepUnsealedChunks() {
    agentAssets
      .sweepUnsealed(new Date(Date.now() - UNSEALED_CHUNKS_MAX_AGE_MS))
      .then((purged) => purged > 0 && info(`purged the chunks of ${purged} upload(s) never sealed`))
      .catch((err: unknown) => warn(`the sweep of unsealed asset chunks failed: ${(err as Error).message}`));
  }, UNSEALED_SWEEP_MS);
  sweep.unref();
  const lostSweep = sweepLostDispatches(jobs, agentRecords, config.ackWaitMs);
  const pools = new PoolConsumers(n, warn);
  await pools.start();
  const refusals = new RefusalLog(warn);
  const models = new ModelDirectory(jobs);
  const threads = new ThreadStore(n.threadsKv, n.jsm, jobs, hub, models, warn);
  const wsHub = new WsHub(app, config, hub, jobs, workflows, threads, auth, refusals);
  hub.subscribe(function fanOutToSockets(jobId, d) {
    wsHub.publish(jobId, d);
  });
  hub.subscribe(jobs.queue.onEvent);
  await hub.start();

  const metrics = new GatewayMetrics({ jobs, hub, wsHub, refusals });
  const router = new Router(app, config, auth, refusals, metrics);
  const getParts = native && typeof uws.getParts === "function" ? uws.getParts : null;
  const assets = new AssetsApi(n.js, n.assets, config.maxAssetBytes, getParts, config.listScanMaxRecords);
  registerRoutes({ config, router, nats: n, jobs, workflows, hub, wsHub, threads, models, assets, metrics, native });

  const listenSocket = await listen(app, config);
  const port = uws.us_socket_local_port(listenSocket);
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;
  info(`listening on ${url}`);

  /** Closes the sockets and event streams whose token is no longer accepted (revoked or expired); how many. */
  function closeRefused(): number {
    let closed = wsHub.closeRevoked();
    for (const reply of [...router.tokenStreams]) {
      if (reply.tokenDigest === null || auth.stillAccepted(reply.tokenDigest)) continue;
      reply.close();
      closed++;
    }
    return closed;
  }
  const expiry = new TokenExpiry(auth, closeRefused, info);
  expiry.arm();
  let stopped = false;
  return {
    config,
    port,
    url,
    build,
    reloadTokens() {
      const apiTokensFile = config.apiTokensFile ?? undefined;
      const { apiTokens } = apiTokensOf({ apiTokens: options.apiTokens, apiTokensFile });
      auth.replace(apiTokens);
      const closed = closeRefused();
      const lapsed = expiredCount(apiTokens);
      const expired = lapsed ? ` (and ${lapsed} expired)` : "";
      const closedText = closed ? `, ${closed} connection(s) with a revoked or expired token closed` : "";
      info(`API tokens reloaded: ${apiTokens.length - lapsed} accepted${expired}${closedText}`);
      expiry.arm();
      return apiTokens.length - lapsed;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      expiry.stop();
      clearInterval(sweep);
      clearInterval(lostSweep);
      wsHub.closeAll();
      uws.us_listen_socket_close(listenSocket);
      hub.stop();
      jobs.stop();
      agentRecords.stop();
      pools.stop();
      await n.nc.drain().catch(() => undefined);
    },
  };
}
