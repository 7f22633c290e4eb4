/**
 * NodeTool's image operations (`lib.pillow.*`, `nodetool.lib.pillow.*`, `lib.grid.*`) run by a real agent on a
 * real PNG made with sharp: each output is checked by its pixels (brightness raises mean luminance, Color 0 is
 * grey, AutoContrast spans 0–255, sharpening overshoots at an edge, text lands where it was drawn).
 */
import t from "tap";
import sharp from "sharp";
import { WsClient } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import { dataUri, graphOf, outputBytes, runGraph } from "../helpers/fake-media.js";

const W = 96;
const H = 64;

/** Left third dark, the rest light in red; green a vertical ramp; blue flat: an edge and a gradient. */
async function testPng(): Promise<Uint8Array> {
  const raw = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3;
      raw[i] = x < 32 ? 40 : 190;
      raw[i + 1] = 20 + y * 2;
      raw[i + 2] = 100;
    }
  return new Uint8Array(
    await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer(),
  );
}

interface Px {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}
async function pixels(bytes: Uint8Array): Promise<Px> {
  const { data, info } = await sharp(bytes).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: 4 };
}
const lumaMean = (p: Px) => {
  let s = 0;
  for (let i = 0; i < p.data.length; i += 4) s += 0.299 * p.data[i]! + 0.587 * p.data[i + 1]! + 0.114 * p.data[i + 2]!;
  return s / (p.data.length / 4);
};
const lumaStdev = (p: Px) => {
  const m = lumaMean(p);
  let s = 0;
  for (let i = 0; i < p.data.length; i += 4)
    s += (0.299 * p.data[i]! + 0.587 * p.data[i + 1]! + 0.114 * p.data[i + 2]! - m) ** 2;
  return Math.sqrt(s / (p.data.length / 4));
};
const channel = (p: Px, c: number) => [...p.data.filter((_, i) => i % 4 === c)];

const OPS: [string, string, Record<string, unknown>][] = [
  ["bright", "lib.pillow.enhance.Brightness", { factor: 1.5 }],
  ["dark", "lib.pillow.enhance.Brightness", { factor: 0.5 }],
  ["contrast", "nodetool.lib.pillow.enhance.Contrast", { factor: 1.6 }],
  ["grey", "lib.pillow.enhance.Color", { factor: 0 }],
  ["auto", "lib.pillow.enhance.AutoContrast", { cutoff: 0 }],
  ["sharpen", "lib.pillow.enhance.Sharpen", {}],
  ["unsharp", "lib.pillow.enhance.UnsharpMask", { radius: 2, percent: 150, threshold: 3 }],
  ["exposure", "lib.pillow.color_grading.Exposure", { exposure: 1 }],
  ["desat", "lib.pillow.color_grading.SaturationVibrance", { saturation: -1 }],
  ["clahe", "lib.pillow.enhance.AdaptiveContrast", { clip_limit: 2, grid_size: 4 }],
  [
    "text",
    "lib.pillow.draw.RenderText",
    { text: "Hi", x: 40, y: 8, size: 32, color: { type: "color", value: "#FFFFFF" } },
  ],
];

t.test("pillow - each operation changes the image's pixels the way NodeTool's does", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const png = await testPng();
  const nodes: [string, string, Record<string, unknown>][] = [["in", "nodetool.input.ImageInput", { name: "img" }]];
  const edges: string[] = [];
  for (const [id, type, data] of OPS) {
    nodes.push([id, type, data], [`out_${id}`, "nodetool.output.Output", { name: id }]);
    edges.push(`in.output>${id}.image`, `${id}.output>out_${id}.value`);
  }
  const job = await runGraph(ws, graphOf(nodes, edges), { img: dataUri(png) });
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const result = job.end.result as Record<string, unknown[]>;
  const got: Record<string, Px> = {};
  for (const [id] of OPS) got[id] = await pixels(await outputBytes(s.url, result[id]![0]));
  const src = await pixels(png);

  for (const [id] of OPS) t.same([got[id]!.width, got[id]!.height], [W, H], `${id}: same size`);
  t.ok(lumaMean(got.bright!) > lumaMean(src) * 1.3, "Brightness 1.5 raises mean luminance");
  t.ok(lumaMean(got.dark!) < lumaMean(src) * 0.6, "Brightness 0.5 lowers it");
  t.ok(lumaStdev(got.contrast!) > lumaStdev(src) * 1.4, "Contrast 1.6 (nodetool.lib alias) spreads luminance");
  t.ok(Math.abs(lumaMean(got.contrast!) - lumaMean(src)) < 6, "around the image's mean grey");
  const g = got.grey!.data;
  t.ok(
    [...Array(W * H).keys()].every((i) => g[i * 4] === g[i * 4 + 1] && g[i * 4 + 1] === g[i * 4 + 2]),
    "Color 0 is greyscale",
  );
  for (const c of [0, 1]) {
    const values = channel(got.auto!, c);
    t.same([Math.min(...values), Math.max(...values)], [0, 255], `AutoContrast stretches channel ${c} to 0–255`);
  }
  for (const id of ["sharpen", "unsharp"]) {
    const red = channel(got[id]!, 0);
    t.ok(Math.min(...red) < 40 && Math.max(...red) > 190, `${id} overshoots at the dark/light edge`);
  }
  t.ok(lumaMean(got.exposure!) > lumaMean(src) * 1.5, "Exposure +1 stop brightens");
  const d = got.desat!.data;
  t.ok(
    [...Array(W * H).keys()].every(
      (i) => Math.max(d[i * 4]!, d[i * 4 + 1]!, d[i * 4 + 2]!) - Math.min(d[i * 4]!, d[i * 4 + 1]!, d[i * 4 + 2]!) <= 1,
    ),
    "SaturationVibrance saturation −1 is grey",
  );
  // NodeTool's AdaptiveContrast (OpenCV's CLAHE on Lab lightness) on this image gives these pixels.
  const opencv: [number, number, number[]][] = [
    [5, 5, [49, 39, 112]],
    [50, 5, [203, 43, 114]],
    [5, 60, [50, 152, 111]],
    [32, 32, [210, 101, 120]],
    [70, 30, [198, 88, 109]],
  ];
  for (const [x, y, want] of opencv) {
    const i = (y * W + x) * 4;
    const rgb = [...got.clahe!.data.subarray(i, i + 3)];
    t.ok(
      rgb.every((v, c) => Math.abs(v - want[c]!) <= 3),
      `AdaptiveContrast at (${x}, ${y}) is OpenCV's ${want} within 3: ${rgb}`,
    );
  }
  const txt = got.text!;
  let white = 0;
  let changedOutside = 0;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 4;
      const same = txt.data[i] === src.data[i] && txt.data[i + 1] === src.data[i + 1];
      const inBox = x >= 40 && y >= 8 && y < 8 + 40;
      if (inBox && txt.data[i]! > 240 && txt.data[i + 1]! > 240 && txt.data[i + 2]! > 240) white++;
      if (!inBox && !same) changedOutside++;
    }
  t.ok(white > 30, `RenderText drew white text at (40, 8): ${white} white pixels`);
  t.equal(changedOutside, 0, "and nothing outside it");
});

