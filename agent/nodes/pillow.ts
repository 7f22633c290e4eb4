/**
 * NodeTool's image operations (`lib.pillow.*`, also under their `nodetool.lib.pillow.*` names, and `lib.grid.*`)
 * on sharp (libvips). Inputs, defaults and the effect of each follow NodeTool's Pillow nodes: `enhance` blends
 * with a degenerate image as Pillow's ImageEnhance does (black for Brightness, mean grey for Contrast, greyscale
 * for Color, a smoothed copy for Sharpness), `color_grading` works on RGB in 0–1, `filter` applies Pillow's 3×3
 * kernels. Every output is a PNG (bytes; the agent stores a large one as an asset). Every sharp pipeline is built by
 * media-util's imagePipeline, which caps its pixels and its time (libvips stops it; a cancel cannot).
 */
import type { PropertyMetadata } from "../../protocol/index.js";
import { NodeError, type NodeContext, type NodeDef, type NodeInputs, type ProcessNodeDef } from "../engine/types.js";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  IMAGE_MAX_PIXELS,
  MEDIA_MAX_BYTES,
  colorOf,
  imageNode,
  imagePipeline,
  isEmptyMedia,
  loadSharp,
  mediaBytes,
  plainBytes,
  runTool,
  withTempDir,
} from "./media-util.js";
import { sniffContentType } from "../assets.js";
import { findFfmpeg } from "../capabilities.js";
import { asInt, asList, asNumber, asText, enumProp, output, prop } from "./util.js";

/** NodeTool's empty ImageRef, the default of every image input. */
export const EMPTY_IMAGE = Object.freeze({ type: "image", uri: "", asset_id: null, data: null });

export const imageProp = (name = "image", description = "The image to process.") =>
  prop(name, "image", { ...EMPTY_IMAGE }, { description });

/** RGBA pixels, 8 bits a channel. */
export interface Pixels {
  data: Uint8ClampedArray;
  width: number;
  height: number;
}

/** Formats sharp (this build of libvips) cannot decode, by their leading bytes: named in the node's error. */
function unreadableFormat(b: Uint8Array): string | null {
  const type = sniffContentType(b);
  if (type === "image/bmp") return "BMP";
  if (type === "image/heic" || type === "image/heif") return "HEIC/HEIF (HEVC-coded)";
  if (b[0] === 0 && b[1] === 0 && (b[2] === 1 || b[2] === 2) && b[3] === 0 && b[4]! > 0) return "ICO/CUR";
  return null;
}

/** True when the first bytes are text (printable UTF-8, tabs and line ends): a text file passed as an image. */
function looksLikeText(b: Uint8Array): boolean {
  const head = Buffer.from(b.subarray(0, 256)).toString("utf8");
  return !/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(head);
}

/** libvips' error without its repeats and seek traces: the last two distinct lines. */
function vipsReason(err: Error): string {
  const lines = err.message
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !/bad seek to/.test(l));
  return [...new Set(lines)].slice(-2).join("; ").replace(/:$/, "");
}

/** The node's error for bytes sharp could not open: what they are, and why. */
async function unreadableImage(label: string, bytes: Uint8Array, err: Error): Promise<NodeError> {
  if (/exceeds pixel limit/.test(err.message)) {
    const sharp = await loadSharp();
    const meta = await sharp(bytes, { limitInputPixels: false })
      .metadata()
      .catch(() => null);
    if (!meta) return new NodeError(`${label} is over the ${IMAGE_MAX_PIXELS}-pixel image limit`);
    return new NodeError(
      `${label} is ${meta.width}×${meta.height} (${meta.width * meta.height} pixels), over the ${IMAGE_MAX_PIXELS}-pixel image limit`,
    );
  }
  const format = unreadableFormat(bytes);
  if (format)
    return new NodeError(
      `${label} is in ${format} format, which this agent cannot read: convert it to PNG, JPEG, WebP, GIF, AVIF or TIFF`,
    );
  if (looksLikeText(bytes)) return new NodeError(`${label} is not an image: its ${bytes.byteLength} bytes are text`);
  const type = sniffContentType(bytes);
  const what = type === "application/octet-stream" ? "" : `, ${type}`;
  return new NodeError(
    `${label} is not an image this agent can read (${bytes.byteLength} bytes${what}): truncated or corrupt? ${vipsReason(err)}`,
  );
}

/** Formats sharp cannot decode and ffmpeg can, by the ffmpeg demuxer that reads them (Pillow reads both). */
const VIA_FFMPEG: Readonly<Record<string, string>> = { BMP: "bmp_pipe", "ICO/CUR": "ico" };
const VIA_FFMPEG_TIMEOUT_MS = 30_000;

/** A BMP's declared width × height (its header's signed 32-bit fields; negative height is top-down). */
function bmpPixels(b: Uint8Array): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return b.byteLength >= 26 ? Math.abs(v.getInt32(18, true)) * Math.abs(v.getInt32(22, true)) : 0;
}

/**
 * `bytes` as a PNG when they are in a format only ffmpeg reads (BMP, ICO) and the agent has ffmpeg; else null.
 * A BMP declaring more than the image limit is refused before it is decoded.
 */
