/**
 * NodeTool's agent nodes (agent/nodes/agents.ts) against a local server speaking each provider's streaming API
 * with tool calls (test/helpers/fake-llm.ts), through the official SDKs: the model asks for a tool, the node runs
 * it and sends its result back, and the final answer streams as chunks; tool calls and results are told as log
 * events. Summarizer streams its summary; ResearchAgent answers one output per dynamic output; ClaudeAgent runs
 * the loop on Anthropic's API and refuses the built-in tools it cannot offer. A tool nobody offers fails the node
 * naming it, and an empty model names the gateway's default-model setting. The last test runs an Agent in a
 * whole stack (gateway, NATS, an agent process) and reads its events as a client does.
 */
import t, { type Test } from "tap";
import sharp from "sharp";
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { agent, claudeAgent, researchAgent, summarizer } from "../../agent/nodes/agents.js";
import { evaluateArithmetic, type ControlledNode } from "../../agent/nodes/agent-tools.js";
import { llm } from "../../agent/nodes/llm.js";

/** The LLM node's declared defaults, as the engine gives them. */
const llmDefaults = () => Object.fromEntries(llm.properties.map((p) => [p.name, p.default]));
import {
  DEFAULT_NODE_LIMITS,
  type Emission,
  type GeneratorNodeDef,
  type NodeContext,
} from "../../agent/engine/types.js";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";
import { FAKE_SERP_KEY, FakeSerp } from "../helpers/fake-search.js";
import { runGraph, type EngineEvent } from "../../agent/engine/engine.js";
import { nodeCatalog, nodeLibrary } from "../../agent/nodes/index.js";

interface Seen {
  chunks: { content: string; done: boolean; metadata?: Record<string, unknown> }[];
  logs: string[];
}

/** A node's context as the engine gives it, recording the events the node emits. */
function contextOf(
  dynamicOutputs: Record<string, unknown> = {},
  controlledNodes: ControlledNode[] = [],
): { ctx: NodeContext; seen: Seen } {
  const seen: Seen = { chunks: [], logs: [] };
  const ctx = {
    signal: new AbortController().signal,
    nodeId: "agent",
    nodeType: "test",
    data: {},
    dynamicOutputs,
    params: {},
    chunk: (content: string, o?: { done?: boolean; metadata?: Record<string, unknown> }) =>
      seen.chunks.push({ content, done: o?.done ?? false, ...(o?.metadata ? { metadata: o.metadata } : {}) }),
    progress: () => undefined,
    log: (content: string) => seen.logs.push(content),
    preview: () => undefined,
    sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
    limits: DEFAULT_NODE_LIMITS,
    saved: () => undefined,
    workspace: new Map(),
    controlledNodes,
  };
  return { ctx: ctx as unknown as NodeContext, seen };
}

async function emissions(
  def: GeneratorNodeDef,
  ctx: NodeContext,
  inputs: Record<string, unknown>,
): Promise<Emission[]> {
  const out: Emission[] = [];
  for await (const e of def.generate(ctx, inputs)) out.push(e);
  return out;
}

