/**
 * The assets API (design §6): upload, list, describe, download and delete files in `nw_assets`, NodeTool's
 * `/api/assets` where it has the route. Jobs' large binary outputs land in the same bucket (the agent puts them
 * there) and are read the same way.
 *
 * Uploads are streamed into the object store as they arrive (a raw body: the request's Content-Type is the
 * asset's), or, for NodeTool's multipart form (`file`, and optionally `json` with `name`, `content_type`,
 * `workflow_id`), held whole and split by uWS's own multipart parser. Downloads stream chunk by chunk at the
 * client's pace with the object's digest as ETag.
 */
import type { HttpResponse } from "uWebSockets.js";
import { createHash } from "node:crypto";
import type { Consumer, JetStreamClient } from "@nats-io/jetstream";
import type { ObjectInfo, ObjectStore } from "@nats-io/obj";
import { ASSET_META, ErrorCode, OBJ_ASSETS, assetInfo, isAssetId, newId, subjects, type AssetInfo } from "../protocol/index.js";
import { GatewayError, badRequest, notFound } from "./errors.js";
import { bodyStream, readBody, type Reply, type Req } from "./http.js";

/** uWS's multipart parser (absent from its pure-JS fallback). */
export type GetParts = (body: ArrayBuffer | Uint8Array, contentType: string) => { name: string; data: ArrayBuffer; filename?: string; type?: string }[] | undefined;

/** `type/subtype` with RFC 7230 token characters, parameters allowed. */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;.*)?$/;
const MAX_NAME_CHARS = 255;

function mediaType(raw: string | undefined, what: string): string {
  const v = (raw ?? "").trim();
  if (v === "") return "application/octet-stream";
  if (!MEDIA_TYPE.test(v) || v.length > 200) throw badRequest(`${what} must be a media type like image/png, got ${JSON.stringify(v.slice(0, 80))}`);
  return v;
}

function assetName(raw: unknown, fallback: string): string {
  if (raw === undefined || raw === null || raw === "") return fallback;
  if (typeof raw !== "string") throw badRequest(`"name" must be a string`);
  // eslint-disable-next-line no-control-regex
  if (raw.length > MAX_NAME_CHARS || /[\u0000-\u001f\u007f]/.test(raw)) throw badRequest(`"name" must be at most ${MAX_NAME_CHARS} characters without control characters`);
  return raw;
}

function optionalId(raw: unknown, key: string): string | undefined {
  if (raw === undefined || raw === null || raw === "") return undefined;
  if (typeof raw !== "string" || raw.length > 128 || !/^[A-Za-z0-9_.:-]+$/.test(raw)) throw badRequest(`"${key}" must be an id (letters, digits, _ . : -)`);
  return raw;
}

function checkedAssetId(raw: string): string {
  if (!isAssetId(raw)) throw notFound(`asset ${JSON.stringify(raw.slice(0, 64))}`);
  return raw;
}

