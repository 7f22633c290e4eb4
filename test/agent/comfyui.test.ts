/**
 * ComfyUI as a remote agent: an agent with `--comfyui-url` runs `comfy.Workflow` jobs (pool `comfyui`) on a server
 * that speaks ComfyUI's HTTP + WebSocket API (test/helpers/fake-comfyui.ts, on a real socket), and re-emits its
 * progress, previews and saved images as Nodeway events and assets. ComfyUI's refusals and node errors fail the
 * job saying what ComfyUI said; a cancel interrupts that prompt only; a socket lost mid-prompt is made good from
 * `/history`; while ComfyUI does not answer, its jobs wait queued and run once it is back.
 */
import t, { type Test } from "tap";
import { api, WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FakeComfyUI } from "../helpers/fake-comfyui.js";

/** A txt2img-shaped API-format prompt: a sampler of `steps`, one large and one small saved image. */
const txt2img = (steps = 5) => ({
  "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } },
  "6": { class_type: "CLIPTextEncode", inputs: { text: "placeholder", clip: ["4", 1] } },
  "3": { class_type: "KSampler", inputs: { steps, seed: 1, model: ["4", 0], positive: ["6", 0] } },
  "9": { class_type: "SaveImage", inputs: { filename_prefix: "big", images: ["3", 0], _size: 400_000 } },
  "10": { class_type: "SaveImage", inputs: { filename_prefix: "thumb", images: ["3", 0], _size: 2_000 } },
});

/**
 * An input (by default param `prompt`, a StringInput) → MakeDictionary {`key`, by default "6.text"} →
 * comfy.Workflow overrides; its images → Output "images".
 */
const graphOf = (
  workflow: unknown,
  input = {
    type: "nodetool.input.StringInput",
    data: { name: "prompt", value: "a lighthouse" } as Record<string, unknown>,
  },
  key = "6.text",
) => ({
  nodes: [
    { id: "p", ...input },
    { id: "d", type: "nodetool.dictionary.MakeDictionary", data: {} },
    { id: "c", type: "comfy.Workflow", data: { workflow } },
    { id: "out", type: "nodetool.output.Output", data: { name: "images" } },
  ],
  edges: [
    { id: "e1", source: "p", sourceHandle: "output", target: "d", targetHandle: key },
    { id: "e2", source: "d", sourceHandle: "output", target: "c", targetHandle: "overrides" },
    { id: "e3", source: "c", sourceHandle: "images", target: "out", targetHandle: "value" },
  ],
});

async function run(
  ws: WsClient,
  graph: unknown,
  params: Record<string, unknown> = {},
): Promise<{ jobId: string; end: Msg; events: () => Msg[] }> {
  const r = await ws.request("run_job", { graph, params });
  if (r.error) throw new Error(`run_job refused: ${JSON.stringify(r.error)}`);
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: `job ${jobId} ended` });
  return { jobId, end, events: () => ws.events(jobId) };
}

