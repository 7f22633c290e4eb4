/**
 * Assets: files uploaded by clients and files produced by
 * jobs, kept in the NATS object store under their asset id. What travels in events and job records instead of a
 * large binary value is an `AssetRef` (NodeTool's media reference shape: `type`, `uri` = `asset://<id>`,
 * `asset_id`), and the REST API describes an asset with `AssetInfo` (NodeTool's Asset fields where it has them).
 *
 * An object's metadata (`metadata` of its object-store entry, strings only) carries what `AssetInfo` needs
 * beyond the store's own size, digest and time; the keys are `ASSET_META`.
 */

export const ASSETS_DEFAULTS = {
  /** How long assets are kept after they were written (the bucket's TTL): the job records' retention. */
  maxAgeMs: 7 * 24 * 3600_000,
  /** Largest upload the gateway accepts. */
  maxUploadBytes: 256 * 1024 * 1024,
  /** What the asset store holds at most (`assetsMaxBytes`). */
  storeMaxBytes: 16 * 1024 * 1024 * 1024,
  /** The most one job's outputs may store as assets, all together (an agent's `jobAssetMaxBytes`). */
  jobMaxBytes: 4 * 1024 * 1024 * 1024,
  /**
   * Binary values up to this size stay in the event and the record; larger ones become assets. 256 KiB keeps a
   * thumbnail inline and a full-size image (or anything near NATS's 1 MiB message limit) out of the events.
   */
  inlineMaxBytes: 256 * 1024,
} as const;

/** Asset ids are `newId()`s: lower-case Crockford base32, 26 characters. */
const ASSET_ID = /^[0-9a-hjkmnp-tv-z]{26}$/;

export function isAssetId(s: string): boolean {
  return ASSET_ID.test(s);
}

const URI_PREFIX = "asset://";

export function assetUri(id: string): string {
  return URI_PREFIX + id;
}

/** The asset id of an `asset://<id>` URI, or null. */
export function assetIdOfUri(uri: string): string | null {
  if (!uri.startsWith(URI_PREFIX)) return null;
  const id = uri.slice(URI_PREFIX.length);
  return isAssetId(id) ? id : null;
}

/**
 * The ids of the assets a value names (`asset://<id>` strings, `asset_id` fields), at any depth up to 32, at most
 * `max` of them: what a job's graph and params let its agent read.
 */
export function assetIdsIn(value: unknown, max = 10_000): string[] {
  const found = new Set<string>();
  const walk = (v: unknown, depth: number): void => {
    if (found.size >= max || depth > 32) return;
    if (typeof v === "string") {
      const id = v.startsWith(URI_PREFIX) ? assetIdOfUri(v) : null;
      if (id) found.add(id);
      return;
    }
    if (v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x, depth + 1);
      return;
    }
    const o = v as Record<string, unknown>;
    if (typeof o.asset_id === "string" && isAssetId(o.asset_id)) found.add(o.asset_id);
    for (const k in o) walk(o[k], depth + 1);
  };
  walk(value, 0);
  return [...found];
}

/** NodeTool's reference types by media kind; anything else is a plain `asset`. */
/** What a reference holds; `text` is an output's long text stored as an asset (NodeTool's TextRef). */
export type AssetRefType = "image" | "audio" | "video" | "document" | "text" | "asset";

export function refTypeOf(contentType: string): AssetRefType {
  const top = contentType.split("/")[0]!.toLowerCase();
  if (top === "image" || top === "audio" || top === "video") return top;
  if (contentType === "application/pdf" || top === "text") return "document";
  return "asset";
}

/** Media types by file extension: a file's type when it is uploaded, an asset's extension when it is saved. */
export const MEDIA_TYPES: Readonly<Record<string, string>> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  gif: "image/gif",
  wav: "audio/wav",
  mp3: "audio/mpeg",
  ogg: "audio/ogg",
  flac: "audio/flac",
  m4a: "audio/mp4",
  aac: "audio/aac",
  mp4: "video/mp4",
  mov: "video/quicktime",
  webm: "video/webm",
  mkv: "video/x-matroska",
  avif: "image/avif",
  tiff: "image/tiff",
  tif: "image/tiff",
  bmp: "image/bmp",
  pdf: "application/pdf",
  txt: "text/plain",
  json: "application/json",
};

