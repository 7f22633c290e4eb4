/**
 * The clients a user would pick to submit a job and hear about it, side by side (a worker process driven over
 * IPC): Nodeway with `fetch` (`POST …/run?stream=true` / `?wait=true`), Nodeway over one WebSocket
 * (`nodeway.msgpack`, `run_job` with a saved workflow, jobs told apart by `job_id`), and BullMQ's `Queue` +
 * `QueueEvents` over ioredis. Per kind: submit → "running" (ours: the agent's `job_update running`; BullMQ: the
 * `active` event) at the client, one job at a time; and jobs/s with C jobs in flight until "completed" at the client.
 */
import { Queue, QueueEvents } from "bullmq";
import WebSocket from "ws";
import { decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";
import { serve } from "../lib/procs.js";

type Target =
  | { mode: "fetch"; base: string; workflow: string }
  | { mode: "ws"; base: string; workflow: string }
  | { mode: "bullmq"; port: number; queue: string };

/** One job: `onRunning` when it starts, resolves when it completed (rejects when it did not). */
interface Kind {
  job(onRunning?: () => void, slot?: number): Promise<void>;
}

const now = () => performance.now();
const GREETING = "Hello, bench!";
const JOB_TIMEOUT_MS = 15_000;

function deadline<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  const late = new Promise<never>((_, rej) => {
    t = setTimeout(() => rej(new Error(`${what}: no answer within ${JOB_TIMEOUT_MS} ms`)), JOB_TIMEOUT_MS);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}

/** `fetch`: `?stream=true` when the running event is wanted (NDJSON lines), else `?wait=true`. */
function fetchKind(t: { base: string; workflow: string }): Kind {
  const body = JSON.stringify({ params: { name: "bench" } });
  const headers = { "content-type": "application/json" };
  return {
    async job(onRunning) {
      const stream = onRunning !== undefined;
      const url = `${t.base}/api/workflows/${t.workflow}/run?${stream ? "stream=true" : "wait=true"}`;
      const r = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(JOB_TIMEOUT_MS) });
      if (r.status !== 200) throw new Error(`status ${r.status}: ${(await r.text()).slice(0, 200)}`);
      if (!stream) {
        const b = (await r.json()) as { status?: string; outputs?: unknown };
        if (b.status !== "completed" || !JSON.stringify(b.outputs).includes(GREETING))
          throw new Error(`job ended ${JSON.stringify(b).slice(0, 200)}`);
        return;
      }
      await readNdjson(r, onRunning!);
    },
  };
}

/** Reads a `?stream=true` answer: `onRunning` at the first event of an attempt, checks the completed greeting. */
async function readNdjson(r: Response, onRunning: () => void): Promise<void> {
  const dec = new TextDecoder();
  let text = "";
  let from = 0;
  let running = false;
  let last: Record<string, unknown> = {};
  for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
    text += dec.decode(chunk, { stream: true });
    for (let nl = text.indexOf("\n", from); nl >= 0; nl = text.indexOf("\n", from)) {
      const line = text.slice(from, nl);
      from = nl + 1;
      if (!line) continue;
      last = JSON.parse(line) as Record<string, unknown>;
      if (!running && ((last.attempt as number | undefined) ?? 0) >= 1) (running = true), onRunning();
    }
  }
  if (last.status !== "completed" || !JSON.stringify(last.result ?? "").includes(GREETING))
    throw new Error(`job ended ${JSON.stringify(last).slice(0, 200)}`);
}

/** Our events of one job as the WebSocket client follows it. */
interface Watch {
  onRunning?: () => void;
  running: boolean;
  done: (err: Error | null) => void;
}

/** One `nodeway.msgpack` socket, many jobs on it: replies matched by `request_id`, events by `job_id`. */
class WsConn {
  private readonly byRequest = new Map<string, Watch>();
  private readonly byJob = new Map<string, Watch>();
  /** Events of a job that came before the reply that named it (the socket joins the job before publishing). */
  private readonly early = new Map<string, Record<string, unknown>[]>();
  private seq = 0;
  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data: Buffer) => this.onFrame(decodeMsgpack(data) as Record<string, unknown>));
    ws.on("close", () => this.failAll(new Error("socket closed")));
  }

  static open(base: string): Promise<WsConn> {
    return new Promise((res, rej) => {
      const ws = new WebSocket(`${base.replace(/^http/, "ws")}/ws`, ["nodeway.msgpack"], { perMessageDeflate: false });
      ws.once("open", () => res(new WsConn(ws)));
      ws.once("error", rej);
    });
  }

  run(workflow: string, onRunning?: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const request_id = `q${++this.seq}`;
      const done = (err: Error | null) => (err ? reject(err) : resolve());
      this.byRequest.set(request_id, { onRunning, running: false, done });
      const data = { workflow_id: workflow, params: { name: "bench" } };
      this.ws.send(encodeMsgpack({ command: "run_job", request_id, data }));
    });
  }

  private onFrame(ev: Record<string, unknown>): void {
    if (ev.type === "rpc_response") return this.onReply(ev);
    if (ev.type === "error") return this.failAll(new Error(`error frame ${JSON.stringify(ev).slice(0, 200)}`));
    const jobId = ev.job_id as string | undefined;
    if (jobId === undefined || ev.type !== "job_update") return;
    const w = this.byJob.get(jobId);
    if (w) this.onUpdate(jobId, w, ev);
    else this.early.set(jobId, [...(this.early.get(jobId) ?? []), ev]);
  }

  private onReply(ev: Record<string, unknown>): void {
    const w = this.byRequest.get(ev.request_id as string);
    if (!w) return;
    this.byRequest.delete(ev.request_id as string);
    const jobId = (ev.result as { job_id?: string } | undefined)?.job_id;
    if (ev.error || !jobId) return w.done(new Error(`run_job answered ${JSON.stringify(ev).slice(0, 200)}`));
    this.byJob.set(jobId, w);
    for (const e of this.early.get(jobId) ?? []) this.onUpdate(jobId, w, e);
    this.early.delete(jobId);
  }

  private onUpdate(jobId: string, w: Watch, ev: Record<string, unknown>): void {
    if (!w.running && ((ev.attempt as number | undefined) ?? 0) >= 1) (w.running = true), w.onRunning?.();
    if (!["completed", "failed", "cancelled", "timed_out"].includes(ev.status as string)) return;
    this.byJob.delete(jobId);
    const ok = ev.status === "completed" && JSON.stringify(ev.result ?? "").includes(GREETING);
    w.done(ok ? null : new Error(`job ended ${JSON.stringify(ev).slice(0, 200)}`));
  }

  private failAll(err: Error): void {
    for (const w of [...this.byRequest.values(), ...this.byJob.values()]) w.done(err);
    this.byRequest.clear();
    this.byJob.clear();
  }
}

