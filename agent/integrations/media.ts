/**
 * Providers' image and audio APIs through the official `openai` SDK: images (`/v1/images/generations`,
 * `/v1/images/edits`), transcription (`/v1/audio/transcriptions`) and speech (`/v1/audio/speech`). The key and
 * endpoint are the agent's (`OPENAI_API_KEY`, `OPENAI_BASE_URL`), as for chat; a job's abort aborts the request.
 *
 * A model is NodeTool's `{type: "image_model" | "asr_model" | "tts_model", provider, id}` or `"provider:id"`. One
 * saved empty (NodeTool leaves the choice to the user) takes the deployment's default for the capability, from
 * `NODEWAY_DEFAULT_IMAGE_MODEL`, `NODEWAY_DEFAULT_TRANSCRIPTION_MODEL` or `NODEWAY_DEFAULT_SPEECH_MODEL`; with none
 * set the node fails naming the setting. Only OpenAI serves these here: another provider fails naming what is
 * supported. (An image model on the `comfyui` pool is a ComfyUI workflow, run by the `comfy.*` nodes.)
 */
import OpenAI, { toFile } from "openai";
import { COMFY_PROVIDER, languageModelOf, redactSecretsIn, redactUrl, secretsOfUrl } from "../../protocol/index.js";
import { NodeError } from "../engine/types.js";

export type MediaCapability = "image" | "transcription" | "speech" | "video";

/** The setting that names the deployment's default model for each capability. */
export const DEFAULT_MODEL_SETTING: Readonly<Record<MediaCapability, string>> = {
  image: "NODEWAY_DEFAULT_IMAGE_MODEL",
  transcription: "NODEWAY_DEFAULT_TRANSCRIPTION_MODEL",
  speech: "NODEWAY_DEFAULT_SPEECH_MODEL",
  video: "NODEWAY_DEFAULT_VIDEO_MODEL",
};

/** An example model per capability, for the error that asks for one. */
const EXAMPLE_MODEL: Readonly<Record<MediaCapability, string>> = {
  image: "gpt-image-1",
  transcription: "whisper-1",
  speech: "tts-1",
  video: "sora-2",
};

/** Providers whose media APIs this agent calls. */
export const MEDIA_PROVIDERS = ["openai"] as const;

export interface MediaModel {
  provider: "openai";
  id: string;
}

/** How long one media request may take (an image or a long transcription takes a while). */
const MEDIA_TIMEOUT_MS = 300_000;

/** The model a node names, else the deployment's default for `capability`; fails naming what is missing. */
export function mediaModelOf(value: unknown, capability: MediaCapability, env = process.env): MediaModel {
  let model = languageModelOf(value);
  if (!model || model.provider === "" || model.provider === "empty" || model.id === "") {
    const setting = DEFAULT_MODEL_SETTING[capability];
    const dflt = env[setting];
    if (!dflt)
      throw new NodeError(
        `no ${capability} model chosen and no default: pick one on the node (e.g. {"provider": "openai", "id": "${EXAMPLE_MODEL[capability]}"}) or set ${setting} (provider:model)`,
      );
    model = languageModelOf(dflt);
    if (!model || model.id === "")
      throw new NodeError(`${setting} must be provider:model, got ${JSON.stringify(dflt)}`);
  }
  if (model.provider === COMFY_PROVIDER)
    throw new NodeError(
      `ComfyUI ${capability} models run on agents beside a ComfyUI (--comfyui-url, pool comfyui); this agent has none`,
    );
  if (model.provider !== "openai")
    throw new NodeError(
      `${capability} through provider "${model.provider}" is not available on Nodeway's agents (supported: ${MEDIA_PROVIDERS.join(", ")})`,
    );
  return { provider: "openai", id: model.id };
}

function client(env: NodeJS.ProcessEnv): { client: OpenAI; baseURL: string; key: string } {
  const baseURL = env.OPENAI_BASE_URL || "https://api.openai.com/v1";
  const key = env.OPENAI_API_KEY;
  if (!key)
    throw new NodeError(
      "this agent has no OPENAI_API_KEY: OpenAI keys live on the agents that may use them (set it there, or send the job to the openai pool)",
    );
  return { client: new OpenAI({ apiKey: key, baseURL, maxRetries: 1, timeout: MEDIA_TIMEOUT_MS }), baseURL, key };
}

