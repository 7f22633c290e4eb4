/**
 * ComfyUI as a remote agent: an agent started with `--comfyui-url` beside a ComfyUI server runs
 * ComfyUI API-format workflows (`comfy.Workflow` nodes, pool `comfyui`) through ComfyUI's own HTTP + WebSocket API
 *, and re-emits what ComfyUI reports as Nodeway events: node progress, previews,
 * log lines, and the output images (which the job runner stores as assets when they are large).
 *
 * What ComfyUI does not give, this adds:
 * - ComfyUI sends a prompt's events only to the socket of the `client_id` it was queued with, and replays nothing.
 *   The client keeps one socket open (reconnecting), queues every prompt with its id and a `prompt_id` of its own
 *   (registered before the POST, so no event can come first), and after a reconnect asks `/history/<id>` for each
 *   prompt it waits on: one that finished while the socket was down completes from its history entry.
 * - The end of a prompt is `executing` with `node: null` (sent after the history write), not `execution_success`.
 * - Cancel removes a queued prompt (`POST /queue {delete}`) and interrupts a running one (`POST /interrupt
 *   {prompt_id}`), which touches no other client's prompt.
 * - ComfyUI has no authentication and must not be exposed; the agent talks to it on its host (usually loopback). A
 *   proxy's credentials in the URL (`http://user:pass@host`) go as a Basic `authorization` header, and the URL the
 *   agent shows (its registration, logs, errors) has none.
 * - Workflows and overrides are user data: keys that reach a prototype (`__proto__`, …) are refused, and every walk
 *   over them reads own properties only.
 */
import { randomUUID } from "node:crypto";
import WebSocket from "ws";
import { COMFY_PROVIDER, extensionOf, languageModelOf, mediaRefOf } from "../../protocol/index.js";
import { ErrorCode, GraphError, redactSecretsIn, redactUrl, secretsOfUrl } from "../../protocol/index.js";
import { FORBIDDEN_KEYS, checkForbiddenKeys } from "../../protocol/index.js";
import { NodeError, type NodeContext, type NodeDef } from "../engine/types.js";
import { asNumber, asText, prop } from "../nodes/util.js";
import { imageToImage, sizeIn, textToImage } from "../nodes/image.js";
import { isEmptyMedia, plainBytes } from "../nodes/media-util.js";
import { openImage } from "../nodes/pillow.js";
import { runWorkflowNodes } from "./comfy-run-workflow.js";
import { parseObjectInfo, type ComfyClasses } from "./comfy-classes.js";
import { sniffContentType } from "../assets.js";

/** A file ComfyUI wrote (`executed` output entry): fetched with `GET /view`. */
export interface ComfyFile {
  filename: string;
  subfolder: string;
  type: string;
}

/** What `/system_stats` says of the server, for the agent's registration. */
export interface ComfyInfo {
  url: string;
  reachable: boolean;
  version: string | null;
  devices: { name: string; type: string; vram_total?: number }[];
}

/** Hooks a running prompt reports through. */
export interface PromptHooks {
  progress(value: number, max: number): void;
  log(line: string): void;
  preview(bytes: Uint8Array, contentType: string): void;
}

/** How long a probe or an API call may take before ComfyUI counts as unreachable. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Reachability probe period; the agent pulls `comfyui` jobs only while the last probe answered. */
const PROBE_MS = 2_000;
const RECONNECT_MS = 1_000;
/** After a cancel, how long ComfyUI gets to say the prompt stopped before the run gives up waiting. */
const CANCEL_WAIT_MS = 5_000;

class ComfyError extends NodeError {}

interface Watch {
  hooks: PromptHooks;
  /** `executed` outputs by ComfyUI node id, as they came. */
  outputs: Record<string, Record<string, unknown>>;
  done: (outputs: Record<string, Record<string, unknown>>) => void;
  fail: (err: Error) => void;
  /** ComfyUI's class per node id, for messages. */
  classes: Record<string, string>;
  nodesDone: Set<string>;
}

