/**
 * NodeTool's image generation (`nodetool.image.TextToImage`, `ImageToImage`) through the providers' image APIs
 * (agent/integrations/media.ts), loading images from a folder (`LoadImageFolder`, confined to the folder root), and
 * the media constants and inputs (`nodetool.constant.Image/Audio/Video`, `nodetool.input.ColorInput`,
 * `FolderPathInput`).
 *
 * The model names its provider, and so the pool the job goes to (`providerProperty`): an OpenAI image model runs on
 * the agents holding the OpenAI key. A model saved empty takes the deployment's default image model. Image models
 * served by ComfyUI are ComfyUI workflows: the `comfyui` pool runs them as `comfy.*` nodes (a workflow JSON with
 * its prompt and size overridden), not through these nodes.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { mediaRefOf, type PropertyMetadata } from "../../protocol/index.js";
import {
  NodeError,
  type GeneratorNodeDef,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type ProcessNodeDef,
} from "../engine/types.js";
import {
  IMAGE_MAX_PIXELS,
  MEDIA_MAX_BYTES,
  colorOf,
  imageNode,
  isEmptyMedia,
  pathInFolderRoot,
  plainBytes,
} from "./media-util.js";
import { EMPTY_IMAGE, imageProp, openImage } from "./pillow.js";
import { asBool, asInt, asList, asNumber, asText, compileRegex, output, prop } from "./util.js";

const EMPTY_IMAGE_MODEL = { type: "image_model", provider: "empty", id: "", name: "" };

/** An integer input in [min, max], or a NodeError naming it. */
export function sizeIn(inputs: NodeInputs, name: string, min: number, max: number): number {
  const n = asInt(inputs[name], name);
  if (n < min || n > max) throw new NodeError(`${name} must be in [${min}, ${max}], got ${n}`);
  return n;
}

/**
 * Runs `fn` with a signal that also aborts after `timeout_seconds` (0: no cap of the node's own); that cap is
 * reported as the node's error, a cancel as the cancel.
 */
async function withNodeTimeout<T>(
  ctx: NodeContext,
  inputs: NodeInputs,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const seconds = asInt(inputs.timeout_seconds ?? 0, "timeout_seconds");
  if (seconds <= 0) return fn(ctx.signal);
  const timeout = AbortSignal.timeout(seconds * 1000);
  try {
    return await fn(AbortSignal.any([ctx.signal, timeout]));
  } catch (err) {
    if (timeout.aborted && !ctx.signal.aborted)
      throw new NodeError(`the provider did not answer within timeout_seconds (${seconds} s)`);
    throw err;
  }
}

const GENERATION_PROPS: PropertyMetadata[] = [
  prop("negative_prompt", "str", "", { description: "What to avoid in the image (where the model supports it)." }),
  prop("guidance_scale", "float", 7.5, { min: 0, max: 30, description: "Guidance scale (diffusion models)." }),
  prop("num_inference_steps", "int", 30, { min: 1, max: 100, description: "Denoising steps (diffusion models)." }),
  prop("seed", "int", -1, { min: -1, description: "Random seed (-1 for random; where the model supports it)." }),
  prop("safety_check", "bool", true, { description: "Enable the provider's safety checker." }),
  prop("timeout_seconds", "int", 0, { min: 0, max: 3600, description: "Timeout of the provider call (0: none)." }),
];

const modelProp = prop("model", "image_model", EMPTY_IMAGE_MODEL, {
  description: 'The image model, e.g. {"provider": "openai", "id": "gpt-image-1"}; empty: the deployment default.',
});

export const textToImage: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.image.TextToImage",
  title: "Text To Image",
  description: "Generates an image from a text prompt with the chosen provider's image model.",
  properties: [
    modelProp,
    prop("prompt", "str", "A cat holding a sign that says hello world", { description: "What the image shows." }),
    prop("width", "int", 512, { min: 64, max: 2048, description: "Width of the generated image." }),
    prop("height", "int", 512, { min: 64, max: 2048, description: "Height of the generated image." }),
    ...GENERATION_PROPS,
  ],
  outputs: output("image"),
  providerProperty: "model",
  process: async (ctx, inputs) => {
    const { mediaModelOf, generateImage } = await import("../integrations/media.js");
    const model = mediaModelOf(inputs.model, "image");
    const prompt = asText(inputs.prompt);
    if (prompt.trim() === "") throw new NodeError(`"prompt" is empty`);
    const width = sizeIn(inputs, "width", 64, 2048);
    const height = sizeIn(inputs, "height", 64, 2048);
    const image = await withNodeTimeout(ctx, inputs, (signal) =>
      generateImage({ model, prompt, width, height, signal }),
    );
    return { output: image };
  },
};