/** The agent's environment pointing every provider at the fake. */
function useFake(t: Test, fake: FakeLlm): void {
  const env = {
    OPENAI_API_KEY: FAKE_KEY,
    OPENAI_BASE_URL: `${fake.url}/v1`,
    ANTHROPIC_API_KEY: FAKE_KEY,
    ANTHROPIC_BASE_URL: fake.url,
    OLLAMA_HOST: fake.url,
  };
  const before = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  t.teardown(() => {
    for (const [k, v] of Object.entries(before)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

const calc = [{ type: "tool_name", name: "calculator" }];

t.test("agents - Agent calls a tool on each provider and streams its final answer", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  fake.toolArgs = { expression: "6 * (3 + 4)" };
  for (const [provider, model, path] of [
    ["openai", "gpt-4o-mini", "/v1/chat/completions"],
    ["anthropic", "claude-sonnet-4-5", "/v1/messages"],
    ["ollama", "qwen3:8b", "/api/chat"],
  ] as const) {
    const { ctx, seen } = contextOf();
    const from = fake.requests.length;
    const out = await emissions(agent, ctx, {
      model: { type: "language_model", provider, id: model },
      system: "Use the calculator.",
      prompt: "what is 6 * (3 + 4)?",
      tools: calc,
      max_tokens: 256,
    });
    const answer = 'tool said: {"result":42}';
    t.same(out.at(-1), { handle: "text", value: answer }, `${provider}: the final answer on text`);
    t.equal(
      out
        .filter((e) => e.handle === "chunk")
        .map((e) => e.value)
        .join(""),
      answer,
      `${provider}: streamed piece by piece on chunk`,
    );
    t.ok(out.filter((e) => e.handle === "chunk").length >= 3, `${provider}: in several pieces`);
    t.same(seen.logs, ['tool call calculator {"expression":"6 * (3 + 4)"}', 'tool result calculator: {"result":42}']);
    t.match(seen.chunks.at(-1), { done: true, metadata: { finish_reason: "stop" } }, `${provider}: one done chunk`);
    t.equal(seen.chunks.filter((c) => c.done).length, 1, `${provider}: only after the final answer`);
    const reqs = fake.requests.slice(from).filter((r) => r.path === path);
    t.equal(reqs.length, 2, `${provider}: two model turns`);
    const second = JSON.stringify(reqs[1]!.body.messages);
    t.match(second, /42/, `${provider}: the tool's result went back to the model`);
    if (provider === "anthropic") {
      t.match(reqs[0]!.body.tools, [{ name: "calculator", input_schema: { type: "object" } }]);
      t.match(reqs[1]!.body.messages, [
        { role: "user" },
        { role: "assistant", content: [{ type: "tool_use", id: "toolu_fake1", name: "calculator" }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_fake1" }] },
      ]);
    } else if (provider === "openai") {
      t.match(reqs[0]!.body.tools, [{ type: "function", function: { name: "calculator" } }]);
      t.match(reqs[1]!.body.messages, [
        { role: "system" },
        { role: "user" },
        { role: "assistant", tool_calls: [{ id: "call_fake1", function: { name: "calculator" } }] },
        { role: "tool", tool_call_id: "call_fake1" },
      ]);
    } else {
      t.match(reqs[1]!.body.messages, [
        { role: "system" },
        { role: "user" },
        {
          role: "assistant",
          tool_calls: [{ function: { name: "calculator", arguments: { expression: "6 * (3 + 4)" } } }],
        },
        { role: "tool", tool_name: "calculator" },
      ]);
    }
  }
});

t.test("agents - Agent with dynamic outputs sends each field of its structured answer on its handle", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  fake.reply = 'Here: ```json\n{"label": "invoices", "score": 3}\n```';
  const { ctx } = contextOf({ label: { type: "str" }, score: { type: "int" } });
  const out = await emissions(agent, ctx, { model: "openai:gpt-4o-mini", prompt: "label this", max_tokens: 100 });
  t.same(
    out.filter((e) => e.handle !== "chunk" && e.handle !== "text"),
    [
      { handle: "label", value: "invoices" },
      { handle: "score", value: 3 },
    ],
  );
  t.match(JSON.stringify(fake.requests.at(-1)!.body.messages), /JSON Schema.*label.*score/, "the schema was asked for");
});

t.test("agents - Summarizer streams its summary and outputs it whole", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  const { ctx, seen } = contextOf();
  const out = await emissions(summarizer, ctx, {
    model: { type: "language_model", provider: "ollama", id: "llama3.2:1b" },
    text: "a long meeting about budgets",
    system_prompt: "Summarize.",
  });
  const want = "echo: a long meeting about budgets";
  t.same(out.at(-1), { handle: "text", value: want });
  t.same(
    out.slice(0, -1).map((e) => e.handle),
    Array(out.length - 1).fill("chunk"),
    "pieces on chunk first",
  );
  t.ok(out.length > 3, "several pieces");
  t.equal(seen.chunks.filter((c) => c.content !== "").length, out.length - 1, "each also a chunk event");
  await t.rejects(emissions(summarizer, contextOf().ctx, { model: "ollama:x", text: "" }), /"text" is empty/);
});

t.test("agents - ResearchAgent returns one output per dynamic output, after its tool calls", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  fake.toolArgs = { text: "one two three" };
  fake.reply = '{"summary": "three words", "key_points": ["a", "b"], "count": 3}';
  const slots = { summary: { type: "str" }, key_points: { type: "list", type_args: [{ type: "str" }] } };
  const { ctx, seen } = contextOf(slots);
  const out = await researchAgent.process(ctx, {
    objective: "count the words",
    model: { type: "language_model", provider: "anthropic", id: "claude-sonnet-4-5" },
    tools: [{ type: "tool_name", name: "text_stats" }],
    system_prompt: "Research.",
    max_tokens: 500,
  });
  t.same(out, { summary: "three words", key_points: ["a", "b"] }, "only the declared outputs");
  t.match(seen.logs[0], /^tool call text_stats/);
  const first = fake.requests.filter((r) => r.path === "/v1/messages").at(-2)!.body;
  t.match(
    String(first.system),
    /"key_points":\{"type":"array","items":\{"type":"string"\}\}/,
    "the output schema asked",
  );
  await t.rejects(
    Promise.resolve(
      researchAgent.process(contextOf(slots).ctx, {
        objective: "x",
        model: "openai:gpt-4o-mini",
        tools: [
          { type: "tool_name", name: "calculator" },
          { type: "tool_name", name: "read_file" },
        ],
      }),
    ),
    /tool "read_file" is not offered by this fleet.s agents \(they offer: (\w+, )*browser, calculator, /,
    "a tool nobody offers fails the node naming it",
  );
  await t.rejects(
    Promise.resolve(researchAgent.process(contextOf().ctx, { objective: "x", model: "openai:gpt-4o-mini", tools: [] })),
    /Define at least one output field/,
  );
});

t.test("agents - ClaudeAgent runs the loop on Anthropic's API and refuses what it cannot offer", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  const { ctx, seen } = contextOf();
  const out = await emissions(claudeAgent, ctx, {
    prompt: "brief me",
    model: { type: "language_model", provider: "anthropic", id: "claude-sonnet-4-5", name: "Claude" },
    system_prompt: "You are an analyst.",
    max_turns: 5,
    allowed_tools: [],
    permission_mode: "acceptEdits",
    use_claude_credentials: true,
  });
  t.same(out.at(-1), { handle: "text", value: "echo: brief me" });
  t.ok(out.filter((e) => e.handle === "chunk").length >= 2, "streamed on chunk");
  t.match(seen.logs, [/use_claude_credentials is ignored/]);
  t.match(fake.requests.at(-1), { path: "/v1/messages", body: { system: "You are an analyst.", stream: true } });
  await t.rejects(
    emissions(claudeAgent, contextOf().ctx, {
      prompt: "x",
      model: "anthropic:claude-sonnet-4-5",
      allowed_tools: ["Read", "Bash"],
    }),
    /built-in tools Read, Bash are not offered here/,
  );
  await t.rejects(
    emissions(claudeAgent, contextOf().ctx, { prompt: "x", model: "openai:gpt-4o-mini", allowed_tools: [] }),
    /ClaudeAgent runs Anthropic models/,
  );
});

t.test("agents - nodes wired by control edges are the agent's tools: their properties its arguments", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  fake.toolArgs = { query: "open-source workflow tools", num_results: 3 };
  const ran: Record<string, unknown>[] = [];
  const search: ControlledNode = {
    nodeId: "ddg-search",
    nodeType: "search.duckduckgo.DuckDuckGoSearch",
    title: "DuckDuckGo Search",
    description: "Search the web with DuckDuckGo.",
    properties: [
      { name: "query", type: "str", default: "", description: "What to search for" },
      { name: "num_results", type: "int", default: 10 },
      { name: "model", type: "language_model", default: {} },
    ],
    run: async (args) => {
      ran.push(args);
      return { results: [{ title: "Nodeway", url: "https://example.com/nodeway" }] };
    },
  };
  const { ctx, seen } = contextOf({}, [search]);
  const out = await emissions(claudeAgent, ctx, {
    prompt: "research workflow tools",
    model: "anthropic:claude-sonnet-4-5",
    allowed_tools: [],
  });
  t.same(ran, [{ query: "open-source workflow tools", num_results: 3 }], "the node ran with the model's arguments");
  t.match(
    out.at(-1),
    { handle: "text", value: /^tool said: \[\{"title":"Nodeway"/ },
    "its outputs went back to the model",
  );
  t.match(seen.logs[0], /^tool call duck_duck_go_search /);
  const offered = fake.requests.filter((r) => r.path === "/v1/messages").at(-2)!.body.tools;
  t.same(offered, [
    {
      name: "duck_duck_go_search",
      description: "Search the web with DuckDuckGo.",
      input_schema: {
        type: "object",
        properties: {
          query: { type: "string", description: "What to search for" },
          num_results: { type: "integer" },
        },
      },
    },
  ]);
});

t.test(
  "agents - the browser tool reads a page's text under the outbound policy; private addresses are refused",
  async (t) => {
    const fake = await FakeLlm.start(1);
    t.teardown(() => fake.stop());
    useFake(t, fake);
    // The outbound policy is read once per process: loopback (the test's page) is allowed here, 10/8 is not.
    process.env.NODEWAY_HTTP_ALLOW = "127.0.0.1/32";
    const page = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end("<html><script>steal()</script><body><h1>Nodeway &amp; agents</h1><p>It runs graphs.</p></body></html>");
    });
    await new Promise<void>((r) => page.listen(0, "127.0.0.1", r));
    t.teardown(() => new Promise<void>((r) => page.close(() => r())));
    const url = `http://127.0.0.1:${(page.address() as AddressInfo).port}/about`;
    fake.reply = '{"summary": "a graph runner"}';
    for (const [target, want] of [
      [url, /Nodeway & agents\\nIt runs graphs\./],
      ["http://10.1.2.3/secret", /error.*10\.1\.2\.3/],
    ] as const) {
      fake.toolArgs = { url: target };
      const { ctx, seen } = contextOf({ summary: { type: "str" } });
      const out = await researchAgent.process(ctx, {
        objective: "what is nodeway?",
        model: "openai:gpt-4o-mini",
        tools: [{ type: "tool_name", name: "browser" }],
      });
      t.same(out, { summary: "a graph runner" });
      const result = fake.requests.filter((r) => r.path === "/v1/chat/completions").at(-1)!.body.messages as {
        role: string;
        content: string;
      }[];
      t.match(result.find((m) => m.role === "tool")?.content, want, `${target}: what the model was told`);
      t.notMatch(seen.logs.join("\n"), /steal/, "no script text");
    }
  },
);

t.test("agents - an empty model names the default-model setting; the calculator is exact and safe", async (t) => {
  await t.rejects(
    emissions(agent, contextOf().ctx, { model: { type: "language_model" }, prompt: "hi" }),
    /no model is chosen and this deployment has no default model: .*--default-model provider:id \(NODEWAY_DEFAULT_MODEL\)/,
  );
  t.equal(evaluateArithmetic("2 ^ 3 ^ 2"), 512);
  t.equal(evaluateArithmetic("-(1.5 + 2.5) * 10 % 7"), -5);
  t.throws(() => evaluateArithmetic("process.exit()"), /unexpected "p"/);
  t.throws(() => evaluateArithmetic("(1 + 2"), /missing \)/);
});

