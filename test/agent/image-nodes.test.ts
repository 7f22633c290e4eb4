/**
 * `nodetool.image.TextToImage` / `ImageToImage` through the official `openai` SDK against a local server speaking
 * OpenAI's images API (test/helpers/fake-media.ts), run by a real agent: the model, prompt and size reach the API,
 * the image comes back as the node's output; an empty model takes the deployment default
 * (NODEWAY_DEFAULT_IMAGE_MODEL) and fails naming it when there is none. `LoadImageFolder` reads only under the
 * agent's folder root; `ColorInput` and `nodetool.constant.Image` feed the image nodes.
 */
import t from "tap";
import sharp from "sharp";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WsClient } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import {
  FAKE_KEY,
  FakeMedia,
  GENERATED_COLOR,
  dataUri,
  graphOf,
  outputBytes,
  runGraph,
} from "../helpers/fake-media.js";

const envFor = (fake: FakeMedia, extra: Record<string, string> = {}) => ({
  OPENAI_API_KEY: FAKE_KEY,
  OPENAI_BASE_URL: `${fake.url}/v1`,
  ...extra,
});

const toOutput = (node: string, name: string, handle = "output") => [
  [`out_${name}`, "nodetool.output.Output", { name }] as [string, string, Record<string, unknown>],
  `${node}.${handle}>out_${name}.value`,
];

async function firstPixel(bytes: Uint8Array) {
  const { data, info } = await sharp(bytes).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { rgb: [data[0], data[1], data[2]], width: info.width, height: info.height };
}

t.test("image-nodes - TextToImage and ImageToImage call OpenAI's images API and output its image", async (t) => {
  const fake = await FakeMedia.start();
  t.teardown(() => fake.stop());
  const s = await startStack(t, { agents: 1, agentEnv: envFor(fake) });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const photo = await sharp({ create: { width: 40, height: 40, channels: 3, background: "#204060" } })
    .png()
    .toBuffer();
  const [o1, e1] = toOutput("gen", "generated");
  const [o2, e2] = toOutput("edit", "edited");
  const graph = graphOf(
    [
      ["p", "nodetool.input.StringInput", { name: "prompt" }],
      ["img", "nodetool.input.ImageInput", { name: "photo" }],
      [
        "gen",
        "nodetool.image.TextToImage",
        { model: { type: "image_model", provider: "openai", id: "gpt-image-1" }, width: 1024, height: 576 },
      ],
      ["edit", "nodetool.image.ImageToImage", { model: "openai:gpt-image-1", prompt: "make it pop" }],
      o1 as [string, string, Record<string, unknown>],
      o2 as [string, string, Record<string, unknown>],
    ],
    ["p.output>gen.prompt", "img.output>edit.image", e1 as string, e2 as string],
  );
  const job = await runGraph(ws, graph, { prompt: "a lighthouse at dusk", photo: dataUri(photo) });
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const result = job.end.result as Record<string, unknown[]>;
  const gen = await firstPixel(await outputBytes(s.url, result.generated![0]));
  t.same(
    gen,
    { rgb: [GENERATED_COLOR.r, GENERATED_COLOR.g, GENERATED_COLOR.b], width: 1536, height: 1024 },
    "the API's image is the output",
  );
  const genReq = fake.requests.find((r) => r.path === "/v1/images/generations")!;
  t.match(
    genReq.fields,
    { model: "gpt-image-1", prompt: "a lighthouse at dusk", size: "1536x1024", n: 1 },
    "a wide size for a wide request",
  );
  t.equal(genReq.headers.authorization, `Bearer ${FAKE_KEY}`, "with the agent's key");
  const edited = await firstPixel(await outputBytes(s.url, result.edited![0]));
  t.same(edited.rgb, [255 - 0x20, 255 - 0x40, 255 - 0x60], "ImageToImage outputs the edit of the input image");
  const editReq = fake.requests.find((r) => r.path === "/v1/images/edits")!;
  t.match(editReq.fields, { model: "gpt-image-1", prompt: "make it pop" }, "the edit's prompt and model, as multipart");
  t.equal((await firstPixel(editReq.files.image!.bytes)).width, 40, "the input image was uploaded");
});

