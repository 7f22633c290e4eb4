/**
 * protocol/chat.ts: how a graph names a language model, which pool a graph calling one goes to, and the check of
 * an OpenAI chat-completions request at the edge.
 */
import t from "tap";
import {
  ChatRequestError,
  languageModelOf,
  parseChatCompletion,
  poolOfGraph,
  type NodeMetadata,
} from "../../protocol/index.js";

t.test('chat - a model is {provider, id} or "provider:id", split at the first colon only', async (t) => {
  t.same(languageModelOf({ type: "language_model", provider: "openai", id: "gpt-4o-mini" }), {
    provider: "openai",
    id: "gpt-4o-mini",
  });
  t.same(
    languageModelOf("ollama:llama3.2:1b"),
    { provider: "ollama", id: "llama3.2:1b" },
    "Ollama's own colon stays in the id",
  );
  t.same(languageModelOf({ provider: "anthropic" }), { provider: "anthropic", id: "" });
  for (const v of ["no-colon", ":x", 3, null, undefined, { id: "x" }])
    t.equal(languageModelOf(v), null, JSON.stringify(v));
});

t.test(
  "chat - a graph calling a provider's model goes to that provider's pool; an explicit pool or a typed node's comes first",
  async (t) => {
    const meta = (node_type: string, extra: Partial<NodeMetadata>): NodeMetadata => ({
      node_type,
      title: "",
      description: "",
      namespace: "",
      properties: [],
      outputs: [],
      is_dynamic: false,
      is_streaming: false,
      ...extra,
    });
    const catalog = new Map<string, NodeMetadata>([
      ["llm", meta("llm", { provider_property: "model" })],
      ["comfy", meta("comfy", { pool: "comfyui" })],
      ["text", meta("text", {})],
    ]);
    const graph = (...nodes: { type: string; data?: Record<string, unknown> }[]) => ({
      nodes: nodes.map((n, i) => ({ id: `n${i}`, ...n })),
      edges: [],
    });
    t.equal(
      poolOfGraph(
        graph({ type: "text" }, { type: "llm", data: { model: { provider: "anthropic", id: "claude" } } }),
        catalog,
      ),
      "anthropic",
    );
    t.equal(poolOfGraph(graph({ type: "llm", data: { model: "ollama:qwen3:8b" } }), catalog), "ollama");
    t.equal(
      poolOfGraph(graph({ type: "llm", data: { model: { provider: "gemini", id: "x" } } }), catalog),
      "cpu",
      "a provider the fleet does not know: the node says so where it runs",
    );
    t.equal(poolOfGraph(graph({ type: "llm" }), catalog), "cpu", "a model fed by an edge is not known at submit");
    t.equal(
      poolOfGraph(graph({ type: "comfy" }, { type: "llm", data: { model: "openai:gpt-4o" } }), catalog),
      "comfyui",
      "the first node that names a pool",
    );
    t.equal(
      poolOfGraph(graph({ type: "llm", data: { model: "openai:gpt-4o" } }), catalog, "gpu"),
      "gpu",
      "an explicit pool wins",
    );
  },
);

t.test("chat - a chat-completions request is checked at the edge; the refusal names OpenAI's param", async (t) => {
  const ok = parseChatCompletion({
    model: "gpt-4o-mini",
    messages: [
      { role: "system", content: "A." },
      { role: "developer", content: [{ type: "text", text: "B." }] },
      { role: "user", content: "hi" },
      { role: "assistant", content: null },
      {
        role: "user",
        content: [
          { type: "text", text: "th" },
          { type: "text", text: "ere" },
        ],
      },
    ],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: 10,
    max_completion_tokens: 20,
    temperature: 0,
  });
  t.same(
    ok,
    {
      model: "gpt-4o-mini",
      system: "A.\n\nB.",
      messages: [
        { role: "user", content: "hi" },
        { role: "assistant", content: "" },
        { role: "user", content: "there" },
      ],
      stream: true,
      includeUsage: true,
      maxTokens: 20,
      temperature: 0,
      topP: null,
      stop: [],
      tools: [],
      toolChoice: null,
    },
    "system and developer prompts joined, text parts joined, max_completion_tokens before max_tokens",
  );
  t.match(
    parseChatCompletion({ model: "m", messages: [{ role: "user", content: "x" }] }),
    { stream: false, includeUsage: false, maxTokens: null, temperature: null },
    "OpenAI's defaults: not streamed",
  );
  t.match(
    parseChatCompletion({ model: "m", messages: [{ role: "user", content: "x" }], stop: "END", top_p: 0.9 }),
    { stop: ["END"], topP: 0.9 },
    "one stop sequence as a string",
  );
  const refusal = (body: Record<string, unknown>) => {
    try {
      parseChatCompletion(body);
    } catch (err) {
      t.type(err, ChatRequestError);
      return (err as ChatRequestError).param;
    }
    throw new Error("accepted");
  };
  t.equal(refusal({ model: "m", messages: [{ role: "user", content: 3 }] }), "messages[0].content");
  t.equal(refusal({ model: "m", messages: ["hi"] }), "messages");
  t.equal(
    refusal({ model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_object" } }),
    "response_format",
    "a request relying on what the fleet cannot do is refused, not half-served",
  );
  t.equal(
    refusal({ model: "m", messages: [{ role: "user", content: "x" }], stream_options: { include_usage: "yes" } }),
    "stream_options",
  );
  t.equal(
    refusal({ model: "m", messages: [{ role: "user", content: "x" }], max_completion_tokens: 1.5 }),
    "max_completion_tokens",
  );
  t.equal(refusal({ model: " ", messages: [{ role: "user", content: "x" }] }), "model");
});