async function comfyStack(t: Test, fake: FakeComfyUI, agentArgs: string[] = []) {
  const s = await startStack(t, { agents: 1, agentArgs: ["--comfyui-url", fake.url, ...agentArgs] });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  await check(
    async () =>
      ((await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as { node_type: string }[]).some?.(
        (n) => n.node_type === "comfy.Workflow",
      ),
    20_000,
    { name: "comfy.Workflow in the catalog" },
  );
  return { s, ws };
}

t.test("comfyui - a workflow runs on ComfyUI: progress, previews, logs, and its images as assets", async (t) => {
  const fake = await FakeComfyUI.start();
  t.teardown(() => fake.stop());
  const { s, ws } = await comfyStack(t, fake);

  const agents = (await api(s.url, "GET", "/api/agents")).body.agents as {
    pools: string[];
    capabilities: { comfyui?: Record<string, unknown> };
  }[];
  t.ok(agents[0]!.pools.includes("comfyui"), "the agent serves the comfyui pool");
  t.match(
    agents[0]!.capabilities.comfyui,
    { url: fake.url, reachable: true, version: "0.3.64", devices: [{ name: /NVIDIA H200/, type: "cuda" }] },
    "and says what ComfyUI it has",
  );

  const job = await run(ws, graphOf(txt2img(5)), { prompt: "a cat in the snow" });
  t.equal(job.end.status, "completed");
  const queued = fake.requests.find((r) => r.method === "POST" && r.path === "/prompt")!.body as {
    prompt: Record<string, { inputs: Record<string, unknown> }>;
    client_id: string;
    prompt_id: string;
  };
  t.equal(
    queued.prompt["6"]!.inputs.text,
    "a cat in the snow",
    "the param reached ComfyUI's CLIPTextEncode through the override",
  );
  t.match(
    queued,
    { client_id: /^[0-9a-f]{32}$/, prompt_id: /^[0-9a-f-]{36}$/ },
    "queued with our client id and a prompt id of our own",
  );
  const rec = await api(s.url, "GET", `/api/jobs/${job.jobId}`);
  t.equal(rec.body.pool, "comfyui", "the job went to the comfyui pool");

  const events = job.events();
  const progress = events
    .filter((e) => e.type === "node_progress" && e.node_id === "c")
    .map((e) => [e.progress, e.total]);
  t.same(
    progress,
    [
      [1, 5],
      [2, 5],
      [3, 5],
      [4, 5],
      [5, 5],
    ],
    "the sampler's steps as node_progress",
  );
  const previews = events.filter((e) => e.type === "preview_update" && e.node_id === "c");
  t.equal(previews.length, 5, "a preview per step");
  t.ok(
    previews[0]!.value instanceof Uint8Array && (previews[0]!.value as Uint8Array)[0] === 0xff,
    "the preview's JPEG bytes, without ComfyUI's frame header",
  );
  t.ok(
    events.some((e) => e.type === "log_update" && /ComfyUI runs node 3 \(KSampler\)/.test(String(e.content))),
    "ComfyUI's progress through nodes as log lines",
  );

  const images = events.find((e) => e.type === "output_update" && e.node_id === "out")!.value as unknown[];
  t.equal(images.length, 2, "both saved images");
  const big = images[0] as Record<string, unknown>;
  t.match(
    big,
    { type: "image", content_type: "image/png", size: 400_000, uri: /^asset:\/\// },
    "the large one as an image asset",
  );
  const served = Buffer.from(await (await fetch(`${s.url}/api/assets/${String(big.asset_id)}/content`)).arrayBuffer());
  t.ok(
    served.equals(fake.files.get(`output//${[...fake.files.keys()].find((k) => k.includes("big"))!.split("//")[1]}`)!),
    "the gateway serves the bytes ComfyUI wrote",
  );
  t.ok(images[1] instanceof Uint8Array && (images[1] as Uint8Array).length === 2_000, "the small one inline");
});

t.test(
  "comfyui - ComfyUI's refusals and node errors fail the job saying what ComfyUI said; the agent goes on",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { ws } = await comfyStack(t, fake);

    const unknown = await run(
      ws,
      graphOf({ "6": { class_type: "CLIPTextEncode", inputs: {} }, "1": { class_type: "NoSuchNode", inputs: {} } }),
    );
    t.equal(unknown.end.status, "failed");
    t.match(unknown.end.error, {
      code: "JOB_ERR_NODE_FAILED",
      message: /ComfyUI refused POST \/prompt \(HTTP 400\): Cannot execute because node NoSuchNode does not exist/,
    });

    const failing = await run(
      ws,
      graphOf({ ...txt2img(2), "11": { class_type: "Fail", inputs: { message: "CUDA out of memory" } } }),
    );
    t.equal(failing.end.status, "failed");
    t.match(failing.end.error, { message: /ComfyUI node 11 \(Fail\) failed: CUDA out of memory \[RuntimeError\]/ });

    const uiFormat = await run(ws, graphOf({ nodes: [{ id: 1, type: "KSampler" }], links: [] }));
    t.match(
      uiFormat.end.error,
      { message: /has no "class_type": is it the API format/ },
      "a UI-format workflow is named as such, before anything reaches ComfyUI",
    );
    const badOverride = await (async () => {
      const r = await ws.request("run_job", {
        graph: {
          nodes: [{ id: "c", type: "comfy.Workflow", data: { workflow: txt2img(1), overrides: { "99.text": "x" } } }],
          edges: [],
        },
        params: {},
      });
      const jobId = String((r.result as { job_id: string }).job_id);
      return check(() => terminal(ws.events(jobId)) ?? null, 30_000);
    })();
    t.match(badOverride.error, { message: /override "99\.text": the workflow has no node 99/ });

    const ok = await run(ws, graphOf(txt2img(1)));
    t.equal(ok.end.status, "completed", "the next workflow runs");
  },
);

t.test("comfyui - cancel interrupts that prompt in ComfyUI", async (t) => {
  const fake = await FakeComfyUI.start({ stepMs: 200 });
  t.teardown(() => fake.stop());
  const { ws } = await comfyStack(t, fake);
  const r = await ws.request("run_job", { graph: graphOf(txt2img(50)), params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  await check(() => ws.events(jobId).some((e) => e.type === "node_progress"), 20_000, { name: "sampling started" });
  await ws.request("cancel_job", { job_id: jobId });
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 20_000, { name: "cancelled" });
  t.equal(end.status, "cancelled");
  const promptId = (fake.requests.find((x) => x.path === "/prompt")!.body as { prompt_id: string }).prompt_id;
  t.match(
    fake.requests.find((x) => x.path === "/interrupt")?.body,
    { prompt_id: promptId },
    "POST /interrupt named our prompt (no global interrupt)",
  );
  t.match(
    fake.requests.find((x) => x.path === "/queue")?.body,
    { delete: [promptId] },
    "and it was taken out of the queue",
  );
  await check(
    () => (fake.history[promptId] as { status?: { status_str?: string } } | undefined)?.status?.status_str === "error",
    10_000,
    { name: "ComfyUI stopped the prompt" },
  );
  t.match(
    fake.history[promptId],
    { status: { messages: [["execution_start"], ["execution_cached"], ["execution_interrupted"]] } },
    "ComfyUI stopped it: interrupted",
  );
  const steps = ws.events(jobId).filter((e) => e.type === "node_progress").length;
  t.ok(steps < 50, `stopped after ${steps} of 50 steps`);
});

t.test("comfyui - a socket lost mid-prompt is made good from ComfyUI's history", async (t) => {
  const fake = await FakeComfyUI.start({ stepMs: 100, dropSocketAfterFirstStep: true });
  t.teardown(() => fake.stop());
  const { ws } = await comfyStack(t, fake);
  const job = await run(ws, graphOf(txt2img(3)));
  t.equal(job.end.status, "completed", "completed though ComfyUI's socket dropped after the first step");
  const images = job.events().find((e) => e.type === "output_update" && e.node_id === "out")!.value as unknown[];
  t.equal(images.length, 2, "with both images, read from /history after the reconnect");
  t.ok(
    fake.requests.some((r) => r.path.startsWith("/history/")),
    "the agent asked /history",
  );
});

t.test("comfyui - while ComfyUI does not answer, its jobs wait queued, and run once it is back", async (t) => {
  const fake = await FakeComfyUI.start();
  const { s, ws } = await comfyStack(t, fake);
  await fake.stop();
  await check(
    async () =>
      (
        (await api(s.url, "GET", "/api/agents")).body.agents as { capabilities: { comfyui: { reachable: boolean } } }[]
      )[0]?.capabilities.comfyui.reachable === false,
    20_000,
    { name: "the agent reports ComfyUI unreachable" },
  );
  const r = await ws.request("run_job", { graph: graphOf(txt2img(1)), params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  // A later job in the cpu pool, a 1 s sleep, runs on the same agent to its end: the agent kept pulling past the
  // ComfyUI job's submit, its comfyui loop looking at ComfyUI several times meanwhile.
  const sleeper = { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 1 } }], edges: [] };
  const later = await run(ws, sleeper);
  t.equal(later.end.status, "completed", "a later cpu job ran on the agent meanwhile");
  t.equal(
    (await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status,
    "queued",
    "the ComfyUI job waits queued rather than fail",
  );
  await fake.restart();
  t.teardown(() => fake.stop());
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: "ran after ComfyUI came back" });
  t.equal(end.status, "completed");
  t.equal(s.agents[0]!.stderr().includes("crashed"), false);
});