/** The usual extension of `contentType` (the first in `MEDIA_TYPES`), else `bin`. */
export function extensionOf(contentType: string): string {
  return Object.entries(MEDIA_TYPES).find(([, t]) => t === contentType)?.[0] ?? "bin";
}

/** What an event or a record carries in place of a binary value that went to the asset store. */
export interface AssetRef {
  type: AssetRefType;
  uri: string;
  asset_id: string;
  content_type: string;
  size: number;
}

export function assetRef(id: string, contentType: string, size: number): AssetRef {
  return { type: refTypeOf(contentType), uri: assetUri(id), asset_id: id, content_type: contentType, size };
}

/** Metadata keys of an asset's object-store entry. */
export const ASSET_META = {
  contentType: "content_type",
  name: "name",
  jobId: "job_id",
  workflowId: "workflow_id",
  nodeId: "node_id",
  createdAt: "created_at",
} as const;

/** An asset as the REST API shows it. */
export interface AssetInfo {
  id: string;
  name: string;
  content_type: string;
  size: number;
  /** The object store's digest (`SHA-256=<base64url>`); also the download's ETag. */
  digest: string;
  created_at: string;
  job_id: string | null;
  workflow_id: string | null;
  node_id: string | null;
  /** Where the bytes are: `GET` it (relative to the gateway). */
  get_url: string;
  uri: string;
}

/** What `assetInfo` reads from an object-store entry (its `ObjectInfo` fits). */
export interface StoredObject {
  name: string;
  size: number;
  digest: string;
  mtime: string;
  metadata?: Record<string, string>;
}

/**
 * `type/subtype` in RFC 7230 token characters, then parameters of printable ASCII: what may be written into a
 * `Content-Type` header. A line break would end the header block early (response splitting).
 */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[\x20-\x7e\t]*)?$/;

/** Whether `v` is a media type a response header may carry (at most 200 characters). */
export function isMediaType(v: string): boolean {
  return v.length <= 200 && MEDIA_TYPE.test(v);
}

/** An asset as the API shows it; a stored media type no header may carry (an old entry) reads as octet-stream. */
export function assetInfo(o: StoredObject): AssetInfo {
  const m = o.metadata ?? {};
  return {
    id: o.name,
    name: m[ASSET_META.name] || o.name,
    content_type: isMediaType(m[ASSET_META.contentType] ?? "")
      ? m[ASSET_META.contentType]!
      : "application/octet-stream",
    size: o.size,
    digest: o.digest,
    created_at: m[ASSET_META.createdAt] || o.mtime,
    job_id: m[ASSET_META.jobId] || null,
    workflow_id: m[ASSET_META.workflowId] || null,
    node_id: m[ASSET_META.nodeId] || null,
    get_url: `/api/assets/${o.name}/content`,
    uri: assetUri(o.name),
  };
}

/** The property types of NodeTool's media references (ImageRef, AudioRef, VideoRef, DocumentRef). */
export const MEDIA_REF_TYPES: ReadonlySet<string> = new Set(["image", "audio", "video", "document"]);

/** A media reference as a job gets it: where the bytes are, and the asset when they are one of ours. */
export interface MediaRef {
  type: string;
  uri: string;
  asset_id?: string;
}

/**
 * A param for a media input (`type` is `image`, `audio`, `video` or `document`) as a reference: an `asset://<id>`,
 * `http(s)://` or `data:` URI, given as the string or as `{uri, asset_id?}` (NodeTool's shape; an `asset_id`
 * alone means that asset). Returns null when the value is none of these.
 */
export function mediaRefOf(value: unknown, type: string): MediaRef | null {
  let uri: unknown = value;
  let assetId: unknown;
  if (value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array)) {
    const o = value as Record<string, unknown>;
    uri = o.uri;
    assetId = o.asset_id;
    if ((uri === undefined || uri === "") && typeof assetId === "string") uri = assetUri(assetId);
  }
  if (typeof uri !== "string") return null;
  const id = assetIdOfUri(uri);
  if (id !== null)
    return assetId === undefined || assetId === null || assetId === id ? { type, uri, asset_id: id } : null;
  if (assetId !== undefined && assetId !== null) return null;
  return /^(https?:\/\/|data:)/i.test(uri) ? { type, uri } : null;
}
