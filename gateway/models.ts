/**
 * The fleet's language models (design §6 `/v1`, §7): what live agents offer, how a client's name for a model
 * resolves to a provider and its id, and the one-node graph a chat turn runs. Shared by `/v1/chat/completions`
 * and the threads' `chat_message`.
 */
import {
  ErrorCode,
  LLM_PROVIDERS,
  isLlmProvider,
  type AgentRegistration,
  type ChatCompletionRequest,
  type Graph,
  type LlmProvider,
} from "../protocol/index.js";
import { GatewayError } from "./errors.js";
import type { JobManager } from "./jobs.js";

export interface ModelTarget {
  provider: LlmProvider;
  id: string;
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
  offers(agents: AgentRegistration[]): { byName: Map<string, ModelTarget>; listed: { name: string; target: ModelTarget }[] } {
    const byProvider = new Map<LlmProvider, Set<string>>();
    for (const a of agents) {
      if (a.state === "draining") continue;
      for (const m of a.capabilities?.models ?? []) {
        if (!isLlmProvider(m.provider) || !a.pools.includes(m.provider)) continue;
        let set = byProvider.get(m.provider);
        if (!set) byProvider.set(m.provider, (set = new Set()));
        set.add(m.id);
      }
    }
    const byName = new Map<string, ModelTarget>();
    const listed: { name: string; target: ModelTarget }[] = [];
    // A plain id goes to the first provider (in LLM_PROVIDERS order) that offers it.
    for (const provider of LLM_PROVIDERS) {
      for (const id of [...(byProvider.get(provider) ?? [])].sort()) {
        const target = { provider, id };
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
      if (isLlmProvider(provider) && name.length > slash + 1 && agents.some((a) => a.state !== "draining" && a.pools.includes(provider) && a.capabilities?.providers?.includes(provider))) {
        return { provider, id: name.slice(slash + 1) };
      }
    }
    throw new GatewayError(ErrorCode.GW_ERR_NOT_FOUND, `The model \`${name}\` does not exist or no live agent offers it (GET /v1/models lists what the fleet offers)`, { openai_code: "model_not_found", param: "model" });
  }
}

/** One LLM node (the whole conversation as its messages) and an Output named `text`. */
export function chatGraph(target: ModelTarget, chat: Pick<ChatCompletionRequest, "system" | "messages" | "maxTokens" | "temperature"> & Partial<Pick<ChatCompletionRequest, "topP" | "stop">>): Graph {
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
        },
      },
      { id: "text", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [{ id: "reply", source: LLM_NODE, sourceHandle: "text", target: "text", targetHandle: "value" }],
  };
}