t.test(
  "comfyui - a ComfyUI workflow's graph runs in a subprocess; its ComfyUI node is called in the agent",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { ws } = await comfyStack(t, fake, ["--strategies", "subprocess"]);
    const r = await ws.request("run_job", { graph: graphOf(txt2img(1)), params: {}, execution_strategy: "subprocess" });
    const jobId = String((r.result as { job_id: string }).job_id);
    const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000);
    t.equal(end.status, "completed");
    t.equal(
      ws.events(jobId).find((e) => e.type === "job_update" && e.status === "running")?.strategy,
      "subprocess",
      "the running update says subprocess",
    );
    t.ok(
      ws.events(jobId).some((e) => e.type === "node_progress" && e.node_id === "c"),
      "the node's progress, sent by the agent, arrives",
    );
  },
);

t.test("comfyui - --comfyui-url is checked at start-up", async (t) => {
  const { compileAgentConfig } = await import("../../agent/index.js");
  t.equal(compileAgentConfig({ comfyuiUrl: "http://127.0.0.1:8188" }).comfyuiUrl, "http://127.0.0.1:8188");
  t.equal(compileAgentConfig({}).comfyuiUrl, null, "none by default");
  for (const bad of ["127.0.0.1:8188", "ftp://h:1", "http://h:8188/prompt", "http://h:8188/?x=1", "not a url"]) {
    t.throws(
      () => compileAgentConfig({ comfyuiUrl: bad }),
      { key: "comfyuiUrl", message: /must be ComfyUI's base URL/ },
      `refused: ${bad}`,
    );
  }
  t.same(
    compileAgentConfig({ comfyuiUrl: "http://127.0.0.1:8188", strategies: ["subprocess"] }).strategies,
    ["subprocess"],
    "ComfyUI needs no inline strategy",
  );
});

t.test(
  "comfyui - an uploaded image given to an ImageInput reaches ComfyUI's LoadImage through its input folder",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { s, ws } = await comfyStack(t, fake);
    const bytes = Buffer.alloc(300_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 11 + 3) & 0xff;
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(bytes);
    const up = await fetch(`${s.url}/api/assets?name=in.png`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new Uint8Array(bytes),
    });
    const id = String(((await up.json()) as { id: string }).id);
    const workflow = {
      "10": { class_type: "LoadImage", inputs: { image: "placeholder.png" } },
      "9": { class_type: "SaveImage", inputs: { filename_prefix: "img2img", images: ["10", 0] } },
    };
    const job = await run(
      ws,
      graphOf(workflow, { type: "nodetool.input.ImageInput", data: { name: "photo" } }, "10.image"),
      { photo: `asset://${id}` },
    );
    t.equal(job.end.status, "completed");
    t.match(
      fake.requests.find((r) => r.path === "/upload/image")?.body,
      { image: `nodeway-${id}.png`, type: "input", overwrite: "true" },
      "the asset was uploaded to ComfyUI's input folder",
    );
    const queued = fake.requests.find((r) => r.path === "/prompt")!.body as {
      prompt: Record<string, { inputs: Record<string, unknown> }>;
    };
    t.equal(queued.prompt["10"]!.inputs.image, `nodeway-${id}.png`, "and LoadImage given its name");
    const image = (
      job.events().find((e) => e.type === "output_update" && e.node_id === "out")!.value as Record<string, unknown>[]
    )[0]!;
    const back = Buffer.from(
      await (await fetch(`${s.url}/api/assets/${String(image.asset_id)}/content`)).arrayBuffer(),
    );
    const uploaded = fake.files.get(`input//nodeway-${id}.png`);
    t.equal(uploaded?.length, bytes.length, "ComfyUI's input folder got the whole file");
    t.ok(uploaded?.equals(bytes), "byte for byte");
    t.equal(back.length, bytes.length, "the output asset is as long");
    t.ok(back.equals(bytes), "the bytes went through ComfyUI and back as the job's output asset");
    t.not(image.asset_id, id, "a new asset of the job's own");
  },
);