async function viaFfmpeg(ctx: NodeContext, bytes: Uint8Array, label: string): Promise<Uint8Array | null> {
  const format = unreadableFormat(bytes);
  const demuxer = format === null ? undefined : VIA_FFMPEG[format];
  const tools = demuxer === undefined ? null : findFfmpeg();
  if (demuxer === undefined || tools === null) return null;
  if (format === "BMP" && bmpPixels(bytes) > IMAGE_MAX_PIXELS)
    throw new NodeError(
      `${label} is a BMP of ${bmpPixels(bytes)} pixels, over the ${IMAGE_MAX_PIXELS}-pixel image limit`,
    );
  return withTempDir(async (dir) => {
    const [input, out] = [join(dir, "in"), join(dir, "out.png")];
    await writeFile(input, bytes);
    const read = ["-format_whitelist", demuxer, "-protocol_whitelist", "file", "-f", demuxer, "-i", input];
    const write = ["-frames:v", "1", "-fs", String(MEDIA_MAX_BYTES), out];
    const quiet = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"];
    await runTool(
      ctx,
      tools.ffmpeg,
      [...quiet, ...read, ...write],
      `reading ${label} (${format})`,
      VIA_FFMPEG_TIMEOUT_MS,
    );
    return plainBytes(await readFile(out));
  });
}

/**
 * A sharp pipeline over the image value `value` (`label` names it in errors), its size and time capped
 * (imagePipeline); its bytes (a BMP or ICO as PNG, through ffmpeg), format, and size as shown. An EXIF orientation is applied first, as a browser or
 * viewer shows the photo (Pillow would not, without ImageOps.exif_transpose): a phone's portrait photo is resized
 * or cropped upright, and its output, which has no orientation tag, is not left on its side.
 */
export async function openImage(ctx: NodeContext, value: unknown, label = "image") {
  const given = await mediaBytes(ctx, value, "image", label);
  const bytes = (await viaFfmpeg(ctx, given, label)) ?? given;
  const img = await imagePipeline(ctx, bytes, { autoOrient: true });
  const meta = await img.metadata().catch(async (err: Error) => {
    throw await unreadableImage(label, bytes, err);
  });
  const width = meta.autoOrient?.width ?? meta.width;
  const height = meta.autoOrient?.height ?? meta.height;
  if (!width || !height) throw new NodeError(`${label} has no size`);
  return { img, width, height, bytes, format: meta.format ?? "", space: meta.space ?? "" };
}

export async function decodePixels(ctx: NodeContext, value: unknown, label = "image"): Promise<Pixels> {
  const { img } = await openImage(ctx, value, label);
  const { data, info } = await img.ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return {
    data: new Uint8ClampedArray(data.buffer, data.byteOffset, data.byteLength),
    width: info.width,
    height: info.height,
  };
}

export async function encodePng(ctx: NodeContext, px: Pixels): Promise<Uint8Array> {
  const raw = Buffer.from(px.data.buffer, px.data.byteOffset, px.data.byteLength);
  const img = await imagePipeline(ctx, raw, { raw: { width: px.width, height: px.height, channels: 4 } });
  return plainBytes(await img.png().toBuffer());
}

/** Pillow's "L" (ITU-R 601-2 luma) of one pixel. */
const luma = (r: number, g: number, b: number) => (r * 299 + g * 587 + b * 114) / 1000;

/** Each pixel's RGB through `fn` (which writes the new values into `out`); alpha is kept. */
function mapRgb(px: Pixels, fn: (r: number, g: number, b: number, out: number[]) => void): Pixels {
  const d = px.data;
  const out = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) {
    fn(d[i]!, d[i + 1]!, d[i + 2]!, out);
    d[i] = out[0]!;
    d[i + 1] = out[1]!;
    d[i + 2] = out[2]!;
  }
  return px;
}

/** Pillow's ImageEnhance: `degenerate + factor × (image − degenerate)`, per channel. */
function blend(px: Pixels, degenerate: Uint8ClampedArray | number[], factor: number): Pixels {
  const d = px.data;
  const perPixel = degenerate.length === d.length;
  for (let i = 0; i < d.length; i++) {
    if (i % 4 === 3) continue;
    const base = perPixel ? degenerate[i]! : degenerate[i % 4]!;
    d[i] = base + factor * (d[i]! - base);
  }
  return px;
}

function meanLuma(px: Pixels): number {
  let sum = 0;
  const d = px.data;
  for (let i = 0; i < d.length; i += 4) sum += Math.trunc(luma(d[i]!, d[i + 1]!, d[i + 2]!));
  return Math.trunc(sum / (d.length / 4) + 0.5);
}

function greyCopy(px: Pixels): Uint8ClampedArray {
  const g = new Uint8ClampedArray(px.data);
  for (let i = 0; i < g.length; i += 4) g[i] = g[i + 1] = g[i + 2] = luma(g[i]!, g[i + 1]!, g[i + 2]!);
  return g;
}

/** Pillow's 3×3 kernels (ImageFilter), by name: kernel, scale, offset. */
const KERNELS = {
  SHARPEN: { kernel: [-2, -2, -2, -2, 32, -2, -2, -2, -2], scale: 16, offset: 0 },
  EDGE_ENHANCE: { kernel: [-1, -1, -1, -1, 10, -1, -1, -1, -1], scale: 2, offset: 0 },
  DETAIL: { kernel: [0, -1, 0, -1, 10, -1, 0, -1, 0], scale: 6, offset: 0 },
  SMOOTH: { kernel: [1, 1, 1, 1, 5, 1, 1, 1, 1], scale: 13, offset: 0 },
  EMBOSS: { kernel: [-1, 0, 0, 0, 1, 0, 0, 0, 0], scale: 1, offset: 128 },
  FIND_EDGES: { kernel: [-1, -1, -1, -1, 8, -1, -1, -1, -1], scale: 1, offset: 0 },
  CONTOUR: { kernel: [-1, -1, -1, -1, 8, -1, -1, -1, -1], scale: 1, offset: 255 },
} as const;

