/**
 * The assets API: upload, list, describe, download and delete files in `nw_assets`, NodeTool's
 * `/api/assets` where it has the route. Jobs' large binary outputs land in the same bucket (the agent puts them
 * there) and are read the same way.
 *
 * Uploads are streamed into the object store as they arrive: a raw body (the request's Content-Type is the
 * asset's), or NodeTool's multipart form (`file`, and optionally `json` with `name`, `content_type`,
 * `workflow_id`), whose file part is cut out of the body as it streams. Downloads stream chunk by chunk at the
 * client's pace with the object's digest as ETag.
 */
import type { HttpResponse } from "uWebSockets.js";
import { createHash } from "node:crypto";
import type { Consumer, JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { ObjectInfo, ObjectStore } from "@nats-io/obj";
import {
  ASSET_META,
  ErrorCode,
  OBJ_ASSETS,
  assetInfo,
  isAssetId,
  isMediaType,
  newId,
  subjects,
  type AssetInfo,
} from "../protocol/index.js";
import { GatewayError, badRequest, notFound } from "./errors.js";
import { bodyStream, etagMatches, type Reply, type Req } from "./http.js";

/** uWS's multipart parser (absent from its pure-JS fallback); no longer used: forms are parsed as they stream. */
export type GetParts = (
  body: ArrayBuffer | Uint8Array,
  contentType: string,
) => { name: string; data: ArrayBuffer; filename?: string; type?: string }[] | undefined;

const MAX_NAME_CHARS = 255;

function mediaType(raw: string | undefined, what: string): string {
  const v = (raw ?? "").trim();
  if (v === "") return "application/octet-stream";
  if (!isMediaType(v))
    throw badRequest(`${what} must be a media type like image/png, got ${JSON.stringify(v.slice(0, 80))}`);
  return v;
}

function assetName(raw: unknown, fallback: string): string {
  if (raw === undefined || raw === null || raw === "") return fallback;
  if (typeof raw !== "string") throw badRequest(`"name" must be a string`);
  // eslint-disable-next-line no-control-regex
  if (raw.length > MAX_NAME_CHARS || /[\u0000-\u001f\u007f]/.test(raw))
    throw badRequest(`"name" must be at most ${MAX_NAME_CHARS} characters without control characters`);
  return raw;
}

function optionalId(raw: unknown, key: string): string | undefined {
  if (raw === undefined || raw === null || raw === "") return undefined;
  if (typeof raw !== "string" || raw.length > 128 || !/^[A-Za-z0-9_.:-]+$/.test(raw))
    throw badRequest(`"${key}" must be an id (letters, digits, _ . : -)`);
  return raw;
}

function checkedAssetId(raw: string): string {
  if (!isAssetId(raw)) throw notFound(`asset ${JSON.stringify(raw.slice(0, 64))}`);
  return raw;
}

/** `filename*=` (RFC 6266 / 5987) so any name survives, plus an ASCII `filename=` for old clients. */
function contentDisposition(name: string, inline: boolean): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  // A lone surrogate (JSON can carry one) would make encodeURIComponent throw: it becomes U+FFFD.
  const utf8 = encodeURIComponent(wellFormed(name));
  return `${inline ? "inline" : "attachment"}; filename="${ascii}"; filename*=UTF-8''${utf8}`;
}

const wellFormed = (s: string): string =>
  s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");

/**
 * Media a browser only displays (no script, no links to follow): served inline. Anything else (HTML, SVG, XML,
 * PDF, octet-stream) is an attachment, so an uploaded page never runs with the gateway's origin.
 */
export function isPassiveMedia(contentType: string): boolean {
  const t = contentType.split(";")[0]!.trim().toLowerCase();
  if (t.startsWith("image/")) return t !== "image/svg+xml";
  return t.startsWith("audio/") || t.startsWith("video/") || t === "text/plain" || t === "application/json";
}

/** Largest part header block, and largest `json` (or other non-file) part held. */
const MAX_PART_HEADER_BYTES = 16 * 1024;
const MAX_FIELD_BYTES = 64 * 1024;

/** One thing a streamed multipart body yields: a part's start, some of its bytes, its end. */
type PartEvent =
  | { kind: "part"; name: string; filename?: string; type?: string }
  | { kind: "data"; bytes: Uint8Array }
  | { kind: "end" };

