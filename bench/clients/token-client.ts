/**
 * Token-path client (a worker process, pinned by the parent): runs `jobs` streaming jobs side by side, staggered,
 * each on its own WebSocket, and measures per token `receive − emit` (emit = the event's `ts`, same host clock)
 * and per job the time from the start request to the first token. Validates every run: all tokens, in order,
 * a `completed` terminal update, no error frames, no closed sockets.
 *
 * mode "ours": the typed client (`client/`, msgpack) on our gateway's /ws, `run` with the streaming-tokens graph:
 * what a user's program sees, the client's own work included.
 * mode "floor": the floor server's /ws?job=<id>, a `{"start": …}` frame, the floor publisher emits.
 */
import WebSocket from "ws";
import { NodewayClient, type JobEvent, type WebSocketCtor } from "../../client/index.js";
import { decodeMsgpack } from "../../protocol/index.js";
import { serve } from "../lib/procs.js";

interface RunReq {
  mode: "ours" | "floor";
  url: string; // ws:// or wss:// base
  jobs: number;
  count: number;
  rate: number;
  staggerMs: number;
  graph?: unknown;
}

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function open(url: string, protocols: string[]): Promise<WebSocket> {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, protocols, { rejectUnauthorized: false, perMessageDeflate: false });
    ws.once("open", () => res(ws));
    ws.once("error", rej);
  });
}

/** `ws` that accepts the benchmark's self-signed certificate (the TLS proxy arm), without compression. */
class BenchWs extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { rejectUnauthorized: false, perMessageDeflate: false });
  }
}

type Phases = { submit: number[]; dispatch: number[]; start: number[]; deliver: number[] };
type Outcome = { lat: number[]; ttft: number[]; errors: string[]; phases: Phases };

/** One job through the typed client on its own socket: every token in order, then `completed`. */
async function oursJob(r: RunReq, i: number, out: Outcome): Promise<void> {
  const client = new NodewayClient({
    url: r.url.replace(/^ws/, "http"),
    WebSocket: BenchWs as unknown as WebSocketCtor,
  });
  await client.connect();
  await sleep(i * r.staggerMs);
  const t0 = now();
  let next = 0;
  let queuedTs = NaN;
  let runningTs = NaN;
  const onEvent = (ev: JobEvent) => {
    const t = now();
    if (ev.type === "job_update" && ev.status === "queued" && Number.isNaN(queuedTs)) queuedTs = ev.ts ?? NaN;
    if (ev.type === "job_update" && ev.status === "running") runningTs = ev.ts ?? NaN;
    if (ev.type !== "chunk" || (ev.content === "" && ev.done)) return;
    if (ev.content !== `tok${next} `) throw new Error(`token ${next} expected, got ${JSON.stringify(ev.content)}`);
    const ets = ev.ts ?? NaN;
    if (next === 0) {
      out.ttft.push(t - t0);
      if (Number.isFinite(queuedTs) && Number.isFinite(runningTs)) {
        out.phases.submit.push(queuedTs - t0);
        out.phases.dispatch.push(runningTs - queuedTs);
        out.phases.start.push(ets - runningTs);
        out.phases.deliver.push(t - ets);
      }
    }
    next++;
    out.lat.push(t - ets);
  };
  const limitMs = r.staggerMs * r.jobs + (r.count / r.rate) * 1000 + 15_000;
  try {
    const job = await client.run({ graph: r.graph, params: { count: r.count } });
    job.on((ev) => {
      try {
        onEvent(ev);
      } catch (err) {
        out.errors.push(`job ${i}: ${(err as Error).message}`);
        job.stop();
      }
    });
    const timer = setTimeout(() => job.stop(), limitMs);
    const end = await job.done.finally(() => clearTimeout(timer));
    if (end.status !== "completed") out.errors.push(`job ${i}: ended ${end.status}: ${JSON.stringify(end.error)}`);
    else if (next !== r.count) out.errors.push(`job ${i}: completed after ${next}/${r.count} tokens`);
  } catch (err) {
    out.errors.push(`job ${i}: ${(err as Error).message} after ${next}/${r.count} tokens`);
  } finally {
    client.close();
  }
}

const emptyOutcome = (): Outcome => ({
  lat: [],
  ttft: [],
  errors: [],
  phases: { submit: [], dispatch: [], start: [], deliver: [] },
});

async function run(r: RunReq): Promise<Outcome> {
  const out = emptyOutcome();
  const one = r.mode === "ours" ? oursJob : floorJob;
  await Promise.all(Array.from({ length: r.jobs }, (_, i) => one(r, i, out)));
  return out;
}

let jobSeq = 0;
/** One job on the floor server: its own socket, a `start` frame, every token in order, then `completed`. */
async function floorJob(r: RunReq, i: number, out: Outcome): Promise<void> {
  const id = `b${process.pid}x${++jobSeq}`;
  const ws = await open(`${r.url}/ws?job=${id}`, []);
  await new Promise<void>((resolve) => {
    let next = 0;
    let t0 = 0;
    let finished = false;
    const finish = (err?: string) => {
      if (finished) return;
      finished = true;
      if (err) out.errors.push(`job ${i}: ${err}`);
      clearTimeout(timer);
      ws.removeAllListeners("message");
      ws.close();
      resolve();
    };
    const limitMs = r.staggerMs * r.jobs + (r.count / r.rate) * 1000 + 15_000;
    const timer = setTimeout(() => finish(`timed out after ${next}/${r.count} tokens`), limitMs);
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      const t = now();
      const ev = (
        isBinary
          ? decodeMsgpack(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
          : JSON.parse(data.toString())
      ) as Record<string, unknown>;
      if (ev.type === "chunk") {
        if (ev.content === "" && ev.done) return;
        if (ev.content !== `tok${next} `) return finish(`token ${next} expected, got ${JSON.stringify(ev.content)}`);
        if (next === 0) out.ttft.push(t - t0);
        next++;
        out.lat.push(t - (ev.ts as number));
      } else if (ev.type === "job_update" && ev.status !== "running" && ev.status !== "queued") {
        if (ev.status !== "completed") return finish(`job ended ${String(ev.status)}`);
        finish(next === r.count ? undefined : `completed after ${next}/${r.count} tokens`);
      }
    });
    ws.on("close", () => finish(`socket closed after ${next}/${r.count} tokens`));
    void sleep(i * r.staggerMs).then(() => {
      t0 = now();
      ws.send(JSON.stringify({ start: { job_id: id, count: r.count, rate: r.rate } }));
    });
  });
}

serve(async (m) => {
  if (m.op === "run") return run(m as unknown as RunReq);
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
