/**
 * The job manager: creates jobs (record, index, `queued` event, dispatch), cancels them, reads them, and knows
 * which node types the live agents offer (for validation before anything is queued).
 */
import { createHash } from "node:crypto";
import type { KV } from "@nats-io/kv";
import {
  AGENT_TTL_MS,
  CancelReason,
  ErrorCode,
  GraphError,
  KV_AGENTS,
  KV_JOBS,
  JOB_QUEUE_DEFAULTS,
  encodeMsgpack,
  encodeJson,
  MEDIA_REF_TYPES,
  isTerminal,
  isLlmProvider,
  PROVIDER_SETTING,
  STREAM_JOBS,
  decodeJobDispatch,
  jobKeys,
  newId,
  parseJson,
  pickStrategy,
  poolOfGraph,
  subjects,
  validateGraph,
  validateParams,
  type AgentRegistration,
  ExecutionStrategy,
  type Graph,
  type JobCancel,
  type JobDispatch,
  type JobRecord,
  type NodeCatalog,
  type NodeMetadata,
  type Workflow,
  jobUpdate,
  assetIdsIn,
  type JobUpdateBody,
} from "../protocol/index.js";
import { casJobRecord, readJobRecord, PayloadTooLargeError } from "../nats/index.js";
import type { NatsParts } from "./nats.js";
import { JobIndex } from "./job-index.js";
import { KvView, type KvViewSink } from "./kv-view.js";
import { GatewayError, notFound, badRequest } from "./errors.js";
import { QueueTracker } from "./queue.js";
import { ID_GRAMMAR, LIST_PAGE_MAX_BYTES } from "./http.js";
import { claimHash } from "./agent-records.js";
import { resolveDefaultModels, type DefaultModels } from "./default-model.js";
import { runFingerprint } from "./run-request.js";

export interface SubmitJob {
  workflow: Pick<Workflow, "id" | "graph">;
  params?: Record<string, unknown>;
  strategy?: ExecutionStrategy;
  timeoutS?: number | null;
  pool?: string;
  idempotencyKey?: string;
  /** A child job's parent (gateway/child-jobs.ts): it is refused, not queued, when no live agent takes its pool. */
  parent?: JobRecord["parent"];
  /** Called with the new job id before anything about the job is published (register watchers here). */
  beforePublish?: (jobId: string) => void;
}

const now = () => new Date().toISOString();

/** A submit's graph, params and run options, checked. */
interface CheckedSubmit {
  graph: Graph;
  params: Record<string, unknown>;
  pool: string;
  timeoutS: number;
}

/** The Idempotency-Key entry a submit wrote (key and revision), to release if the job cannot be queued. */
type HeldKey = { key: string; revision: number };

/** Assets a job's record names as its graph's and params' at most (what its agent may read beyond its own). */
const ASSETS_PER_JOB = 1_000;

/** The record of a job just submitted: queued, no attempt yet. */
function newRecord(jobId: string, s: SubmitJob, c: CheckedSubmit): JobRecord {
  return {
    v: 1,
    id: jobId,
    workflow_id: s.workflow.id,
    status: "queued",
    pool: c.pool,
    attempt: 0,
    agent_id: null,
    params: c.params,
    created_at: now(),
    started_at: null,
    finished_at: null,
    timeout_s: c.timeoutS,
    error: null,
    outputs: null,
    idempotency_key: s.idempotencyKey ?? null,
    ...(s.parent ? { parent: s.parent } : {}),
    assets: assetIdsIn([c.graph, c.params], ASSETS_PER_JOB),
  };
}
/** Ids one `list` with a state and a workflow walks at most, unless its `limit` is larger (`listScanMaxRecords`). */
const LIST_SCAN_DEFAULT = 2_000;
/** Records read at once by a listing. */
const LIST_READ_BATCH = 8;
/** A queued job younger than this may still be mid-submit: the start-up check leaves it alone. */
const ORPHAN_AGE_MS = 60_000;
/** Most queued jobs, and NW_JOBS messages, the start-up check reads. */
const ORPHAN_CHECK_MAX = 50_000;
/** How often records past the bucket's retention are dropped from the index. */
const EXPIRE_EVERY_MS = 60_000;

const utf8 = new TextDecoder();

