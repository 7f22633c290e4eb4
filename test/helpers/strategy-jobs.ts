/** Graphs and job helpers of the execution-strategy tests (test/agent/strategies.test.ts, docker.test.ts). */
import type { WsClient, Msg } from "./clients.js";
import { check } from "./check.js";

/** Five tokens and where the run is (`nodeway.test.Whereabouts`, probing `probe` when given). */
export const whereGraph = (probe?: { host: string; port: number }) => ({
  nodes: [
    { id: "tok", type: "nodeway.test.Tokens", data: { count: 5, rate: 0 } },
    {
      id: "w",
      type: "nodeway.test.Whereabouts",
      data: probe ? { probe_host: probe.host, probe_port: probe.port } : {},
    },
    { id: "out", type: "nodetool.output.Output", data: { name: "where" } },
    { id: "text", type: "nodetool.output.Output", data: { name: "text" } },
  ],
  edges: [
    { id: "e1", source: "w", sourceHandle: "output", target: "out", targetHandle: "value" },
    { id: "e2", source: "tok", sourceHandle: "output", target: "text", targetHandle: "value" },
  ],
});
/** A node that holds its thread for `seconds`, ignoring cancel. */
export const spinGraph = (seconds: number) => ({
  nodes: [{ id: "spin", type: "nodeway.test.Spin", data: { seconds } }],
  edges: [],
});
/** A node that holds `mb` MiB of heap, then outputs it as `mb`. */
export const allocGraph = (mb: number) => ({
  nodes: [
    { id: "a", type: "nodeway.test.Allocate", data: { mb } },
    { id: "out", type: "nodetool.output.Output", data: { name: "mb" } },
  ],
  edges: [{ id: "e", source: "a", sourceHandle: "output", target: "out", targetHandle: "value" }],
});

const TERMINAL = ["completed", "failed", "cancelled", "timed_out"];
export const terminal = (events: Msg[]) =>
  events.find((e) => e.type === "job_update" && TERMINAL.includes(String(e.status)))!;
export const running = (events: Msg[]) => events.find((e) => e.type === "job_update" && e.status === "running");
export type Where = {
  pid: number;
  thread_id: number;
  host: string;
  uid: number;
  root_writable: boolean;
  reached: boolean | null;
  gpus: string | null;
  runner_started_at: number | null;
};
/** What the Whereabouts node of a finished job said. */
export const where = (events: Msg[]) => ((terminal(events).result as { where: Where[] }).where ?? [])[0]!;

/** Submits `graph` over /ws with `strategy` (none: the agent's default), to `pool` if given, and returns its id. */
export async function submit(ws: WsClient, graph: unknown, strategy?: string, pool?: string): Promise<string> {
  const r = await ws.request("run_job", {
    graph,
    params: {},
    ...(strategy ? { execution_strategy: strategy } : {}),
    ...(pool ? { requirements: { pool } } : {}),
  });
  return String((r.result as { job_id: string }).job_id);
}
/** Runs `graph` over /ws with `strategy` and returns the job's events through its terminal update. */
export async function runOver(
  ws: WsClient,
  graph: unknown,
  strategy?: string,
  timeoutMs = 30_000,
  pool?: string,
): Promise<{ jobId: string; events: Msg[] }> {
  const jobId = await submit(ws, graph, strategy, pool);
  await check(() => terminal(ws.events(jobId)) ?? null, timeoutMs, { name: `job ${jobId} ended` });
  return { jobId, events: ws.events(jobId) };
}
