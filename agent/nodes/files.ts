/**
 * What the save, download and file-reading nodes share: file names with date variables, storing bytes as the job's
 * asset, and reading a text input that may be a file (bytes or a text/document reference).
 */
import { assetIdOfUri, type AssetRef } from "../../protocol/index.js";
import { NodeError, type NodeContext } from "../engine/types.js";
import { asText, capString, capStringLength, decodeText } from "./util.js";

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

/** A text or document reference (NodeTool's TextRef / DocumentRef: an upload, a saved text, a fetched document). */
function isTextRef(v: unknown): v is { type: string; uri?: unknown; asset_id?: unknown; data?: unknown } {
  const t = (v as { type?: unknown } | null)?.type;
  return v !== null && typeof v === "object" && !Array.isArray(v) && (t === "text" || t === "document");
}

/** The bytes a text or document reference holds or names: inline bytes, a data: URI or a job's asset. */
async function refBytes(ctx: NodeContext, ref: { uri?: unknown; asset_id?: unknown; data?: unknown }, label: string) {
  if (ref.data instanceof Uint8Array) return ref.data;
  const uri = typeof ref.uri === "string" && ref.uri !== "" ? ref.uri : ref.asset_id ? `asset://${ref.asset_id}` : "";
  if (uri.startsWith("data:")) {
    const comma = uri.indexOf(",");
    if (comma < 0) throw new NodeError(`${label} is a data: URI without a comma before its data`);
    const body = uri.slice(comma + 1);
    if (uri.slice(0, comma).endsWith(";base64")) return Buffer.from(body, "base64");
    try {
      return Buffer.from(decodeURIComponent(body));
    } catch {
      throw new NodeError(`${label} is a data: URI with a malformed %-escape`);
    }
  }
  if (assetIdOfUri(uri) !== null) {
    if (!ctx.assets) throw new NodeError(`${label} is an asset (${uri}), but this agent gives nodes no asset access`);
    return ctx.assets.get(uri);
  }
  throw new NodeError(
    `${label} must be text or a text/document asset (asset://<id> or data: URI), got ${uri || "an empty reference"}`,
  );
}

/**
 * The text of an input that may be a file: a string as it is; bytes, or a text/document reference (a
 * DocumentInput's upload), read and decoded (`decodeText`: BOM, UTF-16, Windows-1252); anything else as `asText`.
 * Text over the agent's string cap fails before it is decoded.
 */
export async function readTextValue(ctx: NodeContext, value: unknown, label: string): Promise<string> {
  if (typeof value === "string") return value;
  const bytes = value instanceof Uint8Array ? value : isTextRef(value) ? await refBytes(ctx, value, label) : null;
  if (bytes === null) return asText(value);
  capStringLength(ctx.limits, bytes.byteLength / 2, label);
  return capString(ctx.limits, decodeText(bytes, label), label);
}