export const imageToImage: ProcessNodeDef = imageNode({
  kind: "process",
  type: "nodetool.image.ImageToImage",
  title: "Image To Image",
  description: "Transforms an image as the prompt says with the chosen provider's image model (OpenAI: an edit).",
  properties: [
    modelProp,
    imageProp("image", "The input image to transform."),
    prop("prompt", "str", "A photorealistic version of the input image", { description: "How to transform it." }),
    prop("strength", "float", 0.8, { min: 0, max: 1, description: "How much to change the image (diffusion)." }),
    prop("target_width", "int", 512, { min: 64, max: 2048, description: "Width of the result." }),
    prop("target_height", "int", 512, { min: 64, max: 2048, description: "Height of the result." }),
    prop("scheduler", "str", "", { description: "Scheduler (diffusion models)." }),
    ...GENERATION_PROPS,
  ],
  outputs: output("image"),
  providerProperty: "model",
  process: async (ctx, inputs) => {
    const { mediaModelOf, editImage } = await import("../integrations/media.js");
    const model = mediaModelOf(inputs.model, "image");
    if (isEmptyMedia(inputs.image)) throw new NodeError(`"image" is not connected`);
    const prompt = asText(inputs.prompt);
    if (prompt.trim() === "") throw new NodeError(`"prompt" is empty`);
    const width = sizeIn(inputs, "target_width", 64, 2048);
    const height = sizeIn(inputs, "target_height", 64, 2048);
    // The API takes PNG, JPEG or WebP: whatever came in goes as PNG.
    const { img } = await openImage(ctx, inputs.image);
    const png = plainBytes(await img.png().toBuffer());
    const image = await withNodeTimeout(ctx, inputs, (signal) =>
      editImage({ model, image: png, prompt, width, height, signal }),
    );
    return { output: image };
  },
});

/** A shell-style pattern (`*`, `?`, `[…]`) as a whole-string RE2 expression. */
function globRegex(glob: string): string {
  let re = "";
  for (const c of glob) re += c === "*" ? ".*" : c === "?" ? "." : /[\\^$.|+(){}]/.test(c) ? `\\${c}` : c;
  return `(?s)${re}`;
}

async function listFiles(dir: string, recursive: boolean): Promise<string[]> {
  const entries = await readdir(dir, { recursive, withFileTypes: false });
  return entries.map((e) => join(dir, String(e))).sort();
}

export const loadImageFolder: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.image.LoadImageFolder",
  title: "Load Image Folder",
  description: `Loads every image in a folder under the agent's folder root (the setting NODEWAY_FOLDER_ROOT), one at a time, with its path.`,
  properties: [
    prop("folder", "str", "", { description: "Folder to scan for images (relative to the folder root)." }),
    prop("include_subdirectories", "bool", false, { description: "Include images in subfolders." }),
    prop("extensions", "list[str]", [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tiff"], {
      description: "Image file extensions to include.",
    }),
    prop("pattern", "str", "", { description: "Shell-style pattern the file's path must match." }),
  ],
  outputs: [
    { name: "image", type: "image" },
    { name: "path", type: "str" },
  ],
  async *generate(ctx, inputs) {
    const folder = asText(inputs.folder);
    if (folder.trim() === "") throw new NodeError(`"folder" is empty`);
    const root = await pathInFolderRoot(folder);
    const exts = new Set(asList(inputs.extensions).map((e) => asText(e).toLowerCase()));
    const pattern = asText(inputs.pattern);
    const matcher = pattern ? compileRegex(globRegex(pattern)) : null;
    let count = 0;
    for (const file of await listFiles(root, asBool(inputs.include_subdirectories))) {
      if (!exts.has(extname(file).toLowerCase())) continue;
      if (matcher && !matcher.matcher(file).matches()) continue;
      // A link out of the root is never read, a dangling one is no file: each is skipped, the job's log saying so.
      const real = await pathInFolderRoot(file).catch((err: Error) => {
        ctx.log(`skipped ${file}: ${err.message}`);
        return null;
      });
      if (real === null) continue;
      const info = await stat(real);
      if (!info.isFile()) continue;
      if (info.size > MEDIA_MAX_BYTES) throw new NodeError(`${file} is over the ${MEDIA_MAX_BYTES}-byte media limit`);
      if (++count > ctx.limits.listMaxItems)
        throw new NodeError(`the folder has more images than nodeListMaxItems (${ctx.limits.listMaxItems})`);
      yield { handle: "image", value: plainBytes(await readFile(real)) };
      yield { handle: "path", value: real };
    }
  },
};

/** A media constant: its `value` (a reference, or bytes) as it is. */
function mediaConstant(kind: "image" | "audio" | "video", name: string): ProcessNodeDef {
  return {
    kind: "process",
    type: `nodetool.constant.${name}`,
    title: name,
    description: `Represents ${kind === "video" ? "a" : "an"} ${kind} constant in the workflow.`,
    properties: [prop("value", kind, { ...EMPTY_IMAGE, type: kind }, { description: `The ${kind}.` })],
    outputs: output(kind),
    process: (_ctx, inputs) => {
      const v = inputs.value;
      if (isEmptyMedia(v)) throw new NodeError(`the ${kind} constant has no value`);
      return { output: v instanceof Uint8Array ? v : (mediaRefOf(v, kind) ?? v) };
    },
  };
}

