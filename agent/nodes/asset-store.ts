/**
 * `NodeContext.assets` over the agent's object store (`nw_assets`): what a job's nodes save lands where the job's
 * large outputs do (agent/assets.ts), with the same metadata, so `GET /api/assets/:id/content` serves it.
 */
import type { ObjectStore } from "@nats-io/obj";
import { ASSET_META, assetIdOfUri, assetRef, isAssetId, newId } from "../../protocol/index.js";
import { NodeError, type NodeAssets } from "../engine/types.js";
import { sniffContentType } from "../assets.js";

/** The assets of job `job` in `os`; `nodeId` names the saving node in each asset's metadata when given. */
export function objectStoreAssets(
  os: ObjectStore | null,
  job: { job_id: string; workflow_id: string },
): NodeAssets | undefined {
  if (!os) return undefined;
  return {
    async put(bytes, opts) {
      const id = newId();
      const contentType = opts.contentType ?? sniffContentType(bytes);
      const metadata: Record<string, string> = {
        [ASSET_META.name]: opts.name ?? id,
        [ASSET_META.contentType]: contentType,
        [ASSET_META.jobId]: job.job_id,
        [ASSET_META.workflowId]: job.workflow_id,
        [ASSET_META.createdAt]: new Date().toISOString(),
      };
      const info = await os.putBlob({ name: id, metadata }, bytes);
      return assetRef(id, contentType, info.size);
    },
    async get(ref) {
      const id = isAssetId(ref) ? ref : assetIdOfUri(ref);
      if (!id) throw new NodeError(`${JSON.stringify(ref.slice(0, 80))} is not an asset (asset://<id>)`);
      const bytes = await os.getBlob(id);
      if (!bytes) throw new NodeError(`asset ${id} does not exist (or has expired)`);
      return bytes;
    },
  };
}