export class ComfyClient {
  readonly clientId = randomUUID().replace(/-/g, "");
  private ws: WebSocket | null = null;
  private stopped = false;
  private readonly watches = new Map<string, Watch>();
  /** The prompt ComfyUI is executing (legacy previews carry no prompt id). */
  private executing: string | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  info: ComfyInfo;
  /** Where requests go: `baseUrl` without its userinfo (`fetch` refuses a URL that has one). */
  private readonly endpoint: URL;
  /** `baseUrl`'s userinfo as a Basic `authorization` header, when it has one. */
  private readonly headers: Record<string, string>;
  /** `baseUrl` as it may be shown: no userinfo, no query values. */
  readonly shownUrl: string;
  /** The node classes ComfyUI has (`/object_info`), read each time it comes to answer; null before. */
  classes: ComfyClasses | null = null;
  /** Told when `classes` was read anew. */
  onClasses: ((classes: ComfyClasses) => void) | null = null;
  private loadingClasses: Promise<void> | null = null;

  constructor(
    readonly baseUrl: string,
    private readonly log: (line: string) => void,
  ) {
    this.endpoint = new URL(baseUrl);
    const user = decodeURIComponent(this.endpoint.username);
    const pass = decodeURIComponent(this.endpoint.password);
    this.headers = user || pass ? { authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}` } : {};
    this.endpoint.username = "";
    this.endpoint.password = "";
    this.shownUrl = redactUrl(baseUrl);
    this.info = { url: this.shownUrl, reachable: false, version: null, devices: [] };
  }

  /**
   * True while ComfyUI answers its probe, the socket is open and its node classes are read: the agent pulls
   * `comfyui` jobs only then.
   */
  get up(): boolean {
    return this.info.reachable && this.ws?.readyState === WebSocket.OPEN && this.classes !== null;
  }

  async start(): Promise<void> {
    await this.probe();
    if (!this.info.reachable) {
      this.log(`ComfyUI at ${this.shownUrl} does not answer yet; comfyui jobs wait until it does`);
    }
    this.connect();
    this.probeTimer = setInterval(() => void this.probe(), PROBE_MS);
    this.probeTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.probeTimer) clearInterval(this.probeTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.ws?.terminate();
    for (const w of this.watches.values()) w.fail(new ComfyError("the agent is stopping"));
    this.watches.clear();
  }

  private async probe(): Promise<void> {
    const was = this.info.reachable;
    try {
      const stats = (await this.api("GET", "/system_stats")) as {
        system?: { comfyui_version?: string };
        devices?: { name?: string; type?: string; vram_total?: number }[];
      };
      this.info = {
        url: this.shownUrl,
        reachable: true,
        version: stats.system?.comfyui_version ?? null,
        devices: (stats.devices ?? []).map((d) => ({
          name: String(d.name ?? ""),
          type: String(d.type ?? ""),
          ...(typeof d.vram_total === "number" ? { vram_total: d.vram_total } : {}),
        })),
      };
      const { version, devices } = this.info;
      const count = `${devices.length} device(s)`;
      if (!was) this.log(`ComfyUI at ${this.shownUrl} answers (version ${version ?? "?"}, ${count})`);
      // A ComfyUI that came back may have other custom nodes than before.
      if (!was || this.classes === null)
        await (this.loadingClasses ??= this.loadClasses().finally(() => (this.loadingClasses = null)));
    } catch (err) {
      this.info = { ...this.info, reachable: false };
      if (was) this.log(`ComfyUI at ${this.shownUrl} stopped answering: ${(err as Error).message}`);
    }
  }

  private async loadClasses(): Promise<void> {
    try {
      const classes = parseObjectInfo(await this.api("GET", "/object_info"));
      this.classes = classes;
      this.log(`ComfyUI at ${this.shownUrl} has ${classes.size} node classes`);
      this.onClasses?.(classes);
    } catch (err) {
      this.log(`ComfyUI's node classes are unreadable (the next probe tries again): ${(err as Error).message}`);
    }
  }

  private connect(): void {
    if (this.stopped) return;
    const url = new URL("/ws", this.endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("clientId", this.clientId);
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, headers: this.headers });
    this.ws = ws;
    ws.on("open", () => {
      // Previews with their prompt and node (binary type 4) rather than bare images.
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      // Whatever finished while we were away is only in the history now.
      for (const id of this.watches.keys()) void this.reconcile(id);
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      try {
        if (isBinary) this.onBinary(data);
        else this.onJson(JSON.parse(data.toString("utf8")) as { type?: string; data?: Record<string, unknown> });
      } catch (err) {
        this.log(`ComfyUI sent a frame we could not read: ${(err as Error).message}`);
      }
    });
    ws.on("error", () => undefined); // "close" follows
    ws.on("close", () => {
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      this.reconnectTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      this.reconnectTimer.unref();
    });
  }

  private onJson(m: { type?: string; data?: Record<string, unknown> }): void {
    const d = m.data ?? {};
    const promptId = typeof d.prompt_id === "string" ? d.prompt_id : null;
    if (m.type === "execution_start" && promptId) this.executing = promptId;
    const w = promptId ? this.watches.get(promptId) : undefined;
    if (!w || !promptId) return;
    switch (m.type) {
      case "execution_start":
        w.hooks.log(`ComfyUI started prompt ${promptId}`);
        return;
      case "execution_cached": {
        const nodes = Array.isArray(d.nodes) ? d.nodes.map(String) : [];
        for (const n of nodes) w.nodesDone.add(n);
        if (nodes.length) w.hooks.log(`ComfyUI reused ${nodes.length} cached node(s): ${nodes.join(", ")}`);
        return;
      }
      case "executing": {
        if (d.node === null || d.node === undefined) {
          this.finish(promptId, (ww) => ww.done(ww.outputs));
          return;
        }
        const node = String(d.node);
        const cls = Object.hasOwn(w.classes, node) ? w.classes[node] : undefined;
        w.hooks.log(`ComfyUI runs node ${node}${cls ? ` (${cls})` : ""}`);
        return;
      }
      case "progress":
        if (typeof d.value === "number" && typeof d.max === "number") w.hooks.progress(d.value, d.max);
        return;
      case "executed":
        // A node id that would reach the outputs' prototype is ComfyUI's mistake, not an output.
        if (typeof d.node === "string" && !FORBIDDEN_KEYS.has(d.node) && d.output && typeof d.output === "object") {
          w.outputs[d.node] = d.output as Record<string, unknown>;
        }
        return;
      case "execution_error": {
        const node = String(d.node_id ?? "?");
        const cls = String(d.node_type ?? (Object.hasOwn(w.classes, node) ? w.classes[node] : "?"));
        const why = String(d.exception_message ?? "failed").trim();
        this.finish(promptId, (ww) =>
          ww.fail(
            new ComfyError(
              `ComfyUI node ${node} (${cls}) failed: ${why}${d.exception_type ? ` [${String(d.exception_type)}]` : ""}`,
            ),
          ),
        );
        return;
      }
      case "execution_interrupted":
        this.finish(promptId, (ww) =>
          ww.fail(new ComfyError(`ComfyUI interrupted the prompt at node ${String(d.node_id ?? "?")}`)),
        );
        return;
      default:
        return; // status, progress_state, execution_success (the end is `executing` null), logs, unknown
    }
  }

  /** Binary frames: a 4-byte big-endian event type. Previews go to the prompt they belong to; the rest is ignored. */
  private onBinary(b: Buffer): void {
    if (b.length < 8) return;
    const kind = b.readUInt32BE(0);
    if (kind === 1) {
      // PREVIEW_IMAGE: u32 image type (1 JPEG, 2 PNG), the image; for the prompt executing.
      const w = this.executing ? this.watches.get(this.executing) : undefined;
      if (w) w.hooks.preview(new Uint8Array(b.subarray(8)), b.readUInt32BE(4) === 2 ? "image/png" : "image/jpeg");
    } else if (kind === 4) {
      // PREVIEW_IMAGE_WITH_METADATA: u32 length, JSON {prompt_id, image_type, …}, the image.
      const len = b.readUInt32BE(4);
      if (8 + len > b.length) return;
      const meta = JSON.parse(b.subarray(8, 8 + len).toString("utf8")) as { prompt_id?: string; image_type?: string };
      const w = meta.prompt_id ? this.watches.get(meta.prompt_id) : undefined;
      if (w) w.hooks.preview(new Uint8Array(b.subarray(8 + len)), meta.image_type ?? "image/png");
    }
  }

  private finish(promptId: string, settle: (w: Watch) => void): void {
    const w = this.watches.get(promptId);
    if (!w) return;
    this.watches.delete(promptId);
    if (this.executing === promptId) this.executing = null;
    settle(w);
  }

  /** After a reconnect: a prompt in the history is over, whatever the socket missed. */
  private async reconcile(promptId: string): Promise<void> {
    try {
      const h = (await this.api("GET", `/history/${encodeURIComponent(promptId)}`)) as Record<
        string,
        {
          outputs?: Record<string, Record<string, unknown>>;
          status?: { status_str?: string; messages?: [string, Record<string, unknown>][] };
        }
      >;
      const entry = h[promptId];
      if (!entry) return; // still queued or running: its events come on the new socket
      if (entry.status?.status_str === "error") {
        const err = entry.status.messages?.find((x) => x[0] === "execution_error")?.[1];
        this.finish(promptId, (w) =>
          w.fail(
            new ComfyError(
              `ComfyUI node ${String(err?.node_id ?? "?")} (${String(err?.node_type ?? "?")}) failed: ${String(err?.exception_message ?? "error")}`.trim(),
            ),
          ),
        );
      } else {
        this.finish(promptId, (w) => w.done({ ...w.outputs, ...(entry.outputs ?? {}) }));
      }
    } catch (err) {
      this.log(`ComfyUI history of ${promptId} unreadable after a reconnect: ${(err as Error).message}`);
    }
  }

  /**
   * Queues `prompt` (API format) and resolves with its `executed` outputs by node id once ComfyUI is done. An abort
   * removes or interrupts it and rejects with the signal's reason.
   */
  async run(
    prompt: Record<string, unknown>,
    signal: AbortSignal,
    hooks: PromptHooks,
  ): Promise<Record<string, Record<string, unknown>>> {
    signal.throwIfAborted();
    const promptId = randomUUID();
    checkForbiddenKeys(prompt, "the ComfyUI prompt");
    const classes: Record<string, string> = {};
    for (const [id, n] of Object.entries(prompt))
      classes[id] = String((n as { class_type?: unknown })?.class_type ?? "?");
    const finished = new Promise<Record<string, Record<string, unknown>>>((resolve, reject) => {
      this.watches.set(promptId, { hooks, outputs: {}, done: resolve, fail: reject, classes, nodesDone: new Set() });
    });
    finished.catch(() => undefined); // settled below either way
    try {
      await this.api("POST", "/prompt", { prompt, client_id: this.clientId, prompt_id: promptId }, signal);
    } catch (err) {
      this.watches.delete(promptId);
      throw err;
    }
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => {
        void this.cancel(promptId).finally(() => {
          this.watches.delete(promptId);
          reject(signal.reason);
        });
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      void finished.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => undefined);
    });
    aborted.catch(() => undefined);
    return Promise.race([finished, aborted]);
  }

  /** Takes the prompt out of the queue, interrupts it if it runs, and waits (bounded) for ComfyUI to say so. */
  private async cancel(promptId: string): Promise<void> {
    const w = this.watches.get(promptId);
    const stopped = w ? new Promise<void>((r) => ((w.done = () => r()), (w.fail = () => r()))) : Promise.resolve();
    await this.api("POST", "/queue", { delete: [promptId] }).catch(() => undefined);
    await this.api("POST", "/interrupt", { prompt_id: promptId }).catch(() => undefined);
    await Promise.race([stopped, new Promise((r) => setTimeout(r, CANCEL_WAIT_MS).unref())]);
  }

  /** Puts `bytes` into ComfyUI's input folder (`POST /upload/image`); returns the name a LoadImage takes. */
  async upload(bytes: Uint8Array, filename: string, contentType: string, signal?: AbortSignal): Promise<string> {
    const form = new FormData();
    form.append("image", new Blob([new Uint8Array(bytes)], { type: contentType }), filename);
    form.append("type", "input");
    form.append("overwrite", "true");
    const res = await this.request("POST", "/upload/image", form, signal);
    const text = await res.text();
    if (res.status !== 200)
      throw new ComfyError(`ComfyUI refused the upload of ${filename} (HTTP ${res.status}): ${text.slice(0, 200)}`);
    const r = JSON.parse(text) as { name?: string; subfolder?: string };
    if (typeof r.name !== "string")
      throw new ComfyError(`ComfyUI's answer to the upload of ${filename} names no file: ${text.slice(0, 200)}`);
    return r.subfolder ? `${r.subfolder}/${r.name}` : r.name;
  }

  /** The bytes of a file ComfyUI wrote. */
  async view(f: ComfyFile, signal?: AbortSignal): Promise<Uint8Array> {
    const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder ?? "", type: f.type ?? "output" });
    const res = await this.request("GET", `/view?${q.toString()}`, undefined, signal);
    if (res.status !== 200)
      throw new ComfyError(
        `ComfyUI has no ${f.type}/${f.subfolder ? f.subfolder + "/" : ""}${f.filename} (HTTP ${res.status})`,
      );
    return new Uint8Array(await res.arrayBuffer());
  }

  /** A request with a deadline; `body` is sent as JSON, or as the multipart form it is. */
  private async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    const form = body instanceof FormData;
    try {
      return await fetch(new URL(path, this.endpoint), {
        method,
        headers: body === undefined || form ? this.headers : { ...this.headers, "content-type": "application/json" },
        body: body === undefined ? undefined : form ? body : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = timeout.aborted
        ? `no answer in ${REQUEST_TIMEOUT_MS} ms`
        : (cause?.code ?? cause?.message ?? (err as Error).message);
      const said = `ComfyUI at ${this.shownUrl} is unreachable (${method} ${path.split("?")[0]}: ${why})`;
      throw new ComfyError(redactSecretsIn(said, secretsOfUrl(this.baseUrl)));
    }
  }

  /** A JSON API call; ComfyUI's own error (its 400 `{error, node_errors}`) becomes the message. */
  private async api(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const res = await this.request(method, path, body, signal);
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text === "" ? null : JSON.parse(text);
    } catch {
      /* not JSON */
    }
    if (res.status >= 200 && res.status < 300) return json;
    const e = json as {
      error?: { type?: string; message?: string; details?: string } | string;
      node_errors?: Record<string, { errors?: { message?: string; details?: string }[]; class_type?: string }>;
    } | null;
    const err = typeof e?.error === "string" ? e.error : (e?.error?.message ?? text.slice(0, 200));
    const nodes = Object.entries(e?.node_errors ?? {})
      .map(
        ([id, n]) =>
          `node ${id} (${n.class_type ?? "?"}): ${(n.errors ?? []).map((x) => [x.message, x.details].filter(Boolean).join(": ")).join("; ")}`,
      )
      .join("; ");
    throw new ComfyError(
      `ComfyUI refused ${method} ${path.split("?")[0]} (HTTP ${res.status}): ${err}${nodes ? ` — ${nodes}` : ""}`,
    );
  }
}

