/**
 * A graph whose nodes need different hosts: an LLM on the host holding the OpenAI key feeds an image model on the
 * ComfyUI host. The graph runs on one agent; the node it cannot run goes to its pool as a child job (a record of
 * its own, linked to its parent), its outputs come back along the graph. Cancelling the parent cancels the child;
 * a node whose pool no agent serves runs where its graph does (and fails there naming what it lacks).
 * Real nats-server, gateway, agent processes, the official OpenAI SDK against a local server of its protocol, and
 * a local server of ComfyUI's API.
 */
import t, { type Test } from "tap";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { startAgentProc } from "../helpers/procs.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FakeComfyUI } from "../helpers/fake-comfyui.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";

type Rec = {
  id: string;
  status: string;
  pool: string;
  agent_id: string | null;
  parent?: { job_id: string; attempt: number; node_id: string };
  outputs: Record<string, unknown[]> | null;
  error: { code: string; message: string } | null;
};

/** LLM (openai) → its text as TextToImage's prompt (a ComfyUI checkpoint) → outputs "text" and "image". */
const chained = (prompt: string, maxTokens = 32) => ({
  nodes: [
    {
      id: "llm",
      type: "nodetool.llms.LLM",
      data: { model: { type: "language_model", provider: "openai", id: "gpt-4o-mini" }, prompt, max_tokens: maxTokens },
    },
    {
      id: "img",
      type: "nodetool.image.TextToImage",
      data: {
        model: { type: "image_model", provider: "comfyui", id: "sd_xl_base_1.0.safetensors" },
        width: 512,
        height: 512,
        num_inference_steps: 2,
      },
    },
    { id: "text", type: "nodetool.output.Output", data: { name: "text" } },
    { id: "image", type: "nodetool.output.Output", data: { name: "image" } },
  ],
  edges: [
    { id: "e1", source: "llm", sourceHandle: "text", target: "img", targetHandle: "prompt" },
    { id: "e2", source: "llm", sourceHandle: "text", target: "text", targetHandle: "value" },
    { id: "e3", source: "img", sourceHandle: "output", target: "image", targetHandle: "value" },
  ],
});

/** A gateway, an agent with the OpenAI key (no ComfyUI) unless `llmHost` is false, and one beside ComfyUI (no key). */
async function fleet(t: Test, llm: FakeLlm, comfy: FakeComfyUI, llmHost = true) {
  const s = await startStack(t, { agents: 0 });
  const started = [
    startAgentProc(s.ns.url, ["--name", "comfy-host", "--comfyui-url", comfy.url], { OPENAI_API_KEY: "" }),
    ...(llmHost
      ? [
          startAgentProc(s.ns.url, ["--name", "llm-host"], {
            OPENAI_API_KEY: FAKE_KEY,
            OPENAI_BASE_URL: `${llm.url}/v1`,
          }),
        ]
      : []),
  ];
  const agents = await Promise.all(started);
  for (const a of agents) t.teardown(() => a.kill("SIGKILL"));
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  await check(
    async () => {
      const live = (await api(s.url, "GET", "/api/agents")).body.agents as { pools: string[] }[];
      return live.length === agents.length && live.some((a) => a.pools.includes("comfyui"));
    },
    20_000,
    { name: "both agents registered" },
  );
  const [comfyHost, llmAgent] = agents;
  return { s, ws, comfyHost: comfyHost!, llmHost: llmAgent ?? null };
}

async function start(ws: WsClient, graph: unknown): Promise<string> {
  const r = await ws.request("run_job", { graph, params: {} });
  if (r.error) throw new Error(`run_job refused: ${JSON.stringify(r.error)}`);
  return String((r.result as { job_id: string }).job_id);
}

const ended = (ws: WsClient, jobId: string): Promise<Msg> =>
  check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });

/** The child job a node's log names ("runs in pool <p> as job <id>"), once it does. */
const childOf = (ws: WsClient, jobId: string, nodeId: string): Promise<string> =>
  check(
    () => {
      const log = ws
        .events(jobId)
        .find((e) => e.type === "log_update" && e.node_id === nodeId && /as job /.test(String(e.content)));
      return log ? String(log.content).split("as job ")[1]! : null;
    },
    30_000,
    { name: `the child job of node ${nodeId}` },
  );

