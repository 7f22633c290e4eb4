/**
 * Running a saved workflow (`POST /api/workflows/:id/run`): answered 202 at once, or with the job's events as a
 * stream (`?stream=true`), or with its outcome once it ends (`?wait=true`). `DELETE` on the same path cancels.
 */
import type { HttpResponse } from "uWebSockets.js";
import { assertNever, isTerminal, type JobRecord } from "../../protocol/index.js";
import { badRequest, notFound } from "../errors.js";
import type { Delivery } from "../event-hub.js";
import { follow, type Following } from "../follow.js";
import { ID_GRAMMAR, type Reply, type Req } from "../http.js";
import { parseRunRequest } from "../run-request.js";
import { flagParam, readJson, type RouteContext } from "./context.js";
import { streamJob } from "./streams.js";

/** How the caller of a run watches its job. */
type RunMode = "accept" | "stream" | "wait";

/** The answer to a cancel, by HTTP and WebSocket alike. */
export function cancelResponse(rec: JobRecord): { job_id: string; status: string; message: string } {
  const message = isTerminal(rec.status) ? `job is ${rec.status}` : "Job cancellation requested";
  return { job_id: rec.id, status: rec.status, message };
}

/** The follow a run's caller holds on its job, started before the job's first event exists. */
class RunWatch {
  following: Promise<Following> | null = null;
  private openStream: (() => void) | null = null;
  private resolveEnd: (d: Delivery) => void = () => undefined;
  /** The job's terminal event (`wait` only). */
  readonly ended = new Promise<Delivery>((r) => (this.resolveEnd = r));

  constructor(
    private readonly ctx: RouteContext,
    private readonly reply: Reply,
    private readonly req: Req,
    readonly mode: RunMode,
  ) {}

  /** Follows `jobId` from its first event; `replay` when some may exist already (an idempotent retry). */
  start(jobId: string, replay: boolean): void {
    switch (this.mode) {
      case "stream": {
        const opened = replay ? {} : { opened: (open: () => void) => (this.openStream = open) };
        this.following = streamJob(this.ctx, this.reply, this.req, jobId, 0, { replay, ...opened });
        return;
      }
      case "wait":
        this.following = follow(this.ctx.hub, jobId, 0, { send: (d) => d.terminal && this.resolveEnd(d) }, { replay });
        return;
      case "accept":
        return;
      default:
        assertNever(this.mode, "run mode");
    }
  }

  /** The submit succeeded: a stream's response may start. */
  open(): void {
    this.openStream?.();
  }

  stop(): void {
    void this.following?.then((f) => f.stop());
  }
}

export function registerRunRoutes(ctx: RouteContext): void {
  const { router, jobs, workflows } = ctx;

  async function runWorkflow(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const b = await readJson(res, reply, ctx.config.maxBodyBytes);
    const wf = await workflows.get(req.params[0]!);
    const mode: RunMode = flagParam(req.query, "stream") ? "stream" : flagParam(req.query, "wait") ? "wait" : "accept";
    const spec = parseRunRequest(b);
    const idem = req.headers["idempotency-key"];
    const watch = new RunWatch(ctx, reply, req, mode);
    let submit: Awaited<ReturnType<typeof jobs.submit>>;
    try {
      submit = await jobs.submit({
        workflow: wf,
        ...spec,
        ...(idem ? { idempotencyKey: idem } : {}),
        // Registered before the first event exists, so nothing needs replaying.
        beforePublish: (jobId) => watch.start(jobId, false),
      });
    } catch (err) {
      // Nothing was sent yet: stop listening for a job that may not exist and answer with the error.
      watch.stop();
      throw err;
    }
    watch.open();
    const job = submit.job;
    // An idempotent retry: the job exists; answer as the first request would have, from the stream.
    if (!submit.created) watch.start(job.id, true);
    switch (mode) {
      case "stream":
        await watch.following;
        return;
      case "wait":
        return answerWhenEnded(reply, job, watch);
      case "accept":
        reply.json(202, { job_id: job.id, workflow_id: job.workflow_id, status: job.status });
        return;
      default:
        assertNever(mode, "run mode");
    }
  }

  async function cancelRun(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const b = await readJson(res, reply, ctx.config.maxBodyBytes).catch(() => ({}) as Record<string, unknown>);
    const jobId = req.query.get("job_id") ?? (typeof b.job_id === "string" ? b.job_id : null);
    if (!jobId) throw badRequest('give the job to cancel as "job_id" in the body or query');
    if (!ID_GRAMMAR.test(jobId)) throw badRequest('"job_id" is no job id (letters, digits, "_", "=" and "-")');
    const rec = await jobs.get(jobId);
    if (rec.workflow_id !== req.params[0]) throw notFound(`job "${jobId}" of workflow "${req.params[0]}"`);
    reply.json(200, cancelResponse(await jobs.cancel(jobId)));
  }

  router.route("post", "/api/workflows/:id/run", runWorkflow);
  router.route("del", "/api/workflows/:id/run", cancelRun);
}

/** `?wait=true`: the job's outcome once it ends. A client that leaves ends the wait and its follow. */
async function answerWhenEnded(reply: Reply, job: JobRecord, watch: RunWatch): Promise<void> {
  const gone = new Promise<null>((r) => reply.onAbort(() => r(null)));
  const d = await Promise.race([watch.ended, gone]);
  if (d === null) {
    watch.stop();
    return;
  }
  const ev = d.ev as { status: string; result?: unknown; error?: unknown };
  const outcome = { status: ev.status, outputs: ev.result ?? {}, error: ev.error ?? null };
  reply.json(200, { job_id: job.id, workflow_id: job.workflow_id, ...outcome });
}