/**
 * Sets `"<node id>.<input>"` keys of `overrides` into a copy of the API-format `workflow`. A key, node id or input
 * name that could reach a prototype (`__proto__`, `constructor`, `prototype`) anywhere in either is refused
 * (`GraphError` PROTO_ERR_FORBIDDEN_KEY); nodes and inputs are looked up as own properties only.
 */
export function applyOverrides(
  workflow: Record<string, unknown>,
  overrides: Record<string, unknown>,
): Record<string, unknown> {
  checkForbiddenKeys(workflow, '"workflow"');
  checkForbiddenKeys(overrides, '"overrides"');
  const out = structuredClone(workflow) as Record<string, { class_type?: unknown; inputs?: Record<string, unknown> }>;
  for (const [key, value] of Object.entries(overrides)) {
    const dot = key.indexOf(".");
    if (dot <= 0 || dot === key.length - 1)
      throw new NodeError(`override "${key}" must be "<ComfyUI node id>.<input name>"`);
    const id = key.slice(0, dot);
    const input = key.slice(dot + 1);
    const bad = [id, input].find((k) => FORBIDDEN_KEYS.has(k));
    if (bad !== undefined) {
      const message = `override "${key}" names the forbidden key "${bad}"`;
      throw new GraphError(ErrorCode.PROTO_ERR_FORBIDDEN_KEY, message, key);
    }
    const node = Object.hasOwn(out, id) ? out[id] : undefined;
    if (!node || typeof node !== "object") throw new NodeError(`override "${key}": the workflow has no node ${id}`);
    const own = Object.hasOwn(node, "inputs") ? node.inputs : undefined;
    const inputs = own !== null && typeof own === "object" ? own : {};
    node.inputs = { ...inputs, [input]: value };
  }
  return out;
}

