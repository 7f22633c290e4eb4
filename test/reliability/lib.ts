/**
 * Shared harness of the reliability tests: real processes (nats-server, `nodeway gateway`, `nodeway agent`),
 * each torn down right after it starts; recording clients that feed the history checker; and per-file counts.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import type { Test } from "tap";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { api, WsClient, isTerminalMsg, parseStreamText, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { NatsServer } from "../helpers/nats-server.js";
import { startAgentProc, startGatewayProc, type AgentProc, type Proc } from "../helpers/procs.js";
import { describeProblems, type ClientLog, type History, type HistoryReport } from "../helpers/history.js";

export type T = Test;

/** A seeded PRNG (mulberry32) so a failing run can be repeated with NW_SEED. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
export const SEED = Number(process.env.NW_SEED ?? Date.now() % 1_000_000);

/** Per-file counts: a report, not a check (each test asserts its own history). */
export const stats = { jobs: 0, faults: 0, eventsChecked: 0, lost: 0 };
export function summary(t: T): void {
  t.comment(
    `jobs run ${stats.jobs}, faults injected ${stats.faults}, events checked ${stats.eventsChecked}, events lost ${stats.lost}`,
  );
}
/** Prints the per-file counts once every test of the file has ended. */
export function summaryAtEnd(t: T): void {
  t.teardown(() => summary(t));
}

/** An isolated NODEWAY_HOME so no config file of the machine leaks in. */
function home(t: T): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), "nw-home-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { NODEWAY_HOME: dir };
}

export async function startNats(t: T): Promise<NatsServer> {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  return ns;
}

async function killHard(p: Proc): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  p.proc.kill("SIGKILL");
  await p.exited;
}

export type GatewayProc = Proc & { url: string };

export async function startGateway(t: T, natsUrl: string, args: string[] = []): Promise<GatewayProc> {
  const g = await startGatewayProc(natsUrl, args, home(t));
  t.teardown(() => killHard(g));
  return g;
}

export async function startAgent(t: T, natsUrl: string, args: string[] = []): Promise<AgentProc> {
  const a = await startAgentProc(natsUrl, args, home(t));
  t.teardown(() => killHard(a));
  return a;
}

/** A NATS connection for the test itself (record reads), closed at teardown. */
export async function natsConn(t: T, url: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: url,
    name: "reliability-test",
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
  t.teardown(() => nc.close());
  return nc;
}

export function tokensWorkflow(count: number, rate: number) {
  return {
    name: `tokens ${count}@${rate}`,
    graph: {
      nodes: [
        { id: "tok", type: "nodeway.test.Tokens", data: { count, rate } },
        { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
      ],
      edges: [{ id: "e1", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
  };
}
export function sleepWorkflow(seconds: number) {
  return {
    name: `sleep ${seconds}`,
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds } }], edges: [] },
  };
}

export async function putWorkflow(url: string, id: string, wf: unknown): Promise<void> {
  const r = await api(url, "PUT", `/api/workflows/${id}`, wf);
  if (r.status !== 200) throw new Error(`PUT workflow ${id}: ${r.status} ${JSON.stringify(r.body)}`);
}