/**
 * The live agents' registrations as last written, with when this gateway received each: one the bucket's TTL
 * removed (its agent stopped beating) is older than `AGENT_TTL_MS` here. Parsed when read, not when written.
 */
class AgentView implements KvViewSink {
  private readonly entries = new Map<string, { text: string; atMs: number; reg: AgentRegistration | null }>();

  put(key: string, value: Uint8Array): void {
    this.entries.set(key, { text: utf8.decode(value), atMs: Date.now(), reg: null });
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  live(): AgentRegistration[] {
    const out: AgentRegistration[] = [];
    const cutoff = Date.now() - AGENT_TTL_MS;
    for (const [k, e] of this.entries) {
      if (e.atMs < cutoff) {
        this.entries.delete(k);
        continue;
      }
      try {
        e.reg ??= parseJson(e.text) as AgentRegistration;
        out.push(e.reg);
      } catch {
        /* a malformed entry is not an agent */
      }
    }
    return out;
  }
}
const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class JobManager {
  private catalog: Map<string, NodeMetadata> = new Map();
  private catalogKeys = new Set<string>();
  private catalogRefreshedMs = 0;
  private catalogRefresh: Promise<NodeCatalog> | null = null;
  /** The live agents the catalog was last built from (their pools and strategies, for the submit check). */
  private catalogAgents: AgentRegistration[] = [];
  jobsCreated = 0;
  readonly queue: QueueTracker;
  /** Every record's state and workflow: counts and listings without reading the records. */
  readonly index = new JobIndex();
  private readonly agentView = new AgentView();
  private views: KvView[] = [];
  private expireTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly n: NatsParts,
    private readonly opts: {
      idempotencyOrphanMs: number;
      jobTimeoutDefaultS: number;
      jobTimeoutMaxS: number;
      listScanMaxRecords?: number;
      defaultModels?: DefaultModels;
      jobsRetentionMs?: number;
    },
  ) {
    this.queue = new QueueTracker((jobId, workflowId, position) => {
      void this.publishEvent(jobId, workflowId, `q${position}`, jobUpdate.queued(position)).catch(() => undefined);
    });
  }

  /** Starts the views of `nw_jobs` records and `nw_agents`; resolves once they hold what the buckets held. */
  async start(log: (line: string, err?: unknown) => void): Promise<void> {
    this.views = [
      new KvView(this.n.js, KV_JOBS, jobKeys.allRecords(), this.index, log),
      new KvView(this.n.js, KV_AGENTS, ">", this.agentView, log),
    ];
    await Promise.all(this.views.map((v) => v.start()));
    void this.views[0]!.ready.then(() => {
      this.index.loaded();
      void this.endOrphans(log).catch((err: unknown) => log("the start-up check of queued jobs failed", err));
    });
    const retentionMs = this.opts.jobsRetentionMs;
    if (retentionMs) {
      this.expireTimer = setInterval(() => this.index.expire(Date.now() - retentionMs), EXPIRE_EVERY_MS);
      this.expireTimer.unref();
    }
  }

  stop(): void {
    for (const v of this.views) v.stop();
    if (this.expireTimer) clearInterval(this.expireTimer);
    this.queue.stop();
  }

  /** Jobs by state, once the records view holds every record. */
  async stateCounts(): Promise<ReadonlyMap<string, number>> {
    await this.views[0]?.ready;
    return this.index.stateCounts();
  }

  /** Live agents from the registry view (dead ones: their last beat is older than the bucket's TTL). */
  async agents(): Promise<AgentRegistration[]> {
    await this.views[1]?.ready;
    return this.agentView.live().sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }

  /**
   * Union of the node catalogs of live agents. Refreshed once it is over a second old; while that refresh runs, a
   * catalog already held is served, so a submit after a quiet spell does not wait on a listing of the agent
   * registry (several KV round trips). A catalog that may predate a new agent is looked at again where it matters:
   * `withCatalog` retries an unknown node type with `fresh`, which waits for a listing (shared by concurrent
   * callers, so a burst of bad submits costs one).
   */
  /** The registry view catching up for a fresh catalog, shared by concurrent callers (a burst of bad submits). */
  private registryCatchUp: Promise<void> | null = null;