export function checkWorkflow(v: unknown): Record<string, unknown> {
  checkForbiddenKeys(v, '"workflow"');
  if (v === null || typeof v !== "object" || Array.isArray(v) || Object.keys(v).length === 0) {
    throw new NodeError(
      `"workflow" must be a ComfyUI API-format prompt: {"<node id>": {"class_type": …, "inputs": {…}}, …} (ComfyUI's "Export (API)")`,
    );
  }
  for (const [id, n] of Object.entries(v)) {
    if (n === null || typeof n !== "object" || typeof (n as { class_type?: unknown }).class_type !== "string") {
      throw new NodeError(
        `"workflow" node ${id} has no "class_type": is it the API format (ComfyUI's "Export (API)"), not the UI's?`,
      );
    }
  }
  return v as Record<string, unknown>;
}

/**
 * Override values that name one of our assets (an uploaded image given to an ImageInput) become files in ComfyUI's
 * input folder: read through the job's assets, uploaded there, and the override set to the name ComfyUI gave (what
 * a LoadImage node takes).
 */
export async function uploadAssetOverrides(
  client: ComfyClient,
  ctx: NodeContext,
  overrides: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(overrides)) {
    // An `asset://` URI, or a media reference naming an asset (what an ImageInput passes on).
    const id = mediaRefOf(v, "image")?.asset_id;
    if (id === undefined) {
      out[key] = v;
      continue;
    }
    if (!ctx.assets) throw new NodeError(`override "${key}" names asset ${id}, and this agent has no asset store`);
    const bytes = await ctx.assets.get(`asset://${id}`).catch((err: Error) => {
      throw new NodeError(`override "${key}": ${err.message}`);
    });
    const contentType = sniffContentType(bytes);
    out[key] = await client.upload(bytes, `nodeway-${id}.${extensionOf(contentType)}`, contentType, ctx.signal);
  }
  return out;
}