t.test("child jobs - an LLM on the OpenAI host feeds an image model on the ComfyUI host, in one graph", async (t) => {
  const llm = await FakeLlm.start();
  const comfy = await FakeComfyUI.start();
  t.teardown(() => llm.stop());
  t.teardown(() => comfy.stop());
  const { s, ws, comfyHost, llmHost } = await fleet(t, llm, comfy);

  const jobId = await start(ws, chained("a lighthouse at dusk"));
  const end = await ended(ws, jobId);
  t.equal(end.status, "completed", JSON.stringify(end.error ?? null));
  const parent = (await api(s.url, "GET", `/api/jobs/${jobId}`)).body as unknown as Rec;
  t.equal(parent.pool, "comfyui", "the graph goes where its hardest node to move runs");
  t.equal(parent.agent_id, comfyHost.id, "and runs on the agent beside ComfyUI");

  const chats = () => llm.requests.filter((r) => r.path === "/v1/chat/completions");
  t.equal(chats().length, 1, "the OpenAI server was asked once for a reply");
  const childId = await childOf(ws, jobId, "llm");
  const child = (await api(s.url, "GET", `/api/jobs/${childId}`)).body as unknown as Rec;
  t.match(
    child,
    {
      status: "completed",
      pool: "openai",
      agent_id: llmHost!.id,
      parent: { job_id: jobId, attempt: 1, node_id: "llm" },
    },
    "the LLM ran as a child job in the openai pool, on the host with the key",
  );

  const prompt = comfy.requests.find((r) => r.method === "POST" && r.path === "/prompt")!.body as {
    prompt: Record<string, { class_type: string; inputs: Record<string, unknown> }>;
  };
  const texts = Object.values(prompt.prompt)
    .filter((n) => n.class_type === "CLIPTextEncode")
    .map((n) => String(n.inputs.text));
  t.ok(
    texts.some((x) => /^echo: a lighthouse at dusk\s*$/.test(x)),
    `ComfyUI was prompted with the LLM's answer (${JSON.stringify(texts)})`,
  );
  t.match(parent.outputs?.text, [/^echo: a lighthouse at dusk/], "the parent's outputs hold the child's text");
  const image = ws.events(jobId).find((e) => e.type === "output_update" && e.node_id === "image")?.value;
  t.ok(image instanceof Uint8Array && image[0] === 0x89, "and ComfyUI's image");
  const nodeEnd = ws
    .events(jobId)
    .filter((e) => e.type === "node_update" && e.node_id === "llm")
    .map((e) => e.status);
  t.same(nodeEnd, ["running", "completed"], "the parent's history shows the node run and end");
  const history = ws.events(jobId);
  const tokens = history.filter((e) => e.type === "chunk" && e.node_id === "llm");
  t.match(
    tokens.map((e) => e.content).join(""),
    /^echo: a lighthouse at dusk/,
    "the child's tokens are in the parent's history, as the node's own",
  );
  const endAt = history.findIndex((e) => e.type === "node_update" && e.node_id === "llm" && e.status === "completed");
  t.ok(tokens.length > 0 && history.indexOf(tokens.at(-1)!) < endAt, "before the node's end");

  // Same graph again: a new parent gets a child of its own (no stale result reused across jobs).
  const again = await start(ws, chained("a harbour"));
  t.equal((await ended(ws, again)).status, "completed");
  t.not(await childOf(ws, again, "llm"), childId, "a new child per parent");
});

t.test("child jobs - cancelling the parent cancels the child it waits on", async (t) => {
  const llm = await FakeLlm.start(400);
  const comfy = await FakeComfyUI.start();
  t.teardown(() => llm.stop());
  t.teardown(() => comfy.stop());
  const { s, ws } = await fleet(t, llm, comfy);

  const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(" ");
  const jobId = await start(ws, chained(words, 200));
  const childId = await childOf(ws, jobId, "llm");
  await check(() => llm.requests.some((r) => r.path === "/v1/chat/completions"), 20_000, {
    name: "the child is streaming from the LLM",
  });
  await api(s.url, "POST", `/api/jobs/${jobId}/cancel`);
  t.equal((await ended(ws, jobId)).status, "cancelled");
  const child = await check(
    async () => {
      const r = (await api(s.url, "GET", `/api/jobs/${childId}`)).body as unknown as Rec;
      return r.status === "cancelled" ? r : null;
    },
    20_000,
    { name: "the child cancelled" },
  );
  t.equal(child.status, "cancelled", "the child job is cancelled too");
  await check(() => llm.abandoned >= 1, 20_000, { name: "the LLM stream was closed" });
  t.ok(llm.abandoned >= 1, "and its request to the provider was dropped, not run to its end");
});

t.test(
  "child jobs - a node whose pool no agent serves runs with its graph and fails naming what it lacks",
  async (t) => {
    const llm = await FakeLlm.start();
    const comfy = await FakeComfyUI.start();
    t.teardown(() => llm.stop());
    t.teardown(() => comfy.stop());
    const { s, ws } = await fleet(t, llm, comfy, false);

    const jobId = await start(ws, chained("a lighthouse"));
    const end = await ended(ws, jobId);
    t.equal(end.status, "failed");
    t.match(
      end.error,
      { code: "JOB_ERR_NODE_FAILED", message: /OPENAI_API_KEY/ },
      "the LLM node says which key it needs",
    );
    const all = (await api(s.url, "GET", "/api/jobs?limit=50")).body.jobs as Rec[];
    t.equal(all.filter((j) => j.parent).length, 0, "no child job was left queued for a pool nobody serves");
  },
);
