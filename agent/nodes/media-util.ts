/**
 * What the image, audio and video nodes share: reading a media value's bytes (NodeTool's ImageRef / AudioRef /
 * VideoRef, a data: URI, an `asset://` reference read through the job's assets, or bytes a node upstream made),
 * colors, the folder root local-file nodes are confined to, per-node temp dirs and running a tool (ffmpeg) with a
 * time cap that a cancel kills. A node's media output is plain bytes: the agent stores large ones as assets
 * (agent/assets.ts) and sends the reference instead.
 */
import { spawn } from "node:child_process";
import { mkdtemp, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import type { default as sharpFactory, Sharp, SharpInput, SharpOptions } from "sharp";
import { ASSETS_DEFAULTS, assetIdOfUri } from "../../protocol/index.js";
import { NodeError, type NodeContext, type ProcessNodeDef } from "../engine/types.js";

/** Largest media value a node reads (an upload's cap: nothing larger can be an asset). */
export const MEDIA_MAX_BYTES = ASSETS_DEFAULTS.maxUploadBytes;
/** Largest image a node decodes or builds, in pixels (about 8K × 5K). */
export const IMAGE_MAX_PIXELS = 40_000_000;

export type MediaKind = "image" | "audio" | "video";

const article = (kind: MediaKind) => (kind === "video" ? "a" : "an");

/** True for NodeTool's empty reference (`{type, uri: "", asset_id: null, data: null}`), null and "". */
export function isEmptyMedia(value: unknown): boolean {
  if (value === null || value === undefined || value === "") return true;
  if (value instanceof Uint8Array || typeof value !== "object" || Array.isArray(value)) return false;
  const o = value as { uri?: unknown; asset_id?: unknown; data?: unknown };
  return !o.uri && !o.asset_id && (o.data === null || o.data === undefined || o.data === "");
}

/** The bytes, refused when empty (no media file is 0 bytes: the tools' own errors for one say nothing useful). */
function capped(bytes: Uint8Array, label: string): Uint8Array {
  if (bytes.byteLength === 0) throw new NodeError(`${label} is an empty file (0 bytes)`);
  if (bytes.byteLength > MEDIA_MAX_BYTES)
    throw new NodeError(`${label} is ${bytes.byteLength} bytes, over the ${MEDIA_MAX_BYTES}-byte media limit`);
  return bytes;
}

function fromDataUri(uri: string, label: string): Uint8Array {
  const comma = uri.indexOf(",");
  if (comma < 0) throw new NodeError(`${label}: malformed data: URI`);
  if (uri.length - comma > (MEDIA_MAX_BYTES * 4) / 3 + 4)
    throw new NodeError(`${label}: the data: URI is over the ${MEDIA_MAX_BYTES}-byte media limit`);
  const head = uri.slice(5, comma);
  const body = uri.slice(comma + 1);
  return head.endsWith(";base64")
    ? new Uint8Array(Buffer.from(body, "base64"))
    : new Uint8Array(Buffer.from(decodeURIComponent(body)));
}

async function fromUri(ctx: NodeContext, uri: string, kind: MediaKind, label: string): Promise<Uint8Array> {
  if (uri.startsWith("data:")) return fromDataUri(uri, label);
  if (assetIdOfUri(uri) !== null) {
    const assets = ctx.assets;
    if (!assets) throw new NodeError(`${label} is an asset (${uri}), but this agent gives nodes no asset access`);
    return assets.get(uri);
  }
  // Downloaded as the HTTP nodes fetch (NodeTool downloads a URL reference too): under the agent's outbound policy.
  if (/^https?:\/\//i.test(uri)) {
    const { safeFetch } = await import("./outbound.js");
    const res = await safeFetch(uri, { signal: ctx.signal, maxBytes: MEDIA_MAX_BYTES });
    if (res.status >= 400) throw new NodeError(`${label}: fetching ${uri.slice(0, 120)} answered ${res.status}`);
    return res.body;
  }
  throw new NodeError(`${label} must be ${kind} bytes, a data: URI or an asset:// reference, got ${uri.slice(0, 120)}`);
}

/**
 * The bytes of a media value: bytes as they are; `{data}` with bytes or base64 text; `{uri}` / `{asset_id}` or a
 * bare URI (data: or asset://). Fails naming `label` when the value is empty or of another form.
 */
export async function mediaBytes(
  ctx: NodeContext,
  value: unknown,
  kind: MediaKind,
  label: string,
): Promise<Uint8Array> {
  if (isEmptyMedia(value)) throw new NodeError(`${label} is empty: connect ${article(kind)} ${kind}`);
  if (value instanceof Uint8Array) return capped(value, label);
  if (typeof value === "string") return capped(await fromUri(ctx, value, kind, label), label);
  if (typeof value !== "object" || Array.isArray(value))
    throw new NodeError(`${label} must be ${article(kind)} ${kind}, got ${JSON.stringify(value)}`);
  const o = value as { uri?: unknown; asset_id?: unknown; data?: unknown };
  if (o.data instanceof Uint8Array) return capped(o.data, label);
  if (typeof o.data === "string" && o.data !== "") return capped(new Uint8Array(Buffer.from(o.data, "base64")), label);
  if (typeof o.uri === "string" && o.uri !== "") return capped(await fromUri(ctx, o.uri, kind, label), label);
  if (typeof o.asset_id === "string") return capped(await fromUri(ctx, `asset://${o.asset_id}`, kind, label), label);
  throw new NodeError(`${label} must be ${article(kind)} ${kind} reference, got ${JSON.stringify(value)}`);
}

/** Bytes as a plain `Uint8Array` view (a `Buffer` from sharp or fs is one, but a subclass). */
export function plainBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** `#rgb`/`#rrggbb`(`aa`) from a ColorRef (`{type: "color", value}`) or text; `dflt` when empty. */
export function colorOf(value: unknown, label: string, dflt: string): string {
  const raw = value !== null && typeof value === "object" ? (value as { value?: unknown }).value : value;
  if (raw === null || raw === undefined || raw === "") return dflt;
  if (typeof raw === "string" && /^#(?:[0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})$/i.test(raw.trim())) return raw.trim();
  throw new NodeError(`${label} must be a color like "#ff8800", got ${JSON.stringify(value)}`);
}

/** The color as 0–255 red, green, blue and alpha 0–1. */
export function rgbaOf(hex: string): { r: number; g: number; b: number; alpha: number } {
  let h = hex.slice(1);
  if (h.length === 3) h = [...h].map((c) => c + c).join("");
  const n = (i: number) => Number.parseInt(h.slice(i, i + 2), 16);
  return { r: n(0), g: n(2), b: n(4), alpha: h.length === 8 ? n(6) / 255 : 1 };
}

/** The setting (environment) that names the one folder local-file nodes may read. */
export const FOLDER_ROOT_SETTING = "NODEWAY_FOLDER_ROOT";

/**
 * `path` resolved inside the folder root (relative paths from the root), symlinks followed. Refused, naming the
 * setting, when no root is set or the path leads outside it: a job must not read the agent's files at will.
 */
export async function pathInFolderRoot(path: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const root = env[FOLDER_ROOT_SETTING];
  if (!root)
    throw new NodeError(
      `reading local folders is off on this agent: set ${FOLDER_ROOT_SETTING} to the folder its jobs may read`,
    );
  const realRoot = await realpath(root).catch(() => {
    throw new NodeError(`${FOLDER_ROOT_SETTING} (${root}) is not a folder this agent can read`);
  });
  const wanted = isAbsolute(path) ? path : resolve(realRoot, path);
  const real = await realpath(wanted).catch(() => {
    throw new NodeError(`folder ${JSON.stringify(path)} does not exist under ${FOLDER_ROOT_SETTING}`);
  });
  const rel = relative(realRoot, real);
  if (rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel))
    throw new NodeError(`${JSON.stringify(path)} is outside ${FOLDER_ROOT_SETTING} (${root}): refused`);
  return real;
}

/** Runs `fn` with a fresh private temp dir, removed afterwards whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "nodeway-media-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Longest stdout a tool may write back (ffprobe's JSON); a tool's outputs go to files. */
const TOOL_STDOUT_MAX_BYTES = 1024 * 1024;

/** The end of a tool's stderr as a job's error says it: three lines, the agent's temp dirs left out of paths. */
function toolErrorTail(stderr: string): string {
  const tempDir = new RegExp(`${tmpdir().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/nodeway-[^/\\s]*/`, "g");
  const lines = stderr.trim().split("\n").slice(-3).join(" | ");
  if (/Format not on whitelist/.test(lines)) {
    return "not a media file this agent reads (playlists such as HLS, file lists and image sequences are refused: they name other files)";
  }
  // An MP4/MOV whose index is missing: cut short (an interrupted upload or copy), or still being written.
  if (/moov atom not found/.test(lines)) return "the file is incomplete: its index (the MP4 moov atom) is missing";
  // ffmpeg names its contexts with their address (`[mov,mp4,… @ 0x55d…]`): noise that differs on every run.
  return lines.replace(tempDir, "").replace(/ @ 0x[0-9a-f]+\]/g, "]");
}

