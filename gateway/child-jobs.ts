/**
 * Child jobs: how one node of a graph runs in another pool. An agent running a graph that holds a node it cannot
 * run (its provider's key, its ComfyUI, its GPU are on another host) asks a gateway, on its records subject, to run
 * that node as a job of its own; it then waits for that job's record and feeds its outputs on along the graph.
 *
 * Only the holder of the parent's running attempt may submit, wait for or cancel its children. A child is an
 * ordinary job (record, events, attempts, timeout, cancel), keyed by parent, attempt, node and call so a repeated
 * submit finds the same child, and indexed under its parent (`c.<parent>.<child>`) so cancelling the parent
 * cancels it. docs/architecture.md says how cancel, lease loss and attempts work across the two.
 */
import {
  CHILD_WAIT_MAX_MS,
  ErrorCode,
  encodeJson,
  isTerminal,
  jobKeys,
  type JobRecord,
  type RecordReply,
  type RecordRequest,
} from "../protocol/index.js";
import type { JobManager } from "./jobs.js";
import type { EventHub } from "./event-hub.js";
import type { NatsParts } from "./nats.js";
import { GatewayError } from "./errors.js";

type ChildRequest = Extract<RecordRequest, { type: `child.${string}` }>;

/** The child's events its parent's node passes on as its own: tokens, progress, logs, previews. */
const FORWARDED: ReadonlySet<string> = new Set(["chunk", "node_progress", "log_update", "preview_update"]);
/** Events one `child.wait` answer carries at most. */
const FORWARD_MAX = 500;

/** A refusal of a child request: its code and why. */
export class ChildRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class ChildJobs {
  constructor(
    private readonly n: Pick<NatsParts, "jobRecords">,
    private readonly jobs: JobManager,
    private readonly hub: EventHub | null = null,
  ) {}

  /** Answers `req` from `principal`, whose parent record is `parent` (checked to be held by it here). */
  async handle(principal: string, req: ChildRequest, parent: JobRecord | null): Promise<RecordReply> {
    if (!parent) throw new ChildRefused(ErrorCode.GW_ERR_NOT_FOUND, `no record of job ${req.job_id}`);
    if (parent.holder !== principal) throw new ChildRefused(ErrorCode.GW_ERR_FORBIDDEN, "not your job");
    switch (req.type) {
      case "child.submit":
        return this.submit(req, parent);
      case "child.wait":
        return this.wait(req, await this.childOf(parent, req.child_id));
      case "child.cancel": {
        await this.childOf(parent, req.child_id);
        return this.reply(await this.jobs.cancel(req.child_id));
      }
    }
  }

  private async submit(req: Extract<ChildRequest, { type: "child.submit" }>, parent: JobRecord): Promise<RecordReply> {
    if (parent.status !== "running" || parent.attempt !== req.attempt)
      throw new ChildRefused(ErrorCode.GW_ERR_FORBIDDEN, `job ${parent.id}: attempt ${req.attempt} is not running`);
    try {
      const { job, created } = await this.jobs.submit({
        workflow: { id: parent.workflow_id, graph: req.graph },
        params: {},
        timeoutS: parent.timeout_s,
        idempotencyKey: `child:${parent.id}:${req.attempt}:${req.node_id}:${req.call}`,
        parent: { job_id: parent.id, attempt: req.attempt, node_id: req.node_id },
      });
      if (created) await this.n.jobRecords.put(jobKeys.child(parent.id, job.id), "");
      return this.reply(job);
    } catch (err) {
      // The node's graph refused (no agent offers the node, a bad input): the agent's node fails with this.
      if (err instanceof GatewayError) throw new ChildRefused(err.code, err.message);
      throw err;
    }
  }

  /**
   * The child's record once finished (with the last of its node's events), or as soon as its node has events past
   * `after_seq` to pass on, else after up to `wait_ms` as it is then.
   */
  private async wait(req: Extract<ChildRequest, { type: "child.wait" }>, child: JobRecord): Promise<RecordReply> {
    const deadline = Date.now() + Math.min(req.wait_ms, CHILD_WAIT_MAX_MS);
    let after = req.after_seq ?? 0;
    let rec = child;
    for (;;) {
      const read = await this.nodeEvents(rec.id, after);
      after = read.lastSeq;
      const done = isTerminal(rec.status) && (read.ended || Date.now() >= deadline);
      if (read.events.length > 0 || done || Date.now() >= deadline) {
        return { ...this.reply(rec), events: read.events, last_seq: after };
      }
      // A new event or a record change wakes the wait; a missed wake-up costs at most a second.
      await this.nextChange(rec.id, Math.min(1_000, deadline - Date.now()));
      rec = (await this.jobs.find(rec.id)) ?? rec;
    }
  }

  /** The child's events past `after` that its parent's node passes on, at most `FORWARD_MAX` of them. */
  private async nodeEvents(
    childId: string,
    after: number,
  ): Promise<{ events: Uint8Array[]; lastSeq: number; ended: boolean }> {
    if (!this.hub) return { events: [], lastSeq: after, ended: true };
    const r = await this.hub.openReplay(childId, after);
    const events: Uint8Array[] = [];
    let lastSeq = after;
    try {
      for (let b = await r.next(); b.length > 0 && events.length < FORWARD_MAX; b = await r.next()) {
        for (const d of b) {
          lastSeq = d.seq;
          if (FORWARDED.has(d.type)) events.push(d.msgpack());
          if (events.length >= FORWARD_MAX) break;
        }
      }
    } finally {
      r.close();
    }
    return { events, lastSeq, ended: r.ended && lastSeq >= r.lastSeq };
  }

  private nextChange(childId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const stop = this.hub?.listen(childId, () => done());
      const done = () => {
        stop?.();
        resolve();
      };
      void this.jobs.index.changed(childId, ms).then(done);
    });
  }

  /** The record of `childId`, when it is a child of `parent`. */
  private async childOf(parent: JobRecord, childId: string): Promise<JobRecord> {
    const child = await this.jobs.find(childId).catch(() => null);
    if (!child || child.parent?.job_id !== parent.id)
      throw new ChildRefused(ErrorCode.GW_ERR_NOT_FOUND, `job ${childId} is not a child of job ${parent.id}`);
    return child;
  }

  private reply(rec: JobRecord): Extract<RecordReply, { ok: true }> {
    return { ok: true, record_json: encodeJson(rec), revision: 0 };
  }
}
