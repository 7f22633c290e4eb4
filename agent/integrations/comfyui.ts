/**
 * ComfyUI as a remote agent: an agent started with `--comfyui-url` beside a ComfyUI server runs
 * ComfyUI API-format workflows (`comfy.Workflow` nodes, pool `comfyui`) through ComfyUI's own HTTP + WebSocket API
 *, and re-emits what ComfyUI reports as Nodeway events: node progress, previews,
 * log lines, and the output images (which the job runner stores as assets when they are large).
 *
 * What ComfyUI does not give, this adds:
 * - ComfyUI sends a prompt's events only to the socket of the `client_id` it was queued with, and replays nothing.
 *   The client keeps one socket open (reconnecting), queues every prompt with its id and a `prompt_id` of its own
 *   (registered before the POST, so no event can come first). After a reconnect, and every `POLL_MS` in case the
 *   socket missed a prompt's end, each prompt waited on that is not in `/queue` is looked up in `/history/<id>`: one
 *   that finished completes from its history entry, and one in neither (ComfyUI restarted) fails.
 * - The end of a prompt is `executing` with `node: null` (sent after the history write), not `execution_success`;
 *   a prompt whose output nodes ran and reported no outputs fails.
 * - `POST /prompt` must answer with the prompt's id and no `node_errors`, and every answer is read up to a bound
 *   (`MAX_JSON_BYTES`, `MAX_FILE_BYTES` for a file), never whole.
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
import { ASSETS_DEFAULTS, COMFY_PROVIDER, extensionOf, languageModelOf, mediaRefOf } from "../../protocol/index.js";
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

/** How long a probe or an API call may take before ComfyUI counts as unreachable (a file: until its head). */
const REQUEST_TIMEOUT_MS = 10_000;
/** A file's body may take as long as it keeps coming: this long without a byte ends it. */
const FILE_IDLE_MS = 30_000;
/** An upload's answer may come this much later per 8 MiB sent, on top of `REQUEST_TIMEOUT_MS`. */
const UPLOAD_MS_PER_8_MIB = 1_000;
/** Reachability probe period; the agent pulls `comfyui` jobs only while the last probe answered. */
const PROBE_MS = 2_000;
const RECONNECT_MS = 1_000;
/** After a cancel, how long ComfyUI gets to say the prompt stopped before the run gives up waiting. */
const CANCEL_WAIT_MS = 5_000;
/** How often the prompts waited on are looked up in ComfyUI's queue and history, in case the socket missed their end. */
const POLL_MS = 10_000;
/** The most a JSON answer may hold: `/object_info` with many custom node packs runs to several MiB. */
const MAX_JSON_BYTES = 32 * 1024 * 1024;
/** The most a file ComfyUI wrote may hold: the largest asset. */
const MAX_FILE_BYTES = ASSETS_DEFAULTS.maxUploadBytes;
const mib = (n: number) => `${Math.round((n / 1024 / 1024) * 10) / 10} MiB`;

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
  /** ComfyUI took it (its `POST /prompt` answered): from then on it is in its queue or its history. */
  queued: boolean;
}

/** A `/history/<id>` entry. */
interface HistoryEntry {
  outputs?: Record<string, Record<string, unknown>>;
  status?: { status_str?: string; messages?: [string, Record<string, unknown>][] };
}

/** ComfyUI's `node_errors` (of a refused prompt) as one line. */
function nodeErrorsText(
  errors: Record<string, { errors?: { message?: string; details?: string }[]; class_type?: string }> | undefined,
): string {
  return Object.entries(errors ?? {})
    .map(
      ([id, n]) =>
        `node ${id} (${n?.class_type ?? "?"}): ${(n?.errors ?? []).map((x) => [x.message, x.details].filter(Boolean).join(": ")).join("; ")}`,
    )
    .join("; ");
}