  async nodeCatalog(opts: { fresh?: boolean } = {}): Promise<NodeCatalog> {
    if (!opts.fresh && Date.now() - this.catalogRefreshedMs < 1_000) return this.catalog;
    if (opts.fresh) {
      // The registry view first reads what was written until now (an agent that registered a moment ago); a
      // refresh begun before that may predate the agent, so it is let finish and another made.
      await (this.registryCatchUp ??= Promise.resolve(this.views[1]?.caughtUp()).finally(
        () => (this.registryCatchUp = null),
      ));
      await this.catalogRefresh?.catch(() => undefined);
    }
    // One refresh at a time: concurrent submits share it rather than each listing the registry.
    const refresh = (this.catalogRefresh ??= this.refreshCatalog().finally(() => (this.catalogRefresh = null)));
    // An empty catalog is not served stale: it would let any node type through validation.
    if (opts.fresh || this.catalog.size === 0) return refresh;
    refresh.catch(() => undefined); // a failed background refresh leaves the old catalog; the next call tries again
    return this.catalog;
  }

  /**
   * Runs a validation against the validation catalog; when it refuses a node type, once more against a fresh one
   * (the type may belong to an agent that registered since the catalog was read) before the refusal stands.
   */
  async withCatalog<T>(fn: (catalog: NodeCatalog | undefined) => T | Promise<T>): Promise<T> {
    try {
      return await fn(await this.validationCatalog());
    } catch (err) {
      if (!(err instanceof GraphError) || err.code !== ErrorCode.GRAPH_ERR_UNKNOWN_NODE_TYPE) throw err;
      return fn(await this.validationCatalog({ fresh: true }));
    }
  }

  private async refreshCatalog(): Promise<NodeCatalog> {
    const agents = await this.agents();
    this.catalogAgents = agents;
    const keys = new Set(agents.map((a) => a.node_catalog).filter(Boolean));
    const same = keys.size === this.catalogKeys.size && [...keys].every((k) => this.catalogKeys.has(k));
    if (!same) {
      const next = new Map<string, NodeMetadata>();
      for (const k of keys) {
        // A key an agent named: one that is no valid key (or unreadable) is no catalog, not a failed refresh.
        const e = await this.n.nodesKv.get(k).catch(() => null);
        if (!e || e.length === 0) continue;
        for (const m of parseJson(e.string()) as NodeMetadata[]) next.set(m.node_type, m);
      }
      this.catalog = next;
      this.catalogKeys = keys;
    }
    this.catalogRefreshedMs = Date.now();
    return this.catalog;
  }

  /**
   * Refuses a strategy that no live agent of the job's pool can give (`pickStrategy`), looking at a fresh agent
   * list before refusing. A pool with no live agent yet is not refused: its job waits for one, as for node types.
   * An agent of the pool that cannot give it may still pull the job and fail it `JOB_ERR_STRATEGY_UNAVAILABLE`.
   */
  private async checkStrategy(strategy: ExecutionStrategy, pool: string): Promise<void> {
    const inPool = () => this.catalogAgents.filter((a) => a.pools.includes(pool));
    const served = () =>
      inPool().length === 0 ||
      inPool().some((a) => "strategy" in pickStrategy(strategy, a.capabilities?.strategies ?? ["inline"]));
    if (served()) return;
    await this.nodeCatalog({ fresh: true });
    if (served()) return;
    const offered = [...new Set(inPool().flatMap((a) => a.capabilities?.strategies ?? ["inline"]))]
      .map((x) => `"${x}"`)
      .join(", ");
    throw badRequest(`no live agent of pool "${pool}" can run the "${strategy}" strategy (they offer ${offered})`);
  }

  /** Live agents as the node catalog last read them (`fresh`: read the registry now). */
  async liveAgents(opts: { fresh?: boolean } = {}): Promise<AgentRegistration[]> {
    await this.nodeCatalog(opts);
    return this.catalogAgents;
  }

  /**
   * A `message` for the `queued` event of a job whose pool no live agent consumes: it is accepted and waits for
   * one (an agent may be restarting), but whoever watches it is told why nothing happens, and what would serve it.
   */
  private noAgentNote(pool: string): string | undefined {
    if (this.catalogAgents.some((a) => a.pools.includes(pool))) return undefined;
    const which = isLlmProvider(pool)
      ? ` (agents with ${PROVIDER_SETTING[pool]} do)`
      : pool === "gpu"
        ? " (agents with a GPU do)"
        : pool === "comfyui"
          ? " (agents with --comfyui-url do)"
          : pool === "docker"
            ? " (agents with a Docker engine do)"
            : "";
    return `no live agent consumes pool "${pool}"${which}: the job waits for one`;
  }

