/**
 * The console's one door to the gateway: `client/`'s NodewayClient (one `/ws`, resumed by seq across reconnects,
 * and the REST API), rebuilt when the token changes, plus the few calls the client does not offer yet (marked).
 * The token lives in the tab's sessionStorage only, never in a URL.
 */
import { NodewayClient, type NodewayError } from "../../client/index";

export type Json = Record<string, unknown>;

/** A message from `/ws`: a job event (with `seq`), `job_resumed`, `rpc_response`, a chat `message`, … */
export interface WsMessage {
  type: string;
  job_id?: string;
  seq?: number;
  request_id?: string;
  [k: string]: unknown;
}

export interface Workflow {
  id: string;
  name: string;
  description?: string;
  graph: { nodes: GraphNode[]; edges: GraphEdge[] };
  updated_at?: string;
}
export interface GraphNode {
  id: string;
  type: string;
  data?: Json;
  ui_properties?: Json;
}
export interface GraphEdge {
  id?: string;
  source: string;
  sourceHandle: string;
  target: string;
  targetHandle: string;
}
export interface JobRecord {
  id: string;
  workflow_id: string;
  status: string;
  pool: string;
  attempt: number;
  agent_id: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: { code: string; message: string } | null;
}
export interface Agent {
  id: string;
  name: string;
  version: string;
  state: string;
  pools: string[];
  running_jobs: string[];
  heartbeat_at: string;
  started_at: string;
  capabilities: {
    gpus: { index: number; name: string; memory_total_mb: number }[];
    providers: string[];
    strategies: string[];
    max_jobs: number;
    comfyui?: { url: string; reachable: boolean; version: string | null };
  };
}
export interface Thread {
  id: string;
  title: string;
  updated_at: string;
}
export interface ThreadMessage {
  id: string;
  role: "user" | "assistant";
  content: string;
  model?: string;
  job_id?: string;
  error?: { message: string };
}

const TOKEN_KEY = "nodeway.token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Unauthorized = () => void;
let onUnauthorized: Unauthorized = () => undefined;
let current: NodewayClient | null = null;

/** The client for this tab's token (made on first use, remade on sign-in and sign-out). */
function client(): NodewayClient {
  if (!current) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    current = new NodewayClient({ url: location.origin, format: "json", ...(token ? { token } : {}) });
    live.attach(current);
  }
  return current;
}

function replaceClient(): void {
  current?.close();
  current = null;
  client();
}

export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  signIn(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
    replaceClient();
  },
  signOut(): void {
    sessionStorage.removeItem(TOKEN_KEY);
    replaceClient();
  },
  /** Called when the gateway refuses the token (or wants one). */
  onUnauthorized(fn: Unauthorized): void {
    onUnauthorized = fn;
  },
};

/** A client call whose 401 sends the tab to the sign-in. */
async function call<T>(fn: (c: NodewayClient) => Promise<T>): Promise<T> {
  try {
    return await fn(client());
  } catch (err) {
    const e = err as NodewayError;
    if (e.status === 401) onUnauthorized();
    throw new ApiError(e.status ?? 0, e.code ?? "error", e.message);
  }
}

/** Not in the client yet: a GET with the token, for `/v1/models`, the auth probe and asset bytes. */
function authorizedFetch(path: string): Promise<Response> {
  const t = session.token();
  return fetch(path, t ? { headers: { authorization: `Bearer ${t}` } } : {});
}

/** Direction controls (RLO, LRI, …): drawn as they are, "\u202egnp.exe" reads as "exe.png". */
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `name` with its direction controls shown as `\u202e` escapes: a name reads as the characters it holds. */
export function visibleName(name: string): string {
  return name.replace(BIDI_CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A workflow as the pages draw it: its name (the one text in lists and headings) with direction controls shown. */
const shownWorkflow = (w: Workflow): Workflow => ({ ...w, name: visibleName(String(w.name ?? "")) });

export const rest = {
  /** Whether the gateway takes this tab's token (or wants none): an API call answers 401 otherwise. */
  probeAuth: async (): Promise<boolean> => (await authorizedFetch("/api/workflows?limit=1")).status !== 401,
  workflows: async () => ({
    workflows: ((await call((c) => c.workflows())) as unknown as Workflow[]).map(shownWorkflow),
  }),
  workflow: async (id: string) => shownWorkflow((await call((c) => c.workflow(id))) as unknown as Workflow),
  jobs: (f: { status?: string; workflow_id?: string; limit?: string }) =>
    call((c) =>
      c.jobs({
        ...(f.status ? { status: f.status } : {}),
        ...(f.workflow_id ? { workflowId: f.workflow_id } : {}),
        ...(f.limit ? { limit: Number(f.limit) } : {}),
      }),
    ) as Promise<{ jobs: JobRecord[] }>,
  job: (id: string) => call((c) => c.job(id)) as Promise<JobRecord>,
  agents: async () => ({ agents: ((await call((c) => c.agents())) as unknown[]).map(agentOf) }),
  drain: (id: string) => call((c) => c.drainAgent(id)),
  threads: async () => ({ threads: await call((c) => c.threads()) }),
  messages: async (threadId: string) => ({
    messages: (await call((c) => c.messages(threadId))) as unknown as ThreadMessage[],
  }),
  models: async (): Promise<{ data: { id: string }[] }> => {
    const r = await authorizedFetch("/v1/models");
    if (r.status === 401) onUnauthorized();
    if (!r.ok) throw new ApiError(r.status, String(r.status), `GET /v1/models: ${r.statusText}`);
    return (await r.json()) as { data: { id: string }[] };
  },
  uploadAsset: (file: File) =>
    call((c) => c.uploadAsset(file, file.name, file.type || "application/octet-stream")) as Promise<{ id: string }>,
  /** An asset's bytes as a blob: URL (fetched with the token: an <img src> could not send it). */
  async assetUrl(id: string): Promise<string> {
    const r = await authorizedFetch(client().assetUrl(id));
    if (!r.ok) throw new ApiError(r.status, String(r.status), `asset ${id}: ${r.statusText}`);
    return URL.createObjectURL(await r.blob());
  },
};

const text = (v: unknown): string => (typeof v === "string" ? v : "");
const texts = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x) => typeof x === "string") : []);
const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);
const obj = (v: unknown): Json => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : {});

