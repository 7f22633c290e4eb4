/**
 * The fleet's language models: what live agents offer, how a client's name for a model
 * resolves to a provider and its id, and a chat turn run as a job (a one-node graph, followed for its reply).
 * Shared by `/v1/chat/completions` and the threads' `chat_message`.
 */
import {
  ErrorCode,
  LLM_PROVIDERS,
  isLlmProvider,
  isTerminal,
  type AgentRegistration,
  type ChatCompletionRequest,
  type ChatEndMetadata,
  type Graph,
  type JobEvent,
  type LlmProvider,
} from "../protocol/index.js";
import { GatewayError } from "./errors.js";
import type { Delivery, EventHub } from "./event-hub.js";
import { follow, type Following } from "./follow.js";
import type { JobManager } from "./jobs.js";
import { runSpecOf } from "./run-request.js";

export interface ModelTarget {
  provider: LlmProvider;
  id: string;
  /**
   * Unix seconds since which the fleet has offered it: the earliest start of a live agent offering it (the same on
   * every gateway; `created` in `/v1/models`). 0 for a model reached by `<provider>/<id>` that no agent lists.
   */
  sinceS: number;
}

/** The LLM node's id in a chat turn's graph: its chunks are the reply. */
export const LLM_NODE = "llm";

/** The reply limit when the request sets none (Anthropic's API needs one). */
const DEFAULT_MAX_TOKENS = 4096;

export class ModelDirectory {
  constructor(private readonly jobs: JobManager) {}

  /**
   * Models offered by live agents: `byName` keyed by how a client may name them (the plain id, or
   * `<provider>/<id>`), and `listed`, each model once, under its plain id where that id means it.
   */
  offers(agents: AgentRegistration[]): {
    byName: Map<string, ModelTarget>;
    listed: { name: string; target: ModelTarget }[];
  } {
    const byProvider = new Map<LlmProvider, Map<string, number>>();
    for (const a of agents) {
      if (a.state === "draining") continue;
      const startedS = Math.floor(Date.parse(a.started_at) / 1000);
      for (const m of a.capabilities?.models ?? []) {
        if (!isLlmProvider(m.provider) || !a.pools.includes(m.provider)) continue;
        let ids = byProvider.get(m.provider);
        if (!ids) byProvider.set(m.provider, (ids = new Map()));
        // An agent whose start cannot be read counts as starting never: the others decide.
        ids.set(m.id, Math.min(ids.get(m.id) ?? Infinity, startedS > 0 ? startedS : Infinity));
      }
    }
    const byName = new Map<string, ModelTarget>();
    const listed: { name: string; target: ModelTarget }[] = [];
    // A plain id goes to the first provider (in LLM_PROVIDERS order) that offers it.
    for (const provider of LLM_PROVIDERS) {
      const ids = byProvider.get(provider) ?? new Map<string, number>();
      for (const id of [...ids.keys()].sort()) {
        const since = ids.get(id)!;
        const target: ModelTarget = { provider, id, sinceS: Number.isFinite(since) ? since : 0 };
        byName.set(`${provider}/${id}`, target);
        const plain = !byName.has(id);
        if (plain) byName.set(id, target);
        listed.push({ name: plain ? id : `${provider}/${id}`, target });
      }
    }
    return { byName, listed };
  }

  /**
   * The provider and model a client's name means, looking at a fresh agent list before saying no. `<provider>/<id>`
   * also reaches a model the provider's agents have not listed (a listing that failed, a model just released).
   */
  async resolve(name: string): Promise<ModelTarget> {
    for (const fresh of [false, true]) {
      const agents = await this.jobs.liveAgents({ fresh });
      const hit = this.offers(agents).byName.get(name);
      if (hit) return hit;
      const slash = name.indexOf("/");
      const provider = slash > 0 ? name.slice(0, slash) : "";
      if (
        isLlmProvider(provider) &&
        name.length > slash + 1 &&
        agents.some(
          (a) => a.state !== "draining" && a.pools.includes(provider) && a.capabilities?.providers?.includes(provider),
        )
      ) {
        return { provider, id: name.slice(slash + 1), sinceS: 0 };
      }
    }
    throw new GatewayError(
      ErrorCode.GW_ERR_NOT_FOUND,
      `The model \`${name}\` does not exist or no live agent offers it (GET /v1/models lists what the fleet offers)`,
      { openai_code: "model_not_found", param: "model" },
    );
  }
}

