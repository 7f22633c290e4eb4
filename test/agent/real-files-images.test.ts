/**
 * The image nodes on real files of the kinds users upload (made here with sharp and ffmpeg), run in-process: every
 * readable kind opens and keeps its size; a phone photo with an EXIF orientation comes out upright; a CMYK JPEG is
 * reported as CMYK; BMP and ICO open through ffmpeg; what cannot be read (HEIC, text, an empty or truncated file, a
 * decompression bomb) fails saying what the file is; an SVG's external references are never fetched.
 */
import t from "tap";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { deflateSync } from "node:zlib";
import sharp, { type Sharp } from "sharp";
import type { ProcessNodeDef } from "../../agent/engine/types.js";
import { nodeCatalog } from "../../agent/nodes/index.js";
import { errorOf, runProcess } from "../helpers/node-context.js";
import { colorName, ffmpegFile, pixelAt, quadrantImage, scratchDir } from "../helpers/real-files.js";

const CATALOG = nodeCatalog();

/** Runs the process node `type` with its defaults and `inputs`. */
const run = (type: string, inputs: Record<string, unknown>) => runProcess(CATALOG.get(type) as ProcessNodeDef, inputs);
const namedError = (p: Promise<unknown>) => errorOf(p, true);

const { dir, remove } = scratchDir();
t.teardown(remove);

/** 60 × 40, quadrants red / green over blue / white. */
const Q = (fn?: (s: Sharp) => Sharp) => quadrantImage(60, 40, fn);

t.test("real images - every readable kind opens at its size and goes through an operation", async (t) => {
  const kinds: [string, Uint8Array, string][] = [
    ["progressive JPEG", await Q((s) => s.jpeg({ progressive: true })), "JPEG"],
    ["CMYK JPEG", await Q((s) => s.toColourspace("cmyk").jpeg()), "JPEG"],
    [
      "16-bit PNG",
      ffmpegFile(dir, "p16.png", ["-f", "lavfi", "-i", "testsrc=size=60x40", "-frames:v", "1", "-pix_fmt", "rgb48be"]),
      "PNG",
    ],
    ["greyscale PNG", await Q((s) => s.toColourspace("b-w").png()), "PNG"],
    ["palette PNG", await Q((s) => s.png({ palette: true })), "PNG"],
    ["animated GIF", ffmpegFile(dir, "a.gif", ["-f", "lavfi", "-i", "testsrc=size=60x40:rate=5:duration=1"]), "GIF"],
    [
      "animated WebP",
      ffmpegFile(dir, "a.webp", ["-f", "lavfi", "-i", "testsrc=size=60x40:rate=5:duration=1", "-c:v", "libwebp_anim"]),
      "WEBP",
    ],
    ["AVIF", await Q((s) => s.avif()), "HEIF"],
    ["TIFF", await Q((s) => s.tiff()), "TIFF"],
    [
      "SVG",
      new Uint8Array(
        Buffer.from(
          '<svg xmlns="http://www.w3.org/2000/svg" width="60" height="40"><rect width="60" height="40" fill="red"/></svg>',
        ),
      ),
      "SVG",
    ],
  ];
  for (const [name, bytes, format] of kinds) {
    const meta = await run("nodetool.image.GetMetadata", { image: bytes });
    t.match(meta, { format, width: 60, height: 40 }, `${name}: its format and size`);
    const out = (await run("lib.pillow.enhance.Brightness", { image: bytes, factor: 1 })).output as Uint8Array;
    const m = await sharp(out).metadata();
    t.same([m.format, m.width, m.height], ["png", 60, 40], `${name}: an operation's output, as PNG (first frame)`);
  }
  const tiny = new Uint8Array(
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "#f00" } })
      .png()
      .toBuffer(),
  );
  const wide = new Uint8Array(
    await sharp({ create: { width: 20000, height: 1, channels: 3, background: "#f00" } })
      .png()
      .toBuffer(),
  );
  t.match(
    await run("nodetool.image.Resize", { image: tiny, width: 4, height: 2 }),
    { output: Uint8Array },
    "1×1 resizes",
  );
  const tiles = (await run("lib.grid.SliceImageGrid", { image: wide, columns: 4, rows: 1 })).output as Uint8Array[];
  t.equal(tiles.length, 4, "a 20000×1 image slices into 4 tiles");
});

t.test("real images - a photo with EXIF orientation 6 is processed upright, as it is shown", async (t) => {
  // Stored 60 × 40 landscape; orientation 6 shows it turned 90° clockwise: 40 × 60, blue at the top left.
  const photo = await Q((s) => s.jpeg().withMetadata({ orientation: 6 }));
  t.match(await run("nodetool.image.GetMetadata", { image: photo }), { width: 40, height: 60 }, "its size as shown");
  const resized = (await run("nodetool.image.Resize", { image: photo, width: 20, height: 30 })).output as Uint8Array;
  t.equal(colorName(await pixelAt(resized, 2, 2)), "blue", "Resize: the top left is what the viewer showed there");
  t.equal(colorName(await pixelAt(resized, 17, 2)), "red", "Resize: the top right too");
  const tiles = (await run("lib.grid.SliceImageGrid", { image: photo, columns: 2, rows: 2 })).output as Uint8Array[];
  t.same((await sharp(tiles[0]!).metadata()).width, 20, "SliceImageGrid cuts the upright image");
  t.equal(colorName(await pixelAt(tiles[0]!, 5, 5)), "blue", "the first tile is the shown top left");
});

