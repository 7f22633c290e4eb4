/** Test clients that speak the gateway's protocols over real sockets. */
import WebSocket from "ws";
import { decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";
import { check } from "./check.js";

export type Msg = Record<string, unknown> & { type?: string; seq?: number; job_id?: string };

export class WsClient {
  readonly messages: Msg[] = [];
  closeCode: number | null = null;
  private constructor(
    readonly ws: WebSocket,
    readonly encoding: "msgpack" | "json",
  ) {
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      this.messages.push((isBinary ? decodeMsgpack(new Uint8Array(data)) : JSON.parse(data.toString())) as Msg);
    });
    ws.on("close", (code) => (this.closeCode = code));
    ws.on("error", () => undefined);
  }

  static async open(
    baseUrl: string,
    encoding: "msgpack" | "json" = "json",
    opts: { protocol?: boolean; wsOptions?: WebSocket.ClientOptions } = {},
  ): Promise<WsClient> {
    const url = baseUrl.replace(/^http/, "ws") + "/ws";
    const useProto = opts.protocol ?? true;
    const ws = new WebSocket(
      url,
      useProto ? [encoding === "msgpack" ? "nodeway.msgpack" : "nodeway.json"] : [],
      opts.wsOptions,
    );
    const c = new WsClient(ws, encoding);
    await new Promise<void>((res, rej) => {
      ws.once("open", () => res());
      ws.once("error", rej);
    });
    return c;
  }

  send(frame: unknown): void {
    if (this.encoding === "msgpack") this.ws.send(encodeMsgpack(frame));
    else this.ws.send(JSON.stringify(frame));
  }

  sendRaw(data: string | Buffer): void {
    this.ws.send(data);
  }

  /** Sends a command and waits for its `rpc_response` (matched by request_id). */
  async request(command: string, data: Record<string, unknown>, timeoutMs = 10_000): Promise<Msg> {
    const request_id = Math.random().toString(36).slice(2);
    this.send({ command, data, request_id });
    return check(() => this.messages.find((m) => m.type === "rpc_response" && m.request_id === request_id), timeoutMs, {
      name: `${command} response`,
    });
  }

  events(jobId: string): Msg[] {
    return this.messages.filter((m) => m.job_id === jobId && typeof m.seq === "number");
  }

  async waitTerminal(jobId: string, timeoutMs = 20_000): Promise<Msg> {
    return check(() => this.events(jobId).find(isTerminalMsg), timeoutMs, { name: `terminal event of ${jobId}` });
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((r) => {
      this.ws.once("close", () => r());
      this.ws.close();
    });
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export function isTerminalMsg(m: Msg): boolean {
  return m.type === "job_update" && ["completed", "failed", "cancelled", "timed_out"].includes(String(m.status));
}

/** POSTs and reads an NDJSON or SSE response to its end. */
export async function readStream(
  url: string,
  init: RequestInit & { sse?: boolean } = {},
): Promise<{ status: number; events: Msg[]; ids: string[] }> {
  const res = await fetch(url, {
    ...init,
    headers: {
      "content-type": "application/json",
      accept: init.sse ? "text/event-stream" : "application/x-ndjson",
      ...(init.headers as Record<string, string>),
    },
  });
  const text = await res.text();
  if (res.status !== 200) return { status: res.status, events: [JSON.parse(text) as Msg], ids: [] };
  return { status: res.status, ...parseStreamText(text, init.sse ?? false) };
}

export function parseStreamText(text: string, sse: boolean): { events: Msg[]; ids: string[] } {
  const events: Msg[] = [];
  const ids: string[] = [];
  if (!sse) {
    for (const line of text.split("\n")) if (line.trim()) events.push(JSON.parse(line) as Msg);
    return { events, ids };
  }
  for (const block of text.split("\n\n")) {
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("id: ")) ids.push(line.slice(4));
      if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (data) events.push(JSON.parse(data) as Msg);
  }
  return { events, ids };
}

export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Msg & Record<string, unknown> }> {
  const res = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Msg;
  try {
    parsed = JSON.parse(text) as Msg;
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed };
}

/** A saved workflow of one `nodeway.test.Tokens` node (`count` tokens at `rate` a second) into an Output. */
export const tokensWorkflow = (count: number, rate: number) => ({
  graph: {
    nodes: [
      { id: "tok", type: "nodeway.test.Tokens", data: { count, rate } },
      { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [{ id: "e1", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
  },
});

/** Every sample of the gateway's /metrics, by its full name (labels included). */
export async function metrics(base: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const l of text.split("\n")) {
    if (l.startsWith("#") || l === "") continue;
    const i = l.lastIndexOf(" ");
    out[l.slice(0, i)] = Number(l.slice(i + 1));
  }
  return out;
}

/**
 * Saves a Tokens workflow as `slow`, runs it from a msgpack socket and waits for its first `minEvents` events.
 * The caller closes the socket (`t.teardown`).
 */
export async function runTokensJob(
  base: string,
  count: number,
  rate: number,
  minEvents: number,
): Promise<{ runner: WsClient; jobId: string }> {
  await api(base, "PUT", "/api/workflows/slow", tokensWorkflow(count, rate));
  const runner = await WsClient.open(base, "msgpack");
  const jobId = String(
    ((await runner.request("run_job", { workflow_id: "slow" })).result as { job_id: string }).job_id,
  );
  await check(async () => (runner.events(jobId).length >= minEvents ? true : null), 10_000);
  return { runner, jobId };
}

/** Largest number of runs whose [started_at, finished_at) intervals overlap at one instant. */
export function mostAtOnce(recs: Record<string, unknown>[]): number {
  const edges = recs.flatMap((r) => [
    { at: Date.parse(String(r.started_at)), d: 1 },
    { at: Date.parse(String(r.finished_at)), d: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let most = 0;
  for (const e of edges) most = Math.max(most, (now += e.d));
  return most;
}
