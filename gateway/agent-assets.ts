/**
 * What agents may do with assets, decided here: agents cannot read `nw_assets` nor write its entries, and ask a
 * gateway (on their records subject) for both.
 *
 *   - read (`asset.read`): the holder of a job's running attempt (or the agent that pulled its dispatch, shown by
 *     its claim secret, before the claim lands) may read the assets the job may need: those its graph and params
 *     name (`JobRecord.assets`), its own outputs, and those of its parent or children. Bytes come a few chunks per
 *     request (a cursor in the chunks' stream), whole chunks as the object store keeps them;
 *   - write (`asset.seal`): the agent stores the chunks itself (`$O.nw_assets.C.<nuid>`, the one thing it may
 *     publish there) and asks for the entry; the gateway writes it with the job as its owner, only under a name no
 *     asset has (an asset is never replaced), once the chunks are all there. Chunks never sealed are dropped with
 *     the bucket's retention, or by `sweepUnsealed` once they are an hour old.
 */
import type { ObjectInfo } from "@nats-io/obj";
import { headers } from "@nats-io/transport-node";
import {
  ASSET_META,
  ErrorCode,
  OBJ_ASSETS,
  isAssetId,
  isMediaType,
  isTerminal,
  subjects,
  type AssetPiece,
  type JobRecord,
  type RecordReply,
  type RecordRequest,
} from "../protocol/index.js";
import { objectDigestText, objectHash, readJobRecord } from "../nats/index.js";
import type { NatsParts } from "./nats.js";

type AssetRequest = Extract<RecordRequest, { type: `asset.${string}` }>;

/** Bytes one `asset.read` answers at most (whole chunks: a reply stays under NATS's 1 MiB message). */
const READ_REPLY_BYTES = 512 * 1024;
const STREAM = subjects.objectStream(OBJ_ASSETS);

/** A refusal of an asset request: its code and why. */
export class AssetRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const refuse = (code: string, message: string) => new AssetRefused(code, message);

/** A chunk of an object as the store keeps it, with its stream sequence. */
interface Chunk {
  data: Uint8Array;
  seq: number;
}

export class AgentAssets {
  constructor(
    private readonly n: Pick<NatsParts, "assets" | "jsm" | "js" | "jobsKv">,
    /** The most an asset may hold, as for uploads (`maxAssetBytes`). */
    private readonly maxAssetBytes = Number.POSITIVE_INFINITY,
  ) {}

  /** The chunks stored under `nuid` from stream sequence `fromSeq` on, one direct get each, in order. */
  private async *chunksOf(nuid: string, fromSeq: number): AsyncGenerator<Chunk> {
    const chunkSubject = subjects.objectChunks(OBJ_ASSETS, nuid);
    for (let seq = Math.max(1, fromSeq); ; ) {
      const m = await this.n.jsm.direct
        .getMessage(STREAM, { next_by_subj: chunkSubject, seq })
        .catch((err: Error) => (/no message|not found|404/i.test(err.message) ? null : Promise.reject(err)));
      if (!m) return;
      yield { data: m.data, seq: m.seq };
      seq = m.seq + 1;
    }
  }

  /**
   * Answers `req` about job `rec` from `principal`; `proven`: the asker showed the job's claim secret (it pulled
   * the dispatch, and may be running the graph while its claim is on its way).
   */
  async handle(principal: string, req: AssetRequest, rec: JobRecord | null, proven: boolean): Promise<RecordReply> {
    if (!rec) throw refuse(ErrorCode.GW_ERR_NOT_FOUND, `no record of job ${req.job_id}`);
    const holds = rec.status === "running" && rec.holder === principal;
    if (isTerminal(rec.status) || !(holds || proven)) throw refuse(ErrorCode.GW_ERR_FORBIDDEN, "not your job");
    switch (req.type) {
      case "asset.read":
        return { ok: true, record_json: null, revision: 0, ...(await this.read(req, rec)) };
      case "asset.seal":
        await this.seal(req, rec);
        return { ok: true, record_json: null, revision: 0 };
    }
  }