async function convolved(ctx: NodeContext, value: unknown, name: keyof typeof KERNELS): Promise<Pixels> {
  const { img } = await openImage(ctx, value);
  const k = KERNELS[name];
  const { data, info } = await img
    .removeAlpha()
    .convolve({ width: 3, height: 3, kernel: [...k.kernel], scale: k.scale, offset: k.offset })
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return {
    data: new Uint8ClampedArray(data.buffer, data.byteOffset, data.byteLength),
    width: info.width,
    height: info.height,
  };
}

type Op = (ctx: NodeContext, inputs: NodeInputs) => Promise<Pixels | Uint8Array>;

/** One `lib.pillow.<group>.<name>` node: an image in, the image `op` makes out (`output`). */
function pillowNode(
  group: string,
  name: string,
  description: string,
  extra: PropertyMetadata[],
  op: Op,
): ProcessNodeDef {
  return {
    kind: "process",
    type: `lib.pillow.${group}.${name}`,
    title: name.replace(/([a-z])([A-Z])/g, "$1 $2"),
    description,
    properties: [imageProp(), ...extra],
    outputs: output("image"),
    process: async (ctx, inputs) => {
      if (isEmptyMedia(inputs.image)) throw new NodeError(`${name}: "image" is not connected`);
      const result = await op(ctx, inputs);
      return { output: result instanceof Uint8Array ? result : await encodePng(ctx, result) };
    },
  };
}

const factorProp = (description: string) => prop("factor", "float", 1.0, { description });
const num = (inputs: NodeInputs, name: string, min: number, max: number): number => {
  const n = asNumber(inputs[name], name);
  if (n < min || n > max) throw new NodeError(`${name} must be in [${min}, ${max}], got ${n}`);
  return n;
};
const factor = (inputs: NodeInputs) => asNumber(inputs.factor, "factor");

const brightness = pillowNode(
  "enhance",
  "Brightness",
  "Adjusts overall image brightness: 1.0 keeps it, less darkens, more lightens.",
  [factorProp("Factor to adjust the brightness. 1.0 means no change.")],
  async (ctx, inputs) => blend(await decodePixels(ctx, inputs.image), [0, 0, 0, 0], factor(inputs)),
);

const contrast = pillowNode(
  "enhance",
  "Contrast",
  "Adjusts image contrast around the image's mean grey: 1.0 keeps it.",
  [factorProp("Factor to adjust the contrast. 1.0 means no change.")],
  async (ctx, inputs) => {
    const px = await decodePixels(ctx, inputs.image);
    const m = meanLuma(px);
    return blend(px, [m, m, m, 0], factor(inputs));
  },
);

const color = pillowNode(
  "enhance",
  "Color",
  "Adjusts color intensity: 0 is greyscale, 1.0 keeps the image.",
  [factorProp("Factor to adjust the color. 1.0 means no change.")],
  async (ctx, inputs) => {
    const px = await decodePixels(ctx, inputs.image);
    return blend(px, greyCopy(px), factor(inputs));
  },
);

const sharpness = pillowNode(
  "enhance",
  "Sharpness",
  "Adjusts sharpness: below 1.0 blurs toward a smoothed copy, above 1.0 sharpens.",
  [factorProp("Factor to adjust the sharpness. 1.0 means no change.")],
  async (ctx, inputs) => {
    const px = await decodePixels(ctx, inputs.image);
    const smooth = await convolved(ctx, inputs.image, "SMOOTH");
    return blend(px, smooth.data, factor(inputs));
  },
);

/** Per channel: the low and high values left after cutting `cutoffPct` % of pixels at each end. */
function histogramBounds(d: Uint8ClampedArray, channel: number, cutoffPct: number): [number, number] {
  const hist = new Array<number>(256).fill(0);
  for (let i = channel; i < d.length; i += 4) hist[d[i]!]!++;
  const cut = Math.trunc(((d.length / 4) * cutoffPct) / 100);
  let lo = 0;
  for (let seen = 0; lo < 255 && seen + hist[lo]! <= cut; lo++) seen += hist[lo]!;
  let hi = 255;
  for (let seen = 0; hi > 0 && seen + hist[hi]! <= cut; hi--) seen += hist[hi]!;
  return [lo, hi];
}

const autoContrast = pillowNode(
  "enhance",
  "AutoContrast",
  "Stretches each channel so its darkest and lightest values (after ignoring `cutoff` % at each end) span 0–255.",
  [prop("cutoff", "int", 0, { min: 0, max: 255, description: "Percent of pixels to ignore at each end." })],
  async (ctx, inputs) => {
    const cutoff = num(inputs, "cutoff", 0, 255);
    const px = await decodePixels(ctx, inputs.image);
    for (let c = 0; c < 3; c++) {
      const [lo, hi] = histogramBounds(px.data, c, cutoff);
      if (hi <= lo) continue;
      const scale = 255 / (hi - lo);
      for (let i = c; i < px.data.length; i += 4) px.data[i] = Math.round((px.data[i]! - lo) * scale);
    }
    return px;
  },
);

const equalize = pillowNode(
  "enhance",
  "Equalize",
  "Equalizes each channel's histogram, spreading intensities evenly.",
  [],
  async (ctx, inputs) => {
    const px = await decodePixels(ctx, inputs.image);
    const n = px.data.length / 4;
    for (let c = 0; c < 3; c++) {
      const hist = new Array<number>(256).fill(0);
      for (let i = c; i < px.data.length; i += 4) hist[px.data[i]!]!++;
      const first = hist.findIndex((h) => h > 0);
      const below = first < 0 ? 0 : hist[first]!;
      if (n === below) continue;
      const lut: number[] = [];
      let cum = 0;
      for (let v = 0; v < 256; v++) {
        cum += hist[v]!;
        lut.push(Math.round(((cum - below) / (n - below)) * 255));
      }
      for (let i = c; i < px.data.length; i += 4) px.data[i] = lut[px.data[i]!]!;
    }
    return px;
  },
);