/** An `execution_error`'s data as the run's failure: which node, of which class, and what it raised. */
function nodeFailure(d: Record<string, unknown>, classes: Record<string, string>): ComfyError {
  const node = String(d.node_id ?? "?");
  const cls = String(d.node_type ?? (Object.hasOwn(classes, node) ? classes[node] : "?"));
  const why = String(d.exception_message ?? "failed").trim();
  const type = d.exception_type ? ` [${String(d.exception_type)}]` : "";
  return new ComfyError(`ComfyUI node ${node} (${cls}) failed: ${why}${type}`);
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
  private pollTimer: NodeJS.Timeout | null = null;
  /** A resync runs; `resyncAgain`: one more was asked for meanwhile. */
  private resyncing = false;
  private resyncAgain = false;

  constructor(
    readonly baseUrl: string,
    private readonly log: (line: string) => void,
    private readonly opts: { pollMs?: number; fileIdleMs?: number } = {},
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
    // While ComfyUI does not answer there is nothing to ask; the reconnect once it is back asks.
    this.pollTimer = setInterval(() => this.info.reachable && void this.resync(), this.opts.pollMs ?? POLL_MS);
    this.pollTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.probeTimer) clearInterval(this.probeTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
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
      void this.resync();
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
          this.complete(promptId, {});
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
      case "execution_error":
        this.finish(promptId, (ww) => ww.fail(nodeFailure(d, ww.classes)));
        return;
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

  /**
   * The prompt is over: done with its outputs (what the socket gave, and `more` from the history), unless its
   * output nodes ran (not cached) and none reported any, which is no success to pass on.
   */
  private complete(promptId: string, more: Record<string, Record<string, unknown>>): void {
    this.finish(promptId, (w) => {
      const outputs = { ...w.outputs, ...more };
      const silent = Object.keys(outputs).length === 0 ? this.outputNodes(w).filter((id) => !w.nodesDone.has(id)) : [];
      if (silent.length === 0) return w.done(outputs);
      const nodes = silent.map((id) => `${id} (${w.classes[id]})`).join(", ");
      w.fail(new ComfyError(`ComfyUI reported no outputs for the prompt, though its output node(s) ${nodes} ran`));
    });
  }

  /** The prompt's nodes whose class is an output node (as `/object_info` says; none known before it is read). */
  private outputNodes(w: Watch): string[] {
    return Object.entries(w.classes)
      .filter(([, cls]) => this.classes?.get(cls)?.outputNode === true)
      .map(([id]) => id);
  }

  /**
   * Each prompt waited on that ComfyUI no longer has queued or running (`GET /queue`) is over or lost: its history
   * entry settles it, and without one it fails. After a reconnect and every `pollMs`; one at a time.
   */
  private async resync(): Promise<void> {
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    try {
      do {
        this.resyncAgain = false;
        const ids = [...this.watches].filter(([, w]) => w.queued).map(([id]) => id);
        if (ids.length === 0) break;
        const queued = await this.queued();
        for (const id of ids) if (!queued.has(id)) await this.fromHistory(id);
      } while (this.resyncAgain);
    } catch (err) {
      this.log(`ComfyUI's queue or history is unreadable (the next check tries again): ${(err as Error).message}`);
    } finally {
      this.resyncing = false;
    }
  }

  /** The ids of the prompts ComfyUI runs or has queued (`queue_running`, `queue_pending`: `[number, id, …]`). */
  private async queued(): Promise<Set<string>> {
    const q = (await this.api("GET", "/queue")) as { queue_running?: unknown; queue_pending?: unknown } | null;
    const ids = new Set<string>();
    for (const list of [q?.queue_running, q?.queue_pending])
      for (const item of Array.isArray(list) ? list : []) if (Array.isArray(item)) ids.add(String(item[1]));
    return ids;
  }

  /** A prompt that is not queued: its history entry says how it ended; without one, ComfyUI lost it. */
  private async fromHistory(promptId: string): Promise<void> {
    const h = (await this.api("GET", `/history/${encodeURIComponent(promptId)}`)) as Record<string, HistoryEntry>;
    const entry = h !== null && typeof h === "object" && Object.hasOwn(h, promptId) ? h[promptId] : undefined;
    if (!entry) {
      const why = `ComfyUI lost prompt ${promptId}: it is neither queued, running nor in its history (did ComfyUI restart?)`;
      this.finish(promptId, (w) => w.fail(new ComfyError(why)));
      return;
    }
    const messages = Array.isArray(entry.status?.messages) ? entry.status.messages : [];
    const said = (type: string) => messages.find((m) => Array.isArray(m) && m[0] === type)?.[1];
    const w = this.watches.get(promptId);
    for (const n of (said("execution_cached")?.nodes as unknown[] | undefined) ?? []) w?.nodesDone.add(String(n));
    if (entry.status?.status_str !== "error") return this.complete(promptId, entry.outputs ?? {});
    const error = said("execution_error");
    const interrupted = said("execution_interrupted");
    this.finish(promptId, (ww) =>
      ww.fail(
        error
          ? nodeFailure(error, ww.classes)
          : new ComfyError(
              interrupted
                ? `ComfyUI interrupted the prompt at node ${String(interrupted.node_id ?? "?")}`
                : `ComfyUI's history says prompt ${promptId} failed, and not which node nor why (see ComfyUI's log)`,
            ),
      ),
    );
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
      const watch = { hooks, outputs: {}, done: resolve, fail: reject, classes, nodesDone: new Set<string>() };
      this.watches.set(promptId, { ...watch, queued: false });
    });
    finished.catch(() => undefined); // settled below either way
    const body = { prompt, client_id: this.clientId, prompt_id: promptId };
    let reply: unknown;
    try {
      reply = await this.api("POST", "/prompt", body, signal);
    } catch (err) {
      this.watches.delete(promptId);
      throw err;
    }
    const refused = queueRefusal(reply, promptId);
    if (refused) {
      this.watches.delete(promptId);
      // ComfyUI queues a prompt whose node errors spare some outputs: it must not run unwatched.
      if ((reply as { prompt_id?: unknown } | null)?.prompt_id === promptId) await this.cancel(promptId);
      throw refused;
    }
    const watch = this.watches.get(promptId);
    if (watch) watch.queued = true;
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
    const ms = REQUEST_TIMEOUT_MS + Math.ceil(bytes.length / (8 * 1024 * 1024)) * UPLOAD_MS_PER_8_MIB;
    const { res, deadline } = await this.request("POST", "/upload/image", form, signal, ms);
    const text = new TextDecoder().decode(await this.body(res, deadline, MAX_JSON_BYTES, "POST /upload/image", signal));
    if (res.status !== 200)
      throw new ComfyError(`ComfyUI refused the upload of ${filename} (HTTP ${res.status}): ${text.slice(0, 200)}`);
    const r = JSON.parse(text) as { name?: string; subfolder?: string };
    if (typeof r.name !== "string")
      throw new ComfyError(`ComfyUI's answer to the upload of ${filename} names no file: ${text.slice(0, 200)}`);
    return r.subfolder ? `${r.subfolder}/${r.name}` : r.name;
  }

  /** The bytes of a file ComfyUI wrote, at most `MAX_FILE_BYTES`. */
  async view(f: ComfyFile, signal?: AbortSignal): Promise<Uint8Array> {
    const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder ?? "", type: f.type ?? "output" });
    const { res, deadline } = await this.request("GET", `/view?${q.toString()}`, undefined, signal);
    // A large file on a slow link takes longer than an API call: it may, while its bytes keep coming.
    deadline.idle(this.opts.fileIdleMs ?? FILE_IDLE_MS);
    const name = `${f.type}/${f.subfolder ? `${f.subfolder}/` : ""}${f.filename}`;
    if (res.status !== 200) {
      deadline.clear();
      await res.body?.cancel().catch(() => undefined);
      throw new ComfyError(`ComfyUI has no ${name} (HTTP ${res.status})`);
    }
    return this.body(res, deadline, MAX_FILE_BYTES, `GET /view of ${name}`, signal);
  }

  /**
   * `res`'s body, of at most `max` bytes: a longer declared length is refused unread, and reading stops as soon as
   * more came. The request's deadline (re-armed by each chunk when it is an idle one) and `signal` bound it; `what`
   * names the request in errors.
   */
  private async body(
    res: Response,
    deadline: Deadline,
    max: number,
    what: string,
    signal?: AbortSignal,
  ): Promise<Uint8Array> {
    const declared = Number(res.headers.get("content-length") ?? Number.NaN);
    const tooLarge = (size: string) =>
      new ComfyError(`ComfyUI's answer to ${what} ${size} the ${mib(max)} this agent reads: not read`);
    if (declared > max) {
      deadline.clear();
      await res.body?.cancel().catch(() => undefined);
      throw tooLarge(`declares ${declared} bytes, more than`);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = res.body?.getReader();
    try {
      for (;;) {
        const next = await reader?.read();
        if (!next || next.done) break;
        deadline.touch();
        total += next.value.length;
        if (total > max) throw tooLarge("runs past");
        chunks.push(next.value);
      }
    } catch (err) {
      void reader?.cancel().catch(() => undefined);
      if (err instanceof ComfyError) throw err;
      if (signal?.aborted) throw signal.reason;
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = deadline.expired ? deadline.said() : (e.cause?.message ?? e.cause?.code ?? e.message);
      const of = Number.isFinite(declared) ? ` of the ${declared} it declared` : "";
      throw new ComfyError(`ComfyUI's answer to ${what} was cut off after ${total} bytes${of} (${why})`);
    } finally {
      deadline.clear();
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  /**
   * A request with a deadline (`ms`, which bounds its body too unless the caller makes it an idle one); `body` is
   * sent as JSON, or as the multipart form it is.
   */
  private async request(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
    ms = REQUEST_TIMEOUT_MS,
  ): Promise<{ res: Response; deadline: Deadline }> {
    const deadline = new Deadline(ms);
    const form = body instanceof FormData;
    try {
      const res = await fetch(new URL(path, this.endpoint), {
        method,
        headers: body === undefined || form ? this.headers : { ...this.headers, "content-type": "application/json" },
        body: body === undefined ? undefined : form ? body : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal,
      });
      return { res, deadline };
    } catch (err) {
      deadline.clear();
      if (signal?.aborted) throw signal.reason;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = deadline.expired
        ? `no answer in ${ms} ms`
        : (cause?.code ?? cause?.message ?? (err as Error).message);
      const said = `ComfyUI at ${this.shownUrl} is unreachable (${method} ${path.split("?")[0]}: ${why})`;
      throw new ComfyError(redactSecretsIn(said, secretsOfUrl(this.baseUrl)));
    }
  }

  /**
   * A JSON API call (its answer at most `MAX_JSON_BYTES`); ComfyUI's own error (its 400 `{error, node_errors}`)
   * becomes the message, and a 2xx answer that is not JSON fails.
   */
  private async api(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const { res, deadline } = await this.request(method, path, body, signal);
    const what = `${method} ${path.split("?")[0]}`;
    const text = new TextDecoder().decode(await this.body(res, deadline, MAX_JSON_BYTES, what, signal));
    let json: unknown = null;
    let isJson = text === "";
    try {
      json = text === "" ? null : JSON.parse(text);
      isJson = true;
    } catch {
      /* not JSON */
    }
    if (res.status >= 200 && res.status < 300) {
      if (!isJson) throw new ComfyError(`ComfyUI's answer to ${what} is not JSON: ${text.slice(0, 200)}`);
      return json;
    }
    const e = json as {
      error?: { type?: string; message?: string; details?: string } | string;
      node_errors?: Record<string, { errors?: { message?: string; details?: string }[]; class_type?: string }>;
    } | null;
    const err = typeof e?.error === "string" ? e.error : (e?.error?.message ?? text.slice(0, 200));
    const nodes = nodeErrorsText(e?.node_errors);
    throw new ComfyError(
      `ComfyUI refused ${method} ${path.split("?")[0]} (HTTP ${res.status}): ${err}${nodes ? ` — ${nodes}` : ""}`,
    );
  }
}

/**
 * Why ComfyUI's answer to `POST /prompt` is no queued prompt to wait on, or null: it must name the prompt (as sent)
 * and list no `node_errors` (ComfyUI lists them when some outputs are invalid, and queues the rest).
 */
function queueRefusal(reply: unknown, promptId: string): ComfyError | null {
  const r = (reply ?? {}) as {
    prompt_id?: unknown;
    error?: { message?: string } | string;
    node_errors?: Parameters<typeof nodeErrorsText>[0] | [];
  };
  const errors = r.node_errors && !Array.isArray(r.node_errors) ? nodeErrorsText(r.node_errors) : "";
  if (errors) {
    const said = typeof r.error === "string" ? r.error : r.error?.message;
    return new ComfyError(`ComfyUI refused the prompt${said ? `: ${said}` : ""} — ${errors}`);
  }
  if (r.prompt_id === promptId) return null;
  const shown = (JSON.stringify(reply) ?? String(reply)).slice(0, 200);
  return new ComfyError(`ComfyUI's answer to POST /prompt does not say it queued prompt ${promptId}: ${shown}`);
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

/**
 * A request's deadline: its whole time (`ms` from the start), or, once `idle` is called, at most that long without
 * a byte of the body. Its signal aborts the fetch and the body's reads with a TimeoutError.
 */
class Deadline {
  private readonly ctl = new AbortController();
  private timer: ReturnType<typeof setTimeout>;
  private idleMs: number | null = null;

  constructor(private readonly ms: number) {
    this.timer = this.arm(ms);
  }

  get signal(): AbortSignal {
    return this.ctl.signal;
  }

  get expired(): boolean {
    return this.ctl.signal.aborted;
  }

  /** From now on, the body may take as long as no gap between its bytes exceeds `ms`. */
  idle(ms: number): void {
    this.idleMs = ms;
    this.touch();
  }

  /** A chunk came: an idle deadline starts again. */
  touch(): void {
    if (this.idleMs === null || this.expired) return;
    clearTimeout(this.timer);
    this.timer = this.arm(this.idleMs);
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  /** Why it expired, in words. */
  said(): string {
    return this.idleMs === null ? `no end in ${this.ms} ms` : `no byte for ${this.idleMs} ms`;
  }

  private arm(ms: number): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => this.ctl.abort(new DOMException("timeout", "TimeoutError")), ms);
    timer.unref?.();
    return timer;
  }
}
