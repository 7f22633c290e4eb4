/**
 * Real media files of the kinds users upload, made on the spot with ffmpeg and sharp (both installed where the
 * tests run): images in each format and color layout, audio in each codec and channel layout, videos in each
 * container, and the broken ones (truncated, empty, lying headers). Each maker is small (a few KB) and cheap.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp, { type Sharp } from "sharp";

/** A temp dir for ffmpeg's outputs, and a remover. */
export function scratchDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "nodeway-real-files-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** ffmpeg's output file `name` in `dir`, made from the lavfi sources and options in `args`. */
export function ffmpegFile(dir: string, name: string, args: string[]): Uint8Array {
  const out = join(dir, name);
  execFileSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", ...args, out]);
  return new Uint8Array(readFileSync(out));
}

const lavfi = (src: string) => ["-f", "lavfi", "-i", src];

/** A tone of `seconds` at `rate` Hz with `channels` channels (lavfi's sine, upmixed), encoded by `codec` args. */
export function audioFile(
  dir: string,
  name: string,
  opts: { rate?: number; channels?: number; seconds?: number; codec: string[] },
): Uint8Array {
  const { rate = 16_000, channels = 1, seconds = 0.5 } = opts;
  // lavfi's sine with duration 0 never ends: a length is required, and -t caps it again.
  if (!(seconds > 0)) throw new Error("audioFile needs seconds > 0");
  const src = `sine=frequency=440:sample_rate=${rate}:duration=${seconds}`;
  return ffmpegFile(dir, name, [...lavfi(src), "-t", String(seconds), "-ac", String(channels), ...opts.codec]);
}

/** A `seconds`-long `w`×`h` test pattern at 10 fps, with a tone unless `audio` is false. */
export function videoFile(
  dir: string,
  name: string,
  opts: { codec: string[]; w?: number; h?: number; seconds?: number; audio?: boolean; extra?: string[] },
): Uint8Array {
  const { w = 64, h = 48, seconds = 1, audio = true } = opts;
  if (!(seconds > 0)) throw new Error("videoFile needs seconds > 0");
  const inputs = [...lavfi(`testsrc=size=${w}x${h}:rate=10:duration=${seconds}`)];
  if (audio) inputs.push(...lavfi(`sine=frequency=440:duration=${seconds}`));
  const args = [...inputs, "-t", String(seconds), ...opts.codec, ...(audio ? ["-shortest"] : [])];
  return ffmpegFile(dir, name, [...args, ...(opts.extra ?? [])]);
}

/**
 * A `w`×`h` RGB picture whose quadrants differ (top-left red, top-right green, bottom-left blue, bottom-right
 * white), so a rotation or a flip shows in which color lands where.
 */
export function quadrantRaw(w: number, h: number): { raw: Buffer; w: number; h: number } {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const [r, g, b] = y < h / 2 ? (x < w / 2 ? [255, 0, 0] : [0, 255, 0]) : x < w / 2 ? [0, 0, 255] : [255, 255, 255];
      raw[i] = r!;
      raw[i + 1] = g!;
      raw[i + 2] = b!;
    }
  return { raw, w, h };
}

/** The quadrant picture through sharp (`fn` picks the encoder). */
export async function quadrantImage(
  w: number,
  h: number,
  fn: (s: Sharp) => Sharp = (s) => s.png(),
): Promise<Uint8Array> {
  const { raw } = quadrantRaw(w, h);
  return new Uint8Array(await fn(sharp(raw, { raw: { width: w, height: h, channels: 3 } })).toBuffer());
}

/** RGB of the pixel at (x, y) of an image (8 bits, alpha dropped). */
export async function pixelAt(bytes: Uint8Array, x: number, y: number): Promise<[number, number, number]> {
  const { data, info } = await sharp(bytes).removeAlpha().toColourspace("srgb").raw().toBuffer({
    resolveWithObject: true,
  });
  const i = (y * info.width + x) * info.channels;
  return [data[i]!, data[i + 1]!, data[i + 2]!];
}

/** The nearest primary a pixel shows: "red", "green", "blue", "white", "black" or "other". */
export function colorName([r, g, b]: [number, number, number]): string {
  const hi = (v: number) => v > 160;
  const lo = (v: number) => v < 90;
  if (hi(r) && lo(g) && lo(b)) return "red";
  if (lo(r) && hi(g) && lo(b)) return "green";
  if (lo(r) && lo(g) && hi(b)) return "blue";
  if (hi(r) && hi(g) && hi(b)) return "white";
  if (lo(r) && lo(g) && lo(b)) return "black";
  return "other";
}

/**
 * The MP4 with its first track's display matrix set to a 90° rotation, as a phone records a portrait video (the
 * frames stay landscape; players turn them). Patches the `tkhd` box's matrix in place (version-0 boxes).
 */
export function rotated90(mp4: Uint8Array): Uint8Array {
  const b = Buffer.from(mp4);
  const at = b.indexOf("tkhd");
  if (at < 0 || b[at + 4] !== 0) throw new Error("no version-0 tkhd box");
  // After the type: version/flags, times, track id, reserved, duration, reserved, layer, group, volume, reserved.
  const matrix = at + 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2;
  const rot = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000];
  for (const [i, v] of rot.entries()) b.writeInt32BE(v, matrix + i * 4);
  return new Uint8Array(b);
}