const kernelNode = (group: string, name: string, kernel: keyof typeof KERNELS, description: string) =>
  pillowNode(group, name, description, [], (ctx, inputs) => convolved(ctx, inputs.image, kernel));

const sharpen = kernelNode("enhance", "Sharpen", "SHARPEN", "Sharpens the image with Pillow's 3×3 SHARPEN kernel.");
const edgeEnhance = kernelNode("enhance", "EdgeEnhance", "EDGE_ENHANCE", "Increases contrast along edges.");
const detail = kernelNode("enhance", "Detail", "DETAIL", "Enhances fine details.");

const unsharpMask = pillowNode(
  "enhance",
  "UnsharpMask",
  "Sharpens by adding back `percent` % of the difference from a Gaussian blur of `radius`, where it is ≥ `threshold`.",
  [
    prop("radius", "int", 2, { min: 0, max: 512, description: "Unsharp mask radius." }),
    prop("percent", "int", 150, { min: 0, max: 1000, description: "Unsharp mask percent." }),
    prop("threshold", "int", 3, { min: 0, max: 512, description: "Unsharp mask threshold." }),
  ],
  async (ctx, inputs) => {
    const radius = num(inputs, "radius", 0, 512);
    const percent = num(inputs, "percent", 0, 1000);
    const threshold = num(inputs, "threshold", 0, 512);
    const px = await decodePixels(ctx, inputs.image);
    if (radius === 0) return px;
    const { img } = await openImage(ctx, inputs.image);
    const blurred = await img.ensureAlpha().blur(Math.max(0.3, radius)).raw().toBuffer();
    for (let i = 0; i < px.data.length; i++) {
      if (i % 4 === 3) continue;
      const diff = px.data[i]! - blurred[i]!;
      if (Math.abs(diff) >= threshold) px.data[i] = px.data[i]! + (diff * percent) / 100;
    }
    return px;
  },
);

// CLAHE as NodeTool runs it (OpenCV's createCLAHE on the L channel of Lab), in linear time: libvips' own clahe
// slides a window over every pixel, which takes minutes on a large image. NodeTool hands OpenCV its RGB pixels as
// BGR, so its lightness weighs red as blue and blue as red: read the same way here, results match.

/** sRGB 0–255 → linear light 0–1. */
const TO_LINEAR = Float64Array.from({ length: 256 }, (_, v) => {
  const c = v / 255;
  return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
});
/** Linear light in 1/65535 steps → sRGB 0–255. */
const FROM_LINEAR = Uint8Array.from({ length: 65536 }, (_, i) => {
  const c = i / 65535;
  return Math.round(255 * (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055));
});
const toSrgb = (c: number) => FROM_LINEAR[Math.round(Math.min(1, Math.max(0, c)) * 65535)]!;
/** CIE Lab's f and its inverse; L = 116 f(Y) − 16. D65 white X and Z. */
const labF = (t: number) => (t > 216 / 24389 ? Math.cbrt(t) : ((24389 / 27) * t + 16) / 116);
const labFInv = (f: number) => (f > 6 / 29 ? f * f * f : ((116 * f - 16) * 27) / 24389);
const XN = 0.95047;
const ZN = 1.08883;

/** Each pixel's Lab lightness scaled to 0–255 (OpenCV's 8-bit L), channels read as BGR. */
function lightness(px: Pixels): Uint8ClampedArray {
  const d = px.data;
  const out = new Uint8ClampedArray(d.length / 4);
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    const y = 0.2126729 * TO_LINEAR[d[i + 2]!]! + 0.7151522 * TO_LINEAR[d[i + 1]!]! + 0.072175 * TO_LINEAR[d[i]!]!;
    out[p] = (116 * labF(y) - 16) * 2.55;
  }
  return out;
}

/** The pixels with their lightness changed from `before` to `after`, a and b of Lab kept (channels as BGR). */
function relight(px: Pixels, before: Uint8ClampedArray, after: Uint8Array): Pixels {
  const d = px.data;
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    if (after[p] === before[p]) continue;
    const shift = (after[p]! - before[p]!) / 2.55 / 116;
    const r = TO_LINEAR[d[i + 2]!]!;
    const g = TO_LINEAR[d[i + 1]!]!;
    const b = TO_LINEAR[d[i]!]!;
    const x = XN * labFInv(labF((0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / XN) + shift);
    const y = labFInv(labF(0.2126729 * r + 0.7151522 * g + 0.072175 * b) + shift);
    const z = ZN * labFInv(labF((0.0193339 * r + 0.119192 * g + 0.9503041 * b) / ZN) + shift);
    d[i + 2] = toSrgb(3.2404542 * x - 1.5371385 * y - 0.4985314 * z);
    d[i + 1] = toSrgb(-0.969266 * x + 1.8760108 * y + 0.041556 * z);
    d[i] = toSrgb(0.0556434 * x - 0.2040259 * y + 1.0572252 * z);
  }
  return px;
}

/** OpenCV's BORDER_REFLECT_101: an index past either end, mirrored back in (the edge not repeated). */
function reflect101(p: number, len: number): number {
  if (len === 1) return 0;
  while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
  return p;
}

