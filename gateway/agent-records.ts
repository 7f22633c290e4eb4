/**
 * What agents may do to job records, decided here: agents have no access to `nw_jobs` and ask a gateway
 * (`nw.rec.<principal>`, queue group `nw-gateways`; NATS lets each agent user publish only on its own principal).
 *
 *   - read a record: with the dispatch's claim secret (its hash is in the record), or as the attempt's holder;
 *   - claim attempt n: with the secret, on a record not finished and at a lower attempt; a running attempt of
 *     another holder only once its lease visibly lapsed (`LAPSE_FRACTION` of `ackWaitMs` without a claim, an
 *     event from it, its lease check reaching this gateway, or its agent's heartbeat naming the job);
 *   - finish: only the holder of the record's attempt, to a terminal state; the gateway then publishes the
 *     terminal update on its own subject before answering (the agent sent it only after all its events were stored);
 *   - fail past the last attempt ("max deliveries"): with the secret, when nobody holds a live lease.
 *
 * Every write is a compare-and-set built from the stored record, never the agent's copy of it: an agent can change
 * only the fields its step owns. A claim answers with the lease token the agent's events must carry (nats/lease.ts).
 * Also here: the operator-label pools' consumers, made for the pools agents register with (agents cannot).
 */
import { createHash } from "node:crypto";
import type { Msg, Subscription } from "@nats-io/transport-node";
import type { KvEntry } from "@nats-io/kv";
import {
  ErrorCode,
  STREAM_EVENTS,
  STREAM_JOBS,
  agentKey,
  canTransition,
  decodeJobDispatch,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  isTerminal,
  jobKeys,
  jobUpdate,
  parseJson,
  poolConsumer,
  subjects,
  type AgentRegistration,
  type JobRecord,
} from "../protocol/index.js";
import { asRecordRequest, type RecordReply, type RecordRequest } from "../protocol/index.js";
import { RECORDS_QUEUE, principalOfRecordsSubject } from "../protocol/index.js";
import type { LeaseSigner } from "../nats/index.js";
import type { NatsParts } from "./nats.js";
import { ChildRefused, type ChildJobs } from "./child-jobs.js";
import { AssetRefused, type AgentAssets } from "./agent-assets.js";

