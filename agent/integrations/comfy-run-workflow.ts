/**
 * NodeTool's `lib.comfy.RunWorkflow` (and `RunWorkflowOnWorker`) on an agent beside a ComfyUI: a prompt in ComfyUI's API format (a JSON string or
 * object, or one wrapped as `{"prompt": …}`), inputs on dynamic handles `<comfy node id>:<input>` written into the
 * prompt (media values uploaded to ComfyUI's input folder first), and outputs on `<comfy node id>:<image|audio|video>`
 * per saved file (several files on one slot: a list), with ComfyUI's whole outputs on `output`.
 *
 * Where NodeTool's node calls the server its `endpoint` (or `worker_url`) names, Nodeway's runs on the ComfyUI of the agent that
 * serves the `comfyui` pool: a graph never makes an agent open a connection to an address it carries. Only
 * ComfyUI's own API (`api: "native"`) is spoken.
 */
import { randomUUID } from "node:crypto";
import { MEDIA_REF_TYPES, mediaRefOf, parseJson } from "../../protocol/index.js";
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "../engine/types.js";
import { asNumber, prop } from "../nodes/util.js";
import { mediaBytes, type MediaKind } from "../nodes/media-util.js";
import { sniffContentType } from "../assets.js";
import { applyOverrides, checkWorkflow, uploadAssetOverrides, type ComfyClient, type ComfyFile } from "./comfyui.js";

/** NodeTool's default endpoint and worker: a node saved with them asks for "the ComfyUI here". */
const DEFAULT_ENDPOINT = "127.0.0.1:8188";
const DEFAULT_WORKER = "ws://127.0.0.1:7777/ws";

/** The kind of file each key of a ComfyUI output entry holds (`images` of SaveImage, `audio`, VHS's `gifs`). */
const OUTPUT_KINDS: Readonly<Record<string, MediaKind>> = {
  images: "image",
  audio: "audio",
  gifs: "video",
  videos: "video",
};

const DECLARED = new Set(["endpoint", "api", "worker_url", "worker_token", "previews", "workflow", "timeout"]);

/** How NodeTool's two ComfyUI runners that reach a server differ: their names and where they say it is. */
const RUNNERS = {
  direct: {
    type: "lib.comfy.RunWorkflow",
    title: "Run ComfyUI Workflow",
    where: prop("endpoint", "str", DEFAULT_ENDPOINT, {
      description: "NodeTool's ComfyUI address; Nodeway runs the workflow on the comfyui pool's ComfyUI instead.",
    }),
    extra: [prop("api", "str", "native", { description: 'Which API to speak: "native" (ComfyUI\'s own).' })],
  },
  worker: {
    type: "lib.comfy.RunWorkflowOnWorker",
    title: "Run ComfyUI Workflow (Worker)",
    where: prop("worker_url", "str", DEFAULT_WORKER, {
      description: "NodeTool's worker address; Nodeway runs the workflow on the comfyui pool's ComfyUI instead.",
    }),
    extra: [
      prop("worker_token", "str", "", { description: "The worker's token (not used: no worker is dialled)." }),
      prop("previews", "bool", false, { description: "Stream ComfyUI's previews (they always are here)." }),
    ],
  },
} as const;

export function runWorkflowNodes(client: ComfyClient): NodeDef[] {
  return [runWorkflowNode(client, RUNNERS.direct), runWorkflowNode(client, RUNNERS.worker)];
}

