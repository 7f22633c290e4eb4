/**
 * Fan-out client (a worker, pinned to core 1 by the parent): opens N raw WebSocket subscribers to one job,
 * then measures, over a window, the frames they all received and the server process's CPU time.
 * Sample sockets decode every frame and check token order (no gap, no duplicate); every socket is counted.
 */
import { decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";
import { cpuNs, cpuSplitNs, serve, sleep } from "../lib/procs.js";
import { RawWs } from "../lib/rawws.js";

let socks: RawWs[] = [];
let problems: string[] = [];
const SAMPLES = 10;
let rpc: ((m: Record<string, unknown>) => void) | null = null;
/** `peer-nw`: the socket on our gateway that runs the job the floor's sockets watch. */
let runner: RawWs | null = null;

function watchSample(ws: RawWs, i: number): void {
  let last = -1;
  ws.onFrame = (_op, payload) => {
    const ev = decodeMsgpack(payload) as Record<string, unknown>;
    if (i === 0 && ev.type === "rpc_response" && rpc) rpc(ev);
    if (ev.type === "error" || (ev.type === "rpc_response" && ev.error))
      problems.push(`socket ${i}: ${JSON.stringify(ev).slice(0, 300)}`);
    if (ev.type !== "chunk" || ev.content === "") return;
    const k = Number(/^tok(\d+) $/.exec(String(ev.content))?.[1] ?? NaN);
    if (last >= 0 && k !== last + 1) problems.push(`socket ${i}: token ${k} after ${last}`);
    last = k;
  };
}

async function openAll(port: number, n: number, path: string, protocol?: string): Promise<void> {
  socks = [];
  problems = [];
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(200, n - i) }, () => RawWs.open(port, path, protocol)),
    );
    socks.push(...batch);
  }
  socks.slice(0, SAMPLES).forEach(watchSample);
}

/** Live: over a probe, every socket received frames, and about as many as the others (no replay burst left). */
async function waitAllLive(timeoutMs: number, probeMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const base = socks.map((s) => s.frames);
    await sleep(probeMs);
    const per = socks.map((s, i) => s.frames - base[i]!).sort((a, b) => a - b);
    const med = per[per.length >> 1]!;
    const off = per.filter((x) => x === 0 || Math.abs(x - med) > Math.max(3, med * 0.1)).length;
    if (med > 0 && off === 0) return;
    last = `${off} of ${socks.length} sockets off the median ${med}`;
  }
  throw new Error(`sockets not all live after ${timeoutMs} ms: ${last}`);
}

serve(async (m) => {
  switch (m.op) {
    case "ours": {
      // One socket runs the job; the others follow it with reconnect_job from seq 0.
      const { port, n, graph, count, probe } = m as unknown as {
        port: number;
        n: number;
        graph: unknown;
        count: number;
        probe: number;
      };
      await openAll(port, n, "/ws", "nodeway.msgpack");
      const resp = new Promise<Record<string, unknown>>((r) => (rpc = r));
      socks[0]!.send(0x2, encodeMsgpack({ command: "run_job", request_id: "r", data: { graph, params: { count } } }));
      const r = await resp;
      rpc = null;
      const jobId = (r.result as { job_id: string }).job_id;
      const t0 = Date.now();
      for (let i = 1; i < socks.length; i += 100) {
        for (const s of socks.slice(i, i + 100))
          s.send(0x2, encodeMsgpack({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } }));
        await sleep(5);
      }
      await waitAllLive(120_000, probe);
      return { jobId, joinMs: Date.now() - t0 };
    }
    case "peer": {
      const { port, n, job, count, rate, probe } = m as unknown as {
        port: number;
        n: number;
        job: string;
        count: number;
        rate: number;
        probe: number;
      };
      await openAll(port, n, `/ws?job=${job}`);
      await sleep(200);
      socks[0]!.send(0x1, JSON.stringify({ start: { job_id: job, count, rate } }));
      await waitAllLive(60_000, probe);
      return { jobId: job };
    }
    case "peer-nw": {
      // The job runs through our gateway (one socket there runs it); the N sockets watch it on the floor server,
      // which reads the agent's events from NW_EVENTS as the gateway does.
      const { gwPort, port, n, graph, count, probe } = m as unknown as {
        gwPort: number;
        port: number;
        n: number;
        graph: unknown;
        count: number;
        probe: number;
      };
      await openAll(port, n, "/ws");
      runner = await RawWs.open(gwPort, "/ws", "nodeway.msgpack");
      const resp = new Promise<Record<string, unknown>>((r) => {
        runner!.onFrame = (_op, payload) => {
          const ev = decodeMsgpack(payload) as Record<string, unknown>;
          if (ev.type === "rpc_response") r(ev);
        };
      });
      runner.send(0x2, encodeMsgpack({ command: "run_job", request_id: "r", data: { graph, params: { count } } }));
      const r = await resp;
      runner.onFrame = () => undefined;
      const jobId = (r.result as { job_id?: string } | undefined)?.job_id;
      if (!jobId) throw new Error(`run_job on the gateway failed: ${JSON.stringify(r).slice(0, 300)}`);
      const watch = JSON.stringify({ watch: jobId });
      for (const s of socks) s.send(0x1, watch);
      await waitAllLive(60_000, probe);
      return { jobId };
    }
    case "window": {
      const { ms, pid } = m as unknown as { ms: number; pid: number };
      const f0 = socks.map((s) => s.frames);
      const c0 = cpuNs(pid);
      const s0 = cpuSplitNs(pid);
      await sleep(ms);
      const c1 = cpuNs(pid);
      const s1 = cpuSplitNs(pid);
      const f1 = socks.map((s) => s.frames);
      const per = f1.map((x, i) => x - f0[i]!);
      const frames = per.reduce((a, b) => a + b, 0);
      const sortedPer = [...per].sort((a, b) => a - b);
      const medPer = sortedPer[sortedPer.length >> 1]!;
      const closed = socks.filter((s) => s.closed).length;
      const off = per.filter((x) => Math.abs(x - medPer) > Math.max(3, medPer * 0.05)).length;
      const errs = [...problems];
      if (closed) errs.push(`${closed} sockets closed`);
      if (off) errs.push(`${off} sockets received a count far from the median ${medPer}`);
      if (medPer === 0) errs.push("no frames in the window");
      return { frames, cpuNs: c1 - c0, userNs: s1.user - s0.user, sysNs: s1.sys - s0.sys, medPer, errors: errs };
    }
    case "stop": {
      const { jobId, ours } = m as unknown as { jobId: string; ours: boolean };
      const cancel = encodeMsgpack({ command: "cancel_job", data: { job_id: jobId } });
      if (runner) runner.send(0x2, cancel);
      else if (ours) socks[0]!.send(0x2, cancel);
      else socks[0]!.send(0x1, JSON.stringify({ stop: { job_id: jobId } }));
      await sleep(300);
      for (const s of socks) s.destroy();
      runner?.destroy();
      runner = null;
      socks = [];
      return null;
    }
  }
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