t.test(
  "image-nodes - an empty model takes the deployment default, and without one fails naming the setting",
  async (t) => {
    const fake = await FakeMedia.start();
    t.teardown(() => fake.stop());
    const graph = graphOf(
      [
        [
          "gen",
          "nodetool.image.TextToImage",
          { model: { type: "image_model" }, prompt: "a cat", width: 512, height: 512 },
        ],
        ["out", "nodetool.output.Output", { name: "img" }],
      ],
      ["gen.output>out.value"],
    );
    const s = await startStack(t, {
      agents: 1,
      agentEnv: envFor(fake, { NODEWAY_DEFAULT_IMAGE_MODEL: "openai:dall-e-3" }),
    });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const job = await runGraph(ws, graph);
    t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
    t.match(
      [...fake.requests].reverse().find((r) => r.path === "/v1/images/generations")!.fields,
      { model: "dall-e-3", size: "1024x1024", response_format: "b64_json" },
      "the default model",
    );

    const bare = await startStack(t, { agents: 1, agentEnv: envFor(fake) });
    const ws2 = await WsClient.open(bare.url, "msgpack");
    t.teardown(() => ws2.close());
    const failed = await runGraph(ws2, graph);
    t.equal(failed.end.status, "failed");
    t.match(
      JSON.stringify(failed.end.error),
      /no image model chosen and no default: .*set NODEWAY_DEFAULT_IMAGE_MODEL/,
    );

    const wrongKey = await startStack(t, {
      agents: 1,
      agentEnv: { ...envFor(fake), OPENAI_API_KEY: "sk-wrong-secret" },
    });
    const ws3 = await WsClient.open(wrongKey.url, "msgpack");
    t.teardown(() => ws3.close());
    const refused = await runGraph(
      ws3,
      graphOf([["gen", "nodetool.image.TextToImage", { model: "openai:gpt-image-1" }]], []),
    );
    t.equal(refused.end.status, "failed");
    const said = JSON.stringify(refused.end.error);
    t.match(said, /openai image generation refused the request \(HTTP 401\): Incorrect API key provided/);
    t.notMatch(said, /sk-wrong-secret/, "the key is not in the error");
  },
);

