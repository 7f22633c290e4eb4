/**
 * ComfyUI and hostile input: overrides and workflows are user data, walked over own properties only, and keys that
 * reach a prototype (`__proto__`, `constructor`, `prototype`) are refused before anything reaches ComfyUI; the
 * agent then runs the next workflow. The ComfyUI URL the agent advertises has no userinfo (its credentials go as
 * a Basic header), and a JSON client gets a workflow's small images as `data:` URIs, never serialized Buffers.
 */
import t, { type Test } from "tap";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FakeComfyUI } from "../helpers/fake-comfyui.js";
import { applyOverrides } from "../../agent/integrations/index.js";
import { ErrorCode } from "../../protocol/index.js";

const txt2img = () => ({
  "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } },
  "6": { class_type: "CLIPTextEncode", inputs: { text: "placeholder", clip: ["4", 1] } },
  "3": { class_type: "KSampler", inputs: { steps: 1, seed: 1, model: ["4", 0], positive: ["6", 0] } },
  "10": { class_type: "SaveImage", inputs: { filename_prefix: "thumb", images: ["3", 0], _size: 2_000 } },
});

const clean = (t: Test) => {
  t.equal(({} as Record<string, unknown>).inputs, undefined, "Object.prototype has no inputs");
  t.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype has no polluted");
  t.equal((Object as unknown as Record<string, unknown>).inputs, undefined, "Object has no inputs");
};

t.test("comfyui - applyOverrides refuses keys that reach a prototype (JSON text) and pollutes nothing", async (t) => {
  const overrides: [string, RegExp][] = [
    ['{"__proto__.inputs": {"polluted": true}}', /override "__proto__\.inputs" names the forbidden key "__proto__"/],
    ['{"constructor.inputs": {"polluted": true}}', /forbidden key "constructor"/],
    ['{"6.__proto__": {"polluted": true}}', /forbidden key "__proto__"/],
    ['{"__proto__": {"6.text": "x"}}', /"overrides" has the forbidden key "__proto__"/],
    ['{"6.text": {"a": {"prototype": 1}}}', /"overrides"\.6\.text\.a has the forbidden key "prototype"/],
  ];
  for (const [text, why] of overrides) {
    t.throws(
      () => applyOverrides(txt2img(), JSON.parse(text) as Record<string, unknown>),
      { code: ErrorCode.PROTO_ERR_FORBIDDEN_KEY, message: why },
      text,
    );
  }
  const workflow = JSON.parse(
    '{"6": {"class_type": "CLIPTextEncode", "inputs": {}}, "__proto__": {"class_type": "X", "inputs": {}}}',
  ) as Record<string, unknown>;
  t.throws(
    () => applyOverrides(workflow, { "6.text": "x" }),
    { code: ErrorCode.PROTO_ERR_FORBIDDEN_KEY, message: /"workflow" has the forbidden key "__proto__"/ },
    "a workflow with an own __proto__",
  );
  // A node's inputs inherited from a prototype are not its own: the override starts from none.
  const inherited = {
    "6": Object.assign(Object.create({ inputs: { secret: 1 } }) as object, { class_type: "CLIPTextEncode" }),
  };
  t.same(
    (applyOverrides(inherited, { "6.text": "x" })["6"] as { inputs: unknown }).inputs,
    { text: "x" },
    "only own inputs are kept",
  );
  clean(t);
});

t.test(
  "comfyui - hostile overrides and workflows fail their job before ComfyUI; the advertised URL has no userinfo; images reach JSON clients as data: URIs",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const withUser = fake.url.replace("http://", "http://nodeway:s3cret-comfy@");
    const s = await startStack(t, { agents: 1, agentArgs: ["--comfyui-url", withUser] });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    await check(
      async () =>
        ((await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as { node_type: string }[]).some?.(
          (n) => n.node_type === "comfy.Workflow",
        ),
      20_000,
      { name: "comfy.Workflow in the catalog" },
    );

    const agents = await api(s.url, "GET", "/api/agents");
    t.notMatch(JSON.stringify(agents.body), /s3cret-comfy|nodeway:/, "/api/agents shows no ComfyUI credentials");
    t.match(
      (agents.body.agents as { capabilities: { comfyui?: { url: string } } }[])[0]!.capabilities.comfyui,
      { url: `${fake.url}/` },
      "the URL without its userinfo",
    );

    const runGraph = async (graph: unknown): Promise<Msg> => {
      const r = await ws.request("run_job", { graph, params: {} });
      if (r.error) throw new Error(`run_job refused: ${JSON.stringify(r.error)}`);
      const jobId = String((r.result as { job_id: string }).job_id);
      return check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
    };
    const comfyNode = (data: Record<string, unknown>) => ({ id: "c", type: "comfy.Workflow", data });

    const direct = await runGraph({
      nodes: [comfyNode({ workflow: txt2img(), overrides: { "__proto__.inputs": { polluted: true } } })],
      edges: [],
    });
    t.equal(direct.status, "failed", "an override naming __proto__ fails its job");
    t.match(direct.error, { message: /override "__proto__\.inputs" names the forbidden key "__proto__"/ });

    // JSON text parsed inside the graph (ParseJSON) gives own __proto__ keys the gateway never saw.
    const parsed = (text: string, handle: string) => ({
      nodes: [
        { id: "p", type: "nodetool.text.ParseJSON", data: { text } },
        comfyNode(handle === "workflow" ? {} : { workflow: txt2img() }),
      ],
      edges: [{ id: "e", source: "p", sourceHandle: "output", target: "c", targetHandle: handle }],
    });
    const viaOverrides = await runGraph(parsed('{"6.text": "x", "__proto__": {"polluted": true}}', "overrides"));
    t.match(
      viaOverrides.error,
      { message: /"overrides" has the forbidden key "__proto__"/ },
      "parsed overrides with __proto__ are refused",
    );
    const viaWorkflow = await runGraph(
      parsed(`{"__proto__": {"class_type": "X", "inputs": {}}, "6": ${JSON.stringify(txt2img()["6"])}}`, "workflow"),
    );
    t.match(
      viaWorkflow.error,
      { message: /"workflow" has the forbidden key "__proto__"/ },
      "a parsed workflow with __proto__ is refused",
    );
    t.equal(fake.requests.filter((r) => r.path === "/prompt").length, 0, "none reached ComfyUI");

    const ok = await runGraph({
      nodes: [
        comfyNode({ workflow: txt2img(), overrides: { "6.text": "a cat" } }),
        { id: "out", type: "nodetool.output.Output", data: { name: "images" } },
      ],
      edges: [{ id: "e", source: "c", sourceHandle: "images", target: "out", targetHandle: "value" }],
    });
    t.equal(ok.status, "completed", "the next workflow runs, through a URL with userinfo");
    const queued = fake.requests.find((r) => r.path === "/prompt")!.body as {
      prompt: Record<string, { inputs: Record<string, unknown> }>;
    };
    t.equal(queued.prompt["6"]!.inputs.text, "a cat", "its override reached ComfyUI");
    const images = (ok.result as { images: unknown[] }).images;
    t.match(images, [/^data:application\/octet-stream;base64,/], "the JSON client gets the small image as a data: URI");
    t.notMatch(JSON.stringify(ws.events(String(ok.job_id))), /"type":"Buffer"/, "no event holds a serialized Buffer");
    const rec = await api(s.url, "GET", `/api/jobs/${String(ok.job_id)}`);
    t.notMatch(JSON.stringify(rec.body), /"type":"Buffer"/, "nor does the job's record");
  },
);