/** OpenCV's clip: counts above `limit` cut off and spread evenly over all 256 bins, the remainder stepwise. */
function clipHistogram(hist: Int32Array, limit: number): void {
  let clipped = 0;
  for (let v = 0; v < 256; v++) {
    if (hist[v]! > limit) {
      clipped += hist[v]! - limit;
      hist[v] = limit;
    }
  }
  const batch = Math.trunc(clipped / 256);
  let residual = clipped - batch * 256;
  for (let v = 0; v < 256; v++) hist[v]! += batch;
  const step = residual > 0 ? Math.max(Math.trunc(256 / residual), 1) : 1;
  for (let v = 0; v < 256 && residual > 0; v += step, residual--) hist[v]!++;
}

/** Each tile's equalizing lookup table (256 entries, tile by tile, row by row). */
function tileLuts(
  src: Uint8ClampedArray,
  width: number,
  height: number,
  grid: number,
  tileW: number,
  tileH: number,
  clip: number,
) {
  const area = tileW * tileH;
  const limit = clip > 0 ? Math.max(1, Math.trunc((clip * area) / 256)) : 0;
  const xs = Int32Array.from({ length: tileW * grid }, (_, x) => reflect101(x, width));
  const ys = Int32Array.from({ length: tileH * grid }, (_, y) => reflect101(y, height));
  const luts = new Uint8ClampedArray(grid * grid * 256);
  const hist = new Int32Array(256);
  for (let ty = 0; ty < grid; ty++) {
    for (let tx = 0; tx < grid; tx++) {
      hist.fill(0);
      for (let y = ty * tileH; y < (ty + 1) * tileH; y++) {
        const row = ys[y]! * width;
        for (let x = tx * tileW; x < (tx + 1) * tileW; x++) hist[src[row + xs[x]!]!]!++;
      }
      if (limit > 0) clipHistogram(hist, limit);
      const base = (ty * grid + tx) * 256;
      let sum = 0;
      for (let v = 0; v < 256; v++) {
        sum += hist[v]!;
        luts[base + v] = (sum * 255) / area;
      }
    }
  }
  return luts;
}

/**
 * OpenCV's CLAHE on one 8-bit plane: `grid` × `grid` tiles, each equalized with its histogram clipped at `clip`
 * times its mean bin (0: not clipped), every pixel blended bilinearly from the four nearest tiles' tables. An image
 * that does not divide into whole tiles is extended by reflection, as OpenCV does.
 */
function clahe(src: Uint8ClampedArray, width: number, height: number, grid: number, clip: number): Uint8Array {
  const whole = width % grid === 0 && height % grid === 0;
  const tileW = whole ? width / grid : (width + grid - (width % grid)) / grid;
  const tileH = whole ? height / grid : (height + grid - (height % grid)) / grid;
  const luts = tileLuts(src, width, height, grid, tileW, tileH, clip);
  const left = new Int32Array(width);
  const right = new Int32Array(width);
  const xw = new Float64Array(width);
  for (let x = 0; x < width; x++) {
    const f = x / tileW - 0.5;
    const t = Math.floor(f);
    xw[x] = f - t;
    left[x] = Math.max(t, 0) * 256;
    right[x] = Math.min(t + 1, grid - 1) * 256;
  }
  const out = new Uint8Array(src.length);
  for (let y = 0; y < height; y++) {
    const f = y / tileH - 0.5;
    const t = Math.floor(f);
    const yw = f - t;
    const top = Math.max(t, 0) * grid * 256;
    const bottom = Math.min(t + 1, grid - 1) * grid * 256;
    for (let x = 0, i = y * width; x < width; x++, i++) {
      const v = src[i]!;
      const a = xw[x]!;
      const upper = luts[top + left[x]! + v]! * (1 - a) + luts[top + right[x]! + v]! * a;
      const lower = luts[bottom + left[x]! + v]! * (1 - a) + luts[bottom + right[x]! + v]! * a;
      out[i] = Math.round(upper * (1 - yw) + lower * yw);
    }
  }
  return out;
}

const adaptiveContrast = pillowNode(
  "enhance",
  "AdaptiveContrast",
  "Local contrast enhancement (CLAHE, as OpenCV's) of the image's lightness over `grid_size` × `grid_size` tiles.",
  [
    prop("clip_limit", "float", 2.0, { min: 0, max: 100, description: "Clip limit for adaptive contrast." }),
    prop("grid_size", "int", 8, { min: 1, max: 64, description: "Grid size for adaptive contrast." }),
  ],
  async (ctx, inputs) => {
    const clip = num(inputs, "clip_limit", 0, 100);
    const grid = asInt(num(inputs, "grid_size", 1, 64), "grid_size");
    const px = await decodePixels(ctx, inputs.image);
    const light = lightness(px);
    return relight(px, light, clahe(light, px.width, px.height, grid, clip));
  },
);

/** Per-pixel RGB in 0–1 through `fn`, written back to 0–255. */
function mapUnit(px: Pixels, fn: (rgb: number[]) => void): Pixels {
  const rgb = [0, 0, 0];
  return mapRgb(px, (r, g, b, out) => {
    rgb[0] = r / 255;
    rgb[1] = g / 255;
    rgb[2] = b / 255;
    fn(rgb);
    for (let k = 0; k < 3; k++) out[k] = Math.round(Math.min(1, Math.max(0, rgb[k]!)) * 255);
  });
}

/** Rec. 709 luminance of RGB in 0–1 (what NodeTool's color grading uses). */
const lum709 = (c: number[]) => 0.2126 * c[0]! + 0.7152 * c[1]! + 0.0722 * c[2]!;

const unitProp = (name: string, min: number, max: number, description: string) =>
  prop(name, "float", 0.0, { min, max, description });