/** The run's param named by the node's `name` if given, else its `value`. */
function paramOrValue(ctx: NodeContext, inputs: NodeInputs): unknown {
  const name = asText(ctx.data.name ?? inputs.name).trim();
  return name !== "" && Object.hasOwn(ctx.params, name) ? ctx.params[name] : inputs.value;
}

const inputProps = (value: PropertyMetadata) => [
  prop("name", "str", "", { description: "The parameter name for the workflow." }),
  value,
  prop("description", "str", "", { description: "The description of the input for the workflow." }),
];

export const colorInput: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.input.ColorInput",
  title: "Color Input",
  description: "Accepts a color value (#rrggbb) as a parameter for workflows.",
  properties: inputProps(prop("value", "color", { type: "color", value: null }, { description: "The color." })),
  outputs: output("color"),
  process: (ctx, inputs) => {
    const value = colorOf(paramOrValue(ctx, inputs), "value", "");
    return { output: { type: "color", value: value === "" ? null : value } };
  },
};

export const folderPathInput: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.input.FolderPathInput",
  title: "Folder Path Input",
  description: "Accepts a folder path as a parameter for workflows (read under the agent's folder root).",
  properties: inputProps(prop("value", "str", "", { description: "The folder path to use as input." })),
  outputs: output("str"),
  process: (ctx, inputs) => {
    const v = paramOrValue(ctx, inputs);
    // NodeTool also saves it as a FilePath, `{type: "file_path", path}`.
    const path = v !== null && typeof v === "object" ? (v as { path?: unknown }).path : v;
    return { output: asText(path) };
  },
};

/** Size and format of an image (`nodetool.image.GetMetadata`). */
export const getMetadata: ProcessNodeDef = imageNode({
  kind: "process",
  type: "nodetool.image.GetMetadata",
  title: "Get Metadata",
  description: "The image's width, height, color mode and channel count.",
  properties: [imageProp("image", "The input image.")],
  outputs: [
    { name: "format", type: "str" },
    { name: "mode", type: "str" },
    { name: "width", type: "int" },
    { name: "height", type: "int" },
    { name: "channels", type: "int" },
  ],
  process: async (ctx, inputs) => {
    const { img, width, height, space } = await openImage(ctx, inputs.image);
    const meta = await img.metadata();
    const channels = meta.channels ?? 3;
    // A CMYK JPEG has 4 channels and no alpha: Pillow's mode for it is "CMYK".
    const mode =
      space === "cmyk" ? "CMYK" : channels === 1 ? "L" : channels === 2 ? "LA" : channels === 4 ? "RGBA" : "RGB";
    return { format: (meta.format ?? "").toUpperCase(), mode, width, height, channels };
  },
});

/** `nodetool.image.Resize` / `Scale`: the image at a new size (aspect not kept by Resize). */
export const resize: ProcessNodeDef = imageNode({
  kind: "process",
  type: "nodetool.image.Resize",
  title: "Resize",
  description: "Changes the image to the given width and height.",
  properties: [
    imageProp("image", "The image to resize."),
    prop("width", "int", 512, { min: 0, max: 4096, description: "The target width." }),
    prop("height", "int", 512, { min: 0, max: 4096, description: "The target height." }),
  ],
  outputs: output("image"),
  process: async (ctx, inputs) => {
    const width = sizeIn(inputs, "width", 1, 4096);
    const height = sizeIn(inputs, "height", 1, 4096);
    const { img } = await openImage(ctx, inputs.image);
    return { output: plainBytes(await img.resize(width, height, { fit: "fill" }).png().toBuffer()) };
  },
});

export const scale: ProcessNodeDef = imageNode({
  kind: "process",
  type: "nodetool.image.Scale",
  title: "Scale",
  description: "Enlarges or shrinks the image by a factor.",
  properties: [
    imageProp("image", "The image to scale."),
    prop("scale", "float", 1.0, { min: 0, max: 10, description: "The scale factor." }),
  ],
  outputs: output("image"),
  process: async (ctx, inputs) => {
    const factor = asNumber(inputs.scale, "scale");
    if (!(factor > 0 && factor <= 10)) throw new NodeError(`scale must be in (0, 10], got ${factor}`);
    const { img, width, height } = await openImage(ctx, inputs.image);
    const size = { width: Math.max(1, Math.round(width * factor)), height: Math.max(1, Math.round(height * factor)) };
    if (size.width * size.height > IMAGE_MAX_PIXELS)
      throw new NodeError(
        `the scaled image would be ${size.width}×${size.height}, over the ${IMAGE_MAX_PIXELS}-pixel image limit`,
      );
    return {
      output: plainBytes(
        await img
          .resize({ ...size, fit: "fill" })
          .png()
          .toBuffer(),
      ),
    };
  },
});

export const IMAGE_NODES: readonly NodeDef[] = [
  textToImage,
  imageToImage,
  loadImageFolder,
  getMetadata,
  resize,
  scale,
  mediaConstant("image", "Image"),
  mediaConstant("audio", "Audio"),
  mediaConstant("video", "Video"),
  colorInput,
  folderPathInput,
];