t.test("image-nodes - LoadImageFolder reads images under the folder root only", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "nodeway-folder-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const png = (hex: string) =>
    sharp({ create: { width: 8, height: 8, channels: 3, background: hex } })
      .png()
      .toBuffer();
  mkdirSync(join(root, "photos", "sub"), { recursive: true });
  writeFileSync(join(root, "photos", "a.png"), await png("#ff0000"));
  writeFileSync(join(root, "photos", "b.png"), await png("#00ff00"));
  writeFileSync(join(root, "photos", "notes.txt"), "not an image");
  writeFileSync(join(root, "photos", "sub", "c.png"), await png("#0000ff"));
  const graph = (data: Record<string, unknown>) =>
    graphOf(
      [
        ["f", "nodetool.input.FolderPathInput", { name: "folder", value: "" }],
        ["load", "nodetool.image.LoadImageFolder", data],
        ["imgs", "nodetool.output.Output", { name: "images" }],
        ["paths", "nodetool.output.Output", { name: "paths" }],
      ],
      ["f.output>load.folder", "load.image>imgs.value", "load.path>paths.value"],
    );
  const s = await startStack(t, { agents: 1, agentEnv: { NODEWAY_FOLDER_ROOT: root } });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const flat = await runGraph(ws, graph({}), { folder: "photos" });
  t.equal(flat.end.status, "completed", JSON.stringify(flat.end.error ?? ""));
  const r = flat.end.result as Record<string, unknown[]>;
  t.same(r.paths, [join(root, "photos", "a.png"), join(root, "photos", "b.png")], "each image with its path, in order");
  t.same((await firstPixel(await outputBytes(s.url, r.images![1]))).rgb, [0, 255, 0], "the images' bytes");
  const deep = await runGraph(ws, graph({ include_subdirectories: true, pattern: "*/sub/*" }), { folder: "photos" });
  t.same(
    (deep.end.result as Record<string, unknown[]>).paths,
    [join(root, "photos", "sub", "c.png")],
    "subfolders and a pattern",
  );

  for (const outside of ["..", "/etc", "photos/../../"]) {
    const job = await runGraph(ws, graph({}), { folder: outside });
    t.equal(job.end.status, "failed", `${outside}: refused`);
    t.match(JSON.stringify(job.end.error), /NODEWAY_FOLDER_ROOT/, `${outside}: naming the setting`);
  }
  // Links in the folder: one to an image outside the root is never read, a dangling one is no file; both are
  // skipped, saying so, and the folder's own images still load.
  const secret = mkdtempSync(join(tmpdir(), "nodeway-outside-"));
  t.teardown(() => rmSync(secret, { recursive: true, force: true }));
  writeFileSync(join(secret, "secret.png"), await png("#123456"));
  mkdirSync(join(root, "linked"));
  writeFileSync(join(root, "linked", "own.png"), await png("#ff0000"));
  symlinkSync(join(secret, "secret.png"), join(root, "linked", "escape.png"));
  symlinkSync(join(root, "linked", "gone.png"), join(root, "linked", "dangling.png"));
  symlinkSync("own.png", join(root, "linked", "alias.png"));
  const linked = await runGraph(ws, graph({}), { folder: "linked" });
  t.equal(linked.end.status, "completed", JSON.stringify(linked.end.error ?? ""));
  t.same(
    (linked.end.result as Record<string, unknown[]>).paths,
    [join(root, "linked", "own.png"), join(root, "linked", "own.png")],
    "the image, and the link to it inside the root; not the one outside, not the dangling one",
  );
  const logs = linked.events.filter((e) => e.type === "log_update").map((e) => String(e.content));
  t.ok(
    logs.some((l) => /skipped .*escape\.png: .* is outside NODEWAY_FOLDER_ROOT/.test(l)),
    "the escaping link is named in the job's log",
  );
  t.ok(
    logs.some((l) => /skipped .*dangling\.png/.test(l)),
    "and the dangling one",
  );
  const bare = await startStack(t, { agents: 1 });
  const ws2 = await WsClient.open(bare.url, "msgpack");
  t.teardown(() => ws2.close());
  const off = await runGraph(ws2, graph({}), { folder: root });
  t.match(JSON.stringify(off.end.error), /reading local folders is off on this agent: set NODEWAY_FOLDER_ROOT/);
});

t.test("image-nodes - ColorInput colors RenderText; an Image constant feeds an image node", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const black = await sharp({ create: { width: 60, height: 40, channels: 3, background: "#000000" } })
    .png()
    .toBuffer();
  const graph = graphOf(
    [
      ["c", "nodetool.input.ColorInput", { name: "color", value: { type: "color", value: "#00ff00" } }],
      ["img", "nodetool.constant.Image", { value: { type: "image", uri: dataUri(black) } }],
      ["txt", "lib.pillow.draw.RenderText", { text: "XX", size: 30, x: 0, y: 0 }],
      ["out", "nodetool.output.Output", { name: "img" }],
      ["col", "nodetool.output.Output", { name: "color" }],
    ],
    ["c.output>txt.color", "img.output>txt.image", "txt.output>out.value", "c.output>col.value"],
  );
  const job = await runGraph(ws, graph, { color: { type: "color", value: "#ff0000" } });
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const r = job.end.result as Record<string, unknown[]>;
  t.same(r.color, [{ type: "color", value: "#ff0000" }], "the param's color");
  const { data } = await sharp(await outputBytes(s.url, r.img![0]))
    .raw()
    .toBuffer({ resolveWithObject: true });
  let red = 0;
  for (let i = 0; i < data.length; i += 3) if (data[i]! > 200 && data[i + 1]! < 40) red++;
  t.ok(red > 20, `the text is drawn in the param's color (${red} red pixels)`);
});