/** The SDK's failure as a `NodeError` saying what the API said, with no credential in it. */
function failed(what: string, baseURL: string, key: string, err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return signal.reason;
  const e = err as { status?: number; message?: string; error?: { message?: unknown }; cause?: { code?: string } };
  const said =
    typeof e.status === "number"
      ? `refused the request (HTTP ${e.status}): ${String(e.error?.message ?? e.message ?? "")}`
      : err instanceof OpenAI.APIConnectionError
        ? `at ${redactUrl(baseURL)} is unreachable: ${e.cause?.code ?? e.message}`
        : `failed: ${e.message ?? String(err)}`;
  return new NodeError(redactSecretsIn(`openai ${what} ${said}`, [...secretsOfUrl(baseURL), key]));
}

/** The size OpenAI accepts for `model` nearest the asked one's aspect. */
export function openaiImageSize(model: string, width: number, height: number): string {
  if (model === "dall-e-2") {
    const side = Math.max(width, height);
    return side <= 256 ? "256x256" : side <= 512 ? "512x512" : "1024x1024";
  }
  const wide = model === "dall-e-3" ? "1792x1024" : "1536x1024";
  const tall = model === "dall-e-3" ? "1024x1792" : "1024x1536";
  const aspect = width / height;
  return aspect > 1.2 ? wide : aspect < 1 / 1.2 ? tall : "1024x1024";
}

function imageOf(res: { data?: { b64_json?: string | null }[] | null }): Uint8Array {
  const b64 = res.data?.[0]?.b64_json;
  if (!b64) throw new NodeError("openai answered with no image data (b64_json)");
  return new Uint8Array(Buffer.from(b64, "base64"));
}

export interface ImageRequest {
  model: MediaModel;
  prompt: string;
  width: number;
  height: number;
  signal: AbortSignal;
}

/** One image from the prompt (PNG bytes). */
export async function generateImage(req: ImageRequest, env = process.env): Promise<Uint8Array> {
  const { client: c, baseURL, key } = client(env);
  const dalle = req.model.id.startsWith("dall-e");
  try {
    const res = await c.images.generate(
      {
        model: req.model.id,
        prompt: req.prompt,
        n: 1,
        size: openaiImageSize(req.model.id, req.width, req.height) as "1024x1024",
        ...(dalle ? { response_format: "b64_json" as const } : {}),
      },
      { signal: req.signal },
    );
    return imageOf(res);
  } catch (err) {
    throw failed("image generation", baseURL, key, err, req.signal);
  }
}

/** The image edited as the prompt says (PNG bytes). */
export async function editImage(req: ImageRequest & { image: Uint8Array }, env = process.env): Promise<Uint8Array> {
  const { client: c, baseURL, key } = client(env);
  const dalle = req.model.id.startsWith("dall-e");
  try {
    const res = await c.images.edit(
      {
        model: req.model.id,
        image: await toFile(req.image, "image.png", { type: "image/png" }),
        prompt: req.prompt,
        n: 1,
        size: openaiImageSize(req.model.id, req.width, req.height) as "1024x1024",
        ...(dalle ? { response_format: "b64_json" as const } : {}),
      },
      { signal: req.signal },
    );
    return imageOf(res);
  } catch (err) {
    throw failed("image edit", baseURL, key, err, req.signal);
  }
}

/** A piece of a transcript with its start and end in seconds (NodeTool's AudioChunk). */
export interface AudioChunk {
  type: "audio_chunk";
  timestamp: [number, number];
  text: string;
}

export interface TranscriptionRequest {
  model: MediaModel;
  audio: Uint8Array;
  /** File name sent with the audio; its extension tells the API the format. */
  fileName: string;
  /** ISO-639-1 code; absent: detected. */
  language?: string;
  /** `none`: text only; `word` / `segment`: timed chunks too (`verbose_json`). */
  timestamps: "none" | "word" | "segment";
  signal: AbortSignal;
}