/**
 * The `comfy.*` nodes of an agent beside `client`'s ComfyUI; `assets` gives the asset store (opened once the agent
 * is connected), for images a workflow takes as input.
 */
export function comfyNodes(client: ComfyClient): NodeDef[] {
  const workflow: NodeDef = {
    kind: "process",
    type: "comfy.Workflow",
    title: "ComfyUI Workflow",
    description: "Runs a ComfyUI workflow (API format) on the ComfyUI beside the agent; outputs the images it saves.",
    pool: "comfyui",
    inAgent: true,
    properties: [
      prop("workflow", "dict", {}, { description: 'The prompt in ComfyUI\'s API format ("Export (API)").' }),
      prop(
        "overrides",
        "dict",
        {},
        {
          description:
            'Inputs to set before queueing, as {"<node id>.<input>": value}, e.g. {"6.text": "a cat"}; an image asset (asset://<id>, or an ImageInput\'s reference) is uploaded to ComfyUI\'s input folder and its name set, for a LoadImage.',
        },
      ),
    ],
    outputs: [
      { name: "images", type: "list[image]" },
      { name: "outputs", type: "dict" },
    ],
    process: async (ctx, inputs) => {
      const overrides = inputs.overrides === null || inputs.overrides === undefined ? {} : inputs.overrides;
      if (typeof overrides !== "object" || Array.isArray(overrides))
        throw new NodeError(`"overrides" must be an object of "<node id>.<input>": value`);
      checkForbiddenKeys(overrides, '"overrides"');
      const workflowIn = checkWorkflow(inputs.workflow);
      // Checked before anything is uploaded: a wrong key fails without touching ComfyUI.
      applyOverrides(workflowIn, overrides as Record<string, unknown>);
      const prompt = applyOverrides(
        workflowIn,
        await uploadAssetOverrides(client, ctx, overrides as Record<string, unknown>),
      );
      const outputs = await client.run(prompt, ctx.signal, {
        progress: (v, max) => ctx.progress(v, max),
        log: (line) => ctx.log(line),
        preview: (bytes) => ctx.preview(bytes),
      });
      // Images in the order ComfyUI's output nodes reported them; every output entry as ComfyUI gave it.
      const images: Uint8Array[] = [];
      for (const out of Object.values(outputs)) {
        for (const f of (Array.isArray(out.images) ? out.images : []) as ComfyFile[])
          images.push(await client.view(f, ctx.signal));
      }
      return { images, outputs };
    },
  };
  return [workflow, ...runWorkflowNodes(client), comfyTextToImage(client), comfyImageToImage(client)];
}

