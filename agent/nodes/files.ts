/** What the save and download nodes share: file names with date variables, and storing bytes as the job's asset. */
import type { AssetRef } from "../../protocol/index.js";
import { NodeError, type NodeContext } from "../engine/types.js";

const pad = (n: number) => String(n).padStart(2, "0");

/** `name` with NodeTool's date variables (%Y %m %d %H %M %S, UTC) filled in, e.g. `notes-%Y%m%d.txt`. */
export function timestampedName(name: string, now = new Date()): string {
  const vars: Record<string, string> = {
    Y: String(now.getUTCFullYear()),
    m: pad(now.getUTCMonth() + 1),
    d: pad(now.getUTCDate()),
    H: pad(now.getUTCHours()),
    M: pad(now.getUTCMinutes()),
    S: pad(now.getUTCSeconds()),
    "%": "%",
  };
  return name.replace(/%([YmdHMS%])/g, (_m, k: string) => vars[k]!);
}

/** The job's asset store, or a failure saying the run has none. */
export function assetsOf(ctx: NodeContext): NonNullable<NodeContext["assets"]> {
  if (!ctx.assets)
    throw new NodeError(
      `${ctx.nodeType} saves files as the job's assets, and this run has no asset store (the agent's nw_assets bucket, or an execution strategy that does not pass it on)`,
    );
  return ctx.assets;
}

/** Stores `bytes` as `name` and tells clients (`save_update`); resolves to the asset's reference. */
export async function saveFile(
  ctx: NodeContext,
  bytes: Uint8Array,
  name: string,
  contentType: string,
  outputType: string,
): Promise<AssetRef> {
  const ref = await assetsOf(ctx).put(bytes, { name, contentType });
  ctx.saved?.(name, ref, outputType);
  return ref;
}

/** A folder property (a string path, or NodeTool's FolderRef) as a name prefix: "" for none. */
export function folderPrefix(folder: unknown): string {
  if (typeof folder === "string") return folder.trim() === "" ? "" : `${folder.trim().replace(/\/+$/, "")}/`;
  const f = folder as { asset_id?: unknown; name?: unknown } | null;
  const named = typeof f?.name === "string" && f.name !== "" ? f.name : "";
  return named === "" ? "" : `${named}/`;
}
