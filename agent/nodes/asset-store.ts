/**
 * `NodeContext.assets` over the job's asset store (agent/asset-io.ts): what a job's nodes save lands where the job's
 * large outputs do (agent/assets.ts), with the same metadata, so `GET /api/assets/:id/content` serves it; what
 * they read is what the job may read.
 */
import { assetIdOfUri, assetRef, isAssetId, newId } from "../../protocol/index.js";
import { NodeError, type NodeAssets } from "../engine/types.js";
import { sniffContentType } from "../assets.js";
import type { JobAssetStore } from "../asset-io.js";

/** The assets of a job through `store`. */
export function objectStoreAssets(store: JobAssetStore | null): NodeAssets | undefined {
  if (!store) return undefined;
  return {
    async put(bytes, opts) {
      const id = newId();
      const contentType = opts.contentType ?? sniffContentType(bytes);
      const size = await store.put(id, bytes, { fileName: opts.name ?? id, contentType });
      return assetRef(id, contentType, size);
    },
    async get(ref) {
      const id = isAssetId(ref) ? ref : assetIdOfUri(ref);
      if (!id) throw new NodeError(`${JSON.stringify(ref.slice(0, 80))} is not an asset (asset://<id>)`);
      const found = await store.get(id).catch((err: Error) => {
        throw new NodeError(`asset ${id} could not be read: ${err.message}`);
      });
      if (!found) throw new NodeError(`asset ${id} does not exist (or has expired)`);
      return found.bytes;
    },
  };
}