type ComfyPrompt = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

/** What a ComfyUI sampling graph is made of: checkpoint, prompts, steps, guidance and seed (-1: drawn here). */
interface SamplerOptions {
  checkpoint: string;
  prompt: string;
  negative: string;
  steps: number;
  cfg: number;
  seed: number;
}

/**
 * ComfyUI's sampling graph in its API format: checkpoint → prompts → sampler over the latent `latent` gives (its
 * nodes added by the caller) with `denoise` → decode → save. Node ids are ours.
 */
function samplerPrompt(o: SamplerOptions, latent: ComfyPrompt, denoise: number): ComfyPrompt {
  const seed = o.seed >= 0 ? o.seed : Math.floor(Math.random() * 2 ** 48);
  return {
    ckpt: { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: o.checkpoint } },
    pos: { class_type: "CLIPTextEncode", inputs: { text: o.prompt, clip: ["ckpt", 1] } },
    neg: { class_type: "CLIPTextEncode", inputs: { text: o.negative, clip: ["ckpt", 1] } },
    ...latent,
    sample: {
      class_type: "KSampler",
      inputs: {
        seed,
        steps: o.steps,
        cfg: o.cfg,
        sampler_name: "euler",
        scheduler: "normal",
        denoise,
        model: ["ckpt", 0],
        positive: ["pos", 0],
        negative: ["neg", 0],
        latent_image: ["latent", 0],
      },
    },
    decode: { class_type: "VAEDecode", inputs: { samples: ["sample", 0], vae: ["ckpt", 2] } },
    save: { class_type: "SaveImage", inputs: { filename_prefix: "nodeway", images: ["decode", 0] } },
  };
}