t.test("pillow - CombineImageGrid lays tiles out in rows; SliceImageGrid cuts them back", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const tile = async (hex: string) =>
    dataUri(
      await sharp({ create: { width: 30, height: 20, channels: 3, background: hex } })
        .png()
        .toBuffer(),
    );
  const tiles = [await tile("#ff0000"), await tile("#00ff00"), await tile("#0000ff")];
  const graph = graphOf(
    [
      ["tiles", "nodetool.constant.List", { value: tiles }],
      ["grid", "lib.grid.CombineImageGrid", { columns: 2 }],
      ["slice", "lib.grid.SliceImageGrid", { columns: 2, rows: 2 }],
      ["out", "nodetool.output.Output", { name: "grid" }],
      ["out2", "nodetool.output.Output", { name: "sliced" }],
    ],
    ["tiles.output>grid.tiles", "grid.output>out.value", "grid.output>slice.image", "slice.output>out2.value"],
  );
  const job = await runGraph(ws, graph);
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const result = job.end.result as Record<string, unknown[]>;
  const grid = await pixels(await outputBytes(s.url, result.grid![0]));
  t.same([grid.width, grid.height], [60, 40], "two columns, two rows of 30×20");
  const at = (x: number, y: number) => [...grid.data.subarray((y * 60 + x) * 4, (y * 60 + x) * 4 + 4)];
  t.same(at(5, 5), [255, 0, 0, 255], "first tile top left");
  t.same(at(35, 5), [0, 255, 0, 255], "second top right");
  t.same(at(5, 25), [0, 0, 255, 255], "third bottom left");
  t.equal(at(35, 25)[3], 0, "the empty cell is transparent");
  const sliced = result.sliced![0] as unknown[];
  t.equal(sliced.length, 4, "sliced into 2 × 2");
  const first = await pixels(await outputBytes(s.url, sliced[0]));
  t.same(
    [first.width, first.height, [...first.data.subarray(0, 4)]],
    [30, 20, [255, 0, 0, 255]],
    "the first tile back",
  );
});

t.test("pillow - an image from the asset store (an upload) is read by its asset:// reference", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const png = await testPng();
  const up = await fetch(`${s.url}/api/assets?name=in.png`, {
    method: "POST",
    headers: { "content-type": "image/png" },
    body: Buffer.from(png),
  });
  t.equal(up.status, 201, "uploaded");
  const asset = (await up.json()) as { id: string };
  const graph = graphOf(
    [
      ["in", "nodetool.input.ImageInput", { name: "img" }],
      ["inv", "lib.pillow.filter.Invert", {}],
      ["out", "nodetool.output.Output", { name: "inverted" }],
    ],
    ["in.output>inv.image", "inv.output>out.value"],
  );
  const job = await runGraph(ws, graph, { img: `asset://${asset.id}` });
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const inv = await pixels(await outputBytes(s.url, (job.end.result as Record<string, unknown[]>).inverted![0]));
  const src = await pixels(png);
  t.same([...inv.data.subarray(0, 4)], [255 - src.data[0]!, 255 - src.data[1]!, 255 - src.data[2]!, 255], "inverted");
});

t.test("pillow - an image node with no image fails naming the input", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const lonely = graphOf(
    [
      ["b", "lib.pillow.enhance.Brightness", { factor: 2 }],
      ["out", "nodetool.output.Output", { name: "x" }],
    ],
    ["b.output>out.value"],
  );
  const failed = await runGraph(ws, lonely);
  t.equal(failed.end.status, "failed");
  t.match(
    (failed.end.error as { message?: string }).message,
    /Brightness: "image" is not connected/,
    "the error names the missing input",
  );
});