t.test(
  "comfyui - NodeTool's TextToImage with a ComfyUI model runs ComfyUI's text-to-image graph in the comfyui pool",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { s, ws } = await comfyStack(t, fake);
    const graph = {
      nodes: [
        {
          id: "img",
          type: "nodetool.image.TextToImage",
          data: {
            model: { type: "image_model", provider: "comfyui", id: "sd_xl_base_1.0.safetensors" },
            prompt: "a lighthouse at dusk",
            negative_prompt: "blurry",
            width: 768,
            height: 512,
            num_inference_steps: 4,
            guidance_scale: 6.5,
            seed: 42,
          },
        },
        { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
      ],
      edges: [{ id: "e", source: "img", sourceHandle: "output", target: "out", targetHandle: "value" }],
    };
    const job = await run(ws, graph);
    t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? null));
    t.equal(
      (await api(s.url, "GET", `/api/jobs/${job.jobId}`)).body.pool,
      "comfyui",
      "the model's provider chose the pool",
    );
    const queued = fake.requests.find((r) => r.method === "POST" && r.path === "/prompt")!.body as {
      prompt: Record<string, { class_type: string; inputs: Record<string, unknown> }>;
    };
    const byClass = (c: string) => Object.values(queued.prompt).filter((n) => n.class_type === c);
    t.match(
      byClass("CheckpointLoaderSimple"),
      [{ inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } }],
      "the checkpoint",
    );
    t.same(
      byClass("CLIPTextEncode")
        .map((n) => n.inputs.text)
        .sort(),
      ["a lighthouse at dusk", "blurry"],
      "the prompt and the negative prompt",
    );
    t.match(byClass("EmptyLatentImage"), [{ inputs: { width: 768, height: 512 } }], "the size");
    t.match(byClass("KSampler"), [{ inputs: { steps: 4, cfg: 6.5, seed: 42 } }], "steps, guidance and seed");
    const progress = job.events().filter((e) => e.type === "node_progress" && e.node_id === "img");
    t.equal(progress.length, 4, "the sampler's steps as the node's progress");
    const image = job.events().find((e) => e.type === "output_update" && e.node_id === "out")?.value;
    t.ok(image instanceof Uint8Array && image[0] === 0x89, "the saved image is the node's output");

    const unnamed = await run(ws, {
      ...graph,
      nodes: [
        { ...graph.nodes[0]!, data: { ...graph.nodes[0]!.data, model: { provider: "comfyui", id: "" } } },
        graph.nodes[1]!,
      ],
    });
    t.match(
      String((unnamed.end.error as { message?: string }).message),
      /names its checkpoint file/,
      "a ComfyUI model without a checkpoint fails saying so",
    );
    const prompts = fake.requests.filter((r) => r.method === "POST" && r.path === "/prompt").length;
    const huge = await run(ws, {
      ...graph,
      nodes: [{ ...graph.nodes[0]!, data: { ...graph.nodes[0]!.data, width: 1e9, seed: "x" } }, graph.nodes[1]!],
    });
    t.match(
      String((huge.end.error as { message?: string }).message),
      /width must be in \[64, 2048\]/,
      "a size out of range fails naming it",
    );
    t.equal(
      fake.requests.filter((r) => r.method === "POST" && r.path === "/prompt").length,
      prompts,
      "before anything reaches ComfyUI",
    );
  },
);

