/**
 * Language-model providers through their official SDKs (`openai`, `@anthropic-ai/sdk`, `ollama`), streamed: each
 * yields the reply's text as it comes, and a job's abort (cancel, timeout, lost lease) aborts the request. Keys and
 * endpoints live on the agent, in its environment (`OPENAI_API_KEY` and `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`
 * and `ANTHROPIC_BASE_URL`, `OLLAMA_HOST`), never in a job or an event (design §7).
 *
 * A provider's refusal (bad key, unknown model, rate limit) or an endpoint that does not answer becomes a
 * `NodeError` saying which provider, what it said and its HTTP status; the SDKs' own retries are limited to one,
 * so a dead endpoint fails the node in seconds rather than minutes.
 */
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { Ollama, type AbortableAsyncIterator, type ChatResponse } from "ollama";
import { NodeError } from "./engine/types.js";

export const PROVIDERS = ["openai", "anthropic", "ollama"] as const;
export type ProviderName = (typeof PROVIDERS)[number];

export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
}

export interface ChatRequest {
  provider: ProviderName;
  model: string;
  system: string;
  messages: ChatMessage[];
  maxTokens: number;
  signal: AbortSignal;
}

/** How long a provider request may take to start answering. */
const REQUEST_TIMEOUT_MS = 60_000;

function needKey(env: NodeJS.ProcessEnv, name: string, provider: string): string {
  const key = env[name];
  if (!key) throw new NodeError(`this agent has no ${name}: ${provider} keys live on the agents that may use them (set it there, or send the job to a pool whose agents have it)`);
  return key;
}

/** The provider's error as one line: its HTTP status and message, or why its endpoint did not answer. */
function providerError(provider: string, endpoint: string, err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return signal.reason;
  const e = err as { status?: number; message?: string; error?: unknown; cause?: { code?: string; message?: string }; name?: string };
  if (err instanceof OpenAI.APIConnectionError || err instanceof Anthropic.APIConnectionError || (e.cause && !e.status)) {
    const cause = e.cause?.code ?? e.cause?.message ?? e.message;
    return new NodeError(`${provider} at ${endpoint} is unreachable: ${cause}`);
  }
  if (typeof e.status === "number") {
    // The API's own message: OpenAI's `{error: {message}}`, Anthropic's `{type: "error", error: {message}}`.
    const body = e.error as { message?: unknown; error?: { message?: unknown } } | undefined;
    const said = body?.error?.message ?? body?.message ?? String(e.message ?? "").replace(/^\d{3}\s*/, "");
    return new NodeError(`${provider} refused the request (HTTP ${e.status}): ${String(said)}`);
  }
  return new NodeError(`${provider} failed: ${e.message ?? String(err)}`);
}

/** Streams the reply's text. */
export async function* streamChat(req: ChatRequest, env: NodeJS.ProcessEnv = process.env): AsyncGenerator<string> {
  switch (req.provider) {
    case "openai": {
      const baseURL = env.OPENAI_BASE_URL || "https://api.openai.com/v1";
      const client = new OpenAI({ apiKey: needKey(env, "OPENAI_API_KEY", "OpenAI"), baseURL, maxRetries: 1, timeout: REQUEST_TIMEOUT_MS });
      try {
        const stream = await client.chat.completions.create(
          {
            model: req.model,
            messages: [...(req.system ? [{ role: "system" as const, content: req.system }] : []), ...req.messages],
            max_tokens: req.maxTokens,
            stream: true,
          },
          { signal: req.signal },
        );
        for await (const chunk of stream) {
          const text = chunk.choices[0]?.delta?.content;
          if (text) yield text;
        }
      } catch (err) {
        throw providerError("openai", baseURL, err, req.signal);
      }
      return;
    }
    case "anthropic": {
      const baseURL = env.ANTHROPIC_BASE_URL || "https://api.anthropic.com";
      const client = new Anthropic({ apiKey: needKey(env, "ANTHROPIC_API_KEY", "Anthropic"), baseURL, maxRetries: 1, timeout: REQUEST_TIMEOUT_MS });
      try {
        const stream = await client.messages.create(
          { model: req.model, max_tokens: req.maxTokens, ...(req.system ? { system: req.system } : {}), messages: req.messages, stream: true },
          { signal: req.signal },
        );
        for await (const ev of stream) {
          if (ev.type === "content_block_delta" && ev.delta.type === "text_delta" && ev.delta.text) yield ev.delta.text;
        }
      } catch (err) {
        throw providerError("anthropic", baseURL, err, req.signal);
      }
      return;
    }
    case "ollama": {
      const host = env.OLLAMA_HOST || "http://127.0.0.1:11434";
      const client = new Ollama({ host });
      let it: AbortableAsyncIterator<ChatResponse> | null = null;
      const onAbort = () => it?.abort();
      req.signal.addEventListener("abort", onAbort, { once: true });
      try {
        req.signal.throwIfAborted();
        it = await client.chat({
          model: req.model,
          messages: [...(req.system ? [{ role: "system", content: req.system }] : []), ...req.messages],
          stream: true,
          options: { num_predict: req.maxTokens },
        });
        for await (const part of it as AbortableAsyncIterator<ChatResponse>) {
          if (part.message?.content) yield part.message.content;
        }
      } catch (err) {
        const e = err as { status_code?: number; error?: string; message?: string };
        if (req.signal.aborted) throw req.signal.reason;
        if (typeof e.status_code === "number") throw new NodeError(`ollama refused the request (HTTP ${e.status_code}): ${e.error ?? e.message ?? ""}`);
        throw providerError("ollama", host, err, req.signal);
      } finally {
        req.signal.removeEventListener("abort", onAbort);
      }
      return;
    }
  }
}
