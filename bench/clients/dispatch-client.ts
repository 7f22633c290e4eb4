/**
 * Dispatch client (a worker): POSTs runs over keep-alive HTTP and measures the time from the request to the
 * first event from the runner (ours: the agent's `job_update running` in the NDJSON stream; floor: the NATS
 * reply line), one job at a time; and sustained jobs/s of short jobs with C requests in flight
 * (ours: `?wait=true` answers when the job completed; floor: the request/reply round trip).
 */
import { Agent, request } from "node:http";
import { serve } from "../lib/procs.js";

const agent = new Agent({ keepAlive: true, maxSockets: 256 });
const now = () => performance.now();

interface Target {
  mode: "ours" | "floor";
  base: string;
  workflow?: string;
}

/** POSTs and calls `onLine` for each NDJSON line as it arrives; resolves with status and full text. */
function post(url: string, body: string, onLine?: (line: string) => void): Promise<{ status: number; text: string }> {
  return new Promise((res, rej) => {
    const req = request(
      url,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (r) => {
        let text = "";
        let from = 0;
        r.setEncoding("utf8");
        r.on("data", (d: string) => {
          text += d;
          if (!onLine) return;
          let nl: number;
          while ((nl = text.indexOf("\n", from)) >= 0) {
            onLine(text.slice(from, nl));
            from = nl + 1;
          }
        });
        r.on("end", () => res({ status: r.statusCode ?? 0, text }));
        r.on("error", rej);
      },
    );
    req.on("error", rej);
    // A job that never ends must show up as an error, not hang the benchmark.
    req.setTimeout(15_000, () => req.destroy(new Error(`no complete answer within 15 s (${url})`)));
    req.end(body);
  });
}

let seq = 0;
let lastJob = "";
async function one(t: Target, stream: boolean): Promise<{ firstMs: number; error: string | null }> {
  try {
    return await oneInner(t, stream);
  } catch (err) {
    return { firstMs: NaN, error: `${(err as Error).message}${stream && lastJob ? ` (job ${lastJob})` : ""}` };
  }
}

async function oneInner(t: Target, stream: boolean): Promise<{ firstMs: number; error: string | null }> {
  const t0 = now();
  let first = NaN;
  if (t.mode === "floor") {
    const r = await post(`${t.base}/run`, JSON.stringify({ job_id: `d${++seq}` }), () => {
      if (Number.isNaN(first)) first = now() - t0;
    });
    const ev = JSON.parse(r.text) as { status?: string };
    return {
      firstMs: first,
      error: r.status === 200 && ev.status === "running" ? null : `floor answered ${r.status} ${r.text.slice(0, 200)}`,
    };
  }
  const url = `${t.base}/api/workflows/${t.workflow}/run?${stream ? "stream=true" : "wait=true"}`;
  const r = await post(
    url,
    JSON.stringify({ params: { name: "bench" } }),
    stream
      ? (line) => {
          if (!line) return;
          if (!Number.isNaN(first)) return;
          const ev = JSON.parse(line) as { attempt?: number; job_id?: string };
          if (ev.job_id) lastJob = ev.job_id;
          if ((ev.attempt ?? 0) >= 1) first = now() - t0;
        }
      : undefined,
  );
  if (r.status !== 200) return { firstMs: NaN, error: `status ${r.status}: ${r.text.slice(0, 200)}` };
  if (stream) {
    const lines = r.text
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const last = lines[lines.length - 1]!;
    const ok =
      last.type === "job_update" &&
      last.status === "completed" &&
      JSON.stringify(last.result ?? "").includes("Hello, bench!");
    return { firstMs: first, error: ok ? null : `job ended ${JSON.stringify(last).slice(0, 200)}` };
  }
  const b = JSON.parse(r.text) as { status?: string; outputs?: unknown };
  return {
    firstMs: NaN,
    error:
      b.status === "completed" && JSON.stringify(b.outputs).includes("Hello, bench!")
        ? null
        : `job ended ${r.text.slice(0, 200)}`,
  };
}

serve(async (m) => {
  const t = m as unknown as Target & { n: number; concurrency: number; durationMs: number };
  if (m.op === "latency") {
    const first: number[] = [];
    const errors: string[] = [];
    for (let i = 0; i < t.n; i++) {
      const r = await one(t, true);
      if (r.error) errors.push(r.error);
      else first.push(r.firstMs);
    }
    return { first, errors: errors.slice(0, 5), errorCount: errors.length };
  }
  if (m.op === "throughput") {
    let done = 0;
    const errors: string[] = [];
    const t0 = now();
    const end = t0 + t.durationMs;
    await Promise.all(
      Array.from({ length: t.concurrency }, async () => {
        while (now() < end) {
          const r = await one(t, false);
          if (r.error) errors.push(r.error);
          else done++;
        }
      }),
    );
    return { jobsPerS: done / ((now() - t0) / 1000), done, errors: errors.slice(0, 5), errorCount: errors.length };
  }
  throw new Error(`unknown op ${m.op}`);
});
process.stdout.write("client ready\n");