/** ComfyUI's plain text-to-image graph: an empty latent of the size asked, sampled in full. */
export function txt2imgPrompt(o: SamplerOptions & { width: number; height: number }): ComfyPrompt {
  const latent = { class_type: "EmptyLatentImage", inputs: { width: o.width, height: o.height, batch_size: 1 } };
  return samplerPrompt(o, { latent }, 1);
}

/**
 * ComfyUI's image-to-image graph: the uploaded image (`image`, a name in its input folder) scaled to the size asked
 * and encoded as the latent, sampled with `strength` as the denoise (0 keeps the image, 1 redraws it).
 */
export function img2imgPrompt(
  o: SamplerOptions & { image: string; width: number; height: number; strength: number },
): ComfyPrompt {
  return samplerPrompt(
    o,
    {
      load: { class_type: "LoadImage", inputs: { image: o.image } },
      scale: {
        class_type: "ImageScale",
        inputs: { upscale_method: "lanczos", width: o.width, height: o.height, crop: "center", image: ["load", 0] },
      },
      latent: { class_type: "VAEEncode", inputs: { pixels: ["scale", 0], vae: ["ckpt", 2] } },
    },
    o.strength,
  );
}

/**
 * `nodetool.image.TextToImage` on an agent beside a ComfyUI: a model of provider `comfyui` (its id a checkpoint
 * file) runs ComfyUI's text-to-image graph there, with progress and previews; any other provider runs as on every
 * agent. It runs in the agent (it holds the ComfyUI connection), so it waits on I/O only.
 */
