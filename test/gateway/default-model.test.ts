/**
 * The deployment's default models (gateway/default-model.ts): `--default-model provider:id`
 * (`NODEWAY_DEFAULT_MODEL`) and one per kind of model property fill what NodeTool saved empty, before dispatch,
 * so the job goes to that provider's pool; bad settings are refused at start naming the setting; with none set an
 * empty model fails its node naming the setting.
 */
import t from "tap";
import { compileGatewayConfig, GATEWAY_OPTION_KEYS } from "../../gateway/index.js";
import { resolveDefaultModels } from "../../gateway/default-model.js";
import { NODE_LIBRARY } from "../../agent/nodes/index.js";
import { metadataOf } from "../../agent/engine/types.js";
import { poolOfGraph, type Graph, type NodeMetadata } from "../../protocol/index.js";
import { parseArgs, settingsFor, commandFlags } from "../../bin/settings.js";
import { WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";

const catalog = new Map<string, NodeMetadata>(NODE_LIBRARY.map((d) => [d.type, metadataOf(d)]));

const agentGraph = (model: unknown): Graph => ({
  nodes: [
    { id: "agent", type: "nodetool.agents.Agent", data: { model, prompt: "hello there", max_tokens: 64 } },
    { id: "out", type: "nodetool.output.Output", data: { name: "answer" } },
  ],
  edges: [{ id: "e", source: "agent", sourceHandle: "text", target: "out", targetHandle: "value" }],
});

t.test(
  "default model - settings from flag, environment and config; bad ones are refused naming the setting",
  async (t) => {
    const flags = commandFlags(GATEWAY_OPTION_KEYS, new Set());
    const fromFlag = settingsFor(
      "gateway",
      GATEWAY_OPTION_KEYS,
      parseArgs(["--default-model", "ollama:llama3.2:1b"], flags),
      {
        env: { NODEWAY_CONFIG: "/nonexistent/config.json" },
      },
    );
    t.same(fromFlag, { defaultModel: "ollama:llama3.2:1b" }, "--default-model");
    const fromEnv = settingsFor("gateway", GATEWAY_OPTION_KEYS, parseArgs([], flags), {
      env: {
        NODEWAY_CONFIG: "/nonexistent/config.json",
        NODEWAY_DEFAULT_MODEL: "openai:gpt-4o-mini",
        NODEWAY_DEFAULT_IMAGE_MODEL: "openai:gpt-image-1",
        NODEWAY_DEFAULT_SPEECH_MODEL: "openai:tts-1",
        NODEWAY_DEFAULT_TRANSCRIPTION_MODEL: "openai:whisper-1",
      },
    });
    const config = compileGatewayConfig({ natsUrl: "nats://127.0.0.1:4222", ...fromEnv });
    t.same(config.defaultModels, {
      language_model: { provider: "openai", id: "gpt-4o-mini" },
      image_model: { provider: "openai", id: "gpt-image-1" },
      tts_model: { provider: "openai", id: "tts-1" },
      asr_model: { provider: "openai", id: "whisper-1" },
    });
    t.same(compileGatewayConfig({}).defaultModels, {}, "none set by default");
    t.throws(() => compileGatewayConfig({ defaultModel: "gpt-4o-mini" }), /defaultModel.*must be provider:model/);
    t.throws(
      () => compileGatewayConfig({ defaultModel: "gemini:pro" }),
      /defaultModel.*language models come from openai/,
    );
    t.throws(() => compileGatewayConfig({ defaultImageModel: ":x" }), /defaultImageModel/);
  },
);

t.test("default model - empty model properties are filled by their kind; chosen ones are kept", async (t) => {
  const defaults = compileGatewayConfig({
    defaultModel: "ollama:qwen3:8b",
    defaultImageModel: "openai:gpt-image-1",
  }).defaultModels;
  const graph = agentGraph({ type: "language_model" });
  graph.nodes.push(
    { id: "chosen", type: "nodetool.agents.Summarizer", data: { model: { provider: "anthropic", id: "claude-x" } } },
    { id: "bare", type: "anthropic.agents.ClaudeAgent", data: {} },
  );
  const filled = resolveDefaultModels(graph, defaults, catalog);
  t.same(filled.nodes[0]!.data!.model, {
    type: "language_model",
    provider: "ollama",
    id: "qwen3:8b",
    name: "qwen3:8b",
  });
  t.same(filled.nodes[2]!.data!.model, { provider: "anthropic", id: "claude-x" }, "a chosen model is kept");
  t.match(filled.nodes[3]!.data!.model, { provider: "ollama", id: "qwen3:8b" }, "a property left out is filled too");
  t.same(graph.nodes[0]!.data!.model, { type: "language_model" }, "the graph given is not changed");
  t.equal(poolOfGraph(filled, catalog), "ollama", "the job goes to the default's provider pool");
  t.equal(poolOfGraph(agentGraph({ type: "language_model" }), catalog), "cpu", "unfilled, it would not");
  const imageNode = [...catalog.values()].find((m) => m.properties.some((p) => p.type === "image_model"));
  if (imageNode) {
    const prop = imageNode.properties.find((p) => p.type === "image_model")!.name;
    const g = { nodes: [{ id: "img", type: imageNode.node_type, data: {} }], edges: [] };
    t.match(resolveDefaultModels(g, defaults, catalog).nodes[0]!.data![prop], {
      type: "image_model",
      provider: "openai",
      id: "gpt-image-1",
    });
  }
  t.equal(resolveDefaultModels(graph, {}, catalog), graph, "no defaults: the same graph");
  // A ComfyUI checkpoint as the image default sends TextToImage to the agents beside a ComfyUI.
  const comfy = compileGatewayConfig({ defaultImageModel: "comfyui:sd_xl_base_1.0.safetensors" }).defaultModels;
  const t2i: Graph = {
    nodes: [{ id: "img", type: "nodetool.image.TextToImage", data: { prompt: "a lighthouse" } }],
    edges: [],
  };
  const comfyFilled = resolveDefaultModels(t2i, comfy, catalog);
  t.match(comfyFilled.nodes[0]!.data!.model, { provider: "comfyui", id: "sd_xl_base_1.0.safetensors" });
  t.equal(poolOfGraph(comfyFilled, catalog), "comfyui", "a ComfyUI image model's job goes to the comfyui pool");
});

t.test(
  "default model - a job with an empty model runs on the default's provider; without one it names the setting",
  async (t) => {
    const fake = await FakeLlm.start(1);
    t.teardown(() => fake.stop());
    const agentEnv = {
      OPENAI_API_KEY: FAKE_KEY,
      OPENAI_BASE_URL: `${fake.url}/v1`,
      ANTHROPIC_API_KEY: FAKE_KEY,
      ANTHROPIC_BASE_URL: fake.url,
      OLLAMA_HOST: fake.url,
    };
    const s = await startStack(t, { agents: 1, agentEnv, gateway: { defaultModel: "ollama:qwen3:8b" } });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const run = async (w: WsClient) => {
      const r = await w.request("run_job", { graph: agentGraph({ type: "language_model" }), params: {} });
      const jobId = String((r.result as { job_id: string }).job_id);
      return { jobId, end: await check(() => terminal(w.events(jobId)) ?? null, 30_000, { name: "the job ended" }) };
    };
    const filled = await run(ws);
    t.equal(filled.end.status, "completed", JSON.stringify(filled.end.error ?? ""));
    t.same(filled.end.result, { answer: ["echo: hello there"] });
    t.equal((await (await fetch(`${s.url}/api/jobs/${filled.jobId}`)).json()).pool, "ollama", "in the default's pool");
    t.match(fake.requests.at(-1), { path: "/api/chat", body: { model: "qwen3:8b" } }, "asked of the default model");

    const bare = await startStack(t, { agents: 1, agentEnv });
    const ws2 = await WsClient.open(bare.url, "json");
    t.teardown(() => ws2.close());
    const unset = await run(ws2);
    t.equal(unset.end.status, "failed");
    t.match(unset.end.error, {
      message:
        /no model is chosen and this deployment has no default model: .*--default-model provider:id \(NODEWAY_DEFAULT_MODEL\)/,
    });
  },
);