t.test("agents - an Agent in a stack: chunks, tool call and result events, the answer as output", async (t) => {
  const fake = await FakeLlm.start(2);
  t.teardown(() => fake.stop());
  fake.toolArgs = { expression: "2 + 2" };
  const s = await startStack(t, {
    agents: 1,
    agentEnv: {
      OPENAI_API_KEY: FAKE_KEY,
      OPENAI_BASE_URL: `${fake.url}/v1`,
      ANTHROPIC_API_KEY: FAKE_KEY,
      ANTHROPIC_BASE_URL: fake.url,
      OLLAMA_HOST: fake.url,
    },
  });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  const graph = {
    nodes: [
      {
        id: "agent",
        type: "nodetool.agents.Agent",
        data: { model: { type: "language_model", provider: "openai", id: "gpt-4o-mini" }, prompt: "2+2?", tools: calc },
      },
      { id: "out", type: "nodetool.output.Output", data: { name: "answer" } },
    ],
    edges: [{ id: "e", source: "agent", sourceHandle: "text", target: "out", targetHandle: "value" }],
  };
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: "the job ended" });
  t.equal(end.status, "completed", JSON.stringify(end.error ?? ""));
  t.same(end.result, { answer: ['tool said: {"result":4}'] });
  const events = ws.events(jobId);
  t.match(
    events.filter((e) => e.type === "log_update" && e.node_id === "agent").map((e) => e.content),
    ['tool call calculator {"expression":"2 + 2"}', 'tool result calculator: {"result":4}'],
  );
  const chunks = events.filter((e) => e.type === "chunk" && e.node_id === "agent");
  t.equal(chunks.map((e) => e.content).join(""), 'tool said: {"result":4}', "the answer streamed as chunk events");
  t.equal((await (await fetch(`${s.url}/api/jobs/${jobId}`)).json()).pool, "openai", "in the provider's pool");
});