/**
 * Runs `cmd` with `args` (no shell), killed (SIGKILL) when the node's signal aborts or after `timeoutMs`. Resolves
 * with its stdout when it exits 0; otherwise fails naming `what` with the end of its stderr.
 */
export function runTool(
  ctx: NodeContext,
  cmd: string,
  args: string[],
  what: string,
  timeoutMs: number,
): Promise<Buffer> {
  ctx.signal.throwIfAborted();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = "";
    let timedOut = false;
    const kill = () => child.kill("SIGKILL");
    const onAbort = () => kill();
    const timer = setTimeout(() => ((timedOut = true), kill()), timeoutMs);
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    child.stdout.on("data", (d: Buffer) => {
      outBytes += d.byteLength;
      if (outBytes <= TOOL_STDOUT_MAX_BYTES) out.push(d);
      else kill();
    });
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4_000)));
    child.on("error", (e) => reject(new NodeError(`${what}: cannot start ${cmd}: ${e.message}`)));
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      ctx.signal.removeEventListener("abort", onAbort);
      if (ctx.signal.aborted) return reject(ctx.signal.reason);
      if (timedOut) return reject(new NodeError(`${what} took longer than ${timeoutMs / 1000} s and was stopped`));
      if (outBytes > TOOL_STDOUT_MAX_BYTES) return reject(new NodeError(`${what} wrote more than it may`));
      if (code === 0) return resolvePromise(Buffer.concat(out));
      reject(new NodeError(`${what} failed (${code ?? signal}): ${toolErrorTail(err)}`));
    });
  });
}