/** The hash of a claim secret, as the record keeps it. */
export function claimHash(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** A refusal, answered to the agent with its code. */
class Refused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A record as stored: parsed, its JSON text, revision and when it was written. */
type Stored = { rec: JobRecord; text: string; revision: number; writtenMs: number };

/**
 * How much of a lease a holder must have been silent for to be taken over. JetStream redelivers `ack_wait` after the
 * holder's last in-progress ack, which it sends every third of a lease beside a lease check (a record read): a
 * dead holder's last sign of life is at least two thirds of a lease old when the next attempt claims.
 */
const LAPSE_FRACTION = 1 / 3;

/** Records kept from this gateway's own reads and writes: a claim after a read, a finish after a claim, skip a read. */
const CACHE_RECORDS = 10_000;

/** A submitted record larger than this (big params) is not kept for its claim: the claim reads it. */
const PRIME_MAX_CHARS = 16 * 1024;

const now = () => new Date().toISOString();

export class AgentRecords {
  private sub: Subscription | null = null;
  /**
   * The record as this gateway last read or wrote it. A write decided on a stale copy cannot land (compare-and-set
   * on its revision); a refusal decided on one is decided again on a fresh read.
   */
  private readonly cache = new Map<string, Stored>();
  /** When each running job's holder last checked its lease here (`job id` → principal, attempt, time). */
  private readonly seen = new Map<string, { principal: string; attempt: number; atMs: number }>();
  refused = 0;

  constructor(
    private readonly n: NatsParts,
    private readonly leases: LeaseSigner,
    private readonly ackWaitMs: number,
    private readonly log: (line: string) => void,
    private readonly children: ChildJobs | null = null,
    private readonly assets: AgentAssets | null = null,
  ) {}

  start(): void {
    this.sub = this.n.nc.subscribe(subjects.recordsAll(), {
      queue: RECORDS_QUEUE,
      callback: (err, m) => {
        if (!err) void this.answer(m);
      },
    });
  }

  stop(): void {
    this.sub?.unsubscribe();
  }

  private async answer(m: Msg): Promise<void> {
    const principal = principalOfRecordsSubject(m.subject);
    let reply: RecordReply;
    let req: RecordRequest | null = null;
    try {
      req = asRecordRequest(decodeMsgpack(m.data));
      reply = await this.handle(principal, req);
    } catch (err) {
      const refused = err instanceof Refused;
      if (refused) this.refused++;
      // Not decodable: the asker's fault; anything else (NATS away mid-write): asked again, it may succeed.
      const code = refused ? err.code : req === null ? ErrorCode.GW_ERR_BAD_REQUEST : ErrorCode.GW_ERR_UNAVAILABLE;
      const message = (err as Error).message;
      if (refused) this.log(`agent ${principal}: refused (${message})`);
      reply = { ok: false, code, message };
    }
    if (m.reply) m.respond(encodeMsgpack(reply));
  }

  private async handle(principal: string, req: RecordRequest): Promise<RecordReply> {
    if (req.type === "record.update") {
      // The agent's revision is the cached one: try it without a read (the write checks it is still current).
      const cached = this.cache.get(req.job_id);
      if (cached && cached.revision === req.revision) {
        try {
          return await this.update(principal, req, cached, this.proves(cached.rec, req.proof));
        } catch (err) {
          if (!(err instanceof Refused)) throw err;
        }
      }
    }
    if (req.type === "record.claim") return this.claim(principal, req);
    const cur = await this.read(req.job_id);
    const proven = cur !== null && this.proves(cur.rec, req.proof);
    switch (req.type) {
      case "record.get": {
        if (!cur) return { ok: true, record_json: null, revision: 0 };
        if (!proven && cur.rec.holder !== principal) throw new Refused(ErrorCode.GW_ERR_FORBIDDEN, "not your job");
        if (cur.rec.status === "running" && cur.rec.holder === principal) this.sawHolder(cur.rec);
        return { ok: true, record_json: cur.text, revision: cur.revision, ...this.leaseOf(principal, cur.rec) };
      }
      case "record.terminal": {
        if (!cur) throw new Refused(ErrorCode.GW_ERR_NOT_FOUND, `no record of job ${req.job_id}`);
        if (!proven && cur.rec.holder !== principal) throw new Refused(ErrorCode.GW_ERR_FORBIDDEN, "not your job");
        if (isTerminal(cur.rec.status) && cur.rec.attempt > 0) await this.publishTerminal(cur.rec);
        return { ok: true, record_json: cur.text, revision: cur.revision };
      }
      case "record.update":
        return this.update(principal, req, cur, proven);
      case "child.submit":
      case "child.wait":
      case "child.cancel":
        return this.child(principal, req, cur);
      case "asset.read":
      case "asset.seal":
        return this.asset(principal, req, cur, proven);
    }
  }

  /** An asset request of the job's agent (gateway/agent-assets.ts). */
  private async asset(
    principal: string,
    req: Extract<RecordRequest, { type: `asset.${string}` }>,
    cur: Stored | null,
    proven: boolean,
  ): Promise<RecordReply> {
    if (!this.assets) throw new Refused(ErrorCode.GW_ERR_UNAVAILABLE, "this gateway serves no assets to agents");
    try {
      return await this.assets.handle(principal, req, cur?.rec ?? null, proven);
    } catch (err) {
      if (err instanceof AssetRefused) throw new Refused(err.code, err.message);
      throw err;
    }
  }

  /** A child-job request of the parent's holder (gateway/child-jobs.ts). */
  private async child(
    principal: string,
    req: Extract<RecordRequest, { type: `child.${string}` }>,
    cur: Stored | null,
  ): Promise<RecordReply> {
    if (!this.children) throw new Refused(ErrorCode.GW_ERR_UNAVAILABLE, "this gateway runs no child jobs");
    if (cur?.rec.status === "running" && cur.rec.holder === principal) this.sawHolder(cur.rec);
    try {
      return await this.children.handle(principal, req, cur?.rec ?? null);
    } catch (err) {
      if (err instanceof ChildRefused) throw new Refused(err.code, err.message);
      throw err;
    }
  }

  /**
   * A claim in one round trip, decided by the same rules as a claiming update. Not claimable: the record is answered
   * as stored, without a lease. This gateway's cached copy (the submit that made the record primed it) is tried
   * first; a refusal or a lost compare-and-set on it is decided again on a fresh read.
   */
  private async claim(principal: string, req: Extract<RecordRequest, { type: "record.claim" }>): Promise<RecordReply> {
    const cached = this.cache.get(req.job_id) ?? (await this.creating.get(req.job_id)) ?? undefined;
    for (let tries = 0; tries < 10; tries++) {
      const fresh = tries > 0 || cached === undefined;
      const cur = fresh ? await this.read(req.job_id) : cached;
      if (!cur) return { ok: true, record_json: null, revision: 0 };
      if (!this.proves(cur.rec, req.proof))
        throw new Refused(ErrorCode.GW_ERR_FORBIDDEN, `job ${req.job_id}: no claim secret of this job`);
      const { attempt, agent_id, dispatch_seq } = req;
      const want: JobRecord = { ...cur.rec, status: "running", attempt, agent_id, dispatch_seq };
      const next = await this.allowed(principal, cur, want, true).catch((err: unknown) =>
        err instanceof Refused ? null : Promise.reject(err),
      );
      const stored = next && (await this.write(cur, next));
      const answer = stored ?? (fresh && !next ? cur : null);
      if (answer)
        return {
          ok: true,
          record_json: answer.text,
          revision: answer.revision,
          ...this.leaseOf(principal, answer.rec),
        };
    }
    throw new Error(`job ${req.job_id}: the record kept changing under compare-and-set`);
  }

  /** `next` written over `cur` by compare-and-set; null when another write came first (the copy is then dropped). */
  private async write(cur: Stored, next: JobRecord): Promise<Stored | null> {
    const text = encodeJson(next);
    try {
      const revision = await this.n.jobRecords.update(jobKeys.record(next.id), text, cur.revision);
      return this.keep({ rec: next, text, revision, writtenMs: Date.now() });
    } catch (err) {
      this.cache.delete(next.id);
      if (/wrong last sequence/i.test(String((err as Error).message))) return null;
      throw err;
    }
  }

  /** A record update: the stored record changed as the step the agent may take allows, by compare-and-set. */
  private async update(
    principal: string,
    req: Extract<RecordRequest, { type: "record.update" }>,
    cur: Stored | null,
    proven: boolean,
  ): Promise<RecordReply> {
    if (!cur) throw new Refused(ErrorCode.GW_ERR_NOT_FOUND, `no record of job ${req.job_id}`);
    const want = parseJson(req.record_json) as JobRecord;
    const next = await this.allowed(principal, cur, want, proven);
    // A write made on another revision would be refused by KV; say so the way KV does, so the agent reads again.
    if (cur.revision !== req.revision)
      return { ok: false, code: ErrorCode.GW_ERR_CONFLICT, message: "wrong last sequence" };
    const stored = await this.write(cur, next);
    if (!stored) return { ok: false, code: ErrorCode.GW_ERR_CONFLICT, message: "wrong last sequence" };
    if (next.status !== "running") this.seen.delete(next.id);
    if (isTerminal(next.status)) await this.publishTerminal(next, req.duration_s);
    return { ok: true, record_json: stored.text, revision: stored.revision, ...this.leaseOf(principal, next) };
  }

  /** The record `want` asks for, built from the stored one; throws `Refused` when the agent may not take it. */
  private async allowed(principal: string, cur: Stored, want: JobRecord, proven: boolean): Promise<JobRecord> {
    const rec = cur.rec;
    const forbid = (why: string) => new Refused(ErrorCode.GW_ERR_FORBIDDEN, `job ${rec.id}: ${why}`);
    if (isTerminal(rec.status)) throw forbid("finished already");
    const holds = rec.status === "running" && rec.holder === principal;
    if (want.status === "running") {
      if (!proven) throw forbid("no claim secret of this job");
      if (!(want.attempt > rec.attempt) || !canTransition(rec.status, "running")) throw forbid("not claimable");
      if (rec.status === "running" && !holds && !(await this.lapsed(cur))) throw forbid("held by a live lease");
      return {
        ...rec,
        status: "running",
        attempt: want.attempt,
        agent_id: typeof want.agent_id === "string" ? want.agent_id : null,
        holder: principal,
        started_at: rec.started_at ?? now(),
        dispatch_seq:
          Number.isSafeInteger(want.dispatch_seq) && Number(want.dispatch_seq) > 0 ? want.dispatch_seq : undefined,
      };
    }
    if (!isTerminal(want.status)) throw forbid(`no agent step leads to ${want.status}`);
    if (want.error?.code === ErrorCode.JOB_ERR_MAX_DELIVERIES && want.attempt === rec.attempt) {
      if (!proven) throw forbid("no claim secret of this job");
      if (rec.status === "running" && !holds && !(await this.lapsed(cur))) throw forbid("held by a live lease");
      return { ...rec, status: "failed", error: want.error, finished_at: now() };
    }
    if (!holds || want.attempt !== rec.attempt) throw forbid(`attempt ${want.attempt} is not held by ${principal}`);
    return { ...rec, status: want.status, error: want.error, outputs: want.outputs, finished_at: now() };
  }

  /** The lease token of `principal` when it holds the record's running attempt. */
  private leaseOf(principal: string, rec: JobRecord): { lease?: string } {
    return rec.status === "running" && rec.holder === principal
      ? { lease: this.leases.sign(rec.id, rec.attempt, principal) }
      : {};
  }

  /** Without a hash (a record written before claims were proven), any asker proves it. */
  private proves(rec: JobRecord, proof: string): boolean {
    return rec.claim_hash === undefined || claimHash(proof) === rec.claim_hash;
  }

  private sawHolder(rec: JobRecord): void {
    this.seen.delete(rec.id);
    this.seen.set(rec.id, { principal: rec.holder ?? "", attempt: rec.attempt, atMs: Date.now() });
    if (this.seen.size > CACHE_RECORDS) this.seen.delete(this.seen.keys().next().value!);
  }

  /**
   * No claim, event, lease check (here) or heartbeat naming the job from the holder for `LAPSE_FRACTION` of a
   * lease: it is gone, or stalled. The heartbeat is what every gateway sees alike (the holder's registration in
   * `nw_agents`, rewritten every few seconds with the jobs it runs, under its own principal's keys), so a holder
   * whose lease checks went to another gateway is not taken for gone.
   */
  private async lapsed(cur: Stored, fraction = LAPSE_FRACTION): Promise<boolean> {
    let lastMs = cur.writtenMs;
    const holder = cur.rec.holder;
    const seen = this.seen.get(cur.rec.id);
    if (seen && seen.principal === holder && seen.attempt === cur.rec.attempt) lastMs = Math.max(lastMs, seen.atMs);
    if (holder) {
      const last = await this.n.jsm.streams
        .getMessage(STREAM_EVENTS, { last_by_subj: subjects.jobEvents(cur.rec.id, holder) })
        .catch(() => null);
      if (last) lastMs = Math.max(lastMs, last.time.getTime());
      lastMs = Math.max(lastMs, await this.lastBeatRunning(cur.rec, holder));
    }
    return Date.now() - lastMs >= this.ackWaitMs * fraction;
  }

  /** When the holder's registration last said it runs the job (server time), or 0. */
  private async lastBeatRunning(rec: JobRecord, holder: string): Promise<number> {
    if (!rec.agent_id) return 0;
    const e = await this.n.agentsKv.get(agentKey(rec.agent_id, holder)).catch(() => null);
    if (e?.operation !== "PUT" || e.length === 0) return 0;
    const reg = parseJson(e.string()) as Partial<AgentRegistration>;
    return Array.isArray(reg.running_jobs) && reg.running_jobs.includes(rec.id) ? e.created.getTime() : 0;
  }

  private async read(jobId: string): Promise<Stored | null> {
    let e: KvEntry | null;
    try {
      e = await this.n.jobsKv.get(jobKeys.record(jobId));
    } catch (err) {
      if ((err as { code?: string }).code === "PROTO_ERR_BAD_TOKEN")
        throw new Refused(ErrorCode.GW_ERR_BAD_REQUEST, "bad job id");
      throw err;
    }
    if (e?.operation !== "PUT" || e.length === 0) {
      this.cache.delete(jobId);
      return null;
    }
    const text = e.string();
    return this.keep({ rec: parseJson(text) as JobRecord, text, revision: e.revision, writtenMs: e.created.getTime() });
  }

  /**
   * A record this gateway is creating (a submit): the claim that follows in a moment waits for that write instead
   * of reading the record (a read can also come before the write is stored, and be asked again).
   */
  remember(rec: JobRecord, text: string, revision: Promise<number>): void {
    if (text.length > PRIME_MAX_CHARS) return;
    const stored = revision.then(
      (r) => this.keep({ rec, text, revision: r, writtenMs: Date.now() }),
      () => null,
    );
    this.creating.set(rec.id, stored);
    void stored.finally(() => this.creating.delete(rec.id));
  }

  /** Records being created by this gateway's submits, by job id (only while the write is in flight). */
  private readonly creating = new Map<string, Promise<Stored | null>>();

  /** Remembers `s` (a finished record is let go: nothing writes it again), oldest first out. */
  private keep(s: Stored): Stored {
    this.cache.delete(s.rec.id);
    if (isTerminal(s.rec.status)) return s;
    this.cache.set(s.rec.id, s);
    if (this.cache.size > CACHE_RECORDS) this.cache.delete(this.cache.keys().next().value!);
    return s;
  }

  /**
   * Ends each of `runningIds` whose holder has been silent for a whole lease and whose dispatch is no longer in
   * NW_JOBS: JetStream redelivers a dead holder's job only while its message is there, and any agent user may ack
   * a message it did not pull (the ack subject is guessable), so such a job would stay `running` forever. Returns
   * how many it ended (`JOB_ERR_DISPATCH_LOST`, by compare-and-set, with the terminal event).
   */
  async sweepLost(runningIds: readonly string[]): Promise<number> {
    let ended = 0;
    for (const id of runningIds) {
      const cur = await this.read(id);
      const seq = cur?.rec.dispatch_seq;
      if (cur?.rec.status !== "running" || !seq || !cur.rec.holder) continue;
      if (await this.dispatchPresent(id, seq)) continue;
      if ((await this.lapsed(cur, 1)) && (await this.endLost(cur, seq))) ended++;
    }
    return ended;
  }

  /** Fails a running job whose dispatch is gone and whose holder is silent; false when another write came first. */
  private async endLost(cur: Stored, seq: number): Promise<boolean> {
    const { rec } = cur;
    const message =
      `its agent (${rec.holder}) stopped while running attempt ${rec.attempt}, and its dispatch (NW_JOBS ` +
      `sequence ${seq}) was acknowledged by another NATS user or removed, so it cannot run again; submit it again`;
    const error = { code: ErrorCode.JOB_ERR_DISPATCH_LOST, message };
    const next: JobRecord = { ...rec, status: "failed", error, finished_at: now() };
    // Null: another gateway, or the holder, wrote it first.
    if (!(await this.write(cur, next).catch(() => null))) return false;
    this.seen.delete(rec.id);
    this.log(`job ${rec.id}: ${message}`);
    await this.publishTerminal(next);
    return true;
  }

  /** True while NW_JOBS still holds `jobId`'s dispatch at `seq` (JetStream will deliver it again). */
  private async dispatchPresent(jobId: string, seq: number): Promise<boolean> {
    const m = await this.n.jsm.streams.getMessage(STREAM_JOBS, { seq }).catch((err: Error) => {
      if (/no message|not found|404/i.test(err.message)) return null;
      throw err;
    });
    if (!m) return false;
    try {
      return decodeJobDispatch(m.data).job_id === jobId;
    } catch {
      return false;
    }
  }

  /** The terminal update of a finished record, with the id an agent's copy would have (stored once). */
  private async publishTerminal(rec: JobRecord, durationS?: number): Promise<void> {
    const ev = { ...jobUpdate.ofRecord(rec), ...(durationS !== undefined ? { duration: durationS } : {}) };
    await this.n.events.publishEvent({ jobId: rec.id, workflowId: rec.workflow_id, attempt: rec.attempt }, 0, ev);
  }
}

/**
 * Makes the consumer of every pool a live agent registers with, shaped like the `cpu` pool's (lease, attempts):
 * agents may only bind to consumers, and an operator label's pool has none until an agent asks for it.
 */
export class PoolConsumers {
  private readonly known = new Set<string>();
  private stopped = false;

  constructor(
    private readonly n: NatsParts,
    private readonly log: (line: string) => void,
  ) {}

  async start(): Promise<void> {
    const watch = await this.n.agentsKv.watch();
    void (async () => {
      for await (const e of watch) {
        if (this.stopped) break;
        if (e.operation !== "PUT" || e.length === 0) continue;
        try {
          const reg = parseJson(e.string()) as AgentRegistration;
          for (const pool of Array.isArray(reg.pools) ? reg.pools : []) await this.ensure(String(pool));
        } catch (err) {
          this.log(`pool consumer for a registration failed: ${(err as Error).message}`);
        }
      }
    })();
    this.stopWatch = () => watch.stop();
  }

  private stopWatch: () => void = () => undefined;

  stop(): void {
    this.stopped = true;
    this.stopWatch();
  }

  private async ensure(pool: string): Promise<void> {
    if (this.known.has(pool)) return;
    const name = poolConsumer(pool);
    const jsm = this.n.jsm;
    if (!(await jsm.consumers.info(STREAM_JOBS, name).catch(() => null))) {
      const template = await jsm.consumers.info(STREAM_JOBS, poolConsumer("cpu"));
      await jsm.consumers.add(STREAM_JOBS, {
        ...template.config,
        durable_name: name,
        name,
        filter_subject: subjects.jobs(pool),
      });
      this.log(`made the consumer of pool ${pool}`);
    }
    this.known.add(pool);
  }
}