t.test(
  "agents - a control edge in a graph: the controlled node runs only when the agent calls it, with the model's arguments",
  async (t) => {
    const fake = await FakeLlm.start(1);
    t.teardown(() => fake.stop());
    useFake(t, fake);
    fake.followFormats = true; // the model fills the tool's arguments from its schema ("keyword": "sample text")
    const serp = await FakeSerp.start();
    t.teardown(() => serp.stop());
    const before = { key: process.env.SERPAPI_API_KEY, url: process.env.SERPAPI_BASE_URL };
    Object.assign(process.env, { SERPAPI_API_KEY: FAKE_SERP_KEY, SERPAPI_BASE_URL: serp.url });
    t.teardown(() =>
      Object.assign(process.env, { SERPAPI_API_KEY: before.key ?? "", SERPAPI_BASE_URL: before.url ?? "" }),
    );
    const library = nodeCatalog(nodeLibrary(false));
    const run = async (controller: { id: string; type: string; data: Record<string, unknown> }) => {
      const events: EngineEvent[] = [];
      const graph = {
        nodes: [
          controller,
          { id: "search", type: "search.google.GoogleSearch", data: { keyword: "", num_results: 3 } },
          { id: "out", type: "nodetool.output.StringOutput", data: { name: "answer" } },
        ],
        edges: [
          {
            id: "c",
            source: controller.id,
            sourceHandle: "__control__",
            target: "search",
            targetHandle: "__control__",
            edge_type: "control" as const,
          },
          {
            id: "d",
            source: controller.id,
            sourceHandle: controller.type.endsWith("FormatText") ? "output" : "text",
            target: "out",
            targetHandle: "value",
          },
        ],
      };
      const result = await runGraph({
        graph,
        params: {},
        library,
        signal: new AbortController().signal,
        emit: (e) => events.push(e),
      });
      return { result, events };
    };
    const claude = await run({
      id: "claude",
      type: "anthropic.agents.ClaudeAgent",
      data: {
        prompt: "find tools",
        model: { type: "language_model", provider: "anthropic", id: "claude-sonnet-4-5" },
        allowed_tools: [],
      },
    });
    t.equal(claude.result.status, "completed", JSON.stringify(claude.result));
    t.equal(serp.requests.length, 1, "the search node ran once: when the model called it");
    t.equal(serp.requests[0]!.get("q"), "sample text", "with the argument the model gave");
    const searchStates = claude.events
      .filter((e) => e.type === "node_update" && e.node_id === "search")
      .map((e) => (e as { status: string }).status);
    t.same(searchStates, ["running", "completed"], "clients see the controlled node run");
    t.match(
      claude.result.outputs.answer,
      [/^tool said: /],
      "its results went back to the model, whose answer is the output",
    );

    const plain = await run({ id: "fmt", type: "nodetool.text.FormatText", data: { template: "no agent here" } });
    t.equal(plain.result.status, "completed");
    t.equal(serp.requests.length, 1, "a controlled node whose controller never calls it does not run by itself");
    t.notOk(
      plain.events.some((e) => e.type === "node_update" && e.node_id === "search"),
      "and has no node events",
    );

    process.env.SERPAPI_API_KEY = ""; // the tool now fails: its error goes back to the model, the job goes on
    const failing = await run({
      id: "claude",
      type: "anthropic.agents.ClaudeAgent",
      data: { prompt: "find tools", model: "anthropic:claude-sonnet-4-5", allowed_tools: [] },
    });
    t.equal(failing.result.status, "completed", "a tool's failure does not fail the agent");
    t.match(failing.result.outputs.answer, [/^tool said: \{"error":".*SERPAPI_API_KEY/], "the model is told why");
    t.match(
      failing.events.filter((e) => e.type === "node_update" && e.node_id === "search"),
      [{ status: "running" }, { status: "error", error: /SERPAPI_API_KEY/ }],
      "clients see the controlled node's call end in error, not left running",
    );

    // Control edges from a graph file are input: a node controlling itself, and two controlling each other.
    const text = (id: string) => ({ id, type: "nodetool.text.FormatText", data: { template: id } });
    const control = (source: string, target: string) => ({
      id: `${source}-${target}`,
      source,
      sourceHandle: "__control__",
      target,
      targetHandle: "__control__",
      edge_type: "control" as const,
    });
    const events: EngineEvent[] = [];
    const shapes = await runGraph({
      graph: {
        nodes: [
          text("a"),
          text("b"),
          text("c"),
          { id: "out", type: "nodetool.output.StringOutput", data: { name: "a" } },
        ],
        edges: [
          control("a", "a"),
          control("b", "c"),
          control("c", "b"),
          { id: "d", source: "a", sourceHandle: "output", target: "out", targetHandle: "value" },
        ],
      },
      params: {},
      library,
      signal: new AbortController().signal,
      emit: (e) => events.push(e),
    });
    t.same(
      shapes,
      { status: "completed", outputs: { a: ["a"] } },
      "the run ends: a node controlling itself runs as usual",
    );
    t.notOk(
      events.some((e) => e.type === "node_update" && (e.node_id === "b" || e.node_id === "c")),
      "two nodes controlling each other are both tools, and neither runs",
    );
  },
);

t.test("agents - an image input goes to the model with the prompt, in each provider's vision form", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  const png = await sharp({ create: { width: 5, height: 4, channels: 3, background: "#c33" } })
    .png()
    .toBuffer();
  const tiff = await sharp({ create: { width: 5, height: 4, channels: 3, background: "#3c3" } })
    .tiff()
    .toBuffer();
  const image = { type: "image", uri: `data:image/png;base64,${png.toString("base64")}` };
  for (const [provider, model, mime] of [
    ["openai", "gpt-4o-mini", "image/png"],
    ["anthropic", "claude-sonnet-4-5", "image/png"],
    ["ollama", "qwen3:8b", "image/*"],
  ] as const) {
    const out = await emissions(agent, contextOf().ctx, {
      model: { type: "language_model", provider, id: model },
      prompt: "what is in the picture?",
      image,
    });
    t.same(
      out.at(-1),
      { handle: "text", value: `echo: what is in the picture? [${mime} ${png.byteLength} bytes]` },
      `${provider}: the model got the prompt and the image, byte for byte`,
    );
  }
  const converted = await emissions(agent, contextOf().ctx, {
    model: "openai:gpt-4o-mini",
    prompt: "and this?",
    image: { type: "image", data: tiff.toString("base64") },
  });
  t.match(converted.at(-1), { value: /^echo: and this\? \[image\/png \d+ bytes\]$/ }, "a TIFF goes as PNG");
  const summary = await emissions(summarizer, contextOf().ctx, {
    model: "anthropic:claude-sonnet-4-5",
    text: "the chart",
    image,
  });
  t.match(summary.at(-1), { value: /\[image\/png \d+ bytes\]$/ }, "the Summarizer sends its image too");
  const answered = await llm.process(contextOf().ctx, {
    ...llmDefaults(),
    model: "ollama:qwen3:8b",
    prompt: "see",
    image,
  });
  t.same(answered, { text: `echo: see [image/* ${png.byteLength} bytes]` }, "and the LLM node");
  const empty = await emissions(agent, contextOf().ctx, { model: "openai:gpt-4o-mini", prompt: "" });
  t.same(
    empty.at(-1),
    { handle: "text", value: "echo: " },
    "an empty prompt is still sent as the user's turn, as NodeTool does",
  );
  await t.rejects(
    emissions(agent, contextOf().ctx, {
      model: "openai:gpt-4o-mini",
      prompt: "x",
      image: { type: "image", data: "bm90IGFuIGltYWdl" },
    }),
    /"image" is not an image: its 12 bytes are text/,
    "bytes that are not an image fail naming the input",
  );
});

t.test("agents - an audio input goes to OpenAI's audio models; other APIs say they take none", async (t) => {
  const fake = await FakeLlm.start(1);
  t.teardown(() => fake.stop());
  useFake(t, fake);
  const dir = mkdtempSync(join(tmpdir(), "nw-audio-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tone = (ext: string, codec: string) => {
    const file = join(dir, `tone.${ext}`);
    execFileSync("ffmpeg", [
      "-v",
      "error",
      "-f",
      "lavfi",
      "-i",
      "sine=frequency=440:duration=0.2",
      "-c:a",
      codec,
      file,
    ]);
    return readFileSync(file);
  };
  const wav = tone("wav", "pcm_s16le");
  const flac = tone("flac", "flac");
  const audioOf = (bytes: Buffer, mime: string) => ({
    type: "audio",
    uri: `data:${mime};base64,${bytes.toString("base64")}`,
  });
  const asWav = await emissions(agent, contextOf().ctx, {
    model: "openai:gpt-4o-audio-preview",
    prompt: "what do you hear?",
    audio: audioOf(wav, "audio/wav"),
  });
  t.same(
    asWav.at(-1),
    { handle: "text", value: `echo: what do you hear? [audio/wav ${wav.byteLength} bytes]` },
    "a WAV goes as OpenAI's input_audio, byte for byte",
  );
  const fromFlac = await llm.process(contextOf().ctx, {
    ...llmDefaults(),
    model: "openai:gpt-4o-audio-preview",
    prompt: "and this?",
    audio: audioOf(flac, "audio/flac"),
  });
  t.match(
    fromFlac,
    { text: /^echo: and this\? \[audio\/mp3 \d+ bytes\]$/ },
    "a FLAC goes as MP3 (the formats the API takes)",
  );
  for (const [provider, name] of [
    ["anthropic:claude-sonnet-4-5", "Anthropic"],
    ["ollama:qwen3:8b", "Ollama"],
  ] as const) {
    await t.rejects(
      emissions(agent, contextOf().ctx, { model: provider, prompt: "listen", audio: audioOf(wav, "audio/wav") }),
      new RegExp(
        `${name}'s chat API takes no audio input: transcribe it first \\(nodetool.text.AutomaticSpeechRecognition\\)`,
      ),
      `${name}: the node fails saying what to do, the audio never silently dropped`,
    );
  }
  t.equal(
    fake.requests.filter((r) => !/\/v1\/chat\/completions$/.test(r.path)).length,
    0,
    "neither of those reached a provider",
  );
});
