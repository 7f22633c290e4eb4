/**
 * Speech through the providers (agent/integrations/media.ts): `nodetool.text.AutomaticSpeechRecognition` and
 * `nodetool.audio.TextToSpeech`, and `huggingface.automatic_speech_recognition.Whisper`, whose saved inputs (task,
 * language, timestamps) map onto the hosted Whisper (`whisper-1`) rather than a local Hugging Face model.
 */
import { extensionOf } from "../../protocol/index.js";
import { sniffContentType } from "../assets.js";
import { NodeError, type GeneratorNodeDef, type NodeDef, type ProcessNodeDef } from "../engine/types.js";
import { mediaBytes } from "./media-util.js";
import { asNumber, asText, enumProp, prop } from "./util.js";

const EMPTY_AUDIO = { type: "audio", uri: "", asset_id: null, data: null };

/**
 * A file name whose extension tells the API the audio's format (it goes by the name): FLAC, M4A or WebM named
 * `.wav` is refused or misread. Only bytes of no known format are sent as `audio.wav`.
 */
export function audioFileName(bytes: Uint8Array): string {
  const ext = extensionOf(sniffContentType(bytes));
  return `audio.${ext === "bin" ? "wav" : ext}`;
}

export const automaticSpeechRecognition: ProcessNodeDef = {
  kind: "process",
  type: "nodetool.text.AutomaticSpeechRecognition",
  title: "Automatic Speech Recognition",
  description: "Transcribes audio to text with the chosen provider's speech recognition model.",
  properties: [
    prop(
      "model",
      "asr_model",
      { type: "asr_model", provider: "empty", id: "", name: "" },
      {
        description: 'The model, e.g. {"provider": "openai", "id": "whisper-1"}; empty: the deployment default.',
      },
    ),
    prop("audio", "audio", EMPTY_AUDIO, { description: "The audio to transcribe." }),
  ],
  outputs: [{ name: "text", type: "str" }],
  providerProperty: "model",
  process: async (ctx, inputs) => {
    const { mediaModelOf, transcribe } = await import("../integrations/media.js");
    const model = mediaModelOf(inputs.model, "transcription");
    const audio = await mediaBytes(ctx, inputs.audio, "audio", "audio");
    const { text } = await transcribe({
      model,
      audio,
      fileName: audioFileName(audio),
      timestamps: "none",
      signal: ctx.signal,
    });
    return { text };
  },
};

/** Whisper's language names (as NodeTool saves them) → ISO-639-1; `auto_detect` leaves it to the model. */
const LANGUAGES: Readonly<Record<string, string>> = {
  english: "en",
  german: "de",
  french: "fr",
  spanish: "es",
  italian: "it",
  portuguese: "pt",
  dutch: "nl",
  russian: "ru",
  chinese: "zh",
  japanese: "ja",
  korean: "ko",
  arabic: "ar",
  hindi: "hi",
  turkish: "tr",
  polish: "pl",
  ukrainian: "uk",
  swedish: "sv",
  norwegian: "no",
  danish: "da",
  finnish: "fi",
  greek: "el",
  czech: "cs",
};

export const whisper: ProcessNodeDef = {
  kind: "process",
  type: "huggingface.automatic_speech_recognition.Whisper",
  title: "Whisper",
  description:
    "Transcribes audio with OpenAI's hosted Whisper (whisper-1), with word or sentence timestamps as chunks.",
  properties: [
    prop(
      "model",
      "hf.automatic_speech_recognition",
      { type: "hf.automatic_speech_recognition" },
      {
        description: "Saved by NodeTool (a Hugging Face repo); the hosted Whisper is used here.",
      },
    ),
    prop("audio", "audio", EMPTY_AUDIO, { description: "The audio to transcribe." }),
    enumProp("task", ["transcribe", "translate"], "transcribe"),
    prop("language", "str", "auto_detect", { description: "The spoken language (a name, or auto_detect)." }),
    prop("chunk_length_s", "float", 30, { description: "Saved by NodeTool; the hosted API chunks by itself." }),
    enumProp("timestamps", ["none", "word", "sentence"], "none", "Timed chunks: none, per word, per sentence."),
  ],
  outputs: [
    { name: "text", type: "str" },
    { name: "chunks", type: "list[audio_chunk]" },
  ],
  process: async (ctx, inputs) => {
    const { mediaModelOf, transcribe } = await import("../integrations/media.js");
    if (asText(inputs.task) === "translate")
      throw new NodeError(`Whisper task "translate" is not available here: use "transcribe"`);
    // Timed chunks need Whisper itself: the hosted one, whatever the deployment's default transcription model.
    const model = mediaModelOf("openai:whisper-1", "transcription");
    const name = asText(inputs.language).toLowerCase();
    const language = name === "" || name === "auto_detect" ? undefined : (LANGUAGES[name] ?? name.slice(0, 2));
    const stamps = asText(inputs.timestamps);
    const audio = await mediaBytes(ctx, inputs.audio, "audio", "audio");
    const result = await transcribe({
      model,
      audio,
      fileName: audioFileName(audio),
      ...(language ? { language } : {}),
      timestamps: stamps === "word" ? "word" : stamps === "sentence" ? "segment" : "none",
      signal: ctx.signal,
    });
    return { text: result.text, chunks: result.chunks };
  },
};

const DEFAULT_VOICE = "alloy";

export const textToSpeech: GeneratorNodeDef = {
  kind: "generator",
  type: "nodetool.audio.TextToSpeech",
  title: "Text To Speech",
  description:
    "Speaks the text with the chosen provider's speech model: the audio (WAV) on `audio`, and once as an audio chunk.",
  properties: [
    prop(
      "model",
      "tts_model",
      { type: "tts_model", provider: "empty", id: "", name: "", voices: [] },
      {
        description: 'The model and voice, e.g. {"provider": "openai", "id": "tts-1", "selected_voice": "alloy"}.',
      },
    ),
    prop("text", "str", "Hello! This is a text-to-speech demonstration.", { description: "Text to speak." }),
    prop("speed", "float", 1.0, { min: 0.25, max: 4, description: "Speech speed multiplier (0.25 to 4.0)." }),
  ],
  outputs: [
    { name: "audio", type: "audio" },
    { name: "chunk", type: "chunk" },
  ],
  providerProperty: "model",
  async *generate(ctx, inputs) {
    const { mediaModelOf, speak } = await import("../integrations/media.js");
    const model = mediaModelOf(inputs.model, "speech");
    const text = asText(inputs.text);
    if (text.trim() === "") throw new NodeError(`"text" is empty`);
    const speed = asNumber(inputs.speed, "speed");
    if (!(speed >= 0.25 && speed <= 4)) throw new NodeError(`speed must be in [0.25, 4], got ${speed}`);
    const m = (inputs.model ?? {}) as { selected_voice?: unknown; voices?: unknown };
    const voices = Array.isArray(m.voices) ? m.voices : [];
    const voice = asText(m.selected_voice) || asText(voices[0]) || DEFAULT_VOICE;
    const audio = await speak({ model, text, voice, speed, signal: ctx.signal });
    yield {
      handle: "chunk",
      value: { type: "chunk", content_type: "audio", content: audio, content_metadata: { format: "wav" }, done: true },
    };
    yield { handle: "audio", value: audio };
  },
};

export const AUDIO_NODES: readonly NodeDef[] = [automaticSpeechRecognition, whisper, textToSpeech];
