/**
 * Large binary outputs as assets: a value a job emits that holds bytes over the inline
 * limit (an image, audio, a file) is put into the object store, and the event and the job record carry an
 * `asset://` reference in its place (protocol/assets.ts). NATS then never carries more of a job's output than a
 * message may hold, clients fetch the bytes over HTTP (`GET /api/assets/:id/content`) when they want them, and a
 * resume replays the reference, not megabytes.
 *
 * The same bytes are stored once per job: an output's `output_update` and the record's outputs (and a node's
 * `result`) refer to one asset, found by content digest, whichever strategy's channel the bytes came through.
 */
import { createHash } from "node:crypto";
import { ASSETS_DEFAULTS, assetRef, newId, type AssetRef } from "../protocol/index.js";
import type { JobAssetStore } from "./asset-io.js";

/** Deepest nesting searched for bytes (outputs are values, lists of values, or small objects of them). */
const MAX_DEPTH = 32;
/**
 * Text longer than this (UTF-8) is stored as an asset and sent as a `text` reference: a fetched web page or a
 * document's text would otherwise make an event, or the job's record, larger than NATS carries (1 MiB).
 */
export const TEXT_INLINE_MAX_BYTES = 256 * 1024;
const TEXT_TYPE = "text/plain; charset=utf-8";

/** True for a string over TEXT_INLINE_MAX_BYTES; cheap for a token (its length rules it out before any count). */
const isLongText = (v: unknown): v is string =>
  typeof v === "string" && v.length * 3 > TEXT_INLINE_MAX_BYTES && Buffer.byteLength(v) > TEXT_INLINE_MAX_BYTES;

/** ISO-BMFF (`ftyp`) major brands by what they hold: HEIF stills, M4A audio; any other (QuickTime too) is MP4 video. */
const FTYP_BRANDS: Readonly<Record<string, string>> = {
  avif: "image/avif",
  avis: "image/avif",
  heic: "image/heic",
  heix: "image/heic",
  mif1: "image/heif",
  msf1: "image/heif",
  "M4A ": "audio/mp4",
  "M4B ": "audio/mp4",
};

/**
 * An MPEG audio frame's first two bytes: 11 sync bits, then any version and layer III (`xx01x`). AAC in ADTS has
 * the same sync but layer 00, and is not MP3.
 */
const isMp3Frame = (b: Uint8Array) => b[0] === 0xff && (b[1]! & 0xe0) === 0xe0 && (b[1]! & 0x06) === 0x02;
const isAdts = (b: Uint8Array) => b[0] === 0xff && (b[1]! & 0xf6) === 0xf0;

/**
 * Media types of the formats a node is likely to produce or a user uploads, by their leading bytes (the type an
 * asset is stored under, and the file name an API is sent). `application/octet-stream` when none matches.
 */
export function sniffContentType(b: Uint8Array): string {
  const at = (i: number, ...xs: number[]) => xs.every((x, k) => b[i + k] === x);
  const ascii = (i: number, s: string) => at(i, ...[...s].map((c) => c.charCodeAt(0)));
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "image/png";
  if (at(0, 0xff, 0xd8, 0xff)) return "image/jpeg";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "image/gif";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "image/webp";
  if (ascii(0, "II*\0") || ascii(0, "MM\0*")) return "image/tiff";
  if (ascii(0, "BM") && [12, 40, 52, 56, 108, 124].includes(b[14]!) && at(15, 0, 0, 0)) return "image/bmp";
  if (ascii(0, "RIFF") && ascii(8, "WAVE")) return "audio/wav";
  if (ascii(0, "OggS")) return "audio/ogg";
  if (ascii(0, "fLaC")) return "audio/flac";
  if (ascii(0, "ID3") || isMp3Frame(b)) return "audio/mpeg";
  if (isAdts(b)) return "audio/aac";
  if (ascii(4, "ftyp")) return FTYP_BRANDS[String.fromCharCode(...b.subarray(8, 12))] ?? "video/mp4";
  // Matroska and WebM share the EBML header; its DocType (within the first few dozen bytes) tells them apart.
  if (at(0, 0x1a, 0x45, 0xdf, 0xa3))
    return Buffer.from(b.subarray(0, 64)).includes("webm") ? "video/webm" : "video/x-matroska";
  if (ascii(0, "%PDF-")) return "application/pdf";
  return "application/octet-stream";
}

export class AssetStoreError extends Error {}