function runWorkflowNode(client: ComfyClient, r: (typeof RUNNERS)[keyof typeof RUNNERS]): NodeDef {
  return {
    kind: "process",
    type: r.type,
    title: r.title,
    description:
      "Runs a ComfyUI workflow (API format) on the ComfyUI beside the agent; inputs on <node id>:<input>, saved files on <node id>:<kind>.",
    pool: "comfyui",
    inAgent: true,
    isDynamic: true,
    properties: [
      r.where,
      ...r.extra,
      prop("workflow", "str", "", { description: "The prompt in ComfyUI's API format, as JSON." }),
      prop("timeout", "int", 600, { min: 1, max: 86_400, description: "Seconds to wait for the run." }),
    ],
    outputs: [{ name: "output", type: "dict[str, any]" }],
    process: async (ctx, inputs) => {
      const api = String(inputs.api ?? "native");
      if (api !== "native" && api !== "")
        throw new NodeError(`api "${api.slice(0, 20)}" is not spoken here: the agent's ComfyUI takes "native"`);
      const where = String(inputs[r.where.name] ?? "");
      if (where !== "" && where !== r.where.default)
        ctx.log(`runs on the ComfyUI of this agent (${client.info.url}), not ${where.slice(0, 200)}`);
      const workflow = checkWorkflow(promptOf(inputs.workflow));
      const overrides = handleOverrides(inputs);
      applyOverrides(workflow, overrides); // a handle naming no node fails before anything is uploaded
      const uploaded = await uploadMedia(ctx, client, await uploadAssetOverrides(client, ctx, overrides));
      const timeoutS = asNumber(inputs.timeout ?? 600, "timeout");
      const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(Math.max(1, timeoutS) * 1000)]);
      const outputs = await client.run(applyOverrides(workflow, uploaded), signal, {
        progress: (v, max) => ctx.progress(v, max),
        log: (line) => ctx.log(line),
        preview: (bytes) => ctx.preview(bytes),
      });
      return { ...(await savedFiles(client, outputs, signal)), output: outputs };
    },
  };
}

/** The API-format prompt of a `workflow` value: JSON text or an object, unwrapped from `{"prompt": …}`. */
function promptOf(v: unknown): unknown {
  let w = v;
  if (typeof w === "string") {
    if (w.trim() === "") throw new NodeError(`"workflow" is empty: paste ComfyUI's "Save (API Format)" JSON`);
    try {
      w = parseJson(w);
    } catch (err) {
      throw new NodeError(`"workflow" is not JSON: ${(err as Error).message}`);
    }
  }
  if (w !== null && typeof w === "object" && Array.isArray((w as { nodes?: unknown }).nodes))
    throw new NodeError(`"workflow" is ComfyUI's UI format (a "nodes" list): save it with "Save (API Format)"`);
  const inner = (w as { prompt?: unknown } | null)?.prompt;
  return inner !== null && typeof inner === "object" && !Array.isArray(inner) ? inner : w;
}

/** Values on `<node id>:<input>` handles, as `<node id>.<input>` overrides. */
function handleOverrides(inputs: NodeInputs): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(inputs)) {
    const colon = k.indexOf(":");
    if (DECLARED.has(k) || colon <= 0 || colon === k.length - 1 || v === undefined) continue;
    out[`${k.slice(0, colon)}.${k.slice(colon + 1)}`] = v;
  }
  return out;
}

/** Media values that are not our assets (bytes from a node upstream, a data: URI) uploaded too; others as given. */
async function uploadMedia(
  ctx: NodeContext,
  client: ComfyClient,
  overrides: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(overrides)) {
    const type = (v as { type?: unknown } | null)?.type;
    const media =
      v instanceof Uint8Array || (typeof type === "string" && MEDIA_REF_TYPES.has(type) && type !== "document");
    if (!media || (typeof v === "object" && mediaRefOf(v, "image")?.asset_id)) {
      out[key] = v;
      continue;
    }
    const kind = (typeof type === "string" ? type : "image") as MediaKind;
    const bytes = await mediaBytes(ctx, v, kind, `input "${key}"`);
    const ext = sniffContentType(bytes).split("/")[1]?.replace("jpeg", "jpg").replace("mpeg", "mp3") ?? "bin";
    out[key] = await client.upload(bytes, `nodeway-${randomUUID()}.${ext}`, sniffContentType(bytes), ctx.signal);
  }
  return out;
}

/** Each save node's files on `<node id>:<kind>`: one file as its bytes, several as a list. */
async function savedFiles(
  client: ComfyClient,
  outputs: Record<string, Record<string, unknown>>,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  const slots: Record<string, Uint8Array[]> = {};
  for (const [id, out] of Object.entries(outputs)) {
    for (const [key, kind] of Object.entries(OUTPUT_KINDS)) {
      const files = (Array.isArray(out[key]) ? out[key] : []) as ComfyFile[];
      for (const f of files) (slots[`${id}:${kind}`] ??= []).push(await client.view(f, signal));
    }
  }
  return Object.fromEntries(Object.entries(slots).map(([k, v]) => [k, v.length === 1 ? v[0] : v]));
}
