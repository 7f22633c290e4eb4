/**
 * Token-path client (a worker process, pinned by the parent): runs `jobs` streaming jobs side by side, staggered,
 * each on its own WebSocket, and measures per token `receive − emit` (emit = the event's `ts`, same host clock)
 * and per job the time from the start request to the first token. Validates every run: all tokens, in order,
 * a `completed` terminal update, no error frames, no closed sockets.
 *
 * mode "ours": our gateway's /ws (`nodeway.msgpack`), `run_job` with the streaming-tokens graph.
 * mode "floor": the floor server's /ws?job=<id>, a `{"start": …}` frame, the floor publisher emits.
 */
import WebSocket from "ws";
import { decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";
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

let jobSeq = 0;
async function run(
  r: RunReq,
): Promise<{ lat: number[]; ttft: number[]; errors: string[]; phases: Record<string, number[]> }> {
  const lat: number[] = [];
  const ttft: number[] = [];
  const errors: string[] = [];
  /** TTFT phases per job (ours): request → queued event emitted (gateway submit), queued → running (dispatch: publish, agent pull, claim), running → first token emitted (graph start + pacing), first token emitted → received. */
  const phases: { submit: number[]; dispatch: number[]; start: number[]; deliver: number[] } = {
    submit: [],
    dispatch: [],
    start: [],
    deliver: [],
  };
  const jobs = await Promise.all(
    Array.from({ length: r.jobs }, async () => {
      const id = `b${process.pid}x${++jobSeq}`;
      const ws =
        r.mode === "ours" ? await open(`${r.url}/ws`, ["nodeway.msgpack"]) : await open(`${r.url}/ws?job=${id}`, []);
      return { id, ws };
    }),
  );
  const done = jobs.map(({ id, ws }, i) => {
    return new Promise<void>((resolve) => {
      let next = 0;
      let t0 = 0;
      let finished = false;
      const seen: string[] = [];
      let queuedTs = NaN;
      let runningTs = NaN;
      const finish = (err?: string) => {
        if (finished) return;
        finished = true;
        if (err) errors.push(`job ${i}: ${err} (last frames: ${seen.slice(-4).join(", ")})`);
        clearTimeout(timer);
        ws.removeAllListeners("message");
        ws.close();
        resolve();
      };
      const timer = setTimeout(
        () => finish(`timed out after ${next}/${r.count} tokens`),
        r.staggerMs * r.jobs + (r.count / r.rate) * 1000 + 15_000,
      );
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        const t = now();
        const ev = (
          isBinary
            ? decodeMsgpack(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
            : JSON.parse(data.toString())
        ) as Record<string, unknown>;
        if (seen.length < 64) seen.push(`${String(ev.type)}${ev.status ? ":" + String(ev.status) : ""}`);
        if (ev.type === "chunk") {
          if (ev.content === "" && ev.done) return;
          if (ev.content !== `tok${next} `) return finish(`token ${next} expected, got ${JSON.stringify(ev.content)}`);
          if (next === 0) {
            ttft.push(t - t0);
            const ets = ev.ts as number;
            if (r.mode === "ours" && Number.isFinite(queuedTs) && Number.isFinite(runningTs)) {
              phases.submit.push(queuedTs - t0);
              phases.dispatch.push(runningTs - queuedTs);
              phases.start.push(ets - runningTs);
              phases.deliver.push(t - ets);
            }
          }
          next++;
          lat.push(t - (ev.ts as number));
        } else if (ev.type === "job_update" && ev.status === "queued" && !Number.isFinite(queuedTs)) {
          queuedTs = ev.ts as number;
        } else if (ev.type === "job_update" && ev.status === "running") {
          runningTs = ev.ts as number;
        } else if (
          ev.type === "job_update" &&
          ["completed", "failed", "cancelled", "timed_out"].includes(ev.status as string)
        ) {
          if (ev.status !== "completed")
            return finish(`job ended ${String(ev.status)}: ${JSON.stringify(ev.error ?? "")}`);
          finish(next === r.count ? undefined : `completed after ${next}/${r.count} tokens`);
        } else if (ev.type === "error" || (ev.type === "rpc_response" && ev.error)) {
          finish(`error frame: ${JSON.stringify(ev)}`);
        }
      });
      ws.on("close", () => finish(`socket closed after ${next}/${r.count} tokens`));
      void sleep(i * r.staggerMs).then(() => {
        t0 = now();
        if (r.mode === "ours")
          ws.send(
            encodeMsgpack({ command: "run_job", request_id: id, data: { graph: r.graph, params: { count: r.count } } }),
          );
        else ws.send(JSON.stringify({ start: { job_id: id, count: r.count, rate: r.rate } }));
      });
    });
  });
  await Promise.all(done);
  return { lat, ttft, errors, phases };
}

serve(async (m) => {
  if (m.op === "run") return run(m as unknown as RunReq);
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