t.test(
  "comfyui - NodeTool's ImageToImage with a ComfyUI model uploads the image and runs ComfyUI's image-to-image graph",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { s, ws } = await comfyStack(t, fake);
    const { default: sharp } = await import("sharp");
    const photo = await sharp({ create: { width: 40, height: 30, channels: 3, background: "#c03020" } })
      .jpeg()
      .toBuffer();
    const up = await fetch(`${s.url}/api/assets?name=photo.jpg`, {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: new Uint8Array(photo),
    });
    const id = String(((await up.json()) as { id: string }).id);
    const graph = (data: Record<string, unknown>) => ({
      nodes: [
        { id: "in", type: "nodetool.input.ImageInput", data: { name: "photo" } },
        {
          id: "i2i",
          type: "nodetool.image.ImageToImage",
          data: {
            model: { type: "image_model", provider: "comfyui", id: "sd_xl_base_1.0.safetensors" },
            prompt: "as a watercolour",
            strength: 0.35,
            target_width: 64,
            target_height: 96,
            num_inference_steps: 3,
            seed: 7,
            ...data,
          },
        },
        { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
      ],
      edges: [
        { id: "e1", source: "in", sourceHandle: "output", target: "i2i", targetHandle: "image" },
        { id: "e2", source: "i2i", sourceHandle: "output", target: "out", targetHandle: "value" },
      ],
    });
    const job = await run(ws, graph({}), { photo: `asset://${id}` });
    t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? null));
    const upload = fake.requests.find((r) => r.path === "/upload/image")?.body as { image?: string } | undefined;
    t.match(upload?.image, /^nodeway-.*\.png$/, "the input image was uploaded to ComfyUI's input folder");
    const sent = fake.files.get(`input//${upload?.image}`);
    const meta = sent ? await sharp(sent).metadata() : null;
    t.match(meta, { format: "png", width: 40, height: 30 }, "as a PNG of the uploaded photo");
    const queued = fake.requests.find((r) => r.path === "/prompt")!.body as {
      prompt: Record<string, { class_type: string; inputs: Record<string, unknown> }>;
    };
    const byClass = (c: string) => Object.values(queued.prompt).filter((n) => n.class_type === c);
    t.match(byClass("LoadImage"), [{ inputs: { image: upload?.image } }], "LoadImage reads it");
    t.match(byClass("ImageScale"), [{ inputs: { width: 64, height: 96 } }], "scaled to the target size");
    t.equal(byClass("VAEEncode").length, 1, "encoded as the latent");
    t.equal(byClass("EmptyLatentImage").length, 0, "not an empty latent");
    t.match(byClass("KSampler"), [{ inputs: { denoise: 0.35, steps: 3, seed: 7 } }], "strength is the denoise");
    t.equal(job.events().filter((e) => e.type === "node_progress" && e.node_id === "i2i").length, 3, "progress");
    const image = job.events().find((e) => e.type === "output_update" && e.node_id === "out")?.value;
    t.ok(image instanceof Uint8Array && image[0] === 0x89, "ComfyUI's saved image is the output");

    const uploads = fake.requests.filter((r) => r.path === "/upload/image").length;
    const bad = await run(ws, graph({ strength: 1.5 }), { photo: `asset://${id}` });
    t.match((bad.end.error as { message?: string }).message, /strength must be in \[0, 1\]/, "strength checked");
    t.equal(fake.requests.filter((r) => r.path === "/upload/image").length, uploads, "before any upload");
  },
);

