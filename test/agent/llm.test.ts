/**
 * LLM nodes through the official SDKs (`openai`, `@anthropic-ai/sdk`, `ollama`) against a local server speaking
 * each provider's streaming API (test/helpers/fake-llm.ts): the reply streams to the client as chunk events and
 * comes out whole; keys and endpoints come from the agent's environment. A refused request, an unknown model, a
 * dead endpoint or a missing key fails the node saying which provider and what it said; a cancel aborts the
 * provider's stream.
 */
import t from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";

const graphOf = (model: unknown, type = "nodetool.llms.LLM", handle = "text") => ({
  nodes: [
    { id: "q", type: "nodetool.input.StringInput", data: { name: "q", value: "" } },
    { id: "llm", type, data: { model, system: "Be brief.", max_tokens: 64 } },
    { id: "answer", type: "nodetool.output.Output", data: { name: "answer" } },
  ],
  edges: [
    { id: "e1", source: "q", sourceHandle: "output", target: "llm", targetHandle: "prompt" },
    { id: "e2", source: "llm", sourceHandle: handle, target: "answer", targetHandle: "value" },
  ],
});

async function run(
  ws: WsClient,
  graph: unknown,
  q: string,
  extra: Record<string, unknown> = {},
): Promise<{ jobId: string; end: Msg; events: Msg[] }> {
  const r = await ws.request("run_job", { graph, params: { q }, ...extra });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
  return { jobId, end, events: ws.events(jobId) };
}

const envFor = (fake: FakeLlm, key = FAKE_KEY) => ({
  OPENAI_API_KEY: key,
  OPENAI_BASE_URL: `${fake.url}/v1`,
  ANTHROPIC_API_KEY: key,
  ANTHROPIC_BASE_URL: fake.url,
  OLLAMA_HOST: fake.url,
});

t.test(
  "llm - each provider's reply streams as chunks and comes out whole; the request carries model, system and limit",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: envFor(fake) });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    for (const [provider, model, path] of [
      ["openai", "gpt-4o-mini", "/v1/chat/completions"],
      ["anthropic", "claude-sonnet-4-5", "/v1/messages"],
      ["ollama", "llama3.2", "/api/chat"],
    ] as const) {
      const job = await run(
        ws,
        graphOf({ type: "language_model", provider, id: model }),
        `what is nodeway, ${provider}?`,
      );
      t.equal(job.end.status, "completed", provider);
      t.equal(
        (await (await fetch(`${s.url}/api/jobs/${job.jobId}`)).json()).pool,
        provider,
        `${provider}: the job went to the pool of the agents with its key`,
      );
      const want = `echo: what is nodeway, ${provider}?`;
      t.same(job.end.result, { answer: [want] }, `${provider}: the whole reply is the output`);
      const chunks = job.events
        .filter((e) => e.type === "chunk" && e.node_id === "llm" && e.content !== "")
        .map((e) => e.content);
      t.ok(chunks.length >= 4, `${provider}: streamed in ${chunks.length} chunks`);
      t.equal(chunks.join(""), want, `${provider}: the chunks make the reply, in order`);
      const done = job.events.find((e) => e.type === "chunk" && e.node_id === "llm" && e.done === true);
      t.ok(done, `${provider}: and a final done chunk`);
      t.match(
        done?.content_metadata,
        { finish_reason: "stop", usage: { completion_tokens: chunks.length, total_tokens: Number } },
        `${provider}: which says how the reply ended and what it cost`,
      );
      const req = fake.requests.filter((r) => r.path === path).at(-1)!;
      t.equal(req.body.model, model, `${provider}: the model asked for`);
      if (provider === "anthropic")
        t.match(req.body, {
          system: "Be brief.",
          max_tokens: 64,
          stream: true,
          messages: [{ role: "user", content: `what is nodeway, ${provider}?` }],
        });
      else if (provider === "openai")
        t.match(req.body, {
          max_tokens: 64,
          stream: true,
          messages: [{ role: "system", content: "Be brief." }, { role: "user" }],
        });
      else
        t.match(req.body, {
          stream: true,
          options: { num_predict: 64 },
          messages: [{ role: "system", content: "Be brief." }, { role: "user" }],
        });
    }
    t.equal(
      fake.requests.find((r) => r.path === "/v1/chat/completions")?.headers.authorization,
      `Bearer ${FAKE_KEY}`,
      "the agent's key went to the provider",
    );

    const streamed = await run(
      ws,
      graphOf("openai:gpt-4o-mini", "nodetool.llms.LLMStreaming", "chunk"),
      "one two three",
    );
    t.same(
      streamed.end.result,
      { answer: ["echo: ", "one ", "two ", "three"] },
      'LLMStreaming sends each piece along its chunk edge; "provider:model" names the model',
    );
  },
);