  /** Validation catalog: absent while no agent is known, so structure is still checked but types are not. */
  async validationCatalog(opts: { fresh?: boolean } = {}): Promise<NodeCatalog | undefined> {
    const c = await this.nodeCatalog(opts);
    return c.size > 0 ? c : undefined;
  }

  async get(jobId: string): Promise<JobRecord> {
    const r = await this.find(jobId);
    if (!r) throw notFound(`job "${jobId.slice(0, 200)}"`);
    return r;
  }

  /**
   * The job's record; null for none, and for an id no job can have (which no KV key could hold). Asks that arrive
   * while a read of the same record is in flight share it: a storm of resumes of one job is one read, not one each.
   */
  find(jobId: string): Promise<JobRecord | null> {
    if (!ID_GRAMMAR.test(jobId)) return Promise.resolve(null);
    let read = this.reading.get(jobId);
    if (!read) {
      read = readJobRecord(this.n.jobsKv, jobId)
        .then((r) => r?.rec ?? null)
        .finally(() => this.reading.get(jobId) === read && this.reading.delete(jobId));
      this.reading.set(jobId, read);
    }
    return read;
  }

  /** Record reads in flight by job id (`find`); a write here drops its job's, so a read after it is fresh. */
  private readonly reading = new Map<string, Promise<JobRecord | null>>();

  /** Every record write of this manager after its submit: a compare-and-set, then the job's shared read let go. */
  private async casRecord(
    jobId: string,
    change: (rec: JobRecord) => JobRecord | null,
  ): ReturnType<typeof casJobRecord> {
    try {
      return await casJobRecord(this.n.jobRecords, jobId, change);
    } finally {
      this.reading.delete(jobId);
    }
  }

  /**
   * Newest first; `cursor` is the last id of the previous page. Ids come from the records view (job-index.ts),
   * and only the page's records are read. With a state and a workflow both, at most
   * `max(limit, listScanMaxRecords)` ids are looked at per call: a filter that matches little answers a short
   * page whose `next` continues where it stopped.
   */
  async list(q: {
    workflowId?: string;
    status?: string;
    limit: number;
    cursor?: string;
  }): Promise<{ jobs: JobRecord[]; next: string | null }> {
    await this.views[0]?.ready;
    const budget = Math.max(q.limit, this.opts.listScanMaxRecords ?? LIST_SCAN_DEFAULT);
    const { ids, next } = this.index.page(q, budget);
    const jobs: JobRecord[] = [];
    let bytes = 0;
    // A few reads at a time, and the page ends early past LIST_PAGE_MAX_BYTES: records run to 1 MB each, and a
    // hundred read at once overran what NATS lets a connection have pending (it dropped the gateway's).
    for (let i = 0; i < ids.length; i += LIST_READ_BATCH) {
      const batch = ids.slice(i, i + LIST_READ_BATCH);
      const recs = await Promise.all(batch.map((id) => readJobRecord(this.n.jobsKv, id)));
      for (const [k, r] of recs.entries()) {
        if (bytes >= LIST_PAGE_MAX_BYTES) return { jobs, next: ids[i + k - 1]! };
        // A record may have moved on since the view saw it: the page holds what the records say now.
        if (!r || (q.status && r.rec.status !== q.status)) continue;
        jobs.push(r.rec);
        bytes += r.bytes;
      }
    }
    return { jobs, next };
  }

  /** Validates, records, announces and enqueues a job. With an idempotency key, a retry returns the first job. */
  async submit(s: SubmitJob): Promise<{ job: JobRecord; created: boolean }> {
    const checked = await this.checkSubmit(s);
    const jobId = newId();
    const rec = { ...newRecord(jobId, s, checked), claim_hash: claimHash(this.n.leases.claimSecret(jobId)) };
    const text = this.recordText(rec); // refused before anything is held or stored
    let heldKey: HeldKey | null = null;
    if (s.idempotencyKey !== undefined) {
      const held = await this.holdIdempotencyKey(
        s.workflow.id,
        s.idempotencyKey,
        `${jobId} ${runFingerprint(s.workflow.graph, s)}`,
      );
      if ("existing" in held) {
        const { rec, revision } = held.existing;
        await this.ensureDispatched(rec, revision, checked.graph, s.strategy);
        return { job: rec, created: false };
      }
      heldKey = held;
    }
    s.beforePublish?.(jobId);
    this.queue.claim(jobId);
    const job = await this.storeJob(rec, text, checked.graph, s.strategy, heldKey);
    this.jobsCreated++;
    return { job, created: true };
  }

