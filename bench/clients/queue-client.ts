/**
 * The clients a user would pick to submit a job and hear about it, side by side (a worker process driven over
 * IPC): Nodeway with `fetch` (`POST …/run?stream=true` / `?wait=true`), Nodeway with its typed client over
 * WebSocket (`client/`: msgpack, `run_job` with a saved workflow), and BullMQ's `Queue` +
 * `QueueEvents` over ioredis. Per kind: submit → "running" (ours: the agent's `job_update running`; BullMQ: the
 * `active` event) at the client, one job at a time; and jobs/s with C jobs in flight until "completed" at the client.
 */
import { Queue, QueueEvents } from "bullmq";
import { NodewayClient } from "../../client/index.js";
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

/** Sockets a WebSocket arm spreads its jobs over (a socket follows at most 1,000 jobs, ended ones for 0.5 s). */
const WS_SOCKETS = 4;
/** The typed client (`client/`), one per socket: `run`, then the job's events until its end. */
function wsKind(t: { base: string; workflow: string }): Kind {
  const clients: NodewayClient[] = [];
  return {
    async job(onRunning, slot = 0) {
      const i = slot % WS_SOCKETS;
      const client = (clients[i] ??= new NodewayClient({ url: t.base }));
      const run = async () => {
        const job = await client.run({ workflowId: t.workflow, params: { name: "bench" } });
        let running = false;
        job.on((ev) => {
          if (!running && ev.attempt >= 1) (running = true), onRunning?.();
        });
        const end = await job.done;
        if (end.status !== "completed" || !JSON.stringify(end.outputs).includes(GREETING))
          throw new Error(`job ended ${JSON.stringify(end).slice(0, 200)}`);
      };
      await deadline(run(), "run_job");
    },
  };
}

/** A BullMQ job being followed: `onRunning` at its `active` event, `done` at its end. */
interface Watch {
  onRunning?: () => void;
  running: boolean;
  done: (err: Error | null) => void;
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