t.test(
  "llm - refusals, unknown models, dead endpoints and missing keys fail the node saying which provider and what it said",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const dead = await FakeLlm.start();
    const deadUrl = dead.url;
    await dead.stop();
    const s = await startStack(t, {
      agents: 1,
      agentEnv: {
        OPENAI_API_KEY: "sk-wrong",
        OPENAI_BASE_URL: `${fake.url}/v1`,
        ANTHROPIC_API_KEY: FAKE_KEY,
        ANTHROPIC_BASE_URL: fake.url,
        OLLAMA_HOST: deadUrl,
      },
    });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const cases: [unknown, RegExp][] = [
      [{ provider: "openai", id: "gpt-4o-mini" }, /openai refused the request \(HTTP 401\): .*Incorrect API key/],
      [{ provider: "anthropic", id: "missing" }, /anthropic refused the request \(HTTP 404\): .*model: missing/],
      [
        { provider: "ollama", id: "llama3.2" },
        new RegExp(`ollama at ${deadUrl.replace(/[.]/g, "\\.")} is unreachable`),
      ],
      [{ provider: "gemini", id: "x" }, /"model" must name a provider \(openai, anthropic, ollama\)/],
      [{ provider: "openai", id: "" }, /names provider openai but no model id/],
    ];
    for (const [model, why] of cases) {
      const job = await run(ws, graphOf(model), "hi");
      t.equal(job.end.status, "failed", JSON.stringify(model));
      t.match(job.end.error, { code: "JOB_ERR_NODE_FAILED", message: why });
    }
    const s2 = await startStack(t, { agents: 1, agentEnv: { OPENAI_API_KEY: "", ANTHROPIC_API_KEY: "" } });
    const ws2 = await WsClient.open(s2.url, "json");
    t.teardown(() => ws2.close());
    // An openai model's job goes to the `openai` pool, which an agent without the key does not consume: it waits,
    // and its `queued` event says why.
    const waiting = await ws2.request("run_job", {
      graph: graphOf({ provider: "openai", id: "gpt-4o-mini" }),
      params: { q: "hi" },
    });
    const waitingId = String((waiting.result as { job_id: string }).job_id);
    const queued = await check(
      () => ws2.events(waitingId).find((e) => e.type === "job_update" && e.status === "queued" && e.pool === "openai"),
      10_000,
      { name: "the queued event" },
    );
    t.equal(
      queued.message,
      'no live agent consumes pool "openai" (agents with OPENAI_API_KEY do): the job waits for one',
      "the queued event says what would serve it",
    );
    await ws2.request("cancel_job", { job_id: waitingId });
    // Pinned to `cpu`, it reaches an agent anyway.
    const noKey = await run(ws2, graphOf({ provider: "openai", id: "gpt-4o-mini" }), "hi", {
      requirements: { pool: "cpu" },
    });
    t.match(
      noKey.end.error,
      { message: /this agent has no OPENAI_API_KEY: OpenAI keys live on the agents/ },
      "a missing key is named, never asked of the job",
    );
  },
);

t.test("llm - a cancel aborts the provider's stream", async (t) => {
  const fake = await FakeLlm.start(300);
  t.teardown(() => fake.stop());
  const s = await startStack(t, { agents: 1, agentEnv: envFor(fake) });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const r = await ws.request("run_job", {
    graph: graphOf({ provider: "openai", id: "gpt-4o-mini" }),
    params: { q: "a b c d e f g h i j k l m n o p" },
  });
  const jobId = String((r.result as { job_id: string }).job_id);
  await check(() => ws.events(jobId).some((e) => e.type === "chunk" && e.content !== ""), 20_000, {
    name: "the first chunk",
  });
  await ws.request("cancel_job", { job_id: jobId });
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 20_000);
  t.equal(end.status, "cancelled");
  await check(() => fake.abandoned === 1, 10_000, { name: "the provider's stream was closed by the agent" });
  t.ok(ws.events(jobId).filter((e) => e.type === "chunk").length < 10, "well before the reply's end");
});