  /** Validates the graph, its params and the run options against the live agents; throws a 400 naming the fault. */
  private async checkSubmit(s: SubmitJob): Promise<CheckedSubmit> {
    const { catalog, graph, params } = await this.withCatalog((catalog) => {
      const graph: Graph = resolveDefaultModels(
        validateGraph(s.workflow.graph, catalog),
        this.opts.defaultModels ?? {},
        catalog,
      );
      return { catalog, graph, params: validateParams(graph, s.params ?? {}, catalog) };
    });
    await this.checkAssetParams(params);
    if (s.timeoutS !== undefined && s.timeoutS !== null && (typeof s.timeoutS !== "number" || !(s.timeoutS > 0))) {
      throw badRequest(`"timeout_s" must be a positive number of seconds`);
    }
    // Every job ends: one without a timeout of its own gets the gateway's default, and none may ask past the maximum.
    const timeoutS = s.timeoutS ?? this.opts.jobTimeoutDefaultS;
    if (timeoutS > this.opts.jobTimeoutMaxS)
      throw badRequest(`"timeout_s" may be at most ${this.opts.jobTimeoutMaxS} (jobTimeoutMaxS)`);
    if (s.strategy !== undefined && !Object.hasOwn(ExecutionStrategy, s.strategy)) {
      throw badRequest(
        `"execution_strategy" must be one of ${Object.keys(ExecutionStrategy).join(", ")}, got ${JSON.stringify(s.strategy)}`,
      );
    }
    const pool = poolOfGraph(graph, catalog, s.pool);
    if (s.strategy !== undefined) await this.checkStrategy(s.strategy, pool);
    if (s.parent !== undefined && !(await this.liveAgents()).some((a) => a.pools.includes(pool)))
      throw new GatewayError(
        ErrorCode.GW_ERR_NO_AGENT,
        this.noAgentNote(pool) ?? `no live agent consumes pool "${pool}"`,
      );
    return { graph, params, pool, timeoutS };
  }

  /**
   * Maps the Idempotency-Key to `entry` (the new job's id and the request's fingerprint), or finds the job a first
   * request with the key created: one that asked for something else is refused. `create` fails if the key exists,
   * which is the compare-and-set needed.
   */
  private async holdIdempotencyKey(
    workflowId: string,
    idempotencyKey: string,
    entry: string,
  ): Promise<HeldKey | { existing: { rec: JobRecord; revision: number } }> {
    const key = jobKeys.idempotency(
      createHash("sha256").update(`${workflowId}\0${idempotencyKey}`).digest("hex").slice(0, 40),
    );
    try {
      return { key, revision: await this.n.jobsKv.create(key, entry) };
    } catch {
      /* the key exists: below */
    }
    const e = await this.n.jobsKv.get(key);
    // An entry of an older gateway holds the job id alone: no fingerprint to compare.
    const [firstId = "", firstPrint] = e?.string().split(" ") ?? [];
    if (firstPrint !== undefined && firstPrint !== entry.split(" ")[1]) {
      throw new GatewayError(
        ErrorCode.GW_ERR_IDEMPOTENCY_MISMATCH,
        `this Idempotency-Key was first sent with a different request (job ${firstId}): a retry must send the same graph, params and options, a new request a new key`,
      );
    }
    // The first request may still be writing its record: wait for it briefly rather than create a twin.
    for (let i = 0; e && i <= 50; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      const existing = await readJobRecord(this.n.jobsKv, firstId);
      if (existing) return { existing };
    }
    const stillBeingCreated = new GatewayError(
      ErrorCode.GW_ERR_CONFLICT,
      "a request with this Idempotency-Key is still being created",
    );
    // Still no record: a first request that stored the key and then failed never writes one. Once the key is
    // older than any submit lives, this retry takes it over (compare-and-set on the key's revision, so of
    // concurrent retries one creates the job and the others are told to retry, finding it).
    if (!e || Date.now() - e.created.getTime() < this.opts.idempotencyOrphanMs) throw stillBeingCreated;
    try {
      return { key, revision: await this.n.jobsKv.update(key, entry, e.revision) };
    } catch {
      throw stillBeingCreated;
    }
  }