/** The bytes one job may still store as assets, shared by all its writers (a runaway loop cannot fill the store). */
export class AssetBudget {
  private usedBytes = 0;
  constructor(readonly maxBytes: number = ASSETS_DEFAULTS.jobMaxBytes) {}

  /** Takes `bytes` from what is left; false, taking nothing, when they do not fit. */
  take(bytes: number): boolean {
    if (this.usedBytes + bytes > this.maxBytes) return false;
    this.usedBytes += bytes;
    return true;
  }

  /** Gives back bytes taken for a write that failed. */
  giveBack(bytes: number): void {
    this.usedBytes -= bytes;
  }
}

/** One job's asset writer. */
export class JobAssets {
  private readonly byDigest = new Map<string, Promise<AssetRef>>();

  constructor(
    private readonly assets: JobAssetStore | null,
    private readonly inlineMaxBytes: number,
    /** The largest output stored: an upload's cap, so a node cannot store what a client could not send. */
    private readonly maxBytes: number = ASSETS_DEFAULTS.maxUploadBytes,
    /** What the whole job may store. */
    private readonly budget: AssetBudget = new AssetBudget(),
  ) {}

  /** True when `value` holds bytes or text that must go to the store (cheap for everything else: a token). */
  needs(value: unknown, depth = 0): boolean {
    if (value instanceof Uint8Array) return value.byteLength > this.inlineMaxBytes;
    if (isLongText(value)) return true;
    if (value === null || typeof value !== "object" || depth > MAX_DEPTH) return false;
    if (Array.isArray(value)) return value.some((v) => this.needs(v, depth + 1));
    for (const k in value) if (this.needs((value as Record<string, unknown>)[k], depth + 1)) return true;
    return false;
  }

  /** `value` with every too-large byte array or text replaced by a reference to its stored asset. */
  async offload(value: unknown, nodeId?: string, depth = 0): Promise<unknown> {
    if (value instanceof Uint8Array) return value.byteLength > this.inlineMaxBytes ? this.store(value, nodeId) : value;
    if (isLongText(value)) return this.store(Buffer.from(value, "utf8"), nodeId, TEXT_TYPE);
    if (value === null || typeof value !== "object" || depth > MAX_DEPTH || !this.needs(value, depth)) return value;
    if (Array.isArray(value)) return Promise.all(value.map((v) => this.offload(v, nodeId, depth + 1)));
    const out: Record<string, unknown> = {};
    for (const k in value) out[k] = await this.offload((value as Record<string, unknown>)[k], nodeId, depth + 1);
    return out;
  }

  /** The asset of `bytes` (stored once per job); `text` gives its type (a `text` reference), else it is sniffed. */
  private store(bytes: Uint8Array, nodeId?: string, text?: string): Promise<AssetRef> {
    const digest = `${text ? "t" : "b"}${createHash("sha256").update(bytes).digest("hex")}`;
    let ref = this.byDigest.get(digest);
    if (!ref) {
      ref = this.put(bytes, nodeId, text);
      this.byDigest.set(digest, ref);
      // A failed put is not remembered: the record's outputs try again.
      ref.catch(() => this.byDigest.delete(digest));
    }
    return ref;
  }

  private async put(bytes: Uint8Array, nodeId?: string, text?: string): Promise<AssetRef> {
    if (!this.assets) throw new AssetStoreError("this agent has no asset store (nw_assets)");
    const max = this.maxBytes;
    if (bytes.byteLength > max)
      throw new AssetStoreError(
        `an output of ${bytes.byteLength} bytes${nodeId ? ` of node "${nodeId}"` : ""} is over the ${max}-byte asset limit`,
      );
    if (!this.budget.take(bytes.byteLength))
      throw new AssetStoreError(
        `storing ${bytes.byteLength} more bytes${nodeId ? ` of node "${nodeId}"` : ""} would take this job's assets over ${this.budget.maxBytes} bytes (jobAssetMaxBytes)`,
      );
    const id = newId();
    const contentType = text ?? sniffContentType(bytes);
    const fileName = `${nodeId ?? "output"}-${id}${text ? ".txt" : ""}`;
    const meta = { fileName, contentType, ...(nodeId ? { nodeId } : {}) };
    try {
      const ref = assetRef(id, contentType, await this.assets.put(id, bytes, meta));
      return text ? { ...ref, type: "text" } : ref;
    } catch (err) {
      this.budget.giveBack(bytes.byteLength);
      throw new AssetStoreError(
        `could not store ${bytes.byteLength} bytes${nodeId ? ` of node "${nodeId}"` : ""} as an asset: ${(err as Error).message}`,
      );
    }
  }
}