/** `filename*=` (RFC 6266 / 5987) so any name survives, plus an ASCII `filename=` for old clients. */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `inline; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
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
  constructor(
    private readonly js: JetStreamClient,
    private readonly os: ObjectStore,
    private readonly maxAssetBytes: number,
    private readonly getParts: GetParts | null,
  ) {}

  /** `POST /api/assets`: 201 with the stored asset. */
  async upload(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > this.maxAssetBytes) {
      throw new GatewayError(ErrorCode.GW_ERR_BODY_TOO_LARGE, `upload of ${declared} bytes exceeds ${this.maxAssetBytes}`);
    }
    if (declared !== undefined && Number(declared) === 0) throw badRequest("empty upload: send the file as the body, or as the \"file\" part of a multipart form");
    const contentType = req.headers["content-type"] ?? "";
    const id = newId();
    const base = {
      name: req.query.get("name") ?? undefined,
      workflow_id: req.query.get("workflow_id") ?? undefined,
    };
    let info: ObjectInfo;
    if (/^multipart\/form-data/i.test(contentType)) {
      if (!this.getParts) throw new GatewayError(ErrorCode.GW_ERR_UNSUPPORTED_MEDIA, "multipart uploads need the native uWebSockets.js build; send the file as the raw body");
      const body = await readBody(res, reply, this.maxAssetBytes);
      const parts = this.getParts(body, contentType);
      if (!parts) throw badRequest("malformed multipart body");
      const file = parts.find((p) => p.name === "file") ?? parts.find((p) => p.filename !== undefined);
      if (!file) throw badRequest('multipart upload needs a "file" part');
      if (file.data.byteLength === 0) throw badRequest('the "file" part is empty');
      const jsonPart = parts.find((p) => p.name === "json");
      let fields: Record<string, unknown> = {};
      if (jsonPart) {
        try {
          const v: unknown = JSON.parse(Buffer.from(jsonPart.data).toString("utf8"));
          if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
          fields = v as Record<string, unknown>;
        } catch (err) {
          throw badRequest(`the "json" part must be a JSON object: ${(err as Error).message}`);
        }
      }
      const meta = this.meta(id, {
        name: assetName(fields.name ?? base.name ?? file.filename, id),
        contentType: mediaType(typeof fields.content_type === "string" ? fields.content_type : file.type, '"content_type"'),
        workflowId: optionalId(fields.workflow_id ?? base.workflow_id, "workflow_id"),
      });
      info = await this.os.putBlob(meta, new Uint8Array(file.data));
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
        throw badRequest("empty upload: send the file as the body, or as the \"file\" part of a multipart form");
      }
    }
    reply.json(201, assetInfo(info));
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

  /** `GET /api/assets`: newest first, filtered by `job_id`, `workflow_id`, `content_type` (a prefix: `image/`), paged by `cursor`. */
  async list(req: Req, reply: Reply, limit: number): Promise<void> {
    const jobId = req.query.get("job_id");
    const workflowId = req.query.get("workflow_id");
    const ct = req.query.get("content_type");
    const cursor = req.query.get("cursor");
    const all = (await this.os.list()).filter((o) => !o.deleted && isAssetId(o.name));
    let assets: AssetInfo[] = all.map(assetInfo);
    if (jobId) assets = assets.filter((a) => a.job_id === jobId);
    if (workflowId) assets = assets.filter((a) => a.workflow_id === workflowId);
    if (ct) assets = assets.filter((a) => a.content_type.startsWith(ct));
    // Ids are time-ordered: newest first is a reverse sort by id, and a cursor is the last id of a page.
    assets.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    if (cursor) assets = assets.filter((a) => a.id < cursor);
    const page = assets.slice(0, limit);
    reply.json(200, { assets: page, next: assets.length > limit ? page[page.length - 1]!.id : null });
  }

  /** `GET /api/assets/:id`. */
  async describe(id: string, reply: Reply): Promise<void> {
    reply.json(200, await this.info(id));
  }

  /** `GET /api/assets/:id/content`: the bytes, with the digest as ETag (a matching If-None-Match gets 304). */
  async download(id: string, req: Req, reply: Reply): Promise<void> {
    const { info, a, etag, headers } = await this.served(id);
    if (req.headers["if-none-match"] === etag) {
      reply.empty(304, { etag });
      return;
    }
    await reply.sendBytes(200, a.content_type, a.size, objectBytes(this.js, info), headers);
  }

  /** `HEAD /api/assets/:id/content`: what the GET would answer (length, type, ETag), without the bytes. */
  async head(id: string, req: Req, reply: Reply): Promise<void> {
    const { a, etag, headers } = await this.served(id);
    if (req.headers["if-none-match"] === etag) reply.empty(304, { etag });
    else reply.head(200, a.size, { "content-type": a.content_type, ...headers });
  }

  /** The stored object behind a download, and the headers its answer carries. */
  private async served(id: string): Promise<{ info: ObjectInfo; a: AssetInfo; etag: string; headers: Record<string, string> }> {
    const checked = checkedAssetId(id);
    const info = await this.os.info(checked);
    if (!info || info.deleted) throw notFound(`asset ${checked}`);
    const a = assetInfo(info);
    const etag = `"${a.digest}"`;
    return { info, a, etag, headers: { etag, "cache-control": "private, max-age=0, must-revalidate", "content-disposition": contentDisposition(a.name), "x-content-type-options": "nosniff" } };
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