export async function getJob(url: string, jobId: string): Promise<Msg & Record<string, unknown>> {
  const r = await api(url, "GET", `/api/jobs/${jobId}`);
  if (r.status !== 200) throw new Error(`GET job ${jobId}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function waitJob(
  url: string,
  jobId: string,
  pred: (j: Msg & Record<string, unknown>) => boolean,
  timeoutMs = 20_000,
  name = "job state",
): Promise<Msg & Record<string, unknown>> {
  return check(
    async () => {
      const j = await getJob(url, jobId);
      return pred(j) ? j : null;
    },
    timeoutMs,
    { name: `${name} of ${jobId}` },
  );
}

/**
 * Checks the history, adds to the counts, asserts nothing was lost, duplicated, reordered or altered, against
 * NW_EVENTS and, for workflows declared with `History.tokens`, against what the node emitted.
 */
export async function assertHistory(t: T, h: History, natsUrl: string, what = "history"): Promise<HistoryReport> {
  const r = await h.check(natsUrl);
  stats.eventsChecked += r.eventsChecked;
  stats.lost += r.lost;
  t.ok(
    r.ok,
    `${what}: ${r.eventsChecked} events of ${r.jobs} jobs over ${r.clients} clients match NW_EVENTS${h.sources.size ? " and the tokens emitted" : ""} (none missing, duplicated, reordered or altered)`,
    r.ok ? {} : { problems: describeProblems(r.problems) },
  );
  return r;
}

/**
 * A WebSocket client whose deliveries go into a history log. `cutAfter(jobId, k)` terminates the socket abruptly
 * once k events of the job arrived; only the events received up to that moment count (what a real client saw).
 */
export class RecWs {
  private counted = 0;
  private cut: { jobId: string; k: number; resolve: () => void } | null = null;
  dead = false;
  private constructor(
    readonly c: WsClient,
    readonly log: ClientLog,
  ) {
    c.ws.on("message", () => this.onMessage());
  }

  static async open(url: string, log: ClientLog, enc: "json" | "msgpack" = "json"): Promise<RecWs> {
    return new RecWs(await WsClient.open(url, enc), log);
  }

  private onMessage(): void {
    if (this.dead) return;
    const msgs = this.c.messages;
    for (; this.counted < msgs.length; this.counted++) {
      const m = msgs[this.counted]!;
      this.log.record(m);
      if (
        this.cut &&
        m.job_id === this.cut.jobId &&
        typeof m.seq === "number" &&
        this.log.count(this.cut.jobId) >= this.cut.k
      ) {
        this.counted++;
        this.kill();
        this.cut.resolve();
        return;
      }
    }
  }

  /** Resolves once the socket was cut after k events of the job (or at once when k is 0). */
  cutAfter(jobId: string, k: number): Promise<void> {
    if (k <= 0 || this.log.count(jobId) >= k) {
      this.kill();
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.cut = { jobId, k, resolve }));
  }

  /** Drops the connection without a close handshake; nothing received afterwards counts. */
  kill(): void {
    this.dead = true;
    this.c.ws.terminate();
  }

  get closeCode(): number | null {
    return this.c.closeCode;
  }
  get open(): boolean {
    return this.c.ws.readyState === WebSocket.OPEN;
  }

  request(command: string, data: Record<string, unknown>, timeoutMs?: number): Promise<Msg> {
    return this.c.request(command, data, timeoutMs);
  }

  /** run_job; answers the job id. */
  async run(workflowId: string, extra: Record<string, unknown> = {}): Promise<string> {
    const r = await this.c.request("run_job", { workflow_id: workflowId, params: {}, ...extra });
    const id = (r.result as Msg | undefined)?.job_id;
    if (typeof id !== "string") throw new Error(`run_job failed: ${JSON.stringify(r)}`);
    return id;
  }

  /** reconnect_job from the log's last seq; answers the job_resumed header. */
  async resume(jobId: string, lastSeq = this.log.lastSeq(jobId)): Promise<Msg> {
    const before = this.c.messages.length;
    this.c.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: lastSeq } });
    return check(
      () =>
        this.c.messages.slice(before).find((m) => m.type === "job_resumed" && m.job_id === jobId) ??
        this.c.messages.slice(before).find((m) => m.type === "rpc_response" && m.error),
      10_000,
      { name: `job_resumed of ${jobId}` },
    );
  }

  /** Waits until this client (on any of its connections) has received the job's terminal event. */
  async waitTerminal(jobId: string, timeoutMs = 30_000): Promise<void> {
    await check(() => this.log.ended(jobId), timeoutMs, {
      name: `terminal event of ${jobId} (client ${this.log.name})`,
    });
  }

  /** The terminal event as received on this connection, if it was. */
  terminal(jobId: string): Msg | undefined {
    return this.c.messages.find((m) => m.job_id === jobId && typeof m.seq === "number" && isTerminalMsg(m));
  }

  messages(): Msg[] {
    return this.c.messages;
  }

  async close(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    await this.c.close();
  }
}

export interface StreamResult {
  status: number;
  events: Msg[];
  ids: string[];
  /** We aborted it after `stopAfter` events. */
  cut: boolean;
  /** The server ended the response. */
  ended: boolean;
  /** The connection broke before the end (only with `allowDrop`). */
  dropped: boolean;
}

/**
 * Reads an NDJSON or SSE response event by event, recording job events into `log`. With `stopAfter` k, aborts
 * the request once k job events arrived (a client that drops mid-stream). `onJob` sees the job id of the first
 * event (a streamed run learns its job id that way).
 */
export async function readEvents(
  url: string,
  init: {
    method?: string;
    body?: unknown;
    headers?: Record<string, string>;
    sse: boolean;
    stopAfter?: number;
    log?: ClientLog;
    timeoutMs?: number;
    allowDrop?: boolean;
    onOpen?: () => void;
  },
): Promise<StreamResult> {
  const ac = new AbortController();
  let phase = "waiting for the response headers";
  const timer = setTimeout(
    () => ac.abort(new Error(`stream ${init.method ?? "GET"} ${url} timed out ${phase}`)),
    init.timeoutMs ?? 60_000,
  );
  const res = await fetch(url, {
    method: init.method ?? "GET",
    signal: ac.signal,
    headers: {
      "content-type": "application/json",
      accept: init.sse ? "text/event-stream" : "application/x-ndjson",
      ...init.headers,
    },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
  const out: StreamResult = { status: res.status, events: [], ids: [], cut: false, ended: false, dropped: false };
  if (res.status !== 200) {
    clearTimeout(timer);
    out.events.push(JSON.parse(await res.text()) as Msg);
    return out;
  }
  init.onOpen?.();
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const sep = init.sse ? "\n\n" : "\n";
  let jobEvents = 0;
  try {
    for (;;) {
      phase = `after ${out.events.length} events (last ${JSON.stringify(out.events.at(-1)?.seq ?? null)})`;
      const { value, done } = await reader.read();
      if (done) {
        out.ended = true;
        break;
      }
      buf += dec.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf(sep)) >= 0) {
        const block = buf.slice(0, i + sep.length);
        buf = buf.slice(i + sep.length);
        const { events, ids } = parseStreamText(block, init.sse);
        out.ids.push(...ids);
        for (const ev of events) {
          out.events.push(ev);
          init.log?.record(ev);
          if (typeof ev.seq === "number") jobEvents++;
          if (init.stopAfter !== undefined && jobEvents >= init.stopAfter) {
            out.cut = true;
            ac.abort();
            return out;
          }
        }
      }
    }
  } catch (err) {
    if (out.cut) return out;
    if (init.allowDrop && !ac.signal.aborted) out.dropped = true;
    else throw err;
  } finally {
    clearTimeout(timer);
    if (!out.cut)
      try {
        reader.releaseLock();
      } catch {
        /* already released */
      }
  }
  return out;
}

/** Waits for a child to exit, with a deadline. */
export async function waitExit(p: Proc, timeoutMs = 15_000): Promise<number | string> {
  return Promise.race([
    p.exited,
    new Promise<never>((_, rej) =>
      setTimeout(() => rej(new Error(`process did not exit within ${timeoutMs} ms`)), timeoutMs),
    ),
  ]);
}

export { api, check, type Msg };
