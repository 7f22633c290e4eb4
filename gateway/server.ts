/**
 * The gateway: uWebSockets.js app with the REST API, `/ws`, SSE/NDJSON streams, `/health` and `/metrics`,
 * over NATS (design §2, §6). Stateless: any number can run against one NATS.
 */
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "uWebSockets.js";
import { checkSchema, encodeJson, WorkflowBodySchema, ErrorCode, isTerminal, payloadLimitBytes, STREAM_EVENTS, STREAM_JOBS, subjects, encodeMsgpack, type JobRecord, type JobState } from "../protocol/index.js";
import { RefusalLog, TokenCheck, bearerToken, expiredCount, peerOf, refusalBody, type AuthResult } from "./auth.js";
import { apiTokensOf, compileGatewayConfig, type GatewayConfig, type GatewayOptions } from "./config.js";
import { badRequest, GatewayError, notFound, toWireError } from "./errors.js";
import { EventHub, type Delivery } from "./event-hub.js";
import { follow, type Following } from "./follow.js";
import { BrowserPolicy } from "./browser.js";
import { MODEL_ID_GRAMMAR, Reply, jsonBody, readBody, readReq, type Req } from "./http.js";
import { JobManager } from "./jobs.js";
import { parseRunRequest } from "./run-request.js";
import { connectNats, type NatsParts } from "./nats.js";
import { AssetsApi } from "./assets.js";
import { OpenAiApi } from "./openai.js";
import { openApiDocument } from "./openapi.js";
import { ModelDirectory } from "./models.js";
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

type Handler = (req: Req, reply: Reply, res: HttpResponse) => Promise<void>;

