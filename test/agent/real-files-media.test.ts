/**
 * The audio and video nodes on real files of the kinds users upload (made here with ffmpeg), run in-process:
 * each container and codec is recognized by its bytes (the asset's type, the file name a speech API is sent);
 * AddAudio and AddSubtitles write an MP4 from a WebM, MKV, MOV or GIF whose codecs an MP4 cannot hold as they
 * are; a portrait (rotated) phone video's frames come out upright; an empty or cut-short file fails saying so.
 */
import t from "tap";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { sniffContentType } from "../../agent/assets.js";
import type { ProcessNodeDef } from "../../agent/engine/types.js";
import { audioFileName } from "../../agent/nodes/audio.js";
import { addAudio, addSubtitles, extractAudio, frameIterator } from "../../agent/nodes/video.js";
import sharp from "sharp";
import { defaultsOf, errorOf, nodeContext, runProcess } from "../helpers/node-context.js";
import { audioFile, rotated90, scratchDir, videoFile } from "../helpers/real-files.js";

const ctx = nodeContext("video");
const runNode = async (def: ProcessNodeDef, inputs: Record<string, unknown>) =>
  (await runProcess(def, inputs, ctx)).output as Uint8Array;

const { dir, remove } = scratchDir();
t.teardown(remove);

/** Codec names and sizes of a file's streams (ffprobe). */
function streams(bytes: Uint8Array): string[] {
  const file = join(dir, "probe.bin");
  writeFileSync(file, bytes);
  const args = ["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", file];
  return execFileSync("ffprobe", args).toString().trim().split("\n");
}

const H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"];

t.test("real media - each audio and video format is recognized by its bytes", async (t) => {
  const cases: [string, Uint8Array, string, string][] = [
    ["MP3", audioFile(dir, "a.mp3", { codec: ["-c:a", "libmp3lame"] }), "audio/mpeg", "audio.mp3"],
    [
      "8 kHz MP3 without ID3",
      audioFile(dir, "b.mp3", { rate: 8000, codec: ["-c:a", "libmp3lame", "-write_xing", "0", "-id3v2_version", "0"] }),
      "audio/mpeg",
      "audio.mp3",
    ],
    [
      "24-bit stereo WAV",
      audioFile(dir, "c.wav", { channels: 2, codec: ["-c:a", "pcm_s24le"] }),
      "audio/wav",
      "audio.wav",
    ],
    ["5.1 float WAV", audioFile(dir, "d.wav", { channels: 6, codec: ["-c:a", "pcm_f32le"] }), "audio/wav", "audio.wav"],
    ["FLAC", audioFile(dir, "e.flac", { codec: ["-c:a", "flac"] }), "audio/flac", "audio.flac"],
    ["Opus", audioFile(dir, "f.opus", { rate: 48_000, codec: ["-c:a", "libopus"] }), "audio/ogg", "audio.ogg"],
    ["M4A", audioFile(dir, "g.m4a", { codec: ["-c:a", "aac"] }), "audio/mp4", "audio.m4a"],
    ["AAC (ADTS)", audioFile(dir, "h.aac", { codec: ["-c:a", "aac"] }), "audio/aac", "audio.aac"],
    ["WebM audio", audioFile(dir, "i.webm", { rate: 48_000, codec: ["-c:a", "libopus"] }), "video/webm", "audio.webm"],
    ["MKV", videoFile(dir, "j.mkv", { codec: [...H264, "-c:a", "flac"] }), "video/x-matroska", "audio.mkv"],
  ];
  for (const [name, bytes, type, fileName] of cases) {
    t.equal(sniffContentType(bytes), type, `${name}: stored as ${type}`);
    t.equal(audioFileName(bytes), fileName, `${name}: sent to a speech API as ${fileName}`);
  }
});

t.test("real media - AddAudio and AddSubtitles write MP4 from codecs an MP4 cannot copy", async (t) => {
  const mp3 = audioFile(dir, "tone.mp3", { seconds: 1, codec: ["-c:a", "libmp3lame"] });
  const vp8 = videoFile(dir, "v.webm", { codec: ["-c:v", "libvpx", "-c:a", "libvorbis"] });
  const gif = videoFile(dir, "g.gif", { codec: [], audio: false });
  for (const [name, video] of [
    ["VP8 WebM", vp8],
    ["GIF", gif],
  ] as const) {
    const out = await runNode(addAudio, { video, audio: mp3 });
    t.match(streams(out), [/^h264,/, /^aac/], `AddAudio on ${name}: H.264 and AAC`);
  }
  const chunks = [{ timestamp: [0, 0.5], text: "hi" }];
  const flacMkv = videoFile(dir, "f.mkv", { codec: [...H264, "-c:a", "flac"] });
  const pcmMov = videoFile(dir, "p.mov", { codec: [...H264, "-c:a", "pcm_s16le"] });
  const oddVp9 = videoFile(dir, "o.mkv", { codec: ["-c:v", "libvpx-vp9", "-c:a", "pcm_s16le"], w: 63, h: 47 });
  for (const [name, video] of [
    ["MKV with FLAC", flacMkv],
    ["MOV with PCM", pcmMov],
    ["63 × 47 VP9 MKV with PCM", oddVp9],
  ] as const) {
    const out = await runNode(addSubtitles, { video, chunks });
    t.match(streams(out), [/^h264,/, /^aac/], `AddSubtitles on ${name}: the audio kept, as AAC`);
  }
});

t.test("real media - a rotated (portrait) video's frames come out upright", async (t) => {
  const video = rotated90(videoFile(dir, "r.mp4", { codec: H264, w: 64, h: 32, audio: false }));
  const frames: Uint8Array[] = [];
  for await (const e of frameIterator.generate(ctx, { ...defaultsOf(frameIterator), video }))
    if (e.handle === "frame") frames.push(e.value as Uint8Array);
  const m = await sharp(frames[0]!).metadata();
  t.same([frames.length, m.width, m.height], [10, 32, 64], "10 frames of 32 × 64");
});

t.test("real media - an empty or cut-short video fails saying so", async (t) => {
  const whole = videoFile(dir, "whole.mp4", { codec: [...H264, "-c:a", "aac"], seconds: 2 });
  const cut = whole.slice(0, Math.floor(whole.byteLength * 0.7));
  t.equal(await errorOf(runNode(extractAudio, { video: new Uint8Array(0) })), "video is an empty file (0 bytes)");
  t.equal(
    await errorOf(runNode(extractAudio, { video: cut })),
    "ffprobe failed (1): the file is incomplete: its index (the MP4 moov atom) is missing",
  );
});
