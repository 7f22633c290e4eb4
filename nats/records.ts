/**
 * An agent's way to its jobs' records: requests to the gateways (`nw.rec.<principal>`, MessagePack: a record's
 * JSON text travels as it is, not escaped), never `nw_jobs` itself.
 * `JobRecordClient` is a `RecordStore`, so claims and finishes keep their compare-and-set (`casJobRecord`):
 * a gateway answers a write made on a stale revision with "wrong last sequence", as KV would.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, decodeMsgpack, encodeMsgpack, jobKeys, parseJson } from "../protocol/index.js";
import type { JobRecord, RecordReply, RecordRequest } from "../protocol/index.js";
import { subjects } from "../protocol/index.js";
import { casJobRecord, type KvReadEntry, type RecordStore } from "./job-record.js";

/** A gateway refused a request (`code` from protocol/errors.ts). */
export class RecordRefusedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "RecordRefusedError";
  }
}

export class RecordClient {
  constructor(
    private readonly nc: NatsConnection,
    readonly principal: string,
    private readonly timeoutMs = 5_000,
  ) {}

  /** The record of `jobId`, asked for with the dispatch's claim secret. */
  forJob(jobId: string, proof: string): JobRecordClient {
    return new JobRecordClient(this, jobId, proof);
  }

  /** One request; resolves with a positive answer, rejects with `RecordRefusedError` or the transport's error. */
  async ask(req: RecordRequest, timeoutMs = this.timeoutMs): Promise<Extract<RecordReply, { ok: true }>> {
    const m = await this.nc.request(subjects.records(this.principal), encodeMsgpack(req), { timeout: timeoutMs });
    const reply = decodeMsgpack(m.data) as RecordReply;
    if (!reply.ok) throw new RecordRefusedError(reply.code, reply.message);
    return reply;
  }
}

/** One job's record as a `RecordStore`, and the lease token of the attempt it holds once a gateway gave one. */
export class JobRecordClient implements RecordStore {
  /** The lease token for `leaseAttempt`, from the claim (or a read while holding it). */
  lease: string | null = null;
  leaseAttempt = 0;
  /** Sent with the next write: the run's seconds, for the terminal update a finishing write makes. */
  durationS: number | undefined;

  constructor(
    private readonly client: RecordClient,
    readonly jobId: string,
    private readonly proof: string,
  ) {}

  private keep(reply: Extract<RecordReply, { ok: true }>): void {
    if (!reply.lease || reply.record_json === null) return;
    this.lease = reply.lease;
    this.leaseAttempt = (parseJson(reply.record_json) as { attempt: number }).attempt;
  }

  async get(key: string): Promise<KvReadEntry | null> {
    if (key !== jobKeys.record(this.jobId)) throw new Error(`not this job's record: ${key}`);
    const reply = await this.client.ask({ type: "record.get", v: 1, job_id: this.jobId, proof: this.proof });
    this.keep(reply);
    const text = reply.record_json;
    if (text === null) return null;
    return { operation: "PUT", revision: reply.revision, length: text.length, string: () => text };
  }

  async update(key: string, data: string, version: number): Promise<number> {
    if (key !== jobKeys.record(this.jobId)) throw new Error(`not this job's record: ${key}`);
    const reply = await this.client.ask({
      type: "record.update",
      v: 1,
      job_id: this.jobId,
      proof: this.proof,
      revision: version,
      record_json: data,
      ...(this.durationS !== undefined ? { duration_s: this.durationS } : {}),
    });
    this.keep(reply);
    return reply.revision;
  }

  /**
   * Claims `attempt` in one request; null while the record is not stored. `written` when this claim took the
   * record (it then names the attempt and agent, and the reply carried the lease). A gateway from before
   * `record.claim` (a fleet mid-upgrade) refuses it as a bad request: the claim is then `change` by read and
   * compare-and-set.
   */
  async claim(
    attempt: number,
    agentId: string,
    dispatchSeq: number,
    change: (rec: JobRecord) => JobRecord | null,
  ): Promise<{ rec: JobRecord; written: boolean; revision: number } | null> {
    const req = { v: 1, job_id: this.jobId, proof: this.proof, attempt, agent_id: agentId } as const;
    let reply: Extract<RecordReply, { ok: true }>;
    try {
      reply = await this.client.ask({ ...req, type: "record.claim", dispatch_seq: dispatchSeq });
    } catch (err) {
      if (err instanceof RecordRefusedError && err.code === ErrorCode.GW_ERR_BAD_REQUEST)
        return casJobRecord(this, this.jobId, change);
      throw err;
    }
    this.keep(reply);
    if (reply.record_json === null) return null;
    const rec = parseJson(reply.record_json) as JobRecord;
    const written =
      reply.lease !== undefined && rec.status === "running" && rec.attempt === attempt && rec.agent_id === agentId;
    return { rec, written, revision: reply.revision };
  }

  /** Asks a gateway to (re)publish the terminal update of a finished record (deduplicated by its id). */
  async terminal(): Promise<void> {
    await this.client.ask({ type: "record.terminal", v: 1, job_id: this.jobId, proof: this.proof });
  }
}