function ndjsonLine(d: Delivery): string {
  return d.json() + "\n";
}
function sseFrame(d: Delivery): string {
  return `id: ${d.seq}\nevent: ${d.type}\ndata: ${d.json()}\n\n`;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** Starts the gateway; throws `InvalidConfigError`, or when NATS or the port cannot be had. */
export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const config = compileGatewayConfig(options);
  const log = (l: string) => process.stderr.write(`[gateway] ${l}\n`);
  const { uws, native, build } = loadUws();
  log(`serving with ${build}`);
  const auth = new TokenCheck(config.apiTokens);
  const lapsedAtStart = expiredCount(config.apiTokens);
  if (lapsedAtStart > 0) log(`${lapsedAtStart} of ${config.apiTokens.length} API token(s) have expired already and are refused`);
  if (!auth.enabled && !isLoopback(config.host)) {
    log(`WARNING: listening on ${config.host} with no API token: anyone who reaches this port can run and cancel jobs (set apiTokensFile / NODEWAY_API_TOKENS_FILE)`);
  }
  if (!native && !config.allowJsFallback) {
    throw new GatewayError(ErrorCode.GW_ERR_UNAVAILABLE, `refusing to start on the uWebSockets.js pure-JS fallback (set allowJsFallback / NODEWAY_ALLOW_JS_FALLBACK=true to allow)`);
  }
  const n: NatsParts = await connectNats(config, log);
  const jobs = new JobManager(n, config);
  const workflows = new WorkflowStore(n.workflowsKv, payloadLimitBytes(n.nc));
  const app: TemplatedApp = uws.App();
  const counters = { requests: 0, eventsOut: 0 };
  let wsHub!: WsHub;
  const hub = new EventHub(
    n.js,
    n.jsm,
    (jobId, d) => {
      wsHub.publish(jobId, d);
      // Queue positions move on job updates only; reading `d.ev` decodes the event.
      if (d.type === "job_update") jobs.queue.observe(d.ev);
    },
    log,
    config.replayCacheBytes,
    config.eventsMaxAgeMs,
    config.replayBatchEvents,
  );
  const refusals = new RefusalLog(log);
  const models = new ModelDirectory(jobs);
  const threads = new ThreadStore(n.threadsKv, n.jsm, jobs, hub, models, log);
  wsHub = new WsHub(app, config, hub, jobs, workflows, threads, auth, refusals);
  await hub.start();

  /** Event streams opened with a token, while they run: a reload closes those whose token it revoked. */
  const tokenStreams = new Set<Reply>();
  const refuse = (reply: Reply, a: Extract<AuthResult, { ok: false }>, what: string) => {
    refusals.refused(what, peerOf(reply.res), a);
    reply.json(401, refusalBody(a), { "www-authenticate": a.header });
  };
  /** `?api_key=` is for the WebSocket upgrade only (a URL ends up in logs and histories); the hint says so. */
  const httpAuth = (authorization: string | undefined, hasQueryKey: boolean) =>
    auth.check(bearerToken(authorization), hasQueryKey ? "?api_key= is accepted on the /ws upgrade only; send Authorization: Bearer <token>" : "send Authorization: Bearer <token>");

  const browser = new BrowserPolicy(config, () => auth.enabled);
  /**
   * What every request passes before its handler: the Host (DNS rebinding), the Origin of a request that changes
   * things (cross-site pages), then the token. Returns the refusal to send, or null.
   */
  const admit = (r: Req, reply: Reply, open: boolean): boolean => {
    if (!browser.hostAllowed(r.headers["host"])) {
      reply.json(421, { code: ErrorCode.GW_ERR_FORBIDDEN, message: "this gateway does not answer for that Host (see allowedHosts)" });
      return false;
    }
    if (r.method !== "GET" && r.method !== "HEAD" && !browser.originAllowed(r.headers["origin"], r.headers["host"])) {
      reply.json(403, { code: ErrorCode.GW_ERR_FORBIDDEN, message: "requests from this Origin are not allowed (see allowedOrigins)" });
      return false;
    }
    if (auth.enabled && !open) {
      const a = httpAuth(r.headers["authorization"], r.query.has("api_key"));
      if (!a.ok) {
        refuse(reply, a, `${r.method} ${r.url}`);
        return false;
      }
      reply.authenticated(a.digest, tokenStreams);
    }
    return true;
  };

  /**
   * Registers a handler behind the one guard every route has: nothing thrown, synchronously or not, leaves this
   * callback (an exception in a uWS handler ends the process). `open` routes answer without a token (`/health`).
   */
  const route = (method: "get" | "post" | "put" | "del", pattern: string, handler: Handler, opts: { open?: boolean; grammar?: RegExp } = {}) => {
    const paramCount = (pattern.match(/:/g) ?? []).length;
    app[method](pattern, function guardedRoute(res: HttpResponse, req: HttpRequest) {
      counters.requests++;
      let reply: Reply | null = null;
      try {
        reply = new Reply(res);
        const r = readReq(req, paramCount, opts.grammar);
        reply.requestContentType = r.headers["content-type"];
        if (config.accessLog) log(`${r.method} ${r.url}`); // the path only: a query may carry a token
        const cors = browser.corsHeaders(r.headers["origin"]);
        if (cors) reply.extraHeaders = cors;
        if (r.badFraming !== undefined) {
          reply.json(400, { code: ErrorCode.GW_ERR_BAD_REQUEST, message: r.badFraming }, { connection: "close" });
          return;
        }
        if (!admit(r, reply, opts.open === true)) return;
        if (r.badParam !== undefined) throw badRequest(`malformed id in the path: ${JSON.stringify(r.badParam)}`);
        // Called in this tick (a body must be asked for before the handler returns).
        handler(r, reply, res).catch((err: unknown) => reply!.error(err));
      } catch (err) {
        if (reply) reply.error(err);
        else res.writeStatus("500 Internal Server Error").end();
      }
    });
  };

  /** A collection's route with and without its trailing slash (NodeTool's clients send both). */
  const collection = (method: "get" | "post", pattern: string, handler: Handler) => {
    route(method, pattern, handler);
    route(method, `${pattern}/`, handler);
  };

  const body = async (res: HttpResponse, reply: Reply) => jsonBody(await readBody(res, reply, config.maxBodyBytes), config.maxBodyBytes, reply.requestContentType);
  const intParam = (q: URLSearchParams, k: string, dflt: number, max: number) => {
    const v = q.get(k);
    if (v === null || v === "") return dflt;
    const x = Number(v);
    if (!Number.isInteger(x) || x < 0 || x > max) throw badRequest(`"${k}" must be an integer in [0, ${max}]`);
    return x;
  };

  /**
   * Streams a job's events as NDJSON or SSE from `after`, ending after the terminal event. With `opened`, the
   * response starts only when the caller calls the function it is given (or with the first event), so a run
   * whose submit fails can still answer with an error status.
   */
  const streamJob = async (reply: Reply, req: Req, jobId: string, after: number, opts: { replay: boolean; opened?: (open: () => void) => void }): Promise<Following> => {
    const sse = (req.headers["accept"] ?? "").includes("text/event-stream");
    let open = false;
    const start = () => {
      if (open) return;
      open = true;
      reply.startStream(sse ? "text/event-stream" : "application/x-ndjson", config.wsMaxBackpressureBytes);
    };
    if (opts.opened) opts.opened(start);
    else start();
    const sink = {
      send: (d: Delivery) => {
        start();
        counters.eventsOut++;
        reply.write(sse ? sseFrame(d) : ndjsonLine(d));
      },
      end: () => {
        start();
        reply.end();
      },
    };
    const f = await follow(hub, jobId, after, sink, opts);
    reply.onAbort(() => f.stop());
    return f;
  };

  // ---- health and metrics ------------------------------------------------------------------------------
  route("get", "/health", async (_req, reply) => {
    const natsOk = n.connected() && !n.nc.isDraining();
    let streams = false;
    if (natsOk) {
      try {
        await Promise.all([n.jsm.streams.info(STREAM_JOBS), n.jsm.streams.info(STREAM_EVENTS)]);
        streams = true;
      } catch {
        streams = false;
      }
    }
    const agents = natsOk ? (await jobs.agents().catch(() => [])).length : 0;
    const ok = natsOk && streams;
    reply.json(ok ? 200 : 503, { status: ok ? "ok" : "unavailable", nats: natsOk ? "connected" : "disconnected", streams, agents, uws: native ? "native" : "fallback" });
  }, { open: true });

  route("get", "/openapi.json", async (_req, reply) => reply.send(200, openApiDocument(), "application/json"), { open: true });

  let stateCache: { at: number; counts: Record<string, number> } = { at: 0, counts: {} };
  route("get", "/metrics", async (_req, reply) => {
    if (Date.now() - stateCache.at > 5_000) {
      const counts: Record<string, number> = {};
      const { jobs: list } = await jobs.list({ limit: 100_000 });
      for (const j of list) counts[j.status] = (counts[j.status] ?? 0) + 1;
      stateCache = { at: Date.now(), counts };
    }
    const follows = wsHub.followStats();
    const lines = [
      "# HELP nodeway_jobs Jobs by state (records kept in nw_jobs).",
      "# TYPE nodeway_jobs gauge",
      ...(["queued", "running", "completed", "failed", "cancelled", "timed_out"] as JobState[]).map(
        (s) => `nodeway_jobs{state="${s}"} ${stateCache.counts[s] ?? 0}`,
      ),
      "# HELP nodeway_jobs_created_total Jobs created by this gateway.",
      "# TYPE nodeway_jobs_created_total counter",
      `nodeway_jobs_created_total ${jobs.jobsCreated}`,
      "# HELP nodeway_events_in_total Events this gateway consumed from NW_EVENTS.",
      "# TYPE nodeway_events_in_total counter",
      `nodeway_events_in_total ${hub.eventsIn}`,
      "# HELP nodeway_ws_follows Socket-job follows by path: the job's uWS topic, or direct sends while a resume catches up.",
      "# TYPE nodeway_ws_follows gauge",
      `nodeway_ws_follows{via="topic"} ${follows.topic}`,
      `nodeway_ws_follows{via="direct"} ${follows.direct}`,
      "# HELP nodeway_hub_listeners Direct event listeners (resumes catching up, HTTP event streams).",
      "# TYPE nodeway_hub_listeners gauge",
      `nodeway_hub_listeners ${hub.listenerCount()}`,
      "# HELP nodeway_ws_topic_memberships Socket memberships of job topics (one per live socket following a job live).",
      "# TYPE nodeway_ws_topic_memberships gauge",
      `nodeway_ws_topic_memberships ${wsHub.topicMemberships()}`,
      "# HELP nodeway_replays_total Resumes and replays by where their history came from.",
      "# TYPE nodeway_replays_total counter",
      `nodeway_replays_total{source="memory"} ${hub.replaysFromMemory}`,
      `nodeway_replays_total{source="jetstream"} ${hub.replaysFromStream}`,
      "# HELP nodeway_replay_cache_bytes Bytes of recent jobs' events held for replay.",
      "# TYPE nodeway_replay_cache_bytes gauge",
      `nodeway_replay_cache_bytes ${hub.cachedBytes}`,
      "# HELP nodeway_events_out_total Event frames sent to clients (streams and direct WS sends).",
      "# TYPE nodeway_events_out_total counter",
      `nodeway_events_out_total ${counters.eventsOut + wsHub.framesOut}`,
      "# HELP nodeway_ws_sockets_open WebSocket connections open now.",
      "# TYPE nodeway_ws_sockets_open gauge",
      `nodeway_ws_sockets_open ${wsHub.sockets.size}`,
      "# HELP nodeway_ws_bad_frames_total Client frames rejected by the codec.",
      "# TYPE nodeway_ws_bad_frames_total counter",
      `nodeway_ws_bad_frames_total ${wsHub.badFrames}`,
      "# HELP nodeway_http_requests_total HTTP requests served.",
      "# TYPE nodeway_http_requests_total counter",
      `nodeway_http_requests_total ${counters.requests}`,
      "# HELP nodeway_unauthorized_total Requests and WebSocket upgrades refused for a missing or invalid API token.",
      "# TYPE nodeway_unauthorized_total counter",
      `nodeway_unauthorized_total ${refusals.total}`,
      "",
    ];
    reply.send(200, lines.join("\n"), "text/plain; version=0.0.4");
  });

  // ---- workflows ----------------------------------------------------------------------------------------
  collection("get", "/api/workflows", async (req, reply) => {
    reply.json(200, await workflows.list(intParam(req.query, "limit", 100, 1000), req.query.get("cursor") ?? undefined));
  });
  const workflowBody = async (res: HttpResponse, reply: Reply) => {
    const b = await body(res, reply);
    checkSchema(WorkflowBodySchema, b, "workflow");
    return b;
  };
  const createWorkflow: Handler = async (_req, reply, res) => {
    const b = await workflowBody(res, reply);
    reply.json(200, await jobs.withCatalog((catalog) => workflows.save(b, catalog)));
  };
  collection("post", "/api/workflows", createWorkflow);
  route("get", "/api/workflows/:id", async (req, reply) => reply.json(200, await workflows.get(req.params[0]!)));
  route("put", "/api/workflows/:id", async (req, reply, res) => {
    const b = await workflowBody(res, reply);
    reply.json(200, await jobs.withCatalog((catalog) => workflows.save(b, catalog, req.params[0]!)));
  });
  route("del", "/api/workflows/:id", async (req, reply) => {
    await workflows.delete(req.params[0]!);
    reply.json(200, { deleted: req.params[0] });
  });

  // ---- runs ---------------------------------------------------------------------------------------------
  route("post", "/api/workflows/:id/run", async (req, reply, res) => {
    const b = await body(res, reply);
    const wf = await workflows.get(req.params[0]!);
    const stream = req.query.get("stream") === "true" || req.query.get("stream") === "1";
    const wait = req.query.get("wait") === "true" || req.query.get("wait") === "1";
    const spec = parseRunRequest(b);
    const idem = req.headers["idempotency-key"];
    let following: Promise<Following> | null = null;
    let openStream: (() => void) | null = null;
    let waiting: Promise<Following> | null = null;
    let waiter: Promise<Delivery> | null = null;
    let resolveWait!: (d: Delivery) => void;
    if (wait) waiter = new Promise((r) => (resolveWait = r));
    let submit: Awaited<ReturnType<typeof jobs.submit>>;
    try {
      submit = await jobs.submit({
        workflow: wf,
        ...spec,
        ...(idem ? { idempotencyKey: idem } : {}),
        beforePublish: (jobId) => {
          // Registered before the first event exists, so nothing needs replaying.
          if (stream) following = streamJob(reply, req, jobId, 0, { replay: false, opened: (open) => (openStream = open) });
          else if (wait) waiting = follow(hub, jobId, 0, { send: (d) => d.terminal && resolveWait(d) }, { replay: false });
        },
      });
    } catch (err) {
      // Nothing was sent yet: stop listening for a job that may not exist and answer with the error.
      void (following as Promise<Following> | null)?.then((f) => f.stop());
      void (waiting as Promise<Following> | null)?.then((f) => f.stop());
      throw err;
    }
    (openStream as (() => void) | null)?.();
    const job = submit.job;
    if (!submit.created) {
      // An idempotent retry: the job exists; answer as the first request would have, from the stream.
      if (stream) following = streamJob(reply, req, job.id, 0, { replay: true });
      else if (wait) waiting = follow(hub, job.id, 0, { send: (d) => d.terminal && resolveWait(d) }, { replay: true });
    }
    if (stream) {
      await following;
      return;
    }
    if (wait) {
      // A client that leaves ends the wait: its follow would otherwise hold a listener until the job ends.
      const gone = new Promise<null>((r) => reply.onAbort(() => r(null)));
      const d = await Promise.race([waiter!, gone]);
      if (d === null) {
        void (waiting as Promise<Following> | null)?.then((f) => f.stop());
        return;
      }
      const ev = d.ev as { status: string; result?: unknown; error?: unknown };
      reply.json(200, { job_id: job.id, workflow_id: job.workflow_id, status: ev.status, outputs: ev.result ?? {}, error: ev.error ?? null });
      return;
    }
    reply.json(202, { job_id: job.id, workflow_id: job.workflow_id, status: job.status });
  });

  const cancelResponse = (rec: JobRecord) => ({
    job_id: rec.id,
    status: rec.status,
    message: isTerminal(rec.status) ? `job is ${rec.status}` : "Job cancellation requested",
  });
  route("del", "/api/workflows/:id/run", async (req, reply, res) => {
    const b = await body(res, reply).catch(() => ({}) as Record<string, unknown>);
    const jobId = req.query.get("job_id") ?? (typeof b.job_id === "string" ? b.job_id : null);
    if (!jobId) throw badRequest('give the job to cancel as "job_id" in the body or query');
    const rec = await jobs.get(jobId);
    if (rec.workflow_id !== req.params[0]) throw notFound(`job "${jobId}" of workflow "${req.params[0]}"`);
    reply.json(200, cancelResponse(await jobs.cancel(jobId)));
  });

  // ---- jobs ---------------------------------------------------------------------------------------------
  const listJobs: Handler = async (req, reply) => {
    const status = req.query.get("status") ?? undefined;
    const result = await jobs.list({
      ...(req.query.get("workflow_id") ? { workflowId: req.query.get("workflow_id")! } : {}),
      ...(status ? { status } : {}),
      limit: intParam(req.query, "limit", 100, 1000),
      ...(req.query.get("cursor") ? { cursor: req.query.get("cursor")! } : {}),
    });
    reply.json(200, result);
  };
  collection("get", "/api/jobs", listJobs);
  route("get", "/api/jobs/:id", async (req, reply) => reply.json(200, await jobs.get(req.params[0]!)));
  route("post", "/api/jobs/:id/cancel", async (req, reply) => reply.json(200, cancelResponse(await jobs.cancel(req.params[0]!))));
  route("get", "/api/jobs/:id/events", async (req, reply) => {
    const jobId = req.params[0]!;
    const rec = await jobs.get(jobId);
    const afterRaw = req.query.get("after") ?? req.headers["last-event-id"] ?? "0";
    const after = Number(afterRaw);
    if (!Number.isInteger(after) || after < 0) throw badRequest(`"after" must be a non-negative integer seq, got "${afterRaw}"`);
    const sse = (req.headers["accept"] ?? "").includes("text/event-stream");
    reply.startStream(sse ? "text/event-stream" : "application/x-ndjson", config.wsMaxBackpressureBytes);
    const f = await follow(
      hub,
      jobId,
      after,
      {
        header: (r) => {
          if (r && r.incomplete && r.count === 0) {
            // Older than retention: say so and give the job's state, then end if it is over.
            const line = JSON.stringify({ type: "job_resumed", job_id: jobId, workflow_id: rec.workflow_id, status: rec.status, last_seq: r.lastSeq, replay_count: 0, replay_incomplete: true });
            reply.write(sse ? `event: job_resumed\ndata: ${line}\n\n` : line + "\n");
            if (isTerminal(rec.status)) {
              const upd = encodeJson({ type: "job_update", job_id: jobId, workflow_id: rec.workflow_id, attempt: rec.attempt, status: rec.status, error: rec.error, result: rec.outputs });
              reply.write(sse ? `event: job_update\ndata: ${upd}\n\n` : upd + "\n");
              reply.end();
            }
          }
        },
        send: (d) => {
          counters.eventsOut++;
          reply.write(sse ? sseFrame(d) : ndjsonLine(d));
        },
        end: () => reply.end(),
      },
      { replay: true },
    );
    reply.onAbort(() => f.stop());
  });

  // ---- agents and nodes ---------------------------------------------------------------------------------
  route("get", "/api/agents", async (_req, reply) => {
    const agents = await jobs.agents();
    reply.json(200, {
      agents: agents.map((a) => ({
        id: a.id,
        name: a.name,
        version: a.version,
        state: a.state,
        pools: a.pools,
        labels: a.labels,
        capabilities: a.capabilities,
        running_jobs: a.running_jobs,
        heartbeat_at: a.heartbeat_at,
        started_at: a.started_at,
      })),
    });
  });
  route("post", "/api/agents/:id/drain", async (req, reply) => {
    const id = req.params[0]!;
    const agents = await jobs.agents();
    if (!agents.some((a) => a.id === id)) throw notFound(`agent "${id}"`);
    n.nc.publish(subjects.agentControl(id), encodeMsgpack({ type: "agent.drain", v: 1 }));
    reply.json(202, { id, state: "draining" });
  });
  // ---- assets ----------------------------------------------------------------------------------------------
  const assets = new AssetsApi(n.js, n.assets, config.maxAssetBytes, native && typeof uws.getParts === "function" ? uws.getParts : null, config.listScanMaxRecords);
  const upload: Handler = (req, reply, res) => assets.upload(req, reply, res);
  const listAssets: Handler = async (req, reply) => assets.list(req, reply, intParam(req.query, "limit", 100, 1000));
  collection("post", "/api/assets", upload);
  collection("get", "/api/assets", listAssets);
  route("get", "/api/assets/:id", (req, reply) => assets.describe(req.params[0]!, reply));
  route("get", "/api/assets/:id/content", (req, reply) => assets.download(req.params[0]!, req, reply));
  route("del", "/api/assets/:id", (req, reply) => assets.remove(req.params[0]!, reply));

  // ---- OpenAI-compatible chat ------------------------------------------------------------------------------
  const openai = new OpenAiApi(jobs, models, hub, (reply) => body(reply.res, reply), config.wsMaxBackpressureBytes, () => counters.eventsOut++);
  const v1 = (fn: (req: Req, reply: Reply) => Promise<void>): Handler => (req, reply) => fn(req, reply).catch((err: unknown) => openai.fail(reply, err));
  route("get", "/v1/models", v1((_req, reply) => openai.listModels(reply)));
  route("get", "/v1/models/:id", v1((req, reply) => openai.getModel(req.params[0]!, reply)), { grammar: MODEL_ID_GRAMMAR });
  route("post", "/v1/chat/completions", v1((_req, reply) => openai.complete(reply)));

  // ---- threads and messages -------------------------------------------------------------------------------
  const listThreads: Handler = async (req, reply) => reply.json(200, await threads.list(intParam(req.query, "limit", 100, 1000), req.query.get("cursor") ?? undefined));
  const createThread: Handler = async (_req, reply, res) => reply.json(200, await threads.create(await body(res, reply)));
  collection("get", "/api/threads", listThreads);
  collection("post", "/api/threads", createThread);
  route("get", "/api/threads/:id", async (req, reply) => reply.json(200, await threads.get(req.params[0]!)));
  route("put", "/api/threads/:id", async (req, reply, res) => {
    const b = await body(res, reply);
    reply.json(200, await threads.update(req.params[0]!, b));
  });
  route("del", "/api/threads/:id", async (req, reply) => {
    await threads.delete(req.params[0]!);
    reply.json(200, { deleted: req.params[0] });
  });
  const listMessages: Handler = async (req, reply) => {
    const threadId = req.query.get("thread_id");
    if (!threadId) throw badRequest(`"thread_id" is required`);
    const cursor = req.query.get("cursor");
    const reverse = req.query.get("reverse") === "true" || req.query.get("reverse") === "1";
    reply.json(200, await threads.messages(threadId, { limit: intParam(req.query, "limit", 100, 1000), ...(cursor ? { cursor } : {}), reverse }));
  };
  const addMessage: Handler = async (_req, reply, res) => reply.json(200, await threads.addMessage(await body(res, reply)));
  collection("get", "/api/messages", listMessages);
  collection("post", "/api/messages", addMessage);
  route("get", "/api/messages/:id", async (req, reply) => reply.json(200, await threads.message(req.params[0]!)));

  route("get", "/api/nodes/metadata", async (_req, reply) => {
    const catalog = await jobs.nodeCatalog();
    const seen = new Set<string>();
    const list = [...catalog.values()].filter((m) => (seen.has(m.node_type) ? false : (seen.add(m.node_type), true)));
    reply.json(200, list.sort((a, b) => a.node_type.localeCompare(b.node_type)));
  });

  // HEAD carries no body: answer health probes properly, and refuse the rest without a body (a body here would
  // desynchronise a keep-alive connection through a proxy).
  app.head("/health", (res) => {
    const ok = !n.nc.isClosed() && !n.nc.isDraining();
    res.writeStatus(ok ? "200 OK" : "503 Service Unavailable").endWithoutBody(0);
  });
  app.head("/api/assets/:id/content", function headAssetContent(res, req) {
    const r = readReq(req, 1);
    const reply = new Reply(res);
    if (!browser.hostAllowed(r.headers["host"])) return reply.empty(421);
    if (r.badParam !== undefined) return reply.empty(400);
    if (auth.enabled) {
      const a = httpAuth(r.headers["authorization"], r.query.has("api_key"));
      if (!a.ok) {
        refusals.refused(`HEAD ${r.url}`, peerOf(res), a);
        return reply.empty(401, { "www-authenticate": a.header });
      }
    }
    // Errors as their status alone: a HEAD answer has no body.
    assets.head(r.params[0]!, r, reply).catch((err: unknown) => reply.empty(toWireError(err).status));
  });
  app.head("/*", (res) => {
    res.writeStatus("405 Method Not Allowed").writeHeader("allow", "GET, POST, PUT, DELETE").endWithoutBody(0);
  });
  app.options("/*", function corsPreflight(res, req) {
    const reply = new Reply(res);
    const origin = req.getHeader("origin");
    const cors = browser.corsHeaders(origin);
    if (!cors || !browser.hostAllowed(req.getHeader("host"))) return reply.empty(403);
    reply.empty(204, {
      ...cors,
      "access-control-allow-methods": "GET, POST, PUT, DELETE",
      "access-control-allow-headers": "authorization, content-type, idempotency-key, last-event-id",
      "access-control-max-age": "600",
    });
  });
  app.any("/*", function noRoute(res, req) {
    const reply = new Reply(res);
    const method = req.getMethod().toUpperCase();
    // The path is quoted back only as far as it is printable: it is the client's own text.
    const url = req.getUrl().slice(0, 200).replace(/[^\x20-\x7e]/g, "?");
    if (!browser.hostAllowed(req.getHeader("host"))) {
      return reply.json(421, { code: ErrorCode.GW_ERR_FORBIDDEN, message: "this gateway does not answer for that Host (see allowedHosts)" });
    }
    // Without a token, no route is confirmed or denied.
    if (auth.enabled) {
      const a = httpAuth(req.getHeader("authorization"), new URLSearchParams(req.getQuery() ?? "").has("api_key"));
      if (!a.ok) return refuse(reply, a, `${method} ${url}`);
    }
    reply.json(404, { code: ErrorCode.GW_ERR_NOT_FOUND, message: `no route for ${method} ${url}` });
  });

  let listenSocket: us_listen_socket | null = null;
  await new Promise<void>((resolve, reject) => {
    app.listen(config.host, config.port, (s) => {
      if (!s) reject(new GatewayError(ErrorCode.GW_ERR_UNAVAILABLE, `cannot listen on ${config.host}:${config.port}`));
      else {
        listenSocket = s;
        resolve();
      }
    });
  });
  const port = uws.us_socket_local_port(listenSocket!);
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;
  log(`listening on ${url}`);
  let stopped = false;
  /** Closes the sockets and event streams whose token is no longer accepted (revoked or expired); how many. */
  const closeRefused = (): number => {
    let closed = wsHub.closeRevoked();
    for (const reply of [...tokenStreams]) {
      if (reply.tokenDigest === null || auth.stillAccepted(reply.tokenDigest)) continue;
      reply.close();
      closed++;
    }
    return closed;
  };
  // What a token opened closes when it expires, not at the next reload. One timer, for the next expiry; a delay
  // past setTimeout's ~24.8 days is cut short and the timer armed again then.
  let expiryTimer: NodeJS.Timeout | null = null;
  const armExpiry = (): void => {
    if (expiryTimer) clearTimeout(expiryTimer);
    expiryTimer = null;
    const next = auth.nextExpiryMs();
    if (next === null || stopped) return;
    expiryTimer = setTimeout(() => {
      expiryTimer = null;
      const closed = closeRefused();
      if (auth.nextExpiryMs() !== next) log(`an API token expired${closed ? `: ${closed} connection(s) opened with it closed` : ""}`);
      armExpiry();
    }, Math.min(Math.max(0, next - Date.now()) + 1, 2 ** 31 - 1));
    expiryTimer.unref();
  };
  armExpiry();
  return {
    config,
    port,
    url,
    build,
    reloadTokens() {
      const { apiTokens } = apiTokensOf({ apiTokens: options.apiTokens, apiTokensFile: config.apiTokensFile ?? undefined });
      auth.replace(apiTokens);
      const closed = closeRefused();
      const lapsed = expiredCount(apiTokens);
      log(`API tokens reloaded: ${apiTokens.length - lapsed} accepted${lapsed ? ` (and ${lapsed} expired)` : ""}${closed ? `, ${closed} connection(s) with a revoked or expired token closed` : ""}`);
      armExpiry();
      return apiTokens.length - lapsed;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (expiryTimer) clearTimeout(expiryTimer);
      wsHub.closeAll();
      if (listenSocket) uws.us_listen_socket_close(listenSocket);
      hub.stop();
      jobs.queue.stop();
      await n.nc.drain().catch(() => undefined);
    },
  };
}