  /** Told of each record a submit here is creating, with its text and revision to come (agent-records.ts). */
  recordCreated: (rec: JobRecord, text: string, revision: Promise<number>) => void = () => undefined;

  /** `rec` as the record's JSON; refused 413 when NATS cannot carry it. */
  private recordText(rec: JobRecord): string {
    const text = encodeJson(rec);
    // JSON can be larger than the dispatch's MessagePack (a long list of numbers is): refused as the request's doing.
    const bytes = Buffer.byteLength(text);
    if (bytes > this.n.events.limitBytes)
      throw new GatewayError(
        ErrorCode.GW_ERR_BODY_TOO_LARGE,
        `the job's record (its params) is ${bytes} bytes, larger than one NATS message may be (max_payload less headers: ${this.n.events.limitBytes})`,
      );
    return text;
  }

  private createRecord(rec: JobRecord, text: string): Promise<number> {
    const revision = this.n.jobRecords.create(jobKeys.record(rec.id), text);
    this.recordCreated(rec, text, revision);
    return revision;
  }

  /**
   * Writes the `queued` event, the dispatch and the record in one write, in that order; answers with the job once
   * all three are stored, or with the record an agent claimed meanwhile when some write failed; else throws.
   *
   * The server stores them in order, so `queued` always precedes the agent's `running`, and the record follows the
   * dispatch by microseconds (an agent that gets there first waits for the record, agent/job-runner.ts, its graph
   * starting meanwhile). Waiting for the record before sending the dispatch would cost a JetStream round trip in
   * every job's time to first event. Listings by workflow come from the records (gateway/job-index.ts): no index
   * entry is written.
   */
  private async storeJob(
    rec: JobRecord,
    text: string,
    graph: Graph,
    strategy: ExecutionStrategy | undefined,
    heldKey: HeldKey | null,
  ): Promise<JobRecord> {
    const queued = jobUpdate.queued(this.queue.nextPosition(rec.pool), rec.pool, this.noAgentNote(rec.pool));
    const writes = await Promise.allSettled([
      this.publishEvent(rec.id, rec.workflow_id, 1, queued),
      this.publishDispatch(rec, graph, strategy),
      this.createRecord(rec, text),
    ]);
    const failed = writes.find((w): w is PromiseRejectedResult => w.status === "rejected");
    if (!failed) {
      this.index.created(rec.id, rec.status, rec.workflow_id);
      return rec;
    }
    const taken = await this.abandonSubmit(rec, heldKey, failed.reason);
    if (taken !== null) return taken;
    if (failed.reason instanceof GatewayError)
      throw new GatewayError(failed.reason.code, failed.reason.message, { job_id: rec.id });
    throw new GatewayError(ErrorCode.GW_ERR_UNAVAILABLE, `the job could not be queued: ${errorText(failed.reason)}`, {
      job_id: rec.id,
    });
  }

  /** A media param naming one of our assets must name one that exists: a typo or an expired upload is the client's 400, not a failed job. */
  private async checkAssetParams(params: Record<string, unknown>): Promise<void> {
    for (const [name, v] of Object.entries(params)) {
      if (v === null || typeof v !== "object" || !MEDIA_REF_TYPES.has(String((v as { type?: unknown }).type))) continue;
      const id = (v as { asset_id?: unknown }).asset_id;
      if (typeof id !== "string") continue;
      const info = await this.n.assets.info(id);
      if (!info || info.deleted)
        throw badRequest(
          `param "${name}" refers to asset ${id}, which does not exist (never uploaded, deleted, or past its retention)`,
        );
    }
  }