/** The form's boundary; one longer than RFC 2046's 70 characters is refused saying so (it was cut, then missed). */
function boundaryOf(contentType: string): string {
  const m = /;\s*boundary=(?:"([^"]*)"|([^;\s]*))/i.exec(contentType);
  const b = m?.[1] ?? m?.[2];
  if (!b) throw badRequest("multipart upload without a boundary");
  if (b.length > 70) throw badRequest(`the multipart boundary is ${b.length} characters; RFC 2046 allows at most 70`);
  return b;
}

function partHeaders(block: string): { name: string; filename?: string; type?: string } {
  let name = "";
  let filename: string | undefined;
  let type: string | undefined;
  for (const line of block.split("\r\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    const key = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    if (key === "content-type") type = value;
    if (key !== "content-disposition") continue;
    name = /;\s*name="([^"]*)"/i.exec(value)?.[1] ?? /;\s*name=([^;\s]+)/i.exec(value)?.[1] ?? "";
    filename = /;\s*filename="([^"]*)"/i.exec(value)?.[1] ?? /;\s*filename=([^;\s]+)/i.exec(value)?.[1];
  }
  return { name, ...(filename !== undefined ? { filename } : {}), ...(type !== undefined ? { type } : {}) };
}

/**
 * A `multipart/form-data` body (RFC 7578) as it streams: parts' headers, then their bytes as they come, holding
 * at most one chunk and a delimiter's length. Throws `badRequest` on a body that is not a whole form.
 */
async function* multipartEvents(body: ReadableStream<Uint8Array>, boundary: string): AsyncGenerator<PartEvent> {
  const delim = Buffer.from(`\r\n--${boundary}`);
  const crlf2 = Buffer.from("\r\n\r\n");
  // The first delimiter has no CRLF before it: pretend it had.
  let buf: Buffer = Buffer.from("\r\n");
  let state: "preamble" | "after-delim" | "headers" | "body" = "preamble";
  let closed = false;
  const reader = body.getReader();
  let eof = false;
  try {
    while (!closed) {
      let progressed = true;
      while (progressed && !closed) {
        progressed = false;
        if (state === "preamble" || state === "body") {
          const at = buf.indexOf(delim);
          if (at >= 0) {
            if (state === "body" && at > 0) yield { kind: "data", bytes: buf.subarray(0, at) };
            if (state === "body") yield { kind: "end" };
            buf = buf.subarray(at + delim.length);
            state = "after-delim";
            progressed = true;
          } else if (buf.length >= delim.length) {
            // Keep what could be the start of a delimiter split across chunks.
            const keep = buf.length - (delim.length - 1);
            if (state === "body") yield { kind: "data", bytes: buf.subarray(0, keep) };
            buf = buf.subarray(keep);
          }
        } else if (state === "after-delim") {
          if (buf.length < 2) break;
          if (buf[0] === 0x2d && buf[1] === 0x2d) {
            closed = true;
          } else {
            // Transport padding (spaces, tabs) may precede the CRLF.
            const eol = buf.indexOf("\r\n");
            if (eol < 0) {
              if (buf.length > 256) throw badRequest("malformed multipart body");
              break;
            }
            buf = buf.subarray(eol + 2);
            state = "headers";
            progressed = true;
          }
        } else if (state === "headers") {
          if (buf.length < 2) break;
          // No headers at all: the blank line comes at once.
          const empty = buf[0] === 0x0d && buf[1] === 0x0a;
          const end = empty ? 0 : buf.indexOf(crlf2);
          if (end < 0) {
            if (buf.length > MAX_PART_HEADER_BYTES) throw badRequest("a multipart part's headers are too large");
            break;
          }
          yield { kind: "part", ...partHeaders(buf.subarray(0, end).toString("utf8")) };
          buf = buf.subarray(empty ? 2 : end + 4);
          state = "body";
          progressed = true;
        }
      }
      if (closed) break;
      if (eof) throw badRequest("malformed multipart body: it ends before its closing boundary");
      const r = await reader.read();
      if (r.done) eof = true;
      else if (buf.length === 0) buf = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      else buf = Buffer.concat([buf, r.value]);
    }
    // The epilogue is ignored, but read: the body must be taken whole before the answer.
    while (!eof) eof = (await reader.read()).done;
  } finally {
    if (!eof) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** Chunks a download asks the store for at a time (128 KiB each): what a client that stops reading holds here. */
const CHUNKS_AHEAD = 2;
/** How long the store may take to send the next chunks before the download is given up (the client sees it cut). */
const CHUNK_WAIT_MS = 10_000;

/**
 * An object's bytes as a stream that reads the store only as it is read: an ordered pull consumer on the object's
 * chunks, `CHUNKS_AHEAD` at a time. (The object store's own `get` pushes every chunk at once, without flow
 * control towards its reader, so a client that stopped reading a large asset held all of it in the gateway's
 * memory.) The bytes are checked against the object's digest as they pass; a mismatch or a store that stops
 * answering ends the stream with an error, which cuts the response short rather than complete a wrong body.
 */
function objectBytes(js: JetStreamClient, info: ObjectInfo): ReadableStream<Uint8Array> {
  const subject = subjects.objectChunks(OBJ_ASSETS, info.nuid);
  const sha = createHash("sha256");
  let consumer: Consumer | null = null;
  let left = info.chunks;
  // An ordered consumer lingers on the server for minutes once unused: each download removes its own.
  const done = () => void consumer?.delete().catch(() => undefined);
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          consumer ??= await js.consumers.get(`OBJ_${OBJ_ASSETS}`, { filter_subjects: subject });
          const batch = await consumer.fetch({ max_messages: Math.min(CHUNKS_AHEAD, left), expires: CHUNK_WAIT_MS });
          let got = 0;
          for await (const m of batch) {
            got++;
            left--;
            sha.update(m.data);
            if (left === 0) {
              // Checked before the last chunk goes out: with it the response would look complete.
              done();
              const want = Buffer.from(info.digest.replace(/^SHA-256=/, "").replace(/=+$/, ""), "base64url");
              if (!sha.digest().equals(want)) throw new Error(`asset ${info.name} does not match its digest`);
              if (m.data.byteLength > 0) controller.enqueue(m.data);
              controller.close();
              return;
            }
            if (m.data.byteLength > 0) controller.enqueue(m.data);
          }
          if (got === 0) throw new Error(`the asset store sent nothing for ${CHUNK_WAIT_MS / 1000} s`);
        } catch (err) {
          done();
          controller.error(err);
        }
      },
      cancel: done,
    },
    // Nothing read ahead beyond the batch in hand.
    { highWaterMark: 0 },
  );
}

