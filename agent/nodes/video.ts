/**
 * NodeTool's video nodes (`nodetool.video.*`) on this host's `ffmpeg` and `ffprobe`: frames out of a video
 * (FrameIterator), frames into one (FrameToVideo), its audio out (ExtractAudio) or in (AddAudio), subtitles burned
 * in (AddSubtitles). Each run works in its own temp dir, spawns the tools with argument arrays (no shell), is
 * capped in time (`FFMPEG_TIMEOUT_MS`) and output size (`MEDIA_MAX_BYTES`), and a cancel kills the tool. An agent
 * without ffmpeg does not offer these (`videoNodesFor`). Video generation (TextToVideo, ImageToVideo) goes to the
 * providers' video APIs (agent/integrations/media.ts) and needs no ffmpeg.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PropertyMetadata } from "../../protocol/index.js";
import { findFfmpeg, type FfmpegTools } from "../capabilities.js";
import {
  NodeError,
  type GeneratorNodeDef,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type ProcessNodeDef,
  type StreamingInputNodeDef,
} from "../engine/types.js";
import {
  IMAGE_MAX_PIXELS,
  MEDIA_MAX_BYTES,
  colorOf,
  isEmptyMedia,
  mediaBytes,
  plainBytes,
  rgbaOf,
  runTool,
  withTempDir,
} from "./media-util.js";
import { EMPTY_IMAGE, imageProp, openImage } from "./pillow.js";
import { asBool, asInt, asList, asNumber, asText, enumProp, output, prop } from "./util.js";

/** Longest one ffmpeg run may take. */
export const FFMPEG_TIMEOUT_MS = 10 * 60_000;
/** Most frames one FrameIterator emits or one FrameToVideo collects. */
export const VIDEO_MAX_FRAMES = 10_000;

const EMPTY_VIDEO = { ...EMPTY_IMAGE, type: "video" };
const EMPTY_AUDIO = { ...EMPTY_IMAGE, type: "audio" };
const videoProp = (description: string) => prop("video", "video", EMPTY_VIDEO, { description });

function tools(): FfmpegTools {
  const t = findFfmpeg();
  if (!t) throw new NodeError("ffmpeg and ffprobe are not on this agent's PATH (install the ffmpeg package)");
  return t;
}

/**
 * The demuxers a job's media may be read with: files that hold their media. A playlist or list demuxer (HLS, concat,
 * DASH, image sequences) would open the files it names: an uploaded `.m3u8` naming `/srv/x.ts` read that host file.
 */
const MEDIA_DEMUXERS = [
  "mov",
  "mp4",
  "matroska",
  "webm",
  "avi",
  "flv",
  "mpegts",
  "mpeg",
  "asf",
  "ogg",
  "gif",
  "h264",
  "hevc",
  "wav",
  "w64",
  "mp3",
  "flac",
  "aac",
  "aiff",
  "caf",
  "amr",
].join(",");

/** ffmpeg's / ffprobe's input options for a job's media file at `path`: its own demuxers and the file protocol only. */
const mediaInput = (path: string): string[] => [
  "-format_whitelist",
  MEDIA_DEMUXERS,
  "-protocol_whitelist",
  "file",
  "-i",
  path,
];

/** ffmpeg with `args` after the common ones (quiet, no stdin, overwrite, output size capped). */
function ffmpeg(ctx: NodeContext, args: string[], what: string): Promise<Buffer> {
  const base = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"];
  return runTool(
    ctx,
    tools().ffmpeg,
    [...base, ...args.slice(0, -1), "-fs", String(MEDIA_MAX_BYTES), args.at(-1)!],
    what,
    FFMPEG_TIMEOUT_MS,
  );
}

/** Audio bytes as MP3 (ffmpeg), for a model that takes WAV or MP3 only. */
export function audioAsMp3(ctx: NodeContext, bytes: Uint8Array): Promise<Uint8Array> {
  return withTempDir(async (dir) => {
    const src = join(dir, "in");
    const out = join(dir, "out.mp3");
    await writeFile(src, bytes);
    await ffmpeg(ctx, [...mediaInput(src), "-vn", "-codec:a", "libmp3lame", "-q:a", "4", out], "ffmpeg (audio to MP3)");
    return plainBytes(await readFile(out));
  });
}

