/**
 * `nodetool.video.*` on the host's ffmpeg, run by a real agent on a real MP4 (made here with ffmpeg): frames out
 * (FrameIterator), through an image node, back into an H.264 MP4 (FrameToVideo); the audio track out as WAV
 * (ExtractAudio) and onto a video (AddAudio); subtitles burned in (AddSubtitles) — each output checked with
 * ffprobe. A cancel kills a running ffmpeg; an agent without ffmpeg on PATH offers none of these nodes.
 */
import t from "tap";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_NODE_LIMITS, type NodeContext } from "../../agent/engine/types.js";
import { runTool } from "../../agent/nodes/media-util.js";
import { WsClient } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import sharp from "sharp";
import { FAKE_KEY, FakeMedia, dataUri, graphOf, outputBytes, runGraph } from "../helpers/fake-media.js";

interface Probe {
  streams: {
    codec_type: string;
    codec_name: string;
    width?: number;
    height?: number;
    nb_read_frames?: string;
    avg_frame_rate?: string;
  }[];
  format: { format_name: string; duration?: string };
}

function ffprobe(bytes: Uint8Array, dir: string, name: string): Probe {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  const args = ["-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", file];
  return JSON.parse(execFileSync("ffprobe", args).toString()) as Probe;
}

/** The frame at 0.5 s as 64×48 grey bytes. */
function greyFrame(bytes: Uint8Array, dir: string, name: string): Buffer {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  const args = ["-v", "error", "-ss", "0.5", "-i", file, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"];
  return execFileSync("ffmpeg", args);
}

/** A 1 s, 10 fps, 64×48 test pattern (or a plain grey picture) with a 440 Hz tone. */
function testVideo(dir: string, picture = "testsrc=size=64x48:rate=10:duration=1"): Uint8Array {
  const out = join(dir, "in.mp4");
  execFileSync("ffmpeg", [
    ...["-hide_banner", "-loglevel", "error", "-y"],
    ...["-f", "lavfi", "-i", picture],
    ...["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
    ...["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", out],
  ]);
  return new Uint8Array(readFileSync(out));
}

t.test("video-nodes - frames out, through an image node and back; audio out and in; subtitles burned in", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodeway-video-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const graph = graphOf(
    [
      ["v", "nodetool.input.VideoInput", { name: "clip" }],
      ["grey", "nodetool.input.VideoInput", { name: "grey" }],
      ["frames", "nodetool.video.FrameIterator", { start: 2, end: 6 }],
      ["boost", "lib.pillow.color_grading.Exposure", { exposure: 0.5 }],
      ["encode", "nodetool.video.FrameToVideo", {}],
      ["audio", "nodetool.video.ExtractAudio", {}],
      ["dub", "nodetool.video.AddAudio", { volume: 0.5 }],
      ["subs", "nodetool.constant.List", { value: [{ type: "audio_chunk", timestamp: [0, 0.8], text: "Hi" }] }],
      ["sub", "nodetool.video.AddSubtitles", { font_size: 16, align: "bottom" }],
      ["o_video", "nodetool.output.Output", { name: "video" }],
      ["o_audio", "nodetool.output.Output", { name: "audio" }],
      ["o_dub", "nodetool.output.Output", { name: "dubbed" }],
      ["o_sub", "nodetool.output.Output", { name: "subtitled" }],
    ],
    [
      "v.output>frames.video",
      "frames.frame>boost.image",
      "boost.output>encode.frame",
      "frames.fps>encode.fps",
      "frames.index>encode.index",
      "encode.output>o_video.value",
      "v.output>audio.video",
      "audio.output>o_audio.value",
      "encode.output>dub.video",
      "audio.output>dub.audio",
      "dub.output>o_dub.value",
      "grey.output>sub.video",
      "subs.output>sub.chunks",
      "sub.output>o_sub.value",
    ],
  );
  const input = testVideo(dir);
  const grey = testVideo(dir, "color=c=gray:size=64x48:rate=10:duration=1");
  const params = { clip: dataUri(input, "video/mp4"), grey: dataUri(grey, "video/mp4") };
  const job = await runGraph(ws, graph, params, 120_000);
  t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
  const r = job.end.result as Record<string, unknown[]>;

  const video = ffprobe(await outputBytes(s.url, r.video![0]), dir, "video.mp4");
  t.match(
    video.streams[0],
    { codec_type: "video", codec_name: "h264", width: 64, height: 48, nb_read_frames: "4" },
    "frames 2–5 became a 4-frame H.264 video",
  );
  t.equal(video.streams[0]!.avg_frame_rate, "10/1", "at the source's frame rate");
  t.match(video.format.format_name, /mp4/);

  const audio = ffprobe(await outputBytes(s.url, r.audio![0]), dir, "audio.wav");
  t.match(
    audio,
    { format: { format_name: "wav" }, streams: [{ codec_type: "audio", codec_name: "pcm_s16le" }] },
    "the audio track as WAV",
  );
  t.ok(Math.abs(Number(audio.format.duration) - 1) < 0.1, `lasting the video's second (${audio.format.duration} s)`);

  const dubbed = ffprobe(await outputBytes(s.url, r.dubbed![0]), dir, "dubbed.mp4");
  t.same(
    dubbed.streams.map((x) => `${x.codec_type}:${x.codec_name}`).sort(),
    ["audio:aac", "video:h264"],
    "AddAudio: the video with the audio",
  );

  const subtitledBytes = await outputBytes(s.url, r.subtitled![0]);
  const subtitled = ffprobe(subtitledBytes, dir, "subtitled.mp4");
  t.match(
    subtitled.streams.find((x) => x.codec_type === "video"),
    { codec_name: "h264", width: 64, height: 48, nb_read_frames: "10" },
    "AddSubtitles: every frame, re-encoded",
  );
  t.ok(
    subtitled.streams.some((x) => x.codec_type === "audio"),
    "keeping the audio",
  );
  // The subtitle is burned into the bottom of the plain grey picture; its top stays grey.
  const before = greyFrame(grey, dir, "before.mp4");
  const after = greyFrame(subtitledBytes, dir, "after.mp4");
  const white = (frame: Buffer, rows: [number, number]) =>
    [...frame.subarray(rows[0] * 64, rows[1] * 64)].filter((v) => v > 180).length;
  t.equal(white(before, [0, 48]), 0, "the source is plain grey");
  t.ok(white(after, [24, 48]) >= 15, `white text at the bottom (${white(after, [24, 48])} pixels)`);
  t.equal(white(after, [0, 20]), 0, "none at the top");
});

t.test("video-nodes - a playlist or file list naming files on the agent's host is refused, never read", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodeway-video-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A media file on the agent's host that no job was given.
  const secret = join(dir, "secret.ts");
  execFileSync("ffmpeg", [
    ...["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1"],
    ...["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:v", "libx264", "-c:a", "aac", "-shortest", secret],
  ]);
  const hls = (segment: string) => `#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n${segment}\n#EXT-X-ENDLIST\n`;
  const lists = {
    "an HLS playlist with a path": hls(secret),
    "an HLS playlist with a file: URL": hls(`file://${secret}`),
    "an ffconcat list": `ffconcat version 1.0\nfile '${secret}'\n`,
  };
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  for (const [what, text] of Object.entries(lists)) {
    for (const [node, out] of [
      ["nodetool.video.FrameIterator", "frame"],
      ["nodetool.video.ExtractAudio", "output"],
    ] as const) {
      const graph = graphOf(
        [
          ["v", "nodetool.input.VideoInput", { name: "clip" }],
          ["n", node, {}],
          ["o", "nodetool.output.Output", { name: "out" }],
        ],
        ["v.output>n.video", `n.${out}>o.value`],
      );
      const job = await runGraph(ws, graph, { clip: dataUri(Buffer.from(text), "video/mp4") }, 60_000);
      t.equal(job.end.status, "failed", `${what} into ${node}: the job fails`);
      t.match(JSON.stringify(job.end.error), /not a media file this agent reads/, "saying why");
      t.notMatch(JSON.stringify(job.end.error), tmpdir(), "without the agent's temp paths");
      t.notOk(
        job.events.some((e) => e.type === "output_update"),
        `${what} into ${node}: nothing of the host's file comes out`,
      );
    }
  }
});