/** One LLM node (the whole conversation as its messages, and the client's tools) and an Output named `text`. */
export function chatGraph(
  target: ModelTarget,
  chat: Pick<ChatCompletionRequest, "system" | "messages" | "maxTokens" | "temperature"> &
    Partial<Pick<ChatCompletionRequest, "topP" | "stop" | "tools" | "toolChoice">>,
): Graph {
  return {
    nodes: [
      {
        id: LLM_NODE,
        type: "nodetool.llms.LLM",
        data: {
          model: { type: "language_model", provider: target.provider, id: target.id, name: target.id },
          system: chat.system,
          prompt: "",
          messages: chat.messages,
          max_tokens: chat.maxTokens ?? DEFAULT_MAX_TOKENS,
          ...(chat.temperature !== null ? { temperature: chat.temperature } : {}),
          ...(chat.topP !== undefined && chat.topP !== null ? { top_p: chat.topP } : {}),
          ...(chat.stop && chat.stop.length > 0 ? { stop: chat.stop } : {}),
          // Functions the client runs: the model's calls come back in the reply's last chunk (`tool_calls`).
          ...(chat.tools && chat.tools.length > 0 ? { tool_specs: chat.tools } : {}),
          ...(chat.toolChoice ? { tool_choice: chat.toolChoice } : {}),
        },
      },
      { id: "text", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [{ id: "reply", source: LLM_NODE, sourceHandle: "text", target: "text", targetHandle: "value" }],
  };
}

type JobUpdate = Extract<JobEvent, { type: "job_update" }>;

/** A piece of the reply in one of a chat job's events (its LLM node's chunks), and how the reply ended (the last). */
export function replyPieceOf(ev: JobEvent): { text: string; end: ChatEndMetadata | null } | null {
  if (ev.type !== "chunk" || ev.node_id !== LLM_NODE || typeof ev.content !== "string") return null;
  return {
    text: ev.content,
    end: ev.done && ev.content_metadata ? (ev.content_metadata as unknown as ChatEndMetadata) : null,
  };
}

/** The whole reply in a finished chat job's outputs (its Output `text`), or null. */
export function replyTextOf(outputs: unknown): string | null {
  const text = (outputs as { text?: unknown[] } | null | undefined)?.text?.[0];
  return typeof text === "string" ? text : null;
}

/** A chat turn's job as it runs: the reply so far, how it ended, and its terminal update. */
export interface ChatRun {
  readonly jobId: string;
  readonly finished: Promise<JobUpdate>;
  /** The reply's pieces so far. */
  readonly text: string;
  readonly end: ChatEndMetadata | null;
  /** Stops following the job (it runs on). */
  stop(): void;
}

/**
 * Submits a chat turn (`chatGraph`, in the pool of the model's provider) and follows it from its first event:
 * `onPiece` gets each piece of the reply as it comes; `beforePublish` the job id before anything is published.
 */
export async function runChat(
  jobs: JobManager,
  hub: EventHub,
  target: ModelTarget,
  chat: Parameters<typeof chatGraph>[1],
  workflowId: string,
  opts: { onPiece?: (text: string) => void; beforePublish?: (jobId: string) => void } = {},
): Promise<ChatRun> {
  let text = "";
  let end: ChatEndMetadata | null = null;
  let settle!: (ev: JobUpdate) => void;
  const finished = new Promise<JobUpdate>((r) => (settle = r));
  let following: Promise<Following> | null = null;
  const stop = () => void (following as Promise<Following> | null)?.then((f) => f.stop());
  const sink = {
    send: (d: Delivery) => {
      const ev = d.ev;
      if (ev.type === "job_update") {
        if (isTerminal(ev.status)) settle(ev);
        return;
      }
      const piece = replyPieceOf(ev);
      if (!piece) return;
      if (piece.end) end = piece.end;
      if (piece.text === "") return;
      text += piece.text;
      opts.onPiece?.(piece.text);
    },
  };
  let job: { id: string };
  try {
    ({ job } = await jobs.submit({
      workflow: { id: workflowId, graph: chatGraph(target, chat) },
      // A chat turn has no options of its own: no params, the gateway's timeout, its provider's pool.
      ...runSpecOf({ requirements: { pool: target.provider } }),
      beforePublish: (id) => {
        // Registered before the job's first event exists, so nothing needs replaying.
        following = follow(hub, id, 0, sink, { replay: false });
        opts.beforePublish?.(id);
      },
    }));
  } catch (err) {
    stop(); // a job that may not exist
    throw err;
  }
  void finished.then(stop);
  return {
    jobId: job.id,
    finished,
    get text() {
      return text;
    },
    get end() {
      return end;
    },
    stop,
  };
}
