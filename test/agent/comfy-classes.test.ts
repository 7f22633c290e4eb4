/**
 * ComfyUI's node classes as graph nodes, under NodeTool's names (`comfy.loaders.CheckpointLoaderSimple`,
 * `comfy.sampling.KSampler`, …): the agent beside a ComfyUI offers the classes its `/object_info` lists, the gateway
 * accepts graphs of them (under NodeTool's other namespaces too), and each connected group of them runs as one
 * prompt that ComfyUI — the fake validating it as ComfyUI does — accepts: links by output index and type, values from
 * other nodes written in, images from other nodes loaded, images to other nodes saved. What cannot cross between
 * ComfyUI and other nodes is refused by name.
 */
import t, { type Test } from "tap";
import { compileComfyGroups, parseObjectInfo } from "../../agent/integrations/index.js";
import type { Graph, GraphEdge, GraphNode } from "../../protocol/index.js";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_CLASSES, FakeComfyUI } from "../helpers/fake-comfyui.js";

const edge = (source: string, sourceHandle: string, target: string, targetHandle: string): GraphEdge => ({
  id: `${source}.${sourceHandle}->${target}.${targetHandle}`,
  source,
  sourceHandle,
  target,
  targetHandle,
});

/** Text to image as NodeTool saves it with its ComfyUI nodes; the decoded image also goes to an Output. */
function txt2imgGraph(): Graph {
  const nodes: GraphNode[] = [
    { id: "p", type: "nodetool.input.StringInput", data: { name: "prompt", value: "a lighthouse" } },
    {
      id: "ckpt",
      type: "comfy.loaders.CheckpointLoaderSimple",
      data: { ckpt_name: "v1-5-pruned-emaonly.safetensors" },
    },
    { id: "pos", type: "comfy.conditioning.CLIPTextEncode", data: { text: "" } },
    { id: "neg", type: "comfy.conditioning.CLIPTextEncode", data: { text: "blurry" } },
    { id: "lat", type: "comfy.latent.EmptyLatentImage", data: { width: 768, height: 512, batch_size: 1 } },
    {
      id: "ks",
      type: "comfy.sampling.KSampler",
      // NodeTool keeps an empty reference for a model input that an edge feeds, and options of its own.
      data: { seed: 7, seed_control_mode: "fixed", steps: 4, cfg: 7, model: { type: "comfy.unet" } },
    },
    { id: "dec", type: "comfy.latent.VAEDecode", data: {} },
    { id: "save", type: "comfy.image.SaveImage", data: { filename_prefix: "nt" } },
    { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
  ];
  const edges = [
    edge("p", "output", "pos", "text"),
    edge("ckpt", "clip", "pos", "clip"),
    edge("ckpt", "clip", "neg", "clip"),
    edge("ckpt", "model", "ks", "model"),
    edge("pos", "conditioning", "ks", "positive"),
    edge("neg", "conditioning", "ks", "negative"),
    edge("lat", "latent", "ks", "latent_image"),
    edge("ks", "latent", "dec", "samples"),
    edge("ckpt", "vae", "dec", "vae"),
    edge("dec", "image", "save", "images"),
    edge("dec", "image", "out", "value"),
  ];
  return { nodes, edges };
}

const objectInfo = Object.fromEntries(Object.entries(FAKE_CLASSES).map(([k, v]) => [k, { ...v, name: k }]));
const classes = parseObjectInfo(objectInfo);
const compile = (g: Graph) =>
  compileComfyGroups(g, (type) => type === "comfy.Workflow", { classes, offered: new Map() });
type Prompt = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

t.test(
  "comfy classes - an /object_info answer of the wrong shape gives what it can read, never a prototype key",
  async (t) => {
    t.same([...parseObjectInfo(null).keys()], [], "null: no classes");
    t.same([...parseObjectInfo([1, 2]).keys()], [], "a list: no classes");
    const odd = parseObjectInfo(
      JSON.parse(`{
      "__proto__": {"input": {"required": {}}, "output": []},
      "constructor": {"input": {"required": {}}},
      "NoInfo": 7,
      "Weird": {"input": {"required": {"__proto__": ["INT"], "ok": ["INT", {"default": {"x": 1}, "min": "0"}],
        "bad": "STRING", "empty": []}, "optional": 5}, "output": "IMAGE", "output_name": [1], "category": 9},
      "Dupes": {"input": {}, "output": ["IMAGE", "IMAGE"], "output_name": ["IMAGE", "IMAGE"]}
    }`),
    );
    t.same([...odd.keys()].sort(), ["Dupes", "Weird"], "prototype names and non-objects are left out");
    t.same(
      odd.get("Weird"),
      {
        name: "Weird",
        title: "Weird",
        description: "",
        category: "",
        inputs: [{ name: "ok", type: "INT", required: true }],
        outputs: [],
        outputNode: false,
      },
      "only the readable input; an object default and a text min are dropped",
    );
    t.same(
      odd.get("Dupes")!.outputs.map((o) => o.name),
      ["image", "image_1"],
      "two outputs of one name get handles of their own",
    );
    const many = parseObjectInfo(
      Object.fromEntries(Array.from({ length: 6_000 }, (_, i) => [`C${i}`, { input: {}, output: [] }])),
    );
    t.equal(many.size, 5_000, "at most 5,000 classes are read");
  },
);

t.test("comfy classes - a NodeTool graph of ComfyUI nodes compiles to one prompt with ComfyUI's links", async (t) => {
  const g = compile(txt2imgGraph());
  const run = g.nodes.find((n) => n.type === "lib.comfy.RunWorkflow")!;
  t.same(
    g.nodes.map((n) => n.id),
    ["p", "out", "comfyui"],
    "the ComfyUI nodes are one node now; the others stay",
  );
  const prompt = run.data!.workflow as Prompt;
  t.same(
    prompt.ks!.inputs,
    {
      model: ["ckpt", 0],
      seed: 7,
      steps: 4,
      cfg: 7,
      sampler_name: "euler",
      scheduler: "normal",
      positive: ["pos", 0],
      negative: ["neg", 0],
      latent_image: ["lat", 0],
      denoise: 1,
    },
    "links by output index, saved values, ComfyUI's defaults for the rest; NodeTool's own options left out",
  );
  t.same(prompt.dec!.inputs, { samples: ["ks", 0], vae: ["ckpt", 2] }, "clip, vae by their index on the loader");
  t.same(prompt.save!.inputs, { images: ["dec", 0], filename_prefix: "nt" });
  t.same(
    prompt["dec-out-0"],
    { class_type: "SaveImage", inputs: { filename_prefix: "nodeway", images: ["dec", 0] } },
    "the image another node takes is saved for it",
  );
  t.same(
    g.edges.map((e) => `${e.source}.${e.sourceHandle}->${e.target}.${e.targetHandle}`).sort(),
    ["comfyui.dec-out-0:image->out.value", "p.output->comfyui.pos:text"],
    "edges in and out run through the prompt's handles",
  );
});

t.test("comfy classes - NodeTool's other namespaces, images in, groups, and what cannot cross", async (t) => {
  const img: GraphNode = { id: "img", type: "nodetool.input.ImageInput", data: { name: "photo" } };
  const scale: GraphNode = { id: "s.1", type: "comfy.image.ImageScale", data: { width: 64, height: 64 } };
  const save: GraphNode = { id: "sv", type: "comfy.SaveImage", data: {} };
  const out: GraphNode = { id: "out", type: "nodetool.output.Output", data: { name: "x" } };
  const g = compile({
    nodes: [img, scale, save, out],
    edges: [
      edge("img", "output", "s.1", "image"),
      edge("s.1", "image", "sv", "images"),
      edge("sv", "image", "out", "value"),
    ],
  });
  const prompt = g.nodes.find((n) => n.id === "comfyui")!.data!.workflow as Prompt;
  t.same(
    prompt.n1!.inputs.image,
    ["n1-image", 0],
    "an id ComfyUI's handles cannot carry is renamed; its image input comes from a LoadImage",
  );
  t.same(prompt["n1-image"], { class_type: "LoadImage", inputs: { image: "" } });
  t.ok(
    g.edges.some((e) => e.source === "img" && e.targetHandle === "n1-image:image"),
    "the image goes to that LoadImage's handle (uploaded when it runs)",
  );
  t.ok(
    g.edges.some((e) => e.sourceHandle === "sv:image" && e.target === "out"),
    "a save node's own files leave on <node>:image",
  );

  const proto = compile({
    nodes: [
      { id: "__proto__", type: "comfy.LoadImage", data: {} },
      { id: "constructor", type: "comfy.SaveImage", data: {} },
    ],
    edges: [edge("__proto__", "image", "constructor", "images")],
  });
  const protoPrompt = proto.nodes[0]!.data!.workflow as Prompt;
  t.same(
    Object.keys(protoPrompt).sort(),
    ["n1", "n2"],
    "ids that would reach a prototype are renamed, never keys of the prompt",
  );
  t.same(protoPrompt.n2!.inputs.images, ["n1", 0], "and still linked");

  const two = compile({
    nodes: [
      { id: "a", type: "comfy.SaveImage", data: {} },
      { id: "b", type: "comfy.SaveImage", data: {} },
      { id: "la", type: "comfy.LoadImage", data: { image: { type: "image", uri: "", asset_id: "x" } } },
      { id: "lb", type: "comfy.LoadImage", data: {} },
    ],
    edges: [edge("la", "image", "a", "images"), edge("lb", "image", "b", "images")],
  });
  t.same(
    two.nodes.map((n) => n.id).sort(),
    ["comfyui-1", "comfyui-2"],
    "unconnected groups run as prompts of their own",
  );
  t.ok(
    two.nodes.some((n) => (n.data as Record<string, unknown>)["la:image"] !== undefined),
    "an image saved in a ComfyUI node's data goes in on its handle (uploaded)",
  );

  const refused = (g: Graph) => {
    try {
      compile(g);
      return "compiled";
    } catch (err) {
      return (err as Error).message;
    }
  };
  const latentOut = txt2imgGraph();
  latentOut.edges.push(edge("ks", "latent", "out", "value"));
  t.match(refused(latentOut), /output "latent" is a ComfyUI LATENT; only images come back from ComfyUI/);
  const noModel = txt2imgGraph();
  noModel.edges = noModel.edges.filter((e) => e.target !== "ks" || e.targetHandle !== "model");
  t.match(refused(noModel), /node ks \(KSampler\): input "model" \(MODEL\) is required and not connected/);
  const modelIn = txt2imgGraph();
  modelIn.edges = modelIn.edges.map((e) =>
    e.target === "ks" && e.targetHandle === "model" ? { ...e, source: "p" } : e,
  );
  t.match(refused(modelIn), /input "model" takes a ComfyUI MODEL, which only a ComfyUI node can give/);
  const unknown = txt2imgGraph();
  unknown.nodes.push({ id: "x", type: "comfy.sampling.NoSuchSampler", data: {} });
  t.match(
    refused(unknown),
    /node x \(comfy.sampling.NoSuchSampler\): the ComfyUI beside this agent has no such node class/,
  );
  const wrongHandle = txt2imgGraph();
  wrongHandle.edges = wrongHandle.edges.map((e) =>
    e.target === "dec" && e.targetHandle === "vae" ? { ...e, sourceHandle: "vea" } : e,
  );
  t.match(refused(wrongHandle), /node ckpt \(CheckpointLoaderSimple\) has no output "vea" \(it has model, clip, vae\)/);
  const loop = txt2imgGraph();
  loop.nodes.push({ id: "f", type: "nodetool.text.FormatText", data: { template: "{{ a }}" } });
  loop.edges = loop.edges.filter((e) => e.source !== "p");
  loop.edges.push(edge("dec", "image", "f", "a"), edge("f", "output", "pos", "text"));
  t.match(refused(loop), /a group's output comes back into it through other nodes/);
  t.match(
    (() => {
      try {
        compileComfyGroups(txt2imgGraph(), () => false, null);
        return "";
      } catch (err) {
        return (err as Error).message;
      }
    })(),
    /node ckpt \(comfy.loaders.CheckpointLoaderSimple\) is a ComfyUI node: it runs only on an agent beside a ComfyUI \(--comfyui-url\)/,
    "an agent without a ComfyUI says where such nodes run",
  );
});

async function run(ws: WsClient, graph: unknown, params: Record<string, unknown> = {}) {
  const r = await ws.request("run_job", { graph, params });
  if (r.error) return { refused: r.error as { code?: string; message?: string } };
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
  return { jobId, end, events: (): Msg[] => ws.events(jobId) };
}

async function comfyStack(t: Test, fake: FakeComfyUI) {
  const s = await startStack(t, { agents: 1, agentArgs: ["--comfyui-url", fake.url] });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const catalog = await check(
    async () => {
      const list = (await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as Record<string, unknown>[];
      return Array.isArray(list) && list.some((n) => n.node_type === "comfy.sampling.KSampler") ? list : null;
    },
    20_000,
    { name: "ComfyUI's classes in the catalog" },
  );
  return { s, ws, catalog };
}

t.test(
  "comfy classes - an agent beside ComfyUI offers its classes, and NodeTool's ComfyUI graph runs there",
  async (t) => {
    const fake = await FakeComfyUI.start({ strict: true });
    t.teardown(() => fake.stop());
    const { s, ws, catalog } = await comfyStack(t, fake);
    t.match(
      catalog.find((n) => n.node_type === "comfy.sampling.KSampler"),
      {
        pool: "comfyui",
        comfy_class: "KSampler",
        outputs: [{ name: "latent", type: "comfy.latent" }],
        properties: [
          { name: "model", type: "comfy.model", required: true },
          { name: "seed", type: "int", default: 0 },
        ],
      },
      "/api/nodes/metadata lists ComfyUI's classes: inputs as properties, outputs as NodeTool names them",
    );
    t.ok(
      catalog.some((n) => n.node_type === "comfy.sampling.custom_sampling.samplers.KSamplerSelect"),
      "under their ComfyUI category",
    );

    const job = await run(ws, txt2imgGraph(), { prompt: "a cat in the snow" });
    t.equal(job.end?.status, "completed", JSON.stringify(job.end?.error ?? job.refused ?? null));
    const posts = fake.requests.filter((r) => r.method === "POST" && r.path === "/prompt");
    t.equal(posts.length, 1, "one prompt for the whole group, accepted by ComfyUI's validation");
    const prompt = (posts[0]!.body as { prompt: Prompt }).prompt;
    t.equal(prompt.pos!.inputs.text, "a cat in the snow", "the param reached CLIPTextEncode");
    t.equal(
      (await api(s.url, "GET", `/api/jobs/${job.jobId}`)).body.pool,
      "comfyui",
      "the job went to the comfyui pool",
    );
    const events = job.events!();
    t.same(
      events.filter((e) => e.type === "node_progress" && e.node_id === "comfyui").map((e) => e.progress),
      [1, 2, 3, 4],
      "the sampler's steps as progress",
    );
    const image = events.find((e) => e.type === "output_update" && e.node_id === "out")?.value;
    t.ok(
      image instanceof Uint8Array && Buffer.from(image.subarray(0, 4)).toString("hex") === "89504e47",
      "the decoded image reached the Output as PNG bytes",
    );

    // An image from the job's params goes in through a LoadImage; NodeTool's namespace for ImageScale differs from
    // ComfyUI's category (image/upscaling) and still names the class.
    const png = Buffer.alloc(3_000, 7);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(png);
    const up = await fetch(`${s.url}/api/assets?name=in.png`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new Uint8Array(png),
    });
    const assetId = String(((await up.json()) as { id: string }).id);
    const scaled = await run(
      ws,
      {
        nodes: [
          { id: "img", type: "nodetool.input.ImageInput", data: { name: "photo" } },
          { id: "sc", type: "comfy.image.ImageScale", data: { width: 64, height: 64, upscale_method: "lanczos" } },
          { id: "sv", type: "comfy.image.SaveImage", data: {} },
          { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
        ],
        edges: [
          edge("img", "output", "sc", "image"),
          edge("sc", "image", "sv", "images"),
          edge("sv", "image", "out", "value"),
        ],
      },
      { photo: `asset://${assetId}` },
    );
    t.equal(scaled.end?.status, "completed", JSON.stringify(scaled.end?.error ?? scaled.refused ?? null));
    const echoed = scaled.events!().find((e) => e.type === "output_update" && e.node_id === "out")?.value;
    t.ok(
      echoed instanceof Uint8Array && Buffer.from(echoed).equals(png),
      "the photo went through ComfyUI byte for byte",
    );

    const before = fake.requests.filter((r) => r.path === "/prompt").length;
    const unknown = txt2imgGraph();
    unknown.nodes.push({ id: "x", type: "comfy.sampling.NoSuchSampler", data: {} });
    const refused = await run(ws, unknown);
    t.match(
      refused.refused,
      { code: "GRAPH_ERR_UNKNOWN_NODE_TYPE", message: /comfy\.sampling\.NoSuchSampler/ },
      "a class ComfyUI lacks is refused at submit",
    );
    const latentOut = txt2imgGraph();
    latentOut.edges.push(edge("ks", "latent", "out", "value"));
    const failed = await run(ws, latentOut);
    t.match(
      failed.end?.error,
      { message: /only images come back from ComfyUI/ },
      "a latent to a non-ComfyUI node fails by name",
    );
    t.equal(fake.requests.filter((r) => r.path === "/prompt").length, before, "neither reached ComfyUI");
  },
);

t.test(
  "comfy classes - a ComfyUI that answers only after the agent started: its classes join the catalog then",
  async (t) => {
    const fake = await FakeComfyUI.start({ strict: true });
    await fake.stop();
    t.teardown(() => fake.stop().catch(() => undefined));
    const s = await startStack(t, { agents: 1, agentArgs: ["--comfyui-url", fake.url] });
    const types = async () =>
      ((await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as { node_type: string }[]).map(
        (n) => n.node_type,
      );
    await check(async () => (await types()).includes("comfy.Workflow"), 20_000, { name: "the agent registered" });
    t.notOk((await types()).includes("comfy.sampling.KSampler"), "no ComfyUI classes while it does not answer");
    await fake.restart();
    await check(async () => (await types()).includes("comfy.sampling.KSampler"), 20_000, {
      name: "ComfyUI's classes in the catalog",
    });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const job = await run(ws, txt2imgGraph());
    t.equal(job.end?.status, "completed", "and a graph of them runs");
  },
);