t.test("video-nodes - a cancel kills the running ffmpeg at once", async (t) => {
  const ac = new AbortController();
  const ctx = { signal: ac.signal, limits: DEFAULT_NODE_LIMITS } as unknown as NodeContext;
  const endless = ["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc", "-f", "null", "-"];
  const started = Date.now();
  const run = runTool(ctx, "ffmpeg", endless, "ffmpeg", 60_000);
  setTimeout(() => ac.abort(new Error("cancelled by the test")), 300);
  await t.rejects(run, /cancelled by the test/, "the run ends with the cancel");
  t.ok(Date.now() - started < 5_000, `within ${Date.now() - started} ms`);
  const timed = runTool({ ...ctx, signal: new AbortController().signal }, "ffmpeg", endless, "ffmpeg", 300);
  await t.rejects(timed, /ffmpeg took longer than 0.3 s and was stopped/, "and the time cap stops it too");
});

t.test(
  "video-nodes - an agent without ffmpeg offers no ffmpeg node; video generation without a model names the setting",
  async (t) => {
    const empty = mkdtempSync(join(tmpdir(), "nodeway-nopath-"));
    t.teardown(() => rmSync(empty, { recursive: true, force: true }));
    const s = await startStack(t, { agents: 1, agentEnv: { PATH: empty } });
    const types = ((await (await fetch(`${s.url}/api/nodes/metadata`)).json()) as { node_type: string }[]).map(
      (m) => m.node_type,
    );
    for (const ty of ["FrameIterator", "FrameToVideo", "ExtractAudio", "AddAudio", "AddSubtitles"])
      t.notOk(types.includes(`nodetool.video.${ty}`), `${ty} is not offered`);
    t.ok(types.includes("lib.pillow.enhance.Brightness"), "the image nodes are");
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const r = await ws.request("run_job", {
      graph: graphOf([["f", "nodetool.video.FrameToVideo", {}]], []),
      params: {},
    });
    t.match(
      JSON.stringify(r.error),
      /unknown node type \\"nodetool.video.FrameToVideo\\"/,
      "a graph using one is refused",
    );
    const gen = await runGraph(
      ws,
      graphOf([["g", "nodetool.video.TextToVideo", { prompt: "a cat", model: { type: "video_model" } }]], []),
    );
    t.equal(gen.end.status, "failed");
    t.match(JSON.stringify(gen.end.error), /no video model chosen and no default: .*set NODEWAY_DEFAULT_VIDEO_MODEL/);
  },
);