  /**
   * A submit whose writes did not all succeed (the dispatch rejected by the jobs stream, a write timed out): the
   * client is told it failed, so the job must neither sit `queued` forever nor run later. The record, if it was
   * written and is still queued, becomes `failed` by compare-and-set; a dispatch that did get stored is then
   * skipped at its claim (or, with no record at all, ended by the agent), and the terminal event ends every
   * watcher. The Idempotency-Key is released, so the client's retry creates a new job rather than finding the
   * failed one. Returns the record when an agent had already claimed it (the dispatch was stored after all, so the
   * submit succeeded), else null. When NATS itself is gone these writes fail too; an idempotent retry then finds
   * the record and queues it (`ensureDispatched`).
   */
  private async abandonSubmit(rec: JobRecord, heldKey: HeldKey | null, reason: unknown): Promise<JobRecord | null> {
    const message = `submit failed: ${errorText(reason)}`;
    const error = { code: ErrorCode.JOB_ERR_NOT_QUEUED, message };
    try {
      const r = await this.casRecord(rec.id, (cur) =>
        cur.status === "queued" && cur.attempt === 0 ? { ...cur, status: "failed", error, finished_at: now() } : null,
      );
      if (r && !r.written) return r.rec;
      // Also when no record was stored (the bucket refused it): the `queued` event and the dispatch may have been,
      // but no agent can claim a job without its record (it ends such a dispatch), so the job is over.
      await this.publishEvent(rec.id, rec.workflow_id, 2, jobUpdate.ended("failed", error, message));
      if (heldKey) await this.n.jobsKv.delete(heldKey.key, { previousSeq: heldKey.revision });
    } catch {
      // NATS is unreachable too: nothing more can be written now (see above for what a retry does).
    }
    return null;
  }

  /**
   * At start-up: a job whose record says `queued` but whose dispatch is not in NW_JOBS can never run (a gateway
   * died between the submit's writes). Each such job older than `ORPHAN_AGE_MS` ends `failed` with
   * `JOB_ERR_NOT_QUEUED`, by compare-and-set, with its terminal event, so watchers and lists stop waiting. A stream
   * too long to read at start-up is left unchecked, and said so. Returns how many it ended.
   */
  async endOrphans(log: (line: string) => void, ageMs = ORPHAN_AGE_MS): Promise<number> {
    const queued = this.index.page({ status: "queued", limit: ORPHAN_CHECK_MAX }, ORPHAN_CHECK_MAX).ids;
    if (queued.length === 0) return 0;
    const dispatched = await this.dispatchedJobIds();
    if (dispatched === null) {
      log(`NW_JOBS holds over ${ORPHAN_CHECK_MAX} messages: queued jobs were not checked for a lost dispatch`);
      return 0;
    }
    const error = {
      code: ErrorCode.JOB_ERR_NOT_QUEUED,
      message: "its dispatch never reached NW_JOBS (the submitting gateway stopped mid-submit); submit it again",
    };
    let ended = 0;
    for (const id of queued) {
      if (dispatched.has(id)) continue;
      const r = await this.casRecord(id, (cur) =>
        cur.status === "queued" && Date.now() - Date.parse(cur.created_at) > ageMs
          ? { ...cur, status: "failed", error, finished_at: now() }
          : null,
      );
      if (!r?.written) continue;
      await this.publishEvent(id, r.rec.workflow_id, "orphan", jobUpdate.ended("failed", error, error.message));
      ended++;
    }
    if (ended > 0)
      log(`ended ${ended} queued job(s) whose dispatch never reached NW_JOBS (${ErrorCode.JOB_ERR_NOT_QUEUED})`);
    return ended;
  }