/** The transcript, and its timed chunks when asked for. */
export async function transcribe(
  req: TranscriptionRequest,
  env = process.env,
): Promise<{ text: string; chunks: AudioChunk[] }> {
  const { client: c, baseURL, key } = client(env);
  try {
    const file = await toFile(req.audio, req.fileName);
    const language = req.language ? { language: req.language } : {};
    if (req.timestamps === "none") {
      const res = await c.audio.transcriptions.create(
        { model: req.model.id, file, response_format: "json", ...language },
        { signal: req.signal },
      );
      return { text: res.text, chunks: [] };
    }
    const res = await c.audio.transcriptions.create(
      {
        model: req.model.id,
        file,
        response_format: "verbose_json",
        timestamp_granularities: [req.timestamps],
        ...language,
      },
      { signal: req.signal },
    );
    const pieces = (req.timestamps === "word" ? res.words : res.segments) ?? [];
    const chunks = pieces.map((p): AudioChunk => {
      const text = "word" in p ? p.word : p.text;
      return { type: "audio_chunk", timestamp: [p.start, p.end], text };
    });
    return { text: res.text, chunks };
  } catch (err) {
    throw failed("transcription", baseURL, key, err, req.signal);
  }
}

export interface SpeechRequest {
  model: MediaModel;
  text: string;
  voice: string;
  speed: number;
  signal: AbortSignal;
}

/** The text spoken, as WAV bytes. */
export async function speak(req: SpeechRequest, env = process.env): Promise<Uint8Array> {
  const { client: c, baseURL, key } = client(env);
  try {
    const res = await c.audio.speech.create(
      { model: req.model.id, input: req.text, voice: req.voice, speed: req.speed, response_format: "wav" },
      { signal: req.signal },
    );
    return new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    throw failed("speech", baseURL, key, err, req.signal);
  }
}

export interface VideoRequest {
  model: MediaModel;
  prompt: string;
  /** `16:9`, `9:16`…: the nearest size the model makes. */
  aspectRatio: string;
  /** Wanted length; the nearest the model makes (4, 8 or 12 s). */
  seconds: number;
  /** A first frame to animate (ImageToVideo), PNG. */
  image?: Uint8Array;
  signal: AbortSignal;
  /** Waits between status polls (abortable). */
  sleep: (ms: number) => Promise<void>;
}

/** Longest a video job may take at the provider before the node gives up. */
const VIDEO_MAX_WAIT_MS = 30 * 60_000;

/** A generated video (MP4 bytes): OpenAI's video jobs (`/v1/videos`), polled until done, then downloaded. */
export async function generateVideo(req: VideoRequest, env = process.env): Promise<Uint8Array> {
  const { client: c, baseURL, key } = client(env);
  const portrait = /^(9:16|3:4|9:21)$/.test(req.aspectRatio);
  const seconds = req.seconds <= 6 ? "4" : req.seconds <= 10 ? "8" : "12";
  try {
    let video = await c.videos.create(
      {
        model: req.model.id,
        prompt: req.prompt,
        size: portrait ? "720x1280" : "1280x720",
        seconds,
        ...(req.image ? { input_reference: await toFile(req.image, "frame.png", { type: "image/png" }) } : {}),
      },
      { signal: req.signal },
    );
    const deadline = Date.now() + VIDEO_MAX_WAIT_MS;
    for (let waitMs = 500; video.status === "queued" || video.status === "in_progress"; ) {
      if (Date.now() > deadline) throw new NodeError(`openai video ${video.id} was not done within 30 minutes`);
      await req.sleep(waitMs);
      waitMs = Math.min(10_000, waitMs * 1.5);
      video = await c.videos.retrieve(video.id, { signal: req.signal });
    }
    if (video.status !== "completed")
      throw new NodeError(`openai video generation failed: ${video.error?.message ?? video.status}`);
    const content = await c.videos.downloadContent(video.id, null, { signal: req.signal });
    return new Uint8Array(await content.arrayBuffer());
  } catch (err) {
    if (err instanceof NodeError) throw err;
    throw failed("video generation", baseURL, key, err, req.signal);
  }
}
