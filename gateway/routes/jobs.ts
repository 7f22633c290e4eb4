/** Jobs: listing, one job's record, cancelling, and its events (`/api/jobs/:id/events`, resumable by seq). */
import { encodeJson, isTerminal, JobState, type JobRecord } from "../../protocol/index.js";
import { badRequest } from "../errors.js";
import type { Delivery, ReplayHeader } from "../event-hub.js";
import { follow } from "../follow.js";
import type { Reply, Req } from "../http.js";
import { limitParam, type RouteContext } from "./context.js";
import { cancelResponse } from "./runs.js";
import { eventText, startEventStream, wantsSse } from "./streams.js";

/** `?after=` or `Last-Event-ID`: the seq a stream resumes after (0 from the start). */
function resumeSeq(req: Req): number {
  const afterRaw = req.query.get("after") ?? req.headers["last-event-id"] ?? "0";
  // Decimal digits only: `Number` would take 1e308, 0x10 and spaces; past 2^53 a seq is not exact.
  const after = /^\d{1,16}$/.test(afterRaw) ? Number(afterRaw) : Number.NaN;
  if (!Number.isSafeInteger(after)) {
    throw badRequest(`"after" must be a non-negative integer seq, got "${afterRaw}"`);
  }
  return after;
}

/**
 * A resume older than retention: says so with the job's state, and for a job that is over, its final update
 * and the end of the stream.
 */
function writeLostHistory(reply: Reply, rec: JobRecord, r: ReplayHeader, sse: boolean): void {
  const ids = { job_id: rec.id, workflow_id: rec.workflow_id };
  const line = JSON.stringify({
    type: "job_resumed",
    ...ids,
    status: rec.status,
    last_seq: r.lastSeq,
    replay_count: 0,
    replay_incomplete: true,
  });
  reply.write(sse ? `event: job_resumed\ndata: ${line}\n\n` : line + "\n");
  if (!isTerminal(rec.status)) return;
  const upd = encodeJson({
    type: "job_update",
    ...ids,
    attempt: rec.attempt,
    status: rec.status,
    error: rec.error,
    result: rec.outputs,
  });
  reply.write(sse ? `event: job_update\ndata: ${upd}\n\n` : upd + "\n");
  reply.end();
}

export function registerJobRoutes(ctx: RouteContext): void {
  const { router, jobs } = ctx;

  async function listJobs(req: Req, reply: Reply): Promise<void> {
    const status = req.query.get("status") || undefined;
    const states: string[] = Object.values(JobState);
    if (status !== undefined && !states.includes(status))
      throw badRequest(`"status" must be one of ${states.join(", ")}`);
    const result = await jobs.list({
      ...(req.query.get("workflow_id") ? { workflowId: req.query.get("workflow_id")! } : {}),
      ...(status ? { status } : {}),
      limit: limitParam(req.query),
      ...(req.query.get("cursor") ? { cursor: req.query.get("cursor")! } : {}),
    });
    reply.json(200, result);
  }

  async function getJob(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await jobs.get(req.params[0]!));
  }

  async function cancelJob(req: Req, reply: Reply): Promise<void> {
    reply.json(200, cancelResponse(await jobs.cancel(req.params[0]!)));
  }

  async function jobEvents(req: Req, reply: Reply): Promise<void> {
    const jobId = req.params[0]!;
    const after = resumeSeq(req);
    const rec = await jobs.get(jobId);
    await ctx.hub.checkAfter(after);
    const sse = wantsSse(req);
    startEventStream(ctx, reply, sse);
    const sink = {
      header(r: ReplayHeader | null) {
        if (r?.incomplete && r.count === 0) writeLostHistory(reply, rec, r, sse);
      },
      send(d: Delivery) {
        ctx.metrics.eventsOutHttp++;
        reply.write(eventText(d, sse));
      },
      end: () => reply.end(),
    };
    const f = await follow(ctx.hub, jobId, after, sink, { replay: true });
    reply.onAbort(() => f.stop());
  }

  router.collection("get", "/api/jobs", listJobs);
  router.route("get", "/api/jobs/:id", getJob);
  router.route("post", "/api/jobs/:id/cancel", cancelJob);
  router.route("get", "/api/jobs/:id/events", jobEvents);
}