t.test(
  "video-nodes - TextToVideo and ImageToVideo run OpenAI video jobs to the end and output the video",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nodeway-video-test-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const fake = await FakeMedia.start();
    t.teardown(() => fake.stop());
    fake.videoBytes = testVideo(dir);
    const s = await startStack(t, {
      agents: 1,
      agentEnv: { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: `${fake.url}/v1` },
    });
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    const still = await sharp({ create: { width: 32, height: 32, channels: 3, background: "#336699" } })
      .png()
      .toBuffer();
    const graph = graphOf(
      [
        ["t2v", "nodetool.video.TextToVideo", { model: "openai:sora-2", prompt: "waves", num_frames: 180 }],
        ["i2v", "nodetool.video.ImageToVideo", { model: "openai:sora-2", prompt: "zoom in", aspect_ratio: "9:16" }],
        ["img", "nodetool.constant.Image", { value: { type: "image", uri: dataUri(still) } }],
        ["o1", "nodetool.output.Output", { name: "t2v" }],
        ["o2", "nodetool.output.Output", { name: "i2v" }],
      ],
      ["t2v.output>o1.value", "img.output>i2v.image", "i2v.output>o2.value"],
    );
    const job = await runGraph(ws, graph);
    t.equal(job.end.status, "completed", JSON.stringify(job.end.error ?? ""));
    const r = job.end.result as Record<string, unknown[]>;
    for (const name of ["t2v", "i2v"]) {
      const probe = ffprobe(await outputBytes(s.url, r[name]![0]), dir, `${name}.mp4`);
      t.match(
        probe.streams.find((x) => x.codec_type === "video"),
        { codec_name: "h264" },
        `${name}: the provider's MP4`,
      );
    }
    const created = fake.requests.filter((q) => q.path === "/v1/videos");
    const t2v = created.find((q) => q.fields.prompt === "waves")!;
    t.match(t2v.fields, { model: "sora-2", size: "1280x720", seconds: "8" }, "16:9, 180 frames ≈ 8 s");
    const i2v = created.find((q) => q.fields.prompt === "zoom in")!;
    t.match(i2v.fields, { size: "720x1280", seconds: "4" }, "9:16, portrait");
    t.ok(i2v.files.input_reference, "the image went as the first frame");
    t.ok(
      fake.requests.filter((q) => /^\/v1\/videos\/video_\d+$/.test(q.path)).length >= 4,
      "each job polled until done",
    );

    const refused = await runGraph(
      ws,
      graphOf([["g", "nodetool.video.TextToVideo", { model: "openai:sora-fails", prompt: "x" }]], []),
    );
    t.equal(refused.end.status, "failed");
    t.match(JSON.stringify(refused.end.error), /openai video generation failed: the prompt was blocked/);
  },
);