t.test(
  "comfyui - NodeTool's lib.comfy.RunWorkflow: handles <node>:<input> fill the prompt, saved files come out on <node>:<kind>",
  async (t) => {
    const fake = await FakeComfyUI.start();
    t.teardown(() => fake.stop());
    const { s, ws } = await comfyStack(t, fake);
    const png = Buffer.alloc(5_000);
    for (let i = 0; i < png.length; i++) png[i] = (i * 13 + 1) & 0xff;
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(png);
    const up = await fetch(`${s.url}/api/assets?name=in.png`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new Uint8Array(png),
    });
    const id = String(((await up.json()) as { id: string }).id);
    const prompt = {
      ...txt2img(3),
      "10": { class_type: "LoadImage", inputs: { image: "example.png" } },
      "11": { class_type: "SaveImage", inputs: { filename_prefix: "echo", images: ["10", 0] } },
    };
    const graph = (workflow: unknown) => ({
      nodes: [
        { id: "p", type: "nodetool.input.StringInput", data: { name: "prompt", value: "a red fox" } },
        { id: "img", type: "nodetool.input.ImageInput", data: { name: "photo" } },
        { id: "c", type: "lib.comfy.RunWorkflow", data: { workflow, endpoint: "10.1.2.3:8188" } },
        { id: "big", type: "nodetool.output.Output", data: { name: "big" } },
        { id: "echo", type: "nodetool.output.Output", data: { name: "echo" } },
        { id: "raw", type: "nodetool.output.Output", data: { name: "raw" } },
      ],
      edges: [
        { id: "e1", source: "p", sourceHandle: "output", target: "c", targetHandle: "6:text" },
        { id: "e2", source: "img", sourceHandle: "output", target: "c", targetHandle: "10:image" },
        { id: "e3", source: "c", sourceHandle: "9:image", target: "big", targetHandle: "value" },
        { id: "e4", source: "c", sourceHandle: "11:image", target: "echo", targetHandle: "value" },
        { id: "e5", source: "c", sourceHandle: "output", target: "raw", targetHandle: "value" },
      ],
    });
    // As NodeTool saves it: the prompt as JSON text, here wrapped as {"prompt": …} (what a ComfyUI PNG holds).
    const job = await run(ws, graph(JSON.stringify({ prompt })), { photo: `asset://${id}` });
    t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? null));
    const rec = (await api(s.url, "GET", `/api/jobs/${job.jobId}`)).body as { pool: string };
    t.equal(rec.pool, "comfyui", "it runs in the comfyui pool");
    const queued = fake.requests.find((r) => r.path === "/prompt")!.body as {
      prompt: Record<string, { inputs: Record<string, unknown> }>;
    };
    t.equal(queued.prompt["6"]!.inputs.text, "a red fox", "a value on 6:text set that input");
    t.equal(queued.prompt["10"]!.inputs.image, `nodeway-${id}.png`, "an image on 10:image was uploaded and named");
    t.ok(fake.files.get(`input//nodeway-${id}.png`)?.equals(png), "byte for byte");
    const out = (node: string) => job.events().find((e) => e.type === "output_update" && e.node_id === node)?.value;
    const big = out("big") as Record<string, unknown>;
    t.equal(big?.type, "image", "the large saved image is an image asset on 9:image");
    const bytes = Buffer.from(await (await fetch(`${s.url}/api/assets/${String(big.asset_id)}/content`)).arrayBuffer());
    t.equal(bytes.length, 400_000, "the whole file");
    const echo = out("echo");
    t.ok(
      echo instanceof Uint8Array && Buffer.from(echo).equals(png),
      "11:image is the uploaded image, through ComfyUI",
    );
    t.match(out("raw"), { "9": { images: [{ filename: /^big_/ }] } }, "ComfyUI's outputs on output");
    t.ok(
      job.events().some((e) => e.type === "log_update" && /not 10\.1\.2\.3:8188/.test(String(e.content))),
      "the log says which ComfyUI ran it, not the endpoint in the graph",
    );

    const prompts = fake.requests.filter((r) => r.path === "/prompt").length;
    const ui = await run(ws, graph(JSON.stringify({ nodes: [], links: [] })), { photo: `asset://${id}` });
    t.match((ui.end.error as { message?: string }).message, /UI format/, "the UI format is refused, saying so");
    const wrong = await run(ws, graph(JSON.stringify({ "4": prompt["4"] })), { photo: `asset://${id}` });
    t.match((wrong.end.error as { message?: string }).message, /no node 6/, "a handle naming no node of it fails");
    t.equal(fake.requests.filter((r) => r.path === "/prompt").length, prompts, "neither reached ComfyUI");

    // NodeTool's worker runner is the same node here: the pool's ComfyUI runs it, whatever worker it names.
    type Node = { id: string; type: string; data: Record<string, unknown> };
    const viaWorker = graph(JSON.stringify(prompt)) as { nodes: Node[]; edges: { id: string }[] };
    viaWorker.nodes[2] = {
      id: "c",
      type: "lib.comfy.RunWorkflowOnWorker",
      data: { workflow: JSON.stringify(prompt), worker_url: "wss://pod-7777.example/ws", worker_token: "t" },
    };
    const worker = await run(ws, viaWorker, { photo: `asset://${id}` });
    t.equal(worker.end.status, "completed", JSON.stringify(worker.end.error ?? null));
    const workerEcho = worker.events().find((e) => e.type === "output_update" && e.node_id === "echo")?.value;
    t.ok(workerEcho instanceof Uint8Array && Buffer.from(workerEcho).equals(png), "RunWorkflowOnWorker: same outputs");
    const cloud = graph(JSON.stringify(prompt)) as { nodes: Node[]; edges: { id: string }[] };
    cloud.nodes[2] = { id: "c", type: "lib.comfy.RunWorkflowOnCloud", data: { workflow: JSON.stringify(prompt) } };
    cloud.edges = cloud.edges.filter((e) => e.id !== "e3" && e.id !== "e4");
    const onCloud = await run(ws, cloud, { photo: `asset://${id}` });
    t.match(
      (onCloud.end.error as { message?: string }).message,
      /Comfy Cloud \(the setting COMFY_API_KEY\)/,
      "RunWorkflowOnCloud is accepted and fails naming the service and its setting",
    );
  },
);