function comfyTextToImage(client: ComfyClient): NodeDef {
  return {
    ...textToImage,
    inAgent: true,
    process: async (ctx, inputs) => {
      const model = comfyModelOf(inputs);
      if (!model) return textToImage.process(ctx, inputs);
      const width = sizeIn(inputs, "width", 64, 2048);
      const height = sizeIn(inputs, "height", 64, 2048);
      const prompt = txt2imgPrompt({ ...samplerOptions(model, inputs), width, height });
      return { output: await runForImage(client, prompt, ctx) };
    },
  };
}

/**
 * `nodetool.image.ImageToImage` on an agent beside a ComfyUI: with a `comfyui` model the input image is uploaded to
 * ComfyUI's input folder (as PNG) and ComfyUI's image-to-image graph runs with `strength` as its denoise; any other
 * provider runs as on every agent.
 */
function comfyImageToImage(client: ComfyClient): NodeDef {
  return {
    ...imageToImage,
    inAgent: true,
    process: async (ctx, inputs) => {
      const model = comfyModelOf(inputs);
      if (!model) return imageToImage.process(ctx, inputs);
      if (isEmptyMedia(inputs.image)) throw new NodeError(`"image" is not connected`);
      const strength = asNumber(inputs.strength, "strength");
      if (!(strength >= 0 && strength <= 1)) throw new NodeError(`strength must be in [0, 1], got ${strength}`);
      const options = samplerOptions(model, inputs);
      const { img } = await openImage(ctx, inputs.image);
      const png = plainBytes(await img.png().toBuffer());
      const image = await client.upload(png, `nodeway-${randomUUID()}.png`, "image/png", ctx.signal);
      const prompt = img2imgPrompt({
        ...options,
        image,
        strength,
        width: sizeIn(inputs, "target_width", 64, 2048),
        height: sizeIn(inputs, "target_height", 64, 2048),
      });
      return { output: await runForImage(client, prompt, ctx) };
    },
  };
}

/** The ComfyUI model a media node names (its checkpoint as `id`), or null for another provider's. */
function comfyModelOf(inputs: Record<string, unknown>): { id: string } | null {
  const model = languageModelOf(inputs.model);
  if (model?.provider !== COMFY_PROVIDER) return null;
  if (!model.id) throw new NodeError(`a ComfyUI image model names its checkpoint file as "id"`);
  return { id: model.id };
}

/** The sampler settings NodeTool's image nodes give, checked. */
function samplerOptions(model: { id: string }, inputs: Record<string, unknown>): SamplerOptions {
  const text = asText(inputs.prompt);
  if (text.trim() === "") throw new NodeError(`"prompt" is empty`);
  const cfg = asNumber(inputs.guidance_scale, "guidance_scale");
  if (!(cfg >= 0 && cfg <= 30)) throw new NodeError(`guidance_scale must be in [0, 30], got ${cfg}`);
  return {
    checkpoint: model.id,
    prompt: text,
    negative: asText(inputs.negative_prompt ?? ""),
    steps: sizeIn(inputs, "num_inference_steps", 1, 100),
    cfg,
    seed: sizeIn(inputs, "seed", -1, Number.MAX_SAFE_INTEGER),
  };
}

/** Runs `prompt` with the node's progress, logs and previews; the image its `save` node wrote. */
async function runForImage(client: ComfyClient, prompt: ComfyPrompt, ctx: NodeContext): Promise<Uint8Array> {
  const outputs = await client.run(prompt, ctx.signal, {
    progress: (v, max) => ctx.progress(v, max),
    log: (line) => ctx.log(line),
    preview: (bytes) => ctx.preview(bytes),
  });
  const file = ((outputs.save?.images ?? []) as ComfyFile[])[0];
  if (!file) throw new NodeError("ComfyUI saved no image for the prompt");
  return client.view(file, ctx.signal);
}