/** Writes the media value to `dir/name` and returns the path. */
async function mediaFile(ctx: NodeContext, value: unknown, kind: "video" | "audio", dir: string, name: string) {
  const path = join(dir, name);
  await writeFile(path, await mediaBytes(ctx, value, kind, kind));
  return path;
}

interface Probed {
  fps: number;
  width: number;
  height: number;
  hasAudio: boolean;
  /** The first video and audio streams' codecs (ffprobe's names; "" when none). */
  videoCodec: string;
  audioCodec: string;
}

/** The first video stream's frame rate and codec (ffprobe), and whether (and in what) the file has audio. */
async function probe(ctx: NodeContext, file: string): Promise<Probed> {
  const entries = "stream=codec_type,codec_name,avg_frame_rate,r_frame_rate,width,height";
  const out = await runTool(
    ctx,
    tools().ffprobe,
    ["-v", "error", "-show_entries", entries, "-of", "json", ...mediaInput(file)],
    "ffprobe",
    60_000,
  );
  const streams = (JSON.parse(out.toString()) as { streams?: Record<string, string>[] }).streams ?? [];
  const video = streams.find((s) => s.codec_type === "video");
  if (!video) throw new NodeError("the video has no video stream");
  const rate = (r?: string) => {
    const [n, d] = (r ?? "0/1").split("/").map(Number);
    return d ? n! / d : 0;
  };
  const fps = rate(video.avg_frame_rate) || rate(video.r_frame_rate) || 30;
  const audio = streams.find((s) => s.codec_type === "audio");
  return {
    fps,
    width: Number(video.width) || 0,
    height: Number(video.height) || 0,
    hasAudio: audio !== undefined,
    videoCodec: video.codec_name ?? "",
    audioCodec: audio?.codec_name ?? "",
  };
}

/** H.264 in yuv420p needs even sides. */
const EVEN_SIZE = "scale=trunc(iw/2)*2:trunc(ih/2)*2";

/** Codecs an MP4 holds as they are; any other (VP8, GIF, ProRes, …) is re-encoded when a node writes MP4. */
const MP4_VIDEO_CODECS = new Set(["h264", "hevc", "av1", "vp9", "mpeg4"]);
const MP4_AUDIO_CODECS = new Set(["aac", "mp3", "opus", "ac3", "eac3", "alac"]);

/** ffmpeg's video codec options for MP4 output: a copy where the codec fits MP4, else H.264. */
const mp4Video = (codec: string) =>
  MP4_VIDEO_CODECS.has(codec) ? ["-c:v", "copy"] : ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf", EVEN_SIZE];
/** ffmpeg's audio codec options for MP4 output: a copy where the codec fits MP4 (FLAC, PCM do not), else AAC. */
const mp4Audio = (codec: string) => (MP4_AUDIO_CODECS.has(codec) ? ["-c:a", "copy"] : ["-c:a", "aac"]);