export class AssetsApi {
  private jsm: JetStreamManager | null = null;

  constructor(
    private readonly js: JetStreamClient,
    private readonly os: ObjectStore,
    private readonly maxAssetBytes: number,
    _getParts: GetParts | null,
    /** Objects one listing call reads at most (`listScanMaxRecords`). */
    private readonly scanMax = 2_000,
  ) {}

  /** `POST /api/assets`: 201 with the stored asset. */
  async upload(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > this.maxAssetBytes) {
      throw new GatewayError(
        ErrorCode.GW_ERR_BODY_TOO_LARGE,
        `upload of ${declared} bytes exceeds ${this.maxAssetBytes}`,
      );
    }
    if (declared !== undefined && Number(declared) === 0)
      throw badRequest('empty upload: send the file as the body, or as the "file" part of a multipart form');
    const contentType = req.headers["content-type"] ?? "";
    const id = newId();
    const base = {
      name: req.query.get("name") ?? undefined,
      workflow_id: req.query.get("workflow_id") ?? undefined,
    };
    let info: ObjectInfo;
    if (/^multipart\/form-data/i.test(contentType)) {
      // Streamed: started in this tick (uWS hands the body only to a handler that asks for it at once).
      const stream = bodyStream(res, reply, this.maxAssetBytes);
      info = await this.uploadForm(id, multipartEvents(stream, boundaryOf(contentType)), base);
    } else {
      const meta = this.meta(id, {
        name: assetName(base.name, id),
        contentType: mediaType(contentType, "Content-Type"),
        workflowId: optionalId(base.workflow_id, "workflow_id"),
      });
      // Streamed: started in this tick (uWS hands the body only to a handler that asks for it at once).
      const stream = bodyStream(res, reply, this.maxAssetBytes);
      info = await this.os.put(meta, stream);
      if (info.size === 0) {
        await this.os.delete(id).catch(() => undefined);
        throw badRequest('empty upload: send the file as the body, or as the "file" part of a multipart form');
      }
    }
    reply.json(201, assetInfo(info));
  }

  /**
   * The form's `file` part (else the first with a filename) goes into the store as it streams; a `json` part
   * gives its name, type and workflow, and one that comes after the file updates the stored metadata.
   */
  private async uploadForm(
    id: string,
    events: AsyncGenerator<PartEvent>,
    base: { name?: string; workflow_id?: string },
  ): Promise<ObjectInfo> {
    let fields: Record<string, unknown> | null = null;
    let stored: ObjectInfo | null = null;
    let file: { filename?: string; type?: string } | null = null;
    const metaNow = () =>
      this.meta(id, {
        name: assetName(fields?.name ?? base.name ?? file?.filename, id),
        contentType: mediaType(
          typeof fields?.content_type === "string" ? fields.content_type : file?.type,
          '"content_type"',
        ),
        workflowId: optionalId(fields?.workflow_id ?? base.workflow_id, "workflow_id"),
      });
    try {
      for (let e = await events.next(); !e.done; e = await events.next()) {
        const ev = e.value;
        if (ev.kind !== "part") continue;
        if (stored === null && (ev.name === "file" || ev.filename !== undefined)) {
          file = ev;
          const meta = metaNow();
          // The part's bytes, pulled from the body as the store takes them.
          const part = new ReadableStream<Uint8Array>(
            {
              async pull(c) {
                const n = await events.next();
                if (n.done || n.value.kind !== "data") c.close();
                else c.enqueue(n.value.bytes);
              },
            },
            { highWaterMark: 0 },
          );
          stored = await this.os.put(meta, part);
          if (stored.size === 0) throw badRequest('the "file" part is empty');
          continue;
        }
        // Another part: held (a field) or skipped, within bounds.
        const chunks: Uint8Array[] = [];
        let size = 0;
        for (let n = await events.next(); !n.done && n.value.kind === "data"; n = await events.next()) {
          size += n.value.bytes.byteLength;
          if (ev.name === "json" && size <= MAX_FIELD_BYTES) chunks.push(Buffer.from(n.value.bytes));
        }
        if (ev.name !== "json") continue;
        if (size > MAX_FIELD_BYTES) throw badRequest(`the "json" part must be at most ${MAX_FIELD_BYTES} bytes`);
        try {
          const v: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
          fields = v as Record<string, unknown>;
        } catch (err) {
          throw badRequest(`the "json" part must be a JSON object: ${(err as Error).message}`);
        }
        if (stored !== null) {
          await this.os.update(id, metaNow());
          stored = (await this.os.info(id)) ?? stored;
        }
      }
      if (stored === null) throw badRequest('multipart upload needs a "file" part');
      return stored;
    } catch (err) {
      // Nothing of a refused form stays: not the object, not its chunks.
      await this.os.delete(id).catch(() => undefined);
      await events.return(undefined).catch(() => undefined);
      throw err;
    }
  }

  private meta(id: string, m: { name: string; contentType: string; workflowId?: string }) {
    const metadata: Record<string, string> = {
      [ASSET_META.name]: m.name,
      [ASSET_META.contentType]: m.contentType,
      [ASSET_META.createdAt]: new Date().toISOString(),
    };
    if (m.workflowId) metadata[ASSET_META.workflowId] = m.workflowId;
    return { name: id, metadata };
  }

  /**
   * `GET /api/assets`: newest first, filtered by `job_id`, `workflow_id`, `content_type` (a prefix: `image/`), paged
   * by `cursor`. Ids come from the bucket's subject index (names only); at most `max(limit, scanMax)` objects are
   * read per call, so a filter that matches little answers a short page whose `next` continues the scan.
   */
  async list(req: Req, reply: Reply, limit: number): Promise<void> {
    const jobId = optionalId(req.query.get("job_id"), "job_id") ?? null;
    const workflowId = optionalId(req.query.get("workflow_id"), "workflow_id") ?? null;
    const ct = req.query.get("content_type");
    const cursor = req.query.get("cursor");
    this.jsm ??= await this.js.jetstreamManager(false);
    const prefix = `$O.${OBJ_ASSETS}.M.`;
    const index = await this.jsm.streams.info(`OBJ_${OBJ_ASSETS}`, { subjects_filter: `${prefix}>` });
    // Ids are time-ordered: newest first is a reverse sort by id, and a cursor is the last id of a page.
    const ids = Object.keys(index.state.subjects ?? {})
      .map((subj) => Buffer.from(subj.slice(prefix.length), "base64url").toString("utf8"))
      .filter((id) => isAssetId(id) && (!cursor || id < cursor))
      .sort()
      .reverse();
    const page: AssetInfo[] = [];
    let next: string | null = null;
    let read = 0;
    const budget = Math.max(limit, this.scanMax);
    for (const id of ids) {
      if (page.length === limit || read === budget) {
        next = page.length === limit ? page[page.length - 1]!.id : ids[read - 1]!;
        break;
      }
      read++;
      const o = await this.os.info(id);
      if (!o || o.deleted) continue;
      const a = assetInfo(o);
      if (jobId && a.job_id !== jobId) continue;
      if (workflowId && a.workflow_id !== workflowId) continue;
      if (ct && !a.content_type.startsWith(ct)) continue;
      page.push(a);
    }
    reply.json(200, { assets: page, next });
  }

  /** `GET /api/assets/:id`. */
  async describe(id: string, reply: Reply): Promise<void> {
    reply.json(200, await this.info(id));
  }

  /**
   * `GET /api/assets/:id/content`: the bytes, with the digest as ETag (a matching If-None-Match gets 304), or one
   * range of them (206) as a video player or a resumed download asks. A range is read from the object's start and
   * is not checked against the digest (only the whole can be).
   */
  async download(id: string, req: Req, reply: Reply): Promise<void> {
    const { info, a, etag, headers } = await this.served(id);
    if (etagMatches(req.headers["if-none-match"], etag)) {
      reply.empty(304, { etag });
      return;
    }
    const range = byteRange(req.headers.range, a.size, req.headers["if-range"], etag);
    if (range === "unsatisfiable") {
      reply.empty(416, { ...headers, "content-range": `bytes */${a.size}` });
      return;
    }
    if (range === null) {
      await reply.sendBytes(200, a.content_type, a.size, objectBytes(this.js, info), headers);
      return;
    }
    const length = range.end - range.start + 1;
    const part = byteSlice(objectBytes(this.js, info), range.start, length);
    const contentRange = `bytes ${range.start}-${range.end}/${a.size}`;
    await reply.sendBytes(206, a.content_type, length, part, { ...headers, "content-range": contentRange });
  }

  /** `HEAD /api/assets/:id/content`: what the GET would answer (length, type, ETag), without the bytes. */
  async head(id: string, req: Req, reply: Reply): Promise<void> {
    const { a, etag, headers } = await this.served(id);
    if (etagMatches(req.headers["if-none-match"], etag)) reply.empty(304, { etag });
    else reply.head(200, a.size, { "content-type": a.content_type, ...headers });
  }

  /** The stored object behind a download, and the headers its answer carries. */
  private async served(
    id: string,
  ): Promise<{ info: ObjectInfo; a: AssetInfo; etag: string; headers: Record<string, string> }> {
    const checked = checkedAssetId(id);
    const info = await this.os.info(checked);
    if (!info || info.deleted) throw notFound(`asset ${checked}`);
    const a = assetInfo(info);
    const etag = `"${a.digest}"`;
    const headers = {
      etag,
      "cache-control": "private, max-age=0, must-revalidate",
      "content-disposition": contentDisposition(a.name, isPassiveMedia(a.content_type)),
      "x-content-type-options": "nosniff",
      // Whatever a browser makes of the bytes, they get no scripts, no origin, no forms.
      "content-security-policy": "sandbox",
      "accept-ranges": "bytes",
    };
    return { info, a, etag, headers };
  }

  /** `DELETE /api/assets/:id`: 204. */
  async remove(id: string, reply: Reply): Promise<void> {
    const a = await this.info(id);
    await this.os.delete(a.id);
    reply.empty(204);
  }

  private async info(raw: string): Promise<AssetInfo> {
    const id = checkedAssetId(raw);
    const o = await this.os.info(id);
    if (!o || o.deleted) throw notFound(`asset ${id}`);
    return assetInfo(o);
  }
}