/**
 * An agent as the fleet view draws it, whatever its registration holds: an agent host writes its own (the gateway
 * checks only its id, name and pools), and one malformed field must not take the whole page down.
 */
function agentOf(raw: unknown): Agent {
  const a = obj(raw);
  const c = obj(a.capabilities);
  const comfy = c.comfyui === undefined || c.comfyui === null ? undefined : obj(c.comfyui);
  return {
    id: text(a.id),
    name: visibleName(text(a.name)),
    version: text(a.version),
    state: text(a.state),
    pools: texts(a.pools),
    running_jobs: texts(a.running_jobs),
    heartbeat_at: text(a.heartbeat_at),
    started_at: text(a.started_at),
    capabilities: {
      gpus: (Array.isArray(c.gpus) ? c.gpus : []).map(obj).map((g) => ({
        index: num(g.index),
        name: text(g.name),
        memory_total_mb: num(g.memory_total_mb),
      })),
      providers: texts(c.providers),
      strategies: texts(c.strategies),
      max_jobs: num(c.max_jobs),
      ...(comfy
        ? {
            comfyui: {
              url: text(comfy.url),
              reachable: comfy.reachable === true,
              version: text(comfy.version) || null,
            },
          }
        : {}),
    },
  };
}

type ConnState = "connecting" | "open" | "closed";

/**
 * The live side as the views use it: watch a job from a seq (each event once, resumed across reconnects by the
 * client), run, chat, cancel, and the connection's state across client swaps.
 */
class Live {
  private readonly stateFns = new Set<(s: ConnState) => void>();
  private readonly chatFns = new Set<(m: WsMessage) => void>();
  private detach: (() => void) | null = null;

  attach(c: NodewayClient): void {
    this.detach?.();
    const offState = c.on("state", (s) => {
      for (const f of this.stateFns) f(s);
    });
    const offMessage = c.on("message", (m) => {
      for (const f of this.chatFns) f({ ...m, type: "message" } as unknown as WsMessage);
    });
    this.detach = () => (offState(), offMessage());
    c.connect().catch(() => undefined);
  }

  get state(): ConnState {
    return client().state;
  }
  onState(fn: (s: ConnState) => void): () => void {
    this.stateFns.add(fn);
    return () => this.stateFns.delete(fn);
  }
  onChat(fn: (m: WsMessage) => void): () => void {
    this.chatFns.add(fn);
    return () => this.chatFns.delete(fn);
  }

  /** Runs a saved workflow; the client watches the job from its first event (a `watch` picks it up). */
  async run(workflowId: string, params: Json): Promise<string> {
    return (await call((c) => c.run({ workflowId, params }))).jobId;
  }

  async chat(data: {
    thread_id?: string;
    content: string;
    model: string;
  }): Promise<{ thread_id: string; job_id: string }> {
    const turn = await call((c) =>
      c.chat({ ...(data.thread_id ? { threadId: data.thread_id } : {}), content: data.content, model: data.model }),
    );
    return { thread_id: turn.threadId, job_id: turn.job.jobId };
  }

  cancel(jobId: string): Promise<unknown> {
    return call((c) => c.cancel(jobId));
  }

  /**
   * Calls `fn` with each event of `jobId` after `lastSeq` (0: from its start), once, with every `job_resumed`
   * header, until the returned stop. A watch that fails (unknown job, token refused) ends with an `error` event.
   */
  watch(jobId: string, lastSeq: number, fn: (m: WsMessage) => void): () => void {
    const h = client().watch(jobId, { afterSeq: lastSeq });
    const offResumed = h.onResumed((hdr) => fn(hdr as unknown as WsMessage));
    const offEvents = h.on((ev) => fn(ev as unknown as WsMessage));
    let stopped = false;
    h.done.catch((err: NodewayError) => {
      if (!stopped) fn({ type: "error", job_id: jobId, message: err.message });
    });
    return () => {
      stopped = true;
      offResumed();
      offEvents();
      h.stop();
    };
  }
}

export const live = new Live();