const exposure = pillowNode(
  "color_grading",
  "Exposure",
  "Tonal controls: exposure in stops, then highlights, shadows, whites, blacks and contrast around mid grey.",
  [
    unitProp("exposure", -5, 5, "Exposure adjustment in stops."),
    unitProp("contrast", -1, 1, "Contrast adjustment around the midpoint."),
    unitProp("highlights", -1, 1, "Highlight recovery (−) or boost (+)."),
    unitProp("shadows", -1, 1, "Shadow lift (+) or darken (−)."),
    unitProp("whites", -1, 1, "White point adjustment."),
    unitProp("blacks", -1, 1, "Black point adjustment."),
  ],
  async (ctx, inputs) => {
    const gain = 2 ** num(inputs, "exposure", -5, 5);
    const [con, hi, sh, wh, bl] = ["contrast", "highlights", "shadows", "whites", "blacks"].map((n) =>
      num(inputs, n, -1, 1),
    ) as [number, number, number, number, number];
    return mapUnit(await decodePixels(ctx, inputs.image), (c) => {
      for (let k = 0; k < 3; k++) c[k] = c[k]! * gain;
      const l = lum709(c);
      const hiMask = Math.min(1, Math.max(0, (l - 0.5) * 2));
      const shMask = Math.min(1, Math.max(0, (0.5 - l) * 2));
      for (let k = 0; k < 3; k++) {
        let v = c[k]! - hiMask * hi * 0.5 + shMask * sh * 0.5;
        v += wh * 0.2 * v;
        v += bl * 0.2 * (1 - v);
        c[k] = 0.5 + (v - 0.5) * (1 + con);
      }
    });
  },
);

const saturationVibrance = pillowNode(
  "color_grading",
  "SaturationVibrance",
  "Saturation (−1 greyscale … +1 double) and vibrance, which boosts the less saturated colors more.",
  [
    unitProp("saturation", -1, 1, "Global saturation: 0 no change, −1 greyscale, 1 twice as saturated."),
    unitProp("vibrance", -1, 1, "Saturation that spares already saturated colors."),
  ],
  async (ctx, inputs) => {
    const sat = num(inputs, "saturation", -1, 1);
    const vib = num(inputs, "vibrance", -1, 1);
    return mapUnit(await decodePixels(ctx, inputs.image), (c) => {
      const l = lum709(c);
      for (let k = 0; k < 3; k++) c[k] = l + (c[k]! - l) * (1 + sat);
      if (vib === 0) return;
      const max = Math.max(c[0]!, c[1]!, c[2]!);
      const current = max > 0 ? (max - Math.min(c[0]!, c[1]!, c[2]!)) / (max + 0.001) : 0;
      for (let k = 0; k < 3; k++) c[k] = l + (c[k]! - l) * (1 + vib * (1 - current));
    });
  },
);

const invert = pillowNode("filter", "Invert", "Inverts the image's colors.", [], async (ctx, inputs) =>
  mapRgb(await decodePixels(ctx, inputs.image), (r, g, b, out) => {
    out[0] = 255 - r;
    out[1] = 255 - g;
    out[2] = 255 - b;
  }),
);

const solarize = pillowNode(
  "filter",
  "Solarize",
  "Inverts every channel value at or above `threshold`.",
  [prop("threshold", "int", 128, { min: 0, max: 255, description: "Threshold for solarization." })],
  async (ctx, inputs) => {
    const t = num(inputs, "threshold", 0, 255);
    return mapRgb(await decodePixels(ctx, inputs.image), (r, g, b, out) => {
      out[0] = r >= t ? 255 - r : r;
      out[1] = g >= t ? 255 - g : g;
      out[2] = b >= t ? 255 - b : b;
    });
  },
);

const posterize = pillowNode(
  "filter",
  "Posterize",
  "Keeps only the `bits` most significant bits of each channel.",
  [prop("bits", "int", 4, { min: 1, max: 8, description: "Number of bits to posterize to." })],
  async (ctx, inputs) => {
    const mask = (0xff << (8 - asInt(num(inputs, "bits", 1, 8), "bits"))) & 0xff;
    return mapRgb(await decodePixels(ctx, inputs.image), (r, g, b, out) => {
      out[0] = r & mask;
      out[1] = g & mask;
      out[2] = b & mask;
    });
  },
);

const grayscale = pillowNode(
  "filter",
  "ConvertToGrayscale",
  "Converts the image to greyscale.",
  [],
  async (ctx, inputs) => {
    const px = await decodePixels(ctx, inputs.image);
    px.data.set(greyCopy(px));
    return px;
  },
);

const blur = pillowNode(
  "filter",
  "Blur",
  "Gaussian blur of `radius`.",
  [prop("radius", "int", 2, { min: 0, max: 128, description: "Blur radius." })],
  async (ctx, inputs) => {
    const radius = num(inputs, "radius", 0, 128);
    const { img } = await openImage(ctx, inputs.image);
    return plainBytes(await (radius > 0 ? img.blur(Math.max(0.3, radius)) : img).png().toBuffer());
  },
);

const expand = pillowNode(
  "filter",
  "Expand",
  "Adds a border of `border` pixels in grey level `fill`.",
  [
    prop("border", "int", 0, { min: 0, max: 512, description: "Border size." }),
    prop("fill", "int", 0, { min: 0, max: 255, description: "Fill color." }),
  ],
  async (ctx, inputs) => {
    const border = asInt(num(inputs, "border", 0, 512), "border");
    const fill = num(inputs, "fill", 0, 255);
    const { img } = await openImage(ctx, inputs.image);
    const background = { r: fill, g: fill, b: fill, alpha: 1 };
    return plainBytes(
      await img.extend({ top: border, bottom: border, left: border, right: border, background }).png().toBuffer(),
    );
  },
);