export const frameIterator: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.video.FrameIterator",
  title: "Frame Iterator",
  description:
    "Emits the video's frames from `start` up to (not including) `end` (-1: to the end), with index and fps.",
  properties: [
    videoProp("The input video to extract frames from."),
    prop("start", "int", 0, { description: "The frame to start extracting from." }),
    prop("end", "int", -1, { description: "The frame to stop extracting at (-1: the last)." }),
  ],
  outputs: [
    { name: "frame", type: "image" },
    { name: "index", type: "int" },
    { name: "fps", type: "float" },
    // NodeTool's older graphs wire it into FrameToVideo's `event`; it carries nothing (the frames' end is the stream's).
    { name: "event", type: "any" },
  ],
  async *generate(ctx, inputs) {
    const start = Math.max(0, asInt(inputs.start ?? 0, "start"));
    const end = asInt(inputs.end ?? -1, "end");
    const max = Math.min(VIDEO_MAX_FRAMES, ctx.limits.listMaxItems);
    const dir = await mkdtemp(join(tmpdir(), "nodeway-frames-"));
    try {
      const input = await mediaFile(ctx, inputs.video, "video", dir, "input");
      const { fps, width, height } = await probe(ctx, input);
      // Refused before decoding: a tiny file of a huge solid color would otherwise decode to frames no image node takes.
      if (width * height > IMAGE_MAX_PIXELS)
        throw new NodeError(
          `the video's frames are ${width}×${height}, over the ${IMAGE_MAX_PIXELS}-pixel image limit`,
        );
      const trim = `trim=start_frame=${start}${end >= 0 ? `:end_frame=${end}` : ""}`;
      const args = [...mediaInput(input), "-vf", trim, "-fps_mode", "passthrough", "-frames:v", String(max + 1)];
      let i = 0;
      for await (const png of pngFrames(ctx, [...args, "-f", "image2pipe", "-c:v", "png", "pipe:1"])) {
        if (i >= max) throw new NodeError(`the video has more than ${max} frames in range`);
        yield { handle: "frame", value: png };
        yield { handle: "index", value: start + i++ };
        yield { handle: "fps", value: fps };
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};

/** A PNG's last 12 bytes: the empty IEND chunk with its CRC. */
const PNG_END = Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);

/** Splits a stream of concatenated PNGs into whole files, copying each byte once; a file over `maxBytes` fails. */
async function* splitPngs(stream: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<Uint8Array> {
  let parts: Buffer[] = [];
  let size = 0;
  let tail = Buffer.alloc(0); // the last 11 bytes seen, where an end split across reads starts
  for await (const chunk of stream) {
    let rest = chunk;
    for (;;) {
      const at = Buffer.concat([tail, rest]).indexOf(PNG_END);
      if (at < 0) break;
      const cut = at + PNG_END.length - tail.length;
      yield plainBytes(Buffer.concat([...parts, rest.subarray(0, cut)]));
      [parts, size, tail, rest] = [[], 0, Buffer.alloc(0), rest.subarray(cut)];
    }
    parts.push(rest);
    size += rest.length;
    tail = Buffer.concat([tail, rest]).subarray(-(PNG_END.length - 1));
    if (size > maxBytes) throw new NodeError(`a frame is over the ${maxBytes}-byte media limit`);
  }
}

/**
 * The PNG frames ffmpeg (`args`, writing image2pipe to stdout) decodes, one at a time as the consumer takes them:
 * nothing goes to disk and ffmpeg waits on the pipe, so a long video holds one frame in memory, not all of them.
 * ffmpeg is killed on a cancel, after FFMPEG_TIMEOUT_MS, and when the consumer stops early.
 */
async function* pngFrames(ctx: NodeContext, args: string[]): AsyncGenerator<Uint8Array> {
  ctx.signal.throwIfAborted();
  const base = ["-hide_banner", "-loglevel", "error", "-nostdin"];
  const child = spawn(tools().ffmpeg, [...base, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)));
  const exited = new Promise<number | null>((res) => child.on("close", (code) => res(code)));
  const failedToStart = new Promise<never>((_res, rej) => child.on("error", rej));
  failedToStart.catch(() => {});
  const kill = () => child.kill("SIGKILL");
  let timedOut = false;
  const timer = setTimeout(() => ((timedOut = true), kill()), FFMPEG_TIMEOUT_MS);
  ctx.signal.addEventListener("abort", kill, { once: true });
  try {
    yield* splitPngs(child.stdout as AsyncIterable<Buffer>, MEDIA_MAX_BYTES);
    const code = await Promise.race([exited, failedToStart]);
    ctx.signal.throwIfAborted();
    if (timedOut) throw new NodeError(`ffmpeg (frames) took longer than ${FFMPEG_TIMEOUT_MS / 1000} s and was stopped`);
    if (code !== 0)
      throw new NodeError(`ffmpeg (frames) failed (${code}): ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener("abort", kill);
    if (child.exitCode === null) kill();
  }
}

/** Writes each frame as a PNG of the first frame's size (H.264 needs one size throughout). */
async function writeFrame(ctx: NodeContext, value: unknown, path: string, size: { w: number; h: number } | null) {
  const { img, width, height } = await openImage(ctx, value, "frame");
  const target = size ?? { w: width, h: height };
  const png = await img.resize(target.w, target.h, { fit: "contain" }).removeAlpha().png().toBuffer();
  await writeFile(path, png);
  return target;
}

export const frameToVideo: StreamingInputNodeDef = {
  kind: "streaming-input",
  type: "nodetool.video.FrameToVideo",
  title: "Frame To Video",
  description: "Collects every frame it receives, in order, into an H.264 MP4 at `fps`.",
  properties: [
    imageProp("frame", "Collect input frames."),
    prop("fps", "float", 30, { description: "The FPS of the output video." }),
    prop("index", "int", 0, { description: "The frame's index (frames are kept in arrival order)." }),
    prop("event", "any", null, { description: "Accepted for NodeTool's older graphs; unused." }),
  ],
  outputs: output("video"),
  consume: async (ctx, inputs, inbox) =>
    withTempDir(async (dir) => {
      let fps = asNumber(inputs.fps ?? 30, "fps");
      let count = 0;
      let size: { w: number; h: number } | null = null;
      for await (const item of inbox) {
        if (item.handle === "fps") fps = asNumber(item.value, "fps");
        if (item.handle !== "frame" || isEmptyMedia(item.value)) continue;
        if (++count > VIDEO_MAX_FRAMES) throw new NodeError(`more than ${VIDEO_MAX_FRAMES} frames`);
        size = await writeFrame(ctx, item.value, join(dir, `frame_${String(count).padStart(6, "0")}.png`), size);
      }
      if (count === 0 && !isEmptyMedia(inputs.frame)) {
        // A frame set on the node itself (no edge): a one-frame video.
        await writeFrame(ctx, inputs.frame, join(dir, "frame_000001.png"), null);
        count = 1;
      }
      if (count === 0) throw new NodeError("no frames reached FrameToVideo");
      if (!(fps > 0 && fps <= 240)) throw new NodeError(`fps must be in (0, 240], got ${fps}`);
      const out = join(dir, "video.mp4");
      const args = ["-framerate", String(fps), "-i", join(dir, "frame_%06d.png"), "-vf", EVEN_SIZE, "-c:v", "libx264"];
      await ffmpeg(ctx, [...args, "-pix_fmt", "yuv420p", "-movflags", "+faststart", out], "ffmpeg (encode)");
      return { output: plainBytes(await readFile(out)) };
    }),
};

export const extractAudio: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.video.ExtractAudio",
  title: "Extract Audio",
  description: "The video's audio track, as WAV.",
  properties: [videoProp("The input video to separate.")],
  outputs: output("audio"),
  process: (ctx, inputs) =>
    withTempDir(async (dir) => {
      const input = await mediaFile(ctx, inputs.video, "video", dir, "input");
      if (!(await probe(ctx, input)).hasAudio) throw new NodeError("the video has no audio track");
      const out = join(dir, "audio.wav");
      await ffmpeg(ctx, [...mediaInput(input), "-vn", "-acodec", "pcm_s16le", out], "ffmpeg (extract audio)");
      return { output: plainBytes(await readFile(out)) };
    }),
};

export const addAudio: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.video.AddAudio",
  title: "Add Audio",
  description: "Puts the audio on the video (at `volume`), replacing its sound, or mixed with it when `mix` is set.",
  properties: [
    videoProp("The input video to add audio to."),
    prop("audio", "audio", EMPTY_AUDIO, { description: "The audio file to add to the video." }),
    prop("volume", "float", 1.0, { min: 0, max: 2, description: "Volume of the added audio." }),
    prop("mix", "bool", false, { description: "Mix with the video's own audio instead of replacing it." }),
  ],
  outputs: output("video"),
  process: (ctx, inputs) =>
    withTempDir(async (dir) => {
      const volume = asNumber(inputs.volume, "volume");
      if (!(volume >= 0 && volume <= 2)) throw new NodeError(`volume must be in [0, 2], got ${volume}`);
      const video = await mediaFile(ctx, inputs.video, "video", dir, "video");
      const audio = await mediaFile(ctx, inputs.audio, "audio", dir, "audio");
      const probed = await probe(ctx, video);
      const mix = asBool(inputs.mix) && probed.hasAudio;
      const graph = mix
        ? `[1:a]volume=${volume}[a1];[0:a][a1]amix=inputs=2:duration=first[aout]`
        : `[1:a]volume=${volume}[aout]`;
      const out = join(dir, "out.mp4");
      const args = [
        ...mediaInput(video),
        ...mediaInput(audio),
        "-filter_complex",
        graph,
        "-map",
        "0:v",
        "-map",
        "[aout]",
      ];
      const codecs = [...mp4Video(probed.videoCodec), "-c:a", "aac"];
      await ffmpeg(ctx, [...args, ...codecs, "-shortest", out], "ffmpeg (add audio)");
      return { output: plainBytes(await readFile(out)) };
    }),
};

/** `HH:MM:SS,mmm` as SRT writes a time. */
function srtTime(seconds: number): string {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(Math.floor(ms / 3_600_000))}:${p(Math.floor(ms / 60_000) % 60)}:${p(Math.floor(ms / 1000) % 60)},${p(ms % 1000, 3)}`;
}

/** NodeTool's AudioChunks (`{timestamp: [start, end], text}`) as an SRT file's text. */
export function srtOf(chunks: unknown[]): string {
  const cues: string[] = [];
  for (const c of chunks) {
    const o = (c ?? {}) as { timestamp?: unknown; text?: unknown };
    const [start, end] = Array.isArray(o.timestamp) ? o.timestamp.map(Number) : [Number.NaN, Number.NaN];
    const text = asText(o.text)
      .trim()
      .replace(/\n\s*\n/g, "\n");
    if (!Number.isFinite(start) || text === "") continue;
    const stop = Number.isFinite(end) && end! > start! ? end! : start! + 2;
    cues.push(`${cues.length + 1}\n${srtTime(start!)} --> ${srtTime(stop)}\n${text}\n`);
  }
  return cues.join("\n");
}

/** ASS colour `&HAABBGGRR` (alpha 0 = opaque) of a hex color. */
function assColor(hex: string): string {
  const { r, g, b, alpha } = rgbaOf(hex);
  const h = (n: number) => n.toString(16).padStart(2, "0").toUpperCase();
  return `&H${h(Math.round((1 - alpha) * 255))}${h(b)}${h(g)}${h(r)}`;
}

/** libass's script height for SRT subtitles: style sizes are in these units, scaled to the video's height. */
const SRT_PLAY_RES_Y = 288;

/** The ASS style for NodeTool's inputs; `font_size` is in pixels of a video `height` pixels high. */
function subtitleStyle(inputs: NodeInputs, height: number): string {
  const size = asInt(inputs.font_size ?? 24, "font_size");
  if (size < 1 || size > 72) throw new NodeError(`font_size must be in [1, 72], got ${size}`);
  const scaled = height > 0 ? Math.max(1, Math.round((size * SRT_PLAY_RES_Y) / height)) : size;
  const align = asText(inputs.align) === "top" ? 8 : asText(inputs.align) === "center" ? 5 : 2;
  const font = asText((inputs.font as { name?: unknown } | null)?.name ?? inputs.font).replace(/\.(ttf|otf)$/i, "");
  const style = [
    `Fontsize=${scaled}`,
    `PrimaryColour=${assColor(colorOf(inputs.font_color, "font_color", "#FFFFFF"))}`,
    `Alignment=${align}`,
    ...(font && /^[\w -]+$/.test(font) ? [`Fontname=${font}`] : []),
  ];
  return style.join(",");
}

export const addSubtitles: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.video.AddSubtitles",
  title: "Add Subtitles",
  description: "Burns timed text chunks (e.g. Whisper's) into the video as subtitles.",
  properties: [
    videoProp("The input video to add subtitles to."),
    prop("chunks", "list[audio_chunk]", [], { description: "Audio chunks to add as subtitles." }),
    prop("font", "font", { type: "font", name: "" }, { description: "The font to use." }),
    enumProp("align", ["top", "center", "bottom"], "bottom", "Vertical alignment of the subtitles."),
    prop("font_size", "int", 24, { min: 1, max: 72, description: "The font size." }),
    prop("font_color", "color", { type: "color", value: "#FFFFFF" }, { description: "The font color." }),
  ],
  outputs: output("video"),
  process: (ctx, inputs) =>
    withTempDir(async (dir) => {
      const video = await mediaFile(ctx, inputs.video, "video", dir, "video");
      const probed = await probe(ctx, video);
      const style = subtitleStyle(inputs, probed.height);
      const srt = srtOf(asList(inputs.chunks));
      if (srt === "") return { output: await mediaBytes(ctx, inputs.video, "video", "video") };
      await writeFile(join(dir, "subs.srt"), srt);
      const out = join(dir, "out.mp4");
      // The temp dir's path has no filter-graph specials (mkdtemp: letters, digits, "-", "/").
      const filter = `subtitles=${join(dir, "subs.srt")}:force_style='${style}'`;
      const args = [...mediaInput(video), "-vf", `${filter},${EVEN_SIZE}`, "-c:v", "libx264", "-pix_fmt", "yuv420p"];
      args.push(...mp4Audio(probed.audioCodec));
      await ffmpeg(ctx, [...args, out], "ffmpeg (subtitles)");
      return { output: plainBytes(await readFile(out)) };
    }),
};

const GENERATION_PROPS = [
  prop("prompt", "str", "", { description: "Text prompt describing the video." }),
  prop("negative_prompt", "str", "", { description: "What to avoid." }),
  enumProp("aspect_ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21"], "16:9"),
  enumProp("resolution", ["480p", "720p", "1080p"], "720p"),
  prop("num_frames", "int", 60, { min: 1, max: 300 }),
  prop("guidance_scale", "float", 7.5, { min: 0, max: 30 }),
  prop("num_inference_steps", "int", 30, { min: 1, max: 100 }),
  prop("seed", "int", -1, { min: -1 }),
  prop("timeout_seconds", "int", 0, { min: 0, max: 7200 }),
];

/**
 * A video-generation node through the providers' video APIs (OpenAI's video jobs): the model names the provider
 * (an empty one takes NODEWAY_DEFAULT_VIDEO_MODEL, and without it the node fails naming that setting). Length is
 * `num_frames` at 24 fps, rounded to what the model makes; diffusion settings are for other providers.
 */
function videoGeneration(name: string, extra: PropertyMetadata[], description: string): ProcessNodeDef {
  return {
    kind: "process",
    type: `nodetool.video.${name}`,
    title: name.replace(/([a-z])([A-Z])/g, "$1 $2"),
    description,
    properties: [
      prop(
        "model",
        "video_model",
        { type: "video_model", provider: "empty", id: "", name: "" },
        {
          description: 'The video model, e.g. {"provider": "openai", "id": "sora-2"}; empty: the deployment default.',
        },
      ),
      ...extra,
      ...GENERATION_PROPS,
    ],
    outputs: output("video"),
    providerProperty: "model",
    process: async (ctx, inputs) => {
      const { mediaModelOf, generateVideo } = await import("../integrations/media.js");
      const model = mediaModelOf(inputs.model, "video");
      const prompt = asText(inputs.prompt);
      if (prompt.trim() === "") throw new NodeError(`"prompt" is empty`);
      const frames = asInt(inputs.num_frames ?? 60, "num_frames");
      const image =
        "image" in inputs && !isEmptyMedia(inputs.image)
          ? plainBytes(await (await openImage(ctx, inputs.image)).img.png().toBuffer())
          : undefined;
      const video = await generateVideo({
        model,
        prompt,
        aspectRatio: asText(inputs.aspect_ratio),
        seconds: frames / 24,
        ...(image ? { image } : {}),
        signal: ctx.signal,
        sleep: (ms) => ctx.sleep(ms),
      });
      return { output: video };
    },
  };
}

const textToVideo = videoGeneration("TextToVideo", [], "Generates a video from a text prompt with a video model.");
const imageToVideo = videoGeneration(
  "ImageToVideo",
  [imageProp("image", "The input image to animate.")],
  "Animates an image into a video with a video model.",
);

/** Video nodes every agent lists: generation needs a provider, not ffmpeg. */
export const VIDEO_GENERATION_NODES: readonly NodeDef[] = [textToVideo, imageToVideo];

/** The ffmpeg nodes. */
export const FFMPEG_NODES: readonly NodeDef[] = [frameIterator, frameToVideo, extractAudio, addAudio, addSubtitles];

/** The video nodes an agent offers: the ffmpeg ones only where ffmpeg and ffprobe are on PATH. */
export function videoNodesFor(caps: { ffmpeg: boolean }): readonly NodeDef[] {
  return caps.ffmpeg ? [...VIDEO_GENERATION_NODES, ...FFMPEG_NODES] : VIDEO_GENERATION_NODES;
}
