/**
 * One job's way to `nw_assets`: an agent may neither read the bucket nor write its entries (gateway/agent-assets.ts).
 * A write stores the bytes as the object store's chunks under a fresh nuid (all an agent may publish there) and
 * asks a gateway to make the entry; a read asks a gateway for the bytes a few chunks at a time and checks them
 * against the entry's size and SHA-256.
 */
import { randomBytes } from "node:crypto";
import { ErrorCode, OBJ_ASSETS, subjects } from "../protocol/index.js";
import { RecordRefusedError, objectDigest, type AckedPublisher, type RecordClient } from "../nats/index.js";

/** What one job's nodes store and read. */
export interface JobAssetStore {
  /** Stores `bytes` as the new asset `name`; resolves to its size. */
  put(
    name: string,
    bytes: Uint8Array,
    meta: { fileName: string; contentType: string; nodeId?: string },
  ): Promise<number>;
  /** An asset the job may read, or null when there is none by that id. */
  get(id: string): Promise<{ bytes: Uint8Array; contentType: string } | null>;
}

/** The object store's chunk size (its library's default). */
const CHUNK_BYTES = 128 * 1024;
/** Chunks in flight while storing. */
const WINDOW = 8;

/** How long a seal may take: the gateway reads every chunk back and hashes them before it answers. */
const sealTimeoutMs = (bytes: number): number => 5_000 + Math.ceil(bytes / (8 * 1024 * 1024)) * 1_000;

/** How long an asset request is tried again while no gateway answers (one restarting, NATS away a moment). */
const RETRY_FOR_MS = 30_000;

export class GatewayAssets implements JobAssetStore {
  constructor(
    private readonly pub: AckedPublisher,
    private readonly records: RecordClient,
    private readonly jobId: string,
    private readonly proof: string,
  ) {}

  async put(name: string, bytes: Uint8Array, meta: { fileName: string; contentType: string; nodeId?: string }) {
    const nuid = randomBytes(16).toString("base64url");
    const subject = subjects.objectChunks(OBJ_ASSETS, nuid);
    const chunks = Math.ceil(bytes.byteLength / CHUNK_BYTES);
    for (let i = 0; i < chunks; i += WINDOW) {
      const batch = [];
      for (let k = i; k < Math.min(i + WINDOW, chunks); k++)
        batch.push(this.pub.publish(subject, bytes.subarray(k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES)));
      await Promise.all(batch);
    }
    // The name is fresh: "exists" means an earlier try of this seal landed and its answer was lost.
    const sealed = (err: unknown) => err instanceof RecordRefusedError && err.code === ErrorCode.GW_ERR_CONFLICT;
    const seal = {
      type: "asset.seal" as const,
      v: 1 as const,
      job_id: this.jobId,
      proof: this.proof,
      name,
      nuid,
      size: bytes.byteLength,
      chunks,
      chunk_bytes: CHUNK_BYTES,
      digest: objectDigest(bytes),
      content_type: meta.contentType,
      file_name: meta.fileName,
      ...(meta.nodeId !== undefined ? { node_id: meta.nodeId } : {}),
    };
    await this.ask(seal, sealTimeoutMs(bytes.byteLength)).catch((err: unknown) => {
      if (!sealed(err)) throw err;
    });
    return bytes.byteLength;
  }

  /** One request, asked again while the gateways cannot answer (a refusal is final). */
  private async ask(req: Parameters<RecordClient["ask"]>[0], timeoutMs?: number): ReturnType<RecordClient["ask"]> {
    const deadline = Date.now() + RETRY_FOR_MS;
    for (let pauseMs = 100; ; pauseMs = Math.min(pauseMs * 2, 2_000)) {
      try {
        return await this.records.ask(req, timeoutMs);
      } catch (err) {
        const final = err instanceof RecordRefusedError && err.code !== ErrorCode.GW_ERR_UNAVAILABLE;
        if (final || Date.now() + pauseMs > deadline) throw err;
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    }
  }

  async get(id: string): Promise<{ bytes: Uint8Array; contentType: string } | null> {
    const parts: Uint8Array[] = [];
    let head: { size: number; content_type: string; digest: string } | null = null;
    for (let cursor: number | null = 0; cursor !== null; ) {
      const reply = await this.ask({
        type: "asset.read",
        v: 1,
        job_id: this.jobId,
        proof: this.proof,
        asset_id: id,
        cursor,
      });
      const piece = reply.asset;
      if (!piece) return null;
      head ??= piece;
      parts.push(piece.bytes);
      cursor = piece.next;
    }
    const bytes = Buffer.concat(parts);
    if (!head || bytes.byteLength !== head.size || objectDigest(bytes) !== head.digest)
      throw new Error(
        `asset ${id} came back damaged (${bytes.byteLength} of ${head?.size ?? "?"} bytes, or not its digest)`,
      );
    return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), contentType: head.content_type };
  }
}
