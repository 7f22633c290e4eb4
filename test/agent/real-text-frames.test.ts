/**
 * FrameIterator on a video that is small on disk but large decoded (a solid color, highly compressible): frames
 * over the image pixel limit are refused before any is decoded, and frames stream from ffmpeg one at a time
 * instead of every frame of the range being written to the agent's disk first.
 */
import t from "tap";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { IMAGE_MAX_PIXELS } from "../../agent/nodes/media-util.js";
import { frameIterator } from "../../agent/nodes/video.js";
import { nodeContext } from "../helpers/node-context.js";
import { ffmpegFile, scratchDir } from "../helpers/real-files.js";

const ctx = nodeContext("video");

const { dir, remove } = scratchDir();
t.teardown(remove);
// The node's temp dirs go under a private TMPDIR (os.tmpdir() reads it on each call): only this test's are seen.
const privateTmp = scratchDir();
t.teardown(privateTmp.remove);
process.env.TMPDIR = privateTmp.dir;

/** A solid-color H.264 video of `frames` frames (a duration and a frame count both bound ffmpeg). */
const solid = (name: string, size: string, frames: number) =>
  ffmpegFile(dir, name, [
    ...["-f", "lavfi", "-i", `color=c=blue:s=${size}:r=10:d=${frames / 10}`],
    ...["-frames:v", String(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
  ]);

/** Frame files in the node's temp dirs (`nodeway-frames-*`) now. */
const framesOnDisk = () =>
  readdirSync(privateTmp.dir)
    .filter((d) => d.startsWith("nodeway-frames-"))
    .flatMap((d) => readdirSync(join(privateTmp.dir, d)).filter((f) => f !== "input"));

t.test("FrameIterator - frames over the image pixel limit are refused before decoding", async (t) => {
  const video = solid("big.mp4", "8000x6000", 2);
  t.ok(video.byteLength < 1_000_000, `${video.byteLength} bytes on disk, ${8000 * 6000} pixels a frame`);
  const gen = frameIterator.generate(ctx, { video, start: 0, end: -1 })[Symbol.asyncIterator]();
  await t.rejects(gen.next(), {
    name: "NodeError",
    message: `the video's frames are 8000×6000, over the ${IMAGE_MAX_PIXELS}-pixel image limit`,
  });
});

t.test("FrameIterator - frames stream one at a time, none written to disk", async (t) => {
  const video = solid("4k.mp4", "3840x2160", 30);
  let frames = 0;
  let maxOnDisk = 0;
  let whole = 0;
  for await (const e of frameIterator.generate(ctx, { video, start: 0, end: -1 })) {
    if (e.handle !== "frame") continue;
    frames++;
    maxOnDisk = Math.max(maxOnDisk, framesOnDisk().length);
    const png = e.value as Uint8Array;
    if (png[0] === 0x89 && png.at(-4) === 0xae) whole++;
  }
  t.same([frames, whole], [30, 30], "every frame, each a whole PNG");
  t.equal(maxOnDisk, 0, "no frame file on the agent's disk while they are consumed");
  const partial = frameIterator.generate(ctx, { video, start: 5, end: 8 });
  const indexes: unknown[] = [];
  for await (const e of partial) if (e.handle === "index") indexes.push(e.value);
  t.same(indexes, [5, 6, 7], "a range");
});