const FILTER_KERNELS = [
  kernelNode("filter", "Contour", "CONTOUR", "Traces the image's contours."),
  kernelNode("filter", "Emboss", "EMBOSS", "Embosses the image."),
  kernelNode("filter", "FindEdges", "FIND_EDGES", "Finds the image's edges."),
  kernelNode("filter", "Smooth", "SMOOTH", "Smooths the image."),
];

/** A font name as fontconfig knows it: `DejaVuSans-Bold` → `DejaVu Sans Bold`. */
function fontDescription(font: unknown, sizePx: number): string {
  const name = asText((font as { name?: unknown } | null)?.name ?? font).trim() || "DejaVuSans";
  const [family = "DejaVuSans", style = ""] = name.replace(/\.(ttf|otf)$/i, "").split("-");
  const spaced = family.replace(/^DejaVu(?=\S)/, "DejaVu ");
  return `${spaced}${style ? ` ${style}` : ""} ${sizePx}px`;
}

const escapeMarkup = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Most characters RenderText draws (far more than an image within the pixel limit can show legibly). */
const TEXT_MAX_CHARS = 100_000;
/** Widest and tallest text image cairo can draw. */
const TEXT_MAX_SIDE = 32_767;
/** Text whose estimate is over this many pixels is first measured at a smaller size (cheap), then drawn. */
const TEXT_PROBE_PIXELS = 1_000_000;

/** The text's size in pixels at `size` px, estimated: 1 em a character (a wide glyph's advance), 1.2 em a line. */
function textExtent(text: string, size: number): { width: number; height: number; lines: number; longest: number } {
  const lines = text.split("\n");
  const longest = Math.max(...lines.map((l) => [...l].length));
  return { width: longest * size, height: Math.ceil(lines.length * size * 1.2), lines: lines.length, longest };
}

/** Fails, naming the size, when text `width` × `height` pixels would be over the image limits. */
function refuseTextOver(width: number, height: number, size: number, what: string): void {
  const over =
    width * height > IMAGE_MAX_PIXELS
      ? `over the ${IMAGE_MAX_PIXELS}-pixel image limit`
      : width > TEXT_MAX_SIDE || height > TEXT_MAX_SIDE
        ? `over the ${TEXT_MAX_SIDE} pixels a side text can be drawn in`
        : "";
  if (over === "") return;
  throw new NodeError(
    `RenderText: the text would be about ${width}×${height} pixels at size ${size} (${what}), ${over}: ` +
      "use a smaller size or less text",
  );
}