/**
 * The one byte range a `Range` field asks of `size` bytes (RFC 9110 §14): `bytes=a-b`, `bytes=a-` or `bytes=-n`.
 * Null for the whole body: no field, one this server does not serve (several ranges, another unit, malformed),
 * or an `If-Range` naming other bytes. "unsatisfiable" when it starts past the end.
 */
export function byteRange(
  field: string | undefined,
  size: number,
  ifRange: string | undefined,
  etag: string,
): { start: number; end: number } | "unsatisfiable" | null {
  if (field === undefined || (ifRange !== undefined && ifRange.trim() !== etag)) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(field);
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    return suffix === 0 || size === 0 ? "unsatisfiable" : { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size) return "unsatisfiable";
  return end < start ? null : { start, end };
}

/** `length` bytes of `source` from byte `start`; the rest of the source is cancelled, not read. */
function byteSlice(source: ReadableStream<Uint8Array>, start: number, length: number): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let skip = start;
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        const from = Math.min(skip, value.byteLength);
        skip -= from;
        if (from === value.byteLength) continue;
        const piece = value.subarray(from, from + left);
        left -= piece.byteLength;
        controller.enqueue(piece);
        if (left === 0) {
          void reader.cancel().catch(() => undefined);
          controller.close();
        }
        return;
      }
    },
    cancel: (why) => reader.cancel(why),
  });
}