type SharpFactory = typeof sharpFactory;
let sharpModule: Promise<SharpFactory> | null = null;

/** sharp, loaded on first use (runners that run no image node never load the native library). */
export function loadSharp(): Promise<SharpFactory> {
  sharpModule ??= import("sharp").then((m) => m.default);
  return sharpModule;
}

/**
 * Longest one sharp (libvips) pipeline may compute, in seconds; libvips stops it then. Nothing else can: a cancel,
 * a job's timeout or a terminated worker thread leaves native work running on the agent's threads. The node
 * context gives no job deadline, so this is a cap per operation, several times what the largest image takes.
 */
export const IMAGE_OP_MAX_SECONDS = 30;

/**
 * A sharp pipeline for a node: refused at once when the job has stopped, its input capped at IMAGE_MAX_PIXELS,
 * and whatever it (or a clone) computes stopped by libvips after `seconds`. Every image node builds its pipelines
 * here: sharp has no abort, so this time cap is what bounds native work after a cancel.
 */
export async function imagePipeline(
  ctx: NodeContext,
  input?: SharpInput,
  options: SharpOptions = {},
  seconds = IMAGE_OP_MAX_SECONDS,
): Promise<Sharp> {
  ctx.signal.throwIfAborted();
  const sharp = await loadSharp();
  const opts = { limitInputPixels: IMAGE_MAX_PIXELS, ...options };
  // sharp takes a created or text image's options as its only argument.
  return (input === undefined ? sharp(opts) : sharp(input, opts)).timeout({ seconds });
}

/** libvips' stop at the time cap (`timeout: 12% complete`) as the node's error; any other error as it is. */
export function imageOpError(err: unknown): unknown {
  const m = err instanceof Error ? /^timeout: (\d+)% complete/.exec(err.message) : null;
  if (!m) return err;
  return new NodeError(
    `the image operation took longer than its time limit (${IMAGE_OP_MAX_SECONDS} s) and was stopped at ${m[1]}%`,
  );
}

/** `def` with libvips' time-cap stop reported as its error (imageOpError). */
export function imageNode(def: ProcessNodeDef): ProcessNodeDef {
  return {
    ...def,
    process: async (ctx, inputs) => {
      try {
        return await def.process(ctx, inputs);
      } catch (err) {
        throw imageOpError(err);
      }
    },
  };
}