/** The text rendered by Pango at `size` px as an RGBA image (its top-left is where the text starts). */
async function renderedText(ctx: NodeContext, inputs: NodeInputs, text: string, size: number) {
  const fill = colorOf(inputs.color, "color", "#000000");
  const align = asText(inputs.align) === "center" ? "centre" : asText(inputs.align) === "right" ? "right" : "left";
  const font = fontDescription(inputs.font, size);
  const markup = `<span foreground="${fill}">${escapeMarkup(text)}</span>`;
  const img = await imagePipeline(ctx, undefined, { text: { text: markup, font, rgba: true, align, dpi: 72 } });
  const { data, info } = await img.png().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/**
 * The text as an RGBA image, its size bounded before anything is drawn (Pango draws the whole text at once):
 * refused when the estimate is over the limit; a large one is first drawn small and its measured size scaled up.
 */
async function textImage(ctx: NodeContext, inputs: NodeInputs, text: string) {
  const size = asInt(num(inputs, "size", 1, 512), "size");
  const chars = [...text].length;
  if (chars > TEXT_MAX_CHARS)
    throw new NodeError(`RenderText draws at most ${TEXT_MAX_CHARS} characters, got ${chars}`);
  const est = textExtent(text, size);
  const what = `${est.lines} line${est.lines === 1 ? "" : "s"}, the longest ${est.longest} characters`;
  refuseTextOver(est.width, est.height, size, what);
  const probe = Math.max(4, Math.floor(size * Math.sqrt(TEXT_PROBE_PIXELS / (est.width * est.height))));
  if (probe < size) {
    const small = await renderedText(ctx, inputs, text, probe);
    const scale = size / probe;
    refuseTextOver(Math.ceil(small.width * scale), Math.ceil(small.height * scale), size, what);
  }
  return renderedText(ctx, inputs, text, size);
}

const renderText: ProcessNodeDef = {
  kind: "process",
  type: "lib.pillow.draw.RenderText",
  title: "Render Text",
  outputs: output("image"),
  description: "Draws `text` on the image at (x, y) in the given font, size, color and alignment.",
  properties: [
    prop("text", "str", "", { description: "The text to render." }),
    prop("font", "font", { type: "font", name: "DejaVuSans" }, { description: "The font (a system font name)." }),
    prop("x", "int", 0, { description: "The x coordinate." }),
    prop("y", "int", 0, { description: "The y coordinate." }),
    prop("size", "int", 12, { min: 1, max: 512, description: "The font size in pixels." }),
    prop("color", "color", { type: "color", value: "#000000" }, { description: "The font color." }),
    enumProp("align", ["left", "center", "right"], "left"),
    imageProp("image", "The image to render on."),
  ],
  process: async (ctx, inputs) => {
    const { img, width, height } = await openImage(ctx, inputs.image);
    const text = asText(inputs.text);
    if (text.trim() === "") return { output: plainBytes(await img.png().toBuffer()) };
    const x = asInt(inputs.x, "x");
    const y = asInt(inputs.y, "y");
    const label = await textImage(ctx, inputs, text);
    // The part of the text that falls on the image: sharp composites only what fits.
    const left = Math.max(0, -x);
    const top = Math.max(0, -y);
    const w = Math.min(label.width - left, width - Math.max(0, x));
    const h = Math.min(label.height - top, height - Math.max(0, y));
    if (w <= 0 || h <= 0) return { output: plainBytes(await img.png().toBuffer()) };
    const part = await (await imagePipeline(ctx, label.data))
      .extract({ left, top, width: w, height: h })
      .png()
      .toBuffer();
    const out = await img
      .composite([{ input: part, left: Math.max(0, x), top: Math.max(0, y) }])
      .png()
      .toBuffer();
    return { output: plainBytes(out) };
  },
};

const combineImageGrid: ProcessNodeDef = {
  kind: "process",
  type: "lib.grid.CombineImageGrid",
  title: "Combine Image Grid",
  description: "Combines image tiles into one image, `columns` to a row (0: the square root of the tile count).",
  properties: [
    prop("tiles", "list[image]", [], { description: "List of image tiles to combine." }),
    prop("columns", "int", 0, { min: 0, description: "Number of columns in the grid." }),
  ],
  outputs: output("image"),
  process: async (ctx, inputs) => {
    const tiles = asList(inputs.tiles);
    if (tiles.length === 0) throw new NodeError("no tiles to combine");
    const opened = await Promise.all(tiles.map((t, i) => openImage(ctx, t, `tiles[${i}]`)));
    let columns = asInt(inputs.columns ?? 0, "columns");
    if (columns <= 0) columns = Math.max(1, Math.floor(Math.sqrt(tiles.length)));
    const rows = Math.ceil(tiles.length / columns);
    const cellW = Math.max(...opened.map((o) => o.width));
    const cellH = Math.max(...opened.map((o) => o.height));
    const width = cellW * columns;
    const height = cellH * rows;
    if (width * height > IMAGE_MAX_PIXELS)
      throw new NodeError(`the grid would be ${width}×${height}, over the ${IMAGE_MAX_PIXELS}-pixel image limit`);
    const parts = await Promise.all(
      opened.map(async (o, i) => ({
        input: await o.img.ensureAlpha().png().toBuffer(),
        left: (i % columns) * cellW,
        top: Math.floor(i / columns) * cellH,
      })),
    );
    const background = { r: 0, g: 0, b: 0, alpha: 0 };
    const canvas = await imagePipeline(ctx, undefined, { create: { width, height, channels: 4, background } });
    return { output: plainBytes(await canvas.composite(parts).png().toBuffer()) };
  },
};

const sliceImageGrid: ProcessNodeDef = {
  kind: "process",
  type: "lib.grid.SliceImageGrid",
  title: "Slice Image Grid",
  description: "Slices an image into a grid of tiles (3 × 3 when neither columns nor rows is set).",
  properties: [
    imageProp("image", "The image to slice into a grid."),
    prop("columns", "int", 0, { min: 0, description: "Number of columns in the grid." }),
    prop("rows", "int", 0, { min: 0, description: "Number of rows in the grid." }),
  ],
  outputs: output("list[image]"),
  process: async (ctx, inputs) => {
    const { img, width, height } = await openImage(ctx, inputs.image);
    let columns = asInt(inputs.columns ?? 0, "columns");
    let rows = asInt(inputs.rows ?? 0, "rows");
    if (columns <= 0 && rows <= 0) columns = rows = 3;
    else if (columns <= 0) columns = Math.ceil((width / height) * rows);
    else if (rows <= 0) rows = Math.ceil((height / width) * columns);
    const tileW = Math.max(1, Math.floor(width / columns));
    const tileH = Math.max(1, Math.floor(height / rows));
    if (Math.ceil(width / tileW) * Math.ceil(height / tileH) > ctx.limits.listMaxItems)
      throw new NodeError(`the grid has more tiles than nodeListMaxItems (${ctx.limits.listMaxItems})`);
    const tiles: Uint8Array[] = [];
    for (let top = 0; top < height; top += tileH) {
      for (let left = 0; left < width; left += tileW) {
        ctx.signal.throwIfAborted();
        const region = { left, top, width: Math.min(tileW, width - left), height: Math.min(tileH, height - top) };
        tiles.push(plainBytes(await img.clone().extract(region).png().toBuffer()));
      }
    }
    return { output: tiles };
  },
};

/** Every node's libvips time-cap stop reported as its error (imageNode). */
const LIB_NODES: readonly ProcessNodeDef[] = [
  brightness,
  contrast,
  color,
  sharpness,
  autoContrast,
  equalize,
  sharpen,
  edgeEnhance,
  detail,
  unsharpMask,
  adaptiveContrast,
  exposure,
  saturationVibrance,
  invert,
  solarize,
  posterize,
  grayscale,
  blur,
  expand,
  ...FILTER_KERNELS,
  renderText,
  combineImageGrid,
  sliceImageGrid,
].map(imageNode);

/**
 * Each node again under NodeTool's `nodetool.lib.*` name (some gallery workflows use it). Separate definitions,
 * not `aliases`: an agent's published catalog lists node types only, and the gateway accepts what it lists.
 */
const NODETOOL_NAMED: readonly ProcessNodeDef[] = LIB_NODES.map((d) => ({ ...d, type: `nodetool.${d.type}` }));

export const PILLOW_NODES: readonly NodeDef[] = [...LIB_NODES, ...NODETOOL_NAMED];