  /** The job ids of every dispatch in NW_JOBS, or null when it holds more than `ORPHAN_CHECK_MAX`. */
  private async dispatchedJobIds(): Promise<Set<string> | null> {
    const info = await this.n.jsm.streams.info(STREAM_JOBS);
    if (info.state.messages > ORPHAN_CHECK_MAX) return null;
    const ids = new Set<string>();
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await this.n.jsm.streams.getMessage(STREAM_JOBS, { seq }).catch(() => null);
      if (!m) continue; // acked (a work queue deletes it) or removed
      try {
        ids.add(decodeJobDispatch(m.data).job_id);
      } catch {
        // a malformed dispatch names no job; the agent that pulls it ends it
      }
    }
    return ids;
  }

  /**
   * The job's one dispatch message (`Nats-Msg-Id` = job id: a second publish within the window is dropped).
   * With the record's `revision` (known when the record was stored first), the agent claims in one write.
   */
  private async publishDispatch(
    rec: JobRecord,
    graph: Graph,
    strategy?: ExecutionStrategy,
    revision?: number,
  ): Promise<void> {
    const dispatch: JobDispatch = {
      type: "job.dispatch",
      v: 1,
      job_id: rec.id,
      workflow_id: rec.workflow_id,
      graph,
      params: rec.params,
      ...(strategy ? { strategy } : {}),
      timeout_s: rec.timeout_s,
      created_at: rec.created_at,
      ...(revision !== undefined ? { record: { rec, revision } } : {}),
      // Only the agent that pulls this message learns it: what it shows a gateway to claim the job.
      claim_secret: this.n.leases.claimSecret(rec.id),
    };
    let data: Uint8Array;
    try {
      data = this.n.events.encode(dispatch);
    } catch (err) {
      if (!(err instanceof PayloadTooLargeError)) throw err;
      // Too large is the request's doing, not an outage: refused as such, since a retry would fail the same way.
      const size = `${err.bytes} bytes, larger than one NATS message may be (max_payload less headers: ${err.limitBytes})`;
      throw new GatewayError(ErrorCode.GW_ERR_BODY_TOO_LARGE, `the job (its graph and params) is ${size}`);
    }
    await this.n.events.send(subjects.jobs(rec.pool), data, rec.id);
  }

  /**
   * An idempotent retry of a submit that failed half-way (the gateway or NATS went away after the record was
   * written, before the dispatch was): the retry answers with that job, so it must make sure the job is really
   * queued. Within the streams' duplicate window the `queued` event and the dispatch are simply published again:
   * if the first request stored them, JetStream drops the copies by message id. Past the window a queued job
   * is left alone (a copy could then run it twice).
   */
  private async ensureDispatched(
    rec: JobRecord,
    revision: number,
    graph: Graph,
    strategy?: ExecutionStrategy,
  ): Promise<void> {
    if (rec.status !== "queued") return;
    const ageMs = Date.now() - Date.parse(rec.created_at);
    if (!(ageMs < JOB_QUEUE_DEFAULTS.duplicateWindowMs - 10_000)) return;
    await this.publishEvent(rec.id, rec.workflow_id, 1, jobUpdate.queued(this.queue.nextPosition(rec.pool), rec.pool));
    await this.publishDispatch(rec, graph, strategy, revision);
  }

  /** An event the gateway itself writes for a job (attempt 0: before any agent owns it). */
  private async publishEvent(jobId: string, workflowId: string, n: number | string, ev: JobUpdateBody): Promise<void> {
    await this.n.events.publishEvent({ jobId, workflowId, attempt: 0 }, n, ev);
  }

  /**
   * Cancels a job; idempotent. Queued → `cancelled` at once (it is skipped when pulled); running → the
   * agent is signalled (and the record remembers, for an agent that picks the job up after a redelivery);
   * finished → the final record, unchanged.
   */
  async cancel(jobId: string): Promise<JobRecord> {
    const r = await this.casRecord(jobId, (rec) => {
      if (isTerminal(rec.status)) return null;
      if (rec.status === "queued") {
        return {
          ...rec,
          status: "cancelled",
          finished_at: now(),
          error: { code: ErrorCode.JOB_ERR_CANCELLED, message: "cancelled while queued" },
        };
      }
      return rec.cancel_requested ? null : { ...rec, cancel_requested: true };
    });
    if (!r) throw notFound(`job "${jobId}"`);
    if (r.written && r.rec.status === "cancelled") {
      // The update says what the record says: its error (JOB_ERR_CANCELLED) included.
      await this.publishEvent(jobId, r.rec.workflow_id, 2, jobUpdate.ofRecord(r.rec));
    } else if (!isTerminal(r.rec.status)) {
      const c: JobCancel = { type: "job.cancel", v: 1, job_id: jobId, reason: CancelReason.user };
      this.n.nc.publish(subjects.cancel(jobId), encodeMsgpack(c));
    }
    if (r.written) await this.cancelChildren(jobId);
    return r.rec;
  }

  /** The child jobs of a cancelled job are cancelled too (its agent does so as well, when it is alive to). */
  private async cancelChildren(jobId: string): Promise<void> {
    const keys = await this.n.jobsKv.keys(jobKeys.childrenOf(jobId)).catch(() => null);
    if (!keys) return;
    const children: string[] = [];
    for await (const k of keys) children.push(k.slice(k.lastIndexOf(".") + 1));
    await Promise.all(children.map((id) => this.cancel(id).catch(() => undefined)));
  }
}

export type { KV };
