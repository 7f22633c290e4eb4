/**
 * Speech nodes through the official `openai` SDK against a local server speaking OpenAI's audio API
 * (test/helpers/fake-media.ts), run by a real agent: `AutomaticSpeechRecognition` uploads the audio and outputs the
 * transcript, `Whisper` also outputs timed chunks, `TextToSpeech` outputs the API's WAV with the model's voice and
 * the asked speed; an empty model takes the deployment default.
 */
import t from "tap";
import { WsClient } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import { FAKE_KEY, FakeMedia, dataUri, graphOf, outputBytes, runGraph, toneWav } from "../helpers/fake-media.js";

t.test("audio-nodes - transcription and speech go through OpenAI's audio API", async (t) => {
  const fake = await FakeMedia.start();
  t.teardown(() => fake.stop());
  const s = await startStack(t, {
    agents: 1,
    agentEnv: {
      OPENAI_API_KEY: FAKE_KEY,
      OPENAI_BASE_URL: `${fake.url}/v1`,
      NODEWAY_DEFAULT_TRANSCRIPTION_MODEL: "openai:gpt-4o-transcribe",
    },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const wav = toneWav(2400);
  const graph = graphOf(
    [
      ["a", "nodetool.input.AudioInput", { name: "speech" }],
      ["asr", "nodetool.text.AutomaticSpeechRecognition", { model: { type: "asr_model" } }],
      ["w", "huggingface.automatic_speech_recognition.Whisper", { language: "english", timestamps: "word" }],
      [
        "tts",
        "nodetool.audio.TextToSpeech",
        { model: { type: "tts_model", provider: "openai", id: "tts-1", voices: ["nova", "alloy"] }, speed: 1.5 },
      ],
      ["text", "nodetool.output.Output", { name: "text" }],
      ["chunks", "nodetool.output.Output", { name: "chunks" }],
      ["spoken", "nodetool.output.Output", { name: "spoken" }],
    ],
    [
      "a.output>asr.audio",
      "a.output>w.audio",
      "asr.text>text.value",
      "w.chunks>chunks.value",
      "asr.text>tts.text",
      "tts.audio>spoken.value",
    ],
  );
  const job = await runGraph(ws, graph, { speech: dataUri(wav, "audio/wav") });
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const r = job.end.result as Record<string, unknown[]>;
  const heard = `heard ${wav.byteLength} bytes of audio.wav with gpt-4o-transcribe`;
  t.same(r.text, [heard], "the transcript, by the deployment's default transcription model");
  const asrReq = fake.requests.find(
    (q) => q.path === "/v1/audio/transcriptions" && q.fields.model === "gpt-4o-transcribe",
  )!;
  t.equal(asrReq.files.file!.bytes.byteLength, wav.byteLength, "the whole audio was uploaded");
  t.equal(asrReq.fields.response_format, "json");

  const whisperReq = fake.requests.find(
    (q) => q.path === "/v1/audio/transcriptions" && q.fields.model === "whisper-1",
  )!;
  t.match(
    whisperReq.fields,
    { response_format: "verbose_json", language: "en" },
    "Whisper: hosted whisper-1, language as ISO code",
  );
  t.same(whisperReq.fields["timestamp_granularities[]"], "word", "word timestamps asked for");
  const chunks = r.chunks![0] as { type: string; timestamp: number[]; text: string }[];
  t.same(chunks[0], { type: "audio_chunk", timestamp: [0, 0.4], text: "heard" }, "timed chunks, NodeTool's AudioChunk");
  t.equal(chunks.length, heard.split(" ").length, "one per word");

  const spoken = await outputBytes(s.url, r.spoken![0]);
  t.equal(Buffer.from(spoken.subarray(0, 4)).toString(), "RIFF", "TextToSpeech outputs the WAV");
  t.equal(Buffer.from(spoken.subarray(8, 12)).toString(), "WAVE");
  const ttsReq = fake.requests.find((q) => q.path === "/v1/audio/speech")!;
  t.match(
    ttsReq.fields,
    { model: "tts-1", input: heard, voice: "nova", speed: 1.5, response_format: "wav" },
    "the model's first voice, the speed",
  );
});

t.test("audio-nodes - no model and no default fails naming the setting; no audio fails naming the input", async (t) => {
  const fake = await FakeMedia.start();
  t.teardown(() => fake.stop());
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: `${fake.url}/v1` },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const tts = await runGraph(
    ws,
    graphOf([["tts", "nodetool.audio.TextToSpeech", { model: { type: "tts_model" } }]], []),
  );
  t.equal(tts.end.status, "failed");
  t.match(JSON.stringify(tts.end.error), /no speech model chosen and no default: .*NODEWAY_DEFAULT_SPEECH_MODEL/);
  const asr = await runGraph(
    ws,
    graphOf([["asr", "nodetool.text.AutomaticSpeechRecognition", { model: "openai:whisper-1" }]], []),
  );
  t.equal(asr.end.status, "failed");
  t.match(JSON.stringify(asr.end.error), /audio is empty: connect an audio/);
  t.equal(fake.requests.filter((q) => q.path.startsWith("/v1/audio")).length, 0, "nothing reached the audio API");
});