/** Sockets a WebSocket arm spreads its jobs over (a socket follows at most 1,000 jobs, ended ones for 0.5 s). */
const WS_SOCKETS = 4;
function wsKind(t: { base: string; workflow: string }): Kind {
  const conns: Promise<WsConn>[] = [];
  return {
    async job(onRunning, slot = 0) {
      const i = slot % WS_SOCKETS;
      conns[i] ??= WsConn.open(t.base);
      await deadline((await conns[i]).run(t.workflow, onRunning), "run_job");
    },
  };
}

/** BullMQ: `Queue.add`, then `QueueEvents`' `active` and `completed` for that job id (errors on `failed`). */
function bullmqKind(t: { port: number; queue: string }): Kind {
  const connection = { host: "127.0.0.1", port: t.port };
  // A stream of 100k events (BullMQ's default keeps 10k): at 2,000 jobs/s × ~5 events a reader a second behind
  // would find the events of its jobs trimmed away.
  const queue = new Queue(t.queue, { connection, streams: { events: { maxLen: 100_000 } } });
  const events = new QueueEvents(t.queue, { connection });
  const watching = new Map<string, Watch>();
  events.on("active", ({ jobId }) => {
    const w = watching.get(jobId);
    if (w && !w.running) (w.running = true), w.onRunning?.();
  });
  events.on("completed", ({ jobId, returnvalue }) => {
    const w = watching.get(jobId);
    if (!w) return;
    watching.delete(jobId);
    const ok = JSON.stringify(returnvalue).includes(GREETING);
    w.done(ok ? null : new Error(`job returned ${JSON.stringify(returnvalue).slice(0, 200)}`));
  });
  events.on("failed", ({ jobId, failedReason }) => watching.get(jobId)?.done(new Error(`failed: ${failedReason}`)));
  // `QueueEvents` reads from the stream's end as of its first XREAD, which may come after `waitUntilReady`: one
  // job run to its end first, so that no measured job's `active` falls before the reader started.
  const prime = async () => {
    const job = await queue.add("greet", { name: "bench" }, { removeOnComplete: 10_000 });
    await job.waitUntilFinished(events, JOB_TIMEOUT_MS);
  };
  const ready = Promise.all([queue.waitUntilReady(), events.waitUntilReady()]).then(prime);
  let seq = 0;
  return {
    async job(onRunning) {
      await ready;
      const jobId = `b${process.pid}x${++seq}`;
      const finished = new Promise<void>((resolve, reject) => {
        const done = (err: Error | null) => (err ? reject(err) : resolve());
        watching.set(jobId, { onRunning, running: false, done });
      });
      finished.catch(() => undefined); // a failure while `add` is still awaited is read below, not unhandled
      // Completed jobs are kept, as our records are, up to a bound (BullMQ's own advice for queues that run on).
      await queue.add("greet", { name: "bench" }, { jobId, removeOnComplete: 10_000 });
      await deadline(finished, `bullmq job ${jobId}`).finally(() => watching.delete(jobId));
    },
  };
}

const kinds = new Map<string, Kind>();
function kindOf(t: Target): Kind {
  const key = JSON.stringify(t);
  let k = kinds.get(key);
  if (!k) {
    k = t.mode === "fetch" ? fetchKind(t) : t.mode === "ws" ? wsKind(t) : bullmqKind(t);
    kinds.set(key, k);
  }
  return k;
}

/** Submit → running, one job at a time. */
async function latency(k: Kind, n: number) {
  const first: number[] = [];
  const errors: string[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    let at = NaN;
    try {
      await k.job(() => (at = now() - t0));
      if (Number.isNaN(at)) throw new Error("completed without a running event");
      first.push(at);
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  return { first, errors: errors.slice(0, 5), errorCount: errors.length };
}

/** Jobs/s with `concurrency` jobs in flight for `durationMs`, each counted when completed at the client. */
async function throughput(k: Kind, concurrency: number, durationMs: number) {
  let done = 0;
  const errors: string[] = [];
  const t0 = now();
  const end = t0 + durationMs;
  const loop = async (slot: number) => {
    while (now() < end) {
      try {
        await k.job(undefined, slot);
        done++;
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => loop(i)));
  return { jobsPerS: done / ((now() - t0) / 1000), done, errors: errors.slice(0, 5), errorCount: errors.length };
}

serve(async (m) => {
  const k = kindOf(m.target as Target);
  if (m.op === "latency") return latency(k, m.n as number);
  if (m.op === "throughput") return throughput(k, m.concurrency as number, m.durationMs as number);
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