  private async read(
    req: Extract<AssetRequest, { type: "asset.read" }>,
    rec: JobRecord,
  ): Promise<{ asset?: AssetPiece }> {
    if (!isAssetId(req.asset_id)) throw refuse(ErrorCode.GW_ERR_BAD_REQUEST, "not an asset id");
    const info = await this.n.assets.info(req.asset_id);
    if (!info || info.deleted) return {};
    if (!(await this.mayRead(rec, info)))
      throw refuse(ErrorCode.GW_ERR_FORBIDDEN, `job ${rec.id} does not use asset ${req.asset_id}`);
    const parts: Uint8Array[] = [];
    let bytes = 0;
    let next = Math.max(1, req.cursor);
    let done = info.size === 0;
    if (!done) {
      done = true; // unless a reply's worth is read before the chunks end
      for await (const m of this.chunksOf(info.nuid, next)) {
        parts.push(m.data);
        bytes += m.data.byteLength;
        next = m.seq + 1;
        // The last chunk: what the entry says the object holds has been read (a cursor past the start counts too).
        if (m.data.byteLength < (info.options?.max_chunk_size ?? 0) || m.data.byteLength === 0) break;
        if (bytes >= READ_REPLY_BYTES) {
          done = false;
          break;
        }
      }
    }
    const out = new Uint8Array(bytes);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    const stored = info.metadata?.[ASSET_META.contentType] ?? "";
    const contentType = isMediaType(stored) ? stored : "application/octet-stream";
    return {
      asset: { size: info.size, content_type: contentType, digest: info.digest, bytes: out, next: done ? null : next },
    };
  }

  /** The assets a job may read: named by its graph or params, its own, its parent's, its children's. */
  private async mayRead(rec: JobRecord, info: ObjectInfo): Promise<boolean> {
    if (rec.assets === undefined || rec.assets.includes(info.name)) return true;
    const owner = info.metadata?.[ASSET_META.jobId];
    if (!owner) return false;
    if (owner === rec.id || owner === rec.parent?.job_id) return true;
    const ownerRec = await readJobRecord(this.n.jobsKv, owner).catch(() => null);
    return ownerRec?.rec.parent?.job_id === rec.id;
  }

  /**
   * Purges the chunks no entry names (an agent stored them and never asked for a seal, or its seal was refused) when
   * the newest of them was stored before `before` (the sweep gives an hour ago: an upload is sealed seconds after
   * its last chunk, so nothing in flight is touched). Returns how many nuids' chunks it purged. Every gateway may run
   * it: a purge of a purged subject is a no-op.
   */
  async sweepUnsealed(before: Date): Promise<number> {
    const filter = subjects.allObjectChunks(OBJ_ASSETS);
    const listed = await this.n.jsm.streams.info(STREAM, { subjects_filter: filter });
    const nuids = Object.keys(listed.state.subjects ?? {}).map((subj) => subj.slice(filter.length - 1));
    if (nuids.length === 0) return 0;
    // Entries read after the chunks were listed: an entry sealed in between is seen, so its chunks stay.
    const named = new Set<string>();
    for (const o of await this.n.assets.list()) named.add(o.nuid);
    let purged = 0;
    for (const nuid of nuids) {
      if (named.has(nuid)) continue;
      const subject = subjects.objectChunks(OBJ_ASSETS, nuid);
      const last = await this.n.jsm.streams.getMessage(STREAM, { last_by_subj: subject }).catch(() => null);
      if (!last || last.time.getTime() >= before.getTime()) continue;
      await this.n.jsm.streams.purge(STREAM, { filter: subject });
      purged++;
    }
    return purged;
  }