t.test("real images - BMP and ICO (which sharp cannot decode) open through ffmpeg, as Pillow opens them", async (t) => {
  const bmp = ffmpegFile(dir, "a.bmp", ["-f", "lavfi", "-i", "testsrc=size=60x40", "-frames:v", "1"]);
  const ico = ffmpegFile(dir, "a.ico", ["-f", "lavfi", "-i", "testsrc=size=32x32", "-frames:v", "1"]);
  t.match(await run("nodetool.image.GetMetadata", { image: bmp }), { width: 60, height: 40 }, "a BMP at its size");
  t.match(await run("nodetool.image.GetMetadata", { image: ico }), { width: 32, height: 32 }, "an ICO at its size");
  const out = (await run("nodetool.image.Resize", { image: bmp, width: 30, height: 20 })).output as Uint8Array;
  t.same((await sharp(out).metadata()).width, 30, "and goes through an operation");
  // A BMP header declaring 100000 × 100000 in a few bytes: refused before ffmpeg decodes anything.
  const bomb = Buffer.from(bmp);
  bomb.writeInt32LE(100_000, 18);
  bomb.writeInt32LE(100_000, 22);
  t.match(
    await namedError(run("nodetool.image.GetMetadata", { image: new Uint8Array(bomb) })),
    /^NodeError: image is a BMP of 10000000000 pixels, over the 40000000-pixel image limit$/,
  );
});

t.test("real images - a CMYK JPEG's mode is CMYK, not RGBA", async (t) => {
  const cmyk = await Q((s) => s.toColourspace("cmyk").jpeg());
  t.match(await run("nodetool.image.GetMetadata", { image: cmyk }), { mode: "CMYK", channels: 4 });
});

t.test("real images - a file that is not a readable image fails saying what it is", async (t) => {
  const png = await Q();
  const heic = new Uint8Array(
    Buffer.concat([Buffer.from([0, 0, 0, 24]), Buffer.from("ftypheicmif1heic"), Buffer.alloc(8)]),
  );
  const cases: [string, Uint8Array, RegExp][] = [
    ["zero bytes", new Uint8Array(0), /^NodeError: image is an empty file \(0 bytes\)$/],
    ["HEIC", heic, /^NodeError: image is in HEIC\/HEIF \(HEVC-coded\) format, which this agent cannot read/],
    [
      "text named .png",
      new Uint8Array(Buffer.from("id,name\n1,a\n")),
      /^NodeError: image is not an image: its 12 bytes are text$/,
    ],
    [
      "truncated PNG",
      png.slice(0, 60),
      /^NodeError: image is not an image this agent can read \(60 bytes, image\/png\): truncated or corrupt\?/,
    ],
  ];
  for (const [name, bytes, want] of cases) {
    const msg = await namedError(run("lib.pillow.enhance.Brightness", { image: bytes }));
    t.match(msg, want, name);
    t.notMatch(msg, /bad seek|undefined|\n/, `${name}: no library noise`);
  }
});

/** A PNG whose header declares `w`×`h` pixels: a few KB that would decode to gigabytes. */
function pngBomb(w: number, h: number): Uint8Array {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    return Buffer.concat([len, Buffer.from(type), data, Buffer.alloc(4)]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const idat = chunk("IDAT", deflateSync(Buffer.alloc(w + 1)));
  return new Uint8Array(Buffer.concat([signature, chunk("IHDR", ihdr), idat, chunk("IEND", Buffer.alloc(0))]));
}

t.test("real images - a declared-huge PNG or SVG is refused naming its size and the limit", async (t) => {
  const svg = new Uint8Array(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100000 100000"/>'));
  for (const [name, bytes] of [
    ["PNG bomb", pngBomb(100_000, 100_000)],
    ["SVG", svg],
  ] as const) {
    const msg = await namedError(run("nodetool.image.Resize", { image: bytes, width: 10, height: 10 }));
    t.equal(msg, "NodeError: image is 100000×100000 (10000000000 pixels), over the 40000000-pixel image limit", name);
  }
});

t.test("real images - an SVG's external images and styles are never fetched", async (t) => {
  let hits = 0;
  const server = createServer((_req, res) => {
    hits++;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="40">
    <style>@import url(${url}/a.css);</style>
    <image href="${url}/b.png" width="40" height="40"/><image xlink:href="file:///etc/passwd" width="40" height="40"/>
    <use href="${url}/c.svg#x"/><rect fill="url(${url}/d.svg#g)" width="10" height="10"/></svg>`;
  const out = (await run("lib.pillow.enhance.Brightness", { image: new Uint8Array(Buffer.from(svg)) }))
    .output as Uint8Array;
  t.equal((await sharp(out).stats()).channels[3]!.max, 0, "nothing drawn from outside: the image is transparent");
  t.equal(hits, 0, "no request reached the server");
});