  /**
   * What the chunks under the seal's nuid hold that the seal does not say, or null: every chunk but the last is
   * `chunk_bytes` long, the last no longer, `size` bytes in all, their SHA-256 the digest. Measured, not taken on
   * the agent's word: a download reports `size` and readers check the digest.
   */
  private async misfit(req: Extract<AssetRequest, { type: "asset.seal" }>): Promise<string | null> {
    const hash = objectHash();
    let count = 0;
    let total = 0;
    for await (const { data } of this.chunksOf(req.nuid, 1)) {
      count++;
      const short = count < req.chunks && data.byteLength !== req.chunk_bytes;
      if (short || data.byteLength > req.chunk_bytes)
        return `chunk ${count} holds ${data.byteLength} bytes (chunk_bytes ${req.chunk_bytes})`;
      total += data.byteLength;
      if (total > req.size) return `more than the ${req.size} bytes announced are stored`;
      hash.update(data);
    }
    if (total !== req.size) return `${total} bytes stored, ${req.size} announced`;
    return objectDigestText(hash) === req.digest ? null : "the stored bytes do not have the digest announced";
  }

  private async seal(req: Extract<AssetRequest, { type: "asset.seal" }>, rec: JobRecord): Promise<void> {
    const bad = (why: string) => refuse(ErrorCode.GW_ERR_BAD_REQUEST, `asset.seal: ${why}`);
    if (!isAssetId(req.name)) throw bad("the name must be a new asset id");
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(req.nuid)) throw bad("bad nuid");
    if (!req.digest.startsWith("SHA-256=")) throw bad("the digest must be SHA-256=<base64url>");
    if (req.chunk_bytes < 1 || req.chunks !== Math.ceil(req.size / req.chunk_bytes))
      throw bad("size and chunks disagree");
    if (await this.n.assets.info(req.name)) throw refuse(ErrorCode.GW_ERR_CONFLICT, `asset ${req.name} exists`);
    const chunkSubject = subjects.objectChunks(OBJ_ASSETS, req.nuid);
    const stored = await this.n.jsm.streams.info(STREAM, { subjects_filter: chunkSubject });
    const have = stored.state.subjects?.[chunkSubject] ?? 0;
    if (have !== req.chunks) throw bad(`${have} chunks stored under the nuid, ${req.chunks} announced`);
    const wrong =
      req.size > this.maxAssetBytes ? `${req.size} bytes, over ${this.maxAssetBytes}` : await this.misfit(req);
    if (wrong !== null) {
      // Refused chunks are of no use to anyone: dropped now rather than by the hourly sweep.
      await this.n.jsm.streams.purge(STREAM, { filter: chunkSubject }).catch(() => undefined);
      throw bad(wrong);
    }
    const clip = (s: string, n: number) => s.slice(0, n);
    const metadata: Record<string, string> = {
      [ASSET_META.name]: clip(req.file_name || req.name, 1024),
      // Written into download headers: anything but a media type is stored as octet-stream.
      [ASSET_META.contentType]: isMediaType(req.content_type) ? req.content_type : "application/octet-stream",
      [ASSET_META.jobId]: rec.id,
      [ASSET_META.workflowId]: rec.workflow_id,
      [ASSET_META.createdAt]: new Date().toISOString(),
      ...(req.node_id ? { [ASSET_META.nodeId]: clip(req.node_id, 256) } : {}),
    };
    // The object store's own entry, as its library writes it (name, options, metadata, chunks, digest), rolled up.
    const entry = {
      name: req.name,
      description: "",
      options: { max_chunk_size: req.chunk_bytes },
      metadata,
      bucket: OBJ_ASSETS,
      nuid: req.nuid,
      size: req.size,
      chunks: req.chunks,
      mtime: new Date().toISOString(),
      digest: req.digest,
      deleted: false,
    };
    const h = headers();
    h.set("Nats-Rollup", "sub");
    // Written only if no entry exists yet: two seals of one name cannot both land.
    h.set("Nats-Expected-Last-Subject-Sequence", "0");
    await this.n.js.publish(subjects.objectMeta(OBJ_ASSETS, req.name), JSON.stringify(entry), { headers: h });
  }
}
