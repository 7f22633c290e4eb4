/**
 * A local server that speaks ComfyUI's HTTP + WebSocket API as documented (
 * Comfy-Org/ComfyUI server.py / execution.py), for the ComfyUI agent's tests: the fake sits on the far side of a
 * real socket. Prompts run one at a time from a queue; events go only to the socket of the prompt's `client_id`;
 * the history is written before the final `executing {node: null}`; nothing is replayed to a reconnecting socket.
 *
 * `/object_info` lists its classes as ComfyUI does (inputs, outputs, categories); with `strict` a prompt is validated
 * as ComfyUI validates one (required inputs, link types, an output node). Node classes it runs: loaders and
 * encoders (instant), `ImageScale` (passes a loaded image through), `KSampler` (`steps` progress events, a preview frame per
 * step), `SaveImage` (a PNG-signed file of `_size` bytes, default 1000, reported by `executed` and served by
 * `/view`; the bytes of the LoadImage its `images` come from, if they do), `LoadImage` (a file of the input folder,
 * put there by `POST /upload/image`), `Fail` (an `execution_error` with `inputs.message`). Any other class: 400 at
 * `POST /prompt`, as ComfyUI
 * refuses a prompt naming a node it does not have. `GET /queue` lists the running and pending prompts.
 *
 * A ComfyUI that misbehaves, by `mode` (settable at any time): see `FakeComfyMode`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";

type Spec = [unknown, Record<string, unknown>?];
/** One class as `/object_info` gives it (ComfyUI's core classes, trimmed to what the tests use). */
interface ClassInfo {
  input: { required: Record<string, Spec>; optional?: Record<string, Spec> };
  output: string[];
  output_name: string[];
  category: string;
  output_node: boolean;
}
const cls = (category: string, required: Record<string, Spec>, output: string[] = [], outputNode = false) => ({
  input: { required },
  output,
  output_name: output,
  category,
  output_node: outputNode,
});
const CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"];
const SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"];
/** The classes this fake has, as ComfyUI describes them (categories as ComfyUI files them). */
export const FAKE_CLASSES: Record<string, ClassInfo> = {
  CheckpointLoaderSimple: cls("loaders", { ckpt_name: [CHECKPOINTS] }, ["MODEL", "CLIP", "VAE"]),
  CLIPTextEncode: cls("conditioning", { text: ["STRING", { multiline: true }], clip: ["CLIP"] }, ["CONDITIONING"]),
  EmptyLatentImage: cls(
    "latent",
    {
      width: ["INT", { default: 512, min: 16, max: 16384 }],
      height: ["INT", { default: 512, min: 16, max: 16384 }],
      batch_size: ["INT", { default: 1, min: 1, max: 4096 }],
    },
    ["LATENT"],
  ),
  KSampler: cls(
    "sampling",
    {
      model: ["MODEL"],
      seed: ["INT", { default: 0, min: 0, max: 0xffffffffffff, control_after_generate: true }],
      steps: ["INT", { default: 20, min: 1, max: 10000 }],
      cfg: ["FLOAT", { default: 8.0, min: 0, max: 100 }],
      sampler_name: [SAMPLERS],
      scheduler: [["normal", "karras"]],
      positive: ["CONDITIONING"],
      negative: ["CONDITIONING"],
      latent_image: ["LATENT"],
      denoise: ["FLOAT", { default: 1.0, min: 0, max: 1 }],
    },
    ["LATENT"],
  ),
  KSamplerSelect: cls("sampling/custom_sampling/samplers", { sampler_name: ["COMBO", { options: SAMPLERS }] }, [
    "SAMPLER",
  ]),
  VAEDecode: cls("latent", { samples: ["LATENT"], vae: ["VAE"] }, ["IMAGE"]),
  VAEEncode: cls("latent", { pixels: ["IMAGE"], vae: ["VAE"] }, ["LATENT"]),
  ImageScale: cls(
    "image/upscaling",
    {
      image: ["IMAGE"],
      upscale_method: [["nearest-exact", "bilinear", "lanczos"]],
      width: ["INT", { default: 512, min: 0, max: 16384 }],
      height: ["INT", { default: 512, min: 0, max: 16384 }],
      crop: [["disabled", "center"]],
    },
    ["IMAGE"],
  ),
  LoadImage: cls("image", { image: [["example.png"], { image_upload: true }] }, ["IMAGE", "MASK"]),
  SaveImage: cls("image", { images: ["IMAGE"], filename_prefix: ["STRING", { default: "ComfyUI" }] }, [], true),
  Fail: cls("testing", { message: ["STRING", { default: "boom" }] }, [], true),
};
const KNOWN = new Set(Object.keys(FAKE_CLASSES));

interface Queued {
  id: string;
  number: number;
  clientId: string;
  prompt: Record<string, { class_type: string; inputs?: Record<string, unknown> }>;
}

/**
 * How the fake misbehaves: `huge-file` (`/view` declares 2 GiB and streams it), `endless-file` (`/view` streams
 * without a declared length, without end), `cut-file` (`/view` declares 100000 bytes, sends 40, drops the
 * connection), `endless-json` (`POST /prompt` answers 200 with JSON text without end), `prompt-not-json` (`POST
 * /prompt` answers 200 with text that is not JSON), `prompt-node-errors` (it queues the prompt and answers 200
 * with `node_errors`, as ComfyUI does when some outputs are valid), `forget-prompt` (after the first sampler step
 * the socket drops and the prompt is gone: no queue, no history, as after a restart), `vanish` (the prompt is
 * answered as queued, but never is; events come for another prompt only), `no-outputs` (SaveImage reports no
 * files: no `executed`, none in the history), `bare-error` (after the first sampler step the socket drops and the
 * history says `error` with no messages), `slow-file` (`/view` sends 1 MiB as 64 KiB a second: 16 s of a slow
 * link), `stalled-file` (`/view` declares 100000 bytes, sends 40 and then nothing, keeping the connection).
 */
export type FakeComfyMode =
  | "huge-file"
  | "endless-file"
  | "cut-file"
  | "endless-json"
  | "prompt-not-json"
  | "prompt-node-errors"
  | "forget-prompt"
  | "vanish"
  | "no-outputs"
  | "bare-error"
  | "slow-file"
  | "stalled-file";

export interface FakeComfyOptions {
  /** Time per sampler step. @default 20 */
  stepMs?: number;
  /** Close the prompt's socket once, after the first sampler step (the run goes on), to test the resync. */
  dropSocketAfterFirstStep?: boolean;
  /**
   * Validate a prompt as ComfyUI does before queueing it: every required input given, every link to an output that
   * exists and is of the input's type, at least one output node. Off: only the classes are checked.
   */
  strict?: boolean;
  /** Misbehave so (see `FakeComfyMode`). */
  mode?: FakeComfyMode;
}

/** ComfyUI's validation of a queued prompt: its 400 body, or null when the prompt is valid. */
function validationErrors(prompt: Queued["prompt"], inputFiles: string[]): Record<string, unknown> | null {
  const nodeErrors: Record<string, unknown> = {};
  const fail = (id: string, type: string, message: string, details: string) => {
    const e = (nodeErrors[id] ??= { errors: [], dependent_outputs: [], class_type: prompt[id]!.class_type }) as {
      errors: unknown[];
    };
    e.errors.push({ type, message, details, extra_info: {} });
  };
  for (const [id, n] of Object.entries(prompt)) {
    const info = FAKE_CLASSES[n.class_type]!;
    for (const [name, [kind]] of Object.entries(info.input.required)) {
      const v = n.inputs?.[name];
      if (v === undefined) {
        fail(id, "required_input_missing", "Required input is missing", name);
        continue;
      }
      if (!Array.isArray(v) || typeof kind !== "string" || ["INT", "FLOAT", "STRING", "BOOLEAN"].includes(kind)) {
        // LoadImage's choices are the input folder's files when the prompt is validated.
        const choices =
          n.class_type === "LoadImage" && name === "image" ? [...(kind as string[]), ...inputFiles] : kind;
        if (Array.isArray(choices) && !choices.includes(v))
          fail(id, "value_not_in_list", "Value not in list", `${name}: '${String(v)}' not in ${JSON.stringify(kind)}`);
        continue;
      }
      const [from, index] = v as [string, number];
      const src = prompt[from];
      const type = src ? FAKE_CLASSES[src.class_type]?.output[index] : undefined;
      if (type !== kind)
        fail(
          id,
          "return_type_mismatch",
          "Return type mismatch between linked nodes",
          `${name}, received_type(${String(type)}) mismatch input_type(${kind})`,
        );
    }
  }
  if (Object.keys(nodeErrors).length > 0) {
    const error = {
      type: "prompt_outputs_failed_validation",
      message: "Prompt outputs failed validation",
      details: "",
      extra_info: {},
    };
    return { error, node_errors: nodeErrors };
  }
  if (!Object.values(prompt).some((n) => FAKE_CLASSES[n.class_type]!.output_node))
    return {
      error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} },
      node_errors: [],
    };
  return null;
}

/** Nodes after the nodes their linked inputs (`[node id, output index]`) come from, as ComfyUI runs them. */
function executionOrder(prompt: Queued["prompt"]): [string, Queued["prompt"][string]][] {
  const done = new Set<string>();
  const out: [string, Queued["prompt"][string]][] = [];
  const deps = (n: Queued["prompt"][string]) =>
    Object.values(n.inputs ?? {})
      .filter((v): v is [string, number] => Array.isArray(v) && typeof v[0] === "string")
      .map((v) => v[0]);
  while (out.length < Object.keys(prompt).length) {
    const next = Object.entries(prompt).find(
      ([id, n]) => !done.has(id) && deps(n).every((d) => done.has(d) || !(d in prompt)),
    );
    if (!next) throw new Error("cycle in prompt");
    done.add(next[0]);
    out.push(next);
  }
  return out;
}

export class FakeComfyUI {
  /** Every HTTP request: method, path, parsed JSON body. */
  readonly requests: { method: string; path: string; body: unknown }[] = [];
  /** Files written by SaveImage: `<type>/<subfolder>/<filename>` → bytes. */
  readonly files = new Map<string, Buffer>();
  readonly history: Record<string, unknown> = {};
  /** Socket metadata per clientId: whether it asked for previews with metadata. */
  private readonly sockets = new Map<string, { ws: WebSocket; previewMeta: boolean }>();
  private readonly queue: Queued[] = [];
  private running: Queued | null = null;
  private interruptRequested: string | null = null;
  private number = 0;
  private dropped = false;
  private readonly wss = new WebSocketServer({ noServer: true });
  private server!: Server;
  port = 0;
  /** How it misbehaves now; null: as ComfyUI does. */
  mode: FakeComfyMode | null;
  /** Bytes a misbehaving answer (`huge-file`, `endless-file`, `endless-json`) wrote before its client went away. */
  sentBytes = 0;

  private constructor(readonly opts: FakeComfyOptions) {
    this.mode = opts.mode ?? null;
  }

  static async start(opts: FakeComfyOptions = {}, port = 0): Promise<FakeComfyUI> {
    const f = new FakeComfyUI(opts);
    await f.listen(port);
    return f;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private async listen(port: number): Promise<void> {
    this.server = createServer((req, res) => void this.onHttp(req, res));
    this.server.on("upgrade", (req, sock, head) => {
      const u = new URL(req.url ?? "/", "http://x");
      if (u.pathname !== "/ws") return sock.destroy();
      this.wss.handleUpgrade(req, sock, head, (ws) =>
        this.onSocket(ws, u.searchParams.get("clientId") ?? Math.random().toString(16).slice(2)),
      );
    });
    await new Promise<void>((r) => this.server.listen(port, "127.0.0.1", r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Stops listening and drops every socket (a ComfyUI that went away). */
  async stop(): Promise<void> {
    for (const s of this.sockets.values()) s.ws.terminate();
    this.sockets.clear();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Listens again on the same port (a ComfyUI that came back). */
  async restart(): Promise<void> {
    await this.listen(this.port);
  }

  private onSocket(ws: WebSocket, clientId: string): void {
    this.sockets.set(clientId, { ws, previewMeta: false });
    ws.send(
      JSON.stringify({
        type: "status",
        data: { status: { exec_info: { queue_remaining: this.queue.length + (this.running ? 1 : 0) } }, sid: clientId },
      }),
    );
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      try {
        const m = JSON.parse(String(data)) as { type?: string; data?: { supports_preview_metadata?: boolean } };
        if (m.type === "feature_flags") {
          const s = this.sockets.get(clientId);
          if (s) s.previewMeta = m.data?.supports_preview_metadata === true;
          ws.send(
            JSON.stringify({
              type: "feature_flags",
              data: { supports_preview_metadata: true, max_upload_size: 104857600 },
            }),
          );
        }
      } catch {
        /* ComfyUI ignores what it cannot read */
      }
    });
    ws.on("close", () => {
      if (this.sockets.get(clientId)?.ws === ws) this.sockets.delete(clientId);
    });
  }

  private send(clientId: string, type: string, data: Record<string, unknown>): void {
    const s = this.sockets.get(clientId);
    if (s && s.ws.readyState === s.ws.OPEN) s.ws.send(JSON.stringify({ type, data }));
  }

  private async onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const rawBytes = Buffer.concat(chunks);
    const raw = rawBytes.toString("utf8");
    let body: unknown = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = /^multipart\//.test(req.headers["content-type"] ?? "") ? "<multipart>" : raw;
    }
    const u = new URL(req.url ?? "/", "http://x");
    const path = u.pathname.replace(/^\/api(?=\/)/, "");
    this.requests.push({ method: req.method ?? "GET", path, body });
    const json = (status: number, v: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    if (req.method === "GET" && path === "/system_stats") {
      return json(200, {
        system: { os: "posix", comfyui_version: "0.3.64", python_version: "3.12" },
        devices: [
          {
            name: "cuda:0 NVIDIA H200 : cudaMallocAsync",
            type: "cuda",
            index: 0,
            vram_total: 150_000_000_000,
            vram_free: 149_000_000_000,
          },
        ],
      });
    }
    if (req.method === "GET" && path === "/object_info") {
      const named = (name: string, i: ClassInfo) => ({
        ...i,
        input_order: { required: Object.keys(i.input.required) },
        output_is_list: i.output.map(() => false),
        name,
        display_name: name.replace(/([a-z])([A-Z])/g, "$1 $2"),
        description: "",
        python_module: "nodes",
      });
      return json(200, Object.fromEntries(Object.entries(FAKE_CLASSES).map(([k, v]) => [k, named(k, v)])));
    }
    if (req.method === "POST" && path === "/prompt") {
      const b = (body ?? {}) as { prompt?: Queued["prompt"]; client_id?: string; prompt_id?: string };
      if (this.mode === "endless-json") return this.endless(res, "application/json", '{"prompt_id": "');
      if (this.mode === "prompt-not-json") {
        res.writeHead(200, { "content-type": "text/html" });
        res.end("<<<garbage not json>>>");
        return;
      }
      if (!b.prompt || typeof b.prompt !== "object")
        return json(400, {
          error: { type: "no_prompt", message: "No prompt provided", details: "", extra_info: {} },
          node_errors: {},
        });
      for (const [id, n] of Object.entries(b.prompt)) {
        if (!KNOWN.has(n.class_type)) {
          return json(400, {
            error: {
              type: "invalid_prompt",
              message: `Cannot execute because node ${n.class_type} does not exist.`,
              details: `Node ID '#${id}'`,
              extra_info: {},
            },
            node_errors: {},
          });
        }
      }
      const inputs = [...this.files.keys()]
        .filter((k) => k.startsWith("input/"))
        .map((k) => k.split("/").slice(2).join("/"));
      const invalid = this.opts.strict ? validationErrors(b.prompt, inputs) : null;
      if (invalid) return json(400, invalid);
      const q: Queued = {
        id: b.prompt_id ?? Math.random().toString(16).slice(2),
        number: this.number++,
        clientId: b.client_id ?? "",
        prompt: b.prompt,
      };
      if (this.mode === "vanish") {
        json(200, { prompt_id: q.id, number: q.number, node_errors: {} });
        this.send(q.clientId, "execution_start", { prompt_id: "someone-else", timestamp: Date.now() });
        this.send(q.clientId, "progress", { value: 1, max: 5, prompt_id: "someone-else", node: "3" });
        return;
      }
      this.queue.push(q);
      const nodeErrors =
        this.mode === "prompt-node-errors"
          ? {
              "9": {
                errors: [{ type: "required_input_missing", message: "Required input is missing", details: "images" }],
                dependent_outputs: ["9"],
                class_type: "SaveImage",
              },
            }
          : {};
      json(200, { prompt_id: q.id, number: q.number, node_errors: nodeErrors });
      void this.pump();
      return;
    }
    if (req.method === "POST" && path === "/upload/image") {
      // Multipart as ComfyUI takes it: `image` (the file), `type`, `subfolder`, `overwrite`.
      const form = await new Request("http://x/", {
        method: "POST",
        headers: { "content-type": req.headers["content-type"] ?? "" },
        body: rawBytes,
      }).formData();
      const file = form.get("image");
      if (!file || typeof file === "string") return json(400, { error: "no image" });
      const type = String(form.get("type") ?? "input");
      const subfolder = String(form.get("subfolder") ?? "");
      this.files.set(`${type}/${subfolder}/${file.name}`, Buffer.from(await file.arrayBuffer()));
      this.requests[this.requests.length - 1]!.body = {
        image: file.name,
        type,
        subfolder,
        overwrite: form.get("overwrite"),
      };
      return json(200, { name: file.name, subfolder, type });
    }
    if (req.method === "GET" && path === "/queue") {
      const item = (q: Queued) => [q.number, q.id, q.prompt, { client_id: q.clientId }, []];
      return json(200, {
        queue_running: this.running ? [item(this.running)] : [],
        queue_pending: this.queue.map(item),
      });
    }
    if (req.method === "POST" && path === "/queue") {
      const del = ((body ?? {}) as { delete?: string[] }).delete ?? [];
      for (const id of del) {
        const i = this.queue.findIndex((q) => q.id === id);
        if (i >= 0) this.queue.splice(i, 1);
      }
      return json(200, {});
    }
    if (req.method === "POST" && path === "/interrupt") {
      const id = ((body ?? {}) as { prompt_id?: string }).prompt_id;
      if (this.running && (!id || id === this.running.id)) this.interruptRequested = this.running.id;
      return json(200, {});
    }
    if (req.method === "GET" && path.startsWith("/history/")) {
      const id = decodeURIComponent(path.slice("/history/".length));
      return json(200, this.history[id] ? { [id]: this.history[id] } : {});
    }
    if (req.method === "GET" && path === "/view" && this.mode === "huge-file") {
      res.writeHead(200, { "content-type": "image/png", "content-length": String(2 * 1024 * 1024 * 1024) });
      return this.endless(res);
    }
    if (req.method === "GET" && path === "/view" && this.mode === "endless-file") {
      res.writeHead(200, { "content-type": "image/png" });
      return this.endless(res);
    }
    if (req.method === "GET" && path === "/view" && this.mode === "slow-file") {
      res.writeHead(200, { "content-type": "image/png", "content-length": String(16 * 64 * 1024) });
      let sent = 0;
      const drip = setInterval(() => {
        res.write(Buffer.alloc(64 * 1024, 0x89));
        if (++sent === 16) {
          clearInterval(drip);
          res.end();
        }
      }, 1_000);
      res.on("close", () => clearInterval(drip));
      return;
    }
    if (req.method === "GET" && path === "/view" && this.mode === "stalled-file") {
      res.writeHead(200, { "content-type": "image/png", "content-length": "100000" });
      res.write(Buffer.alloc(40, 0x89));
      return;
    }
    if (req.method === "GET" && path === "/view" && this.mode === "cut-file") {
      res.writeHead(200, { "content-type": "image/png", "content-length": "100000" });
      res.write(Buffer.alloc(40, 0x89));
      setTimeout(() => req.socket.destroy(), 50);
      return;
    }
    if (req.method === "GET" && path === "/view") {
      const key = `${u.searchParams.get("type") ?? "output"}/${u.searchParams.get("subfolder") ?? ""}/${u.searchParams.get("filename") ?? ""}`;
      const f = this.files.get(key);
      if (!f) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "image/png", "content-length": f.length });
      res.end(f);
      return;
    }
    res.writeHead(404).end();
  }

  /** Writes `head`, then 1 MiB blocks until the client goes away (or 2 GiB), counting them in `sentBytes`. */
  private async endless(res: ServerResponse, contentType?: string, head = ""): Promise<void> {
    if (contentType) res.writeHead(200, { "content-type": contentType });
    res.write(head);
    const block = Buffer.alloc(1024 * 1024, 0x41);
    let gone = false;
    res.once("close", () => (gone = true));
    while (!gone && this.sentBytes < 2 * 1024 * 1024 * 1024) {
      this.sentBytes += block.length;
      if (!res.write(block)) await new Promise((r) => (res.once("drain", r), res.once("close", r)));
    }
    res.end();
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    const q = this.queue.shift();
    if (!q) return;
    this.running = q;
    try {
      await this.execute(q);
    } finally {
      this.running = null;
      void this.pump();
    }
  }

  private async execute(q: Queued): Promise<void> {
    const c = q.clientId;
    const messages: [string, Record<string, unknown>][] = [];
    const outputs: Record<string, unknown> = {};
    const ev = (type: string, data: Record<string, unknown>) => {
      if (type.startsWith("execution_")) messages.push([type, data]);
      this.send(c, type, data);
    };
    ev("execution_start", { prompt_id: q.id, timestamp: Date.now() });
    ev("execution_cached", { nodes: [], prompt_id: q.id, timestamp: Date.now() });
    const end = (status: "success" | "error") => {
      this.history[q.id] = {
        prompt: [q.number, q.id, q.prompt, { client_id: c }, []],
        outputs,
        status: { status_str: status, completed: status === "success", messages },
        meta: {},
      };
      this.send(c, "executing", { node: null, prompt_id: q.id });
    };
    /** Bytes a LoadImage node read, by node id (a SaveImage of them saves them). */
    const loaded = new Map<string, Buffer>();
    for (const [id, n] of executionOrder(q.prompt)) {
      this.send(c, "executing", { node: id, display_node: id, prompt_id: q.id });
      const inputs = n.inputs ?? {};
      if (n.class_type === "LoadImage") {
        const name = String(inputs.image ?? "");
        const slash = name.lastIndexOf("/");
        const f = this.files.get(
          `input/${slash > 0 ? name.slice(0, slash) : ""}/${slash > 0 ? name.slice(slash + 1) : name}`,
        );
        if (!f) {
          ev("execution_error", {
            prompt_id: q.id,
            node_id: id,
            node_type: "LoadImage",
            executed: [],
            exception_message: `Invalid image file: ${name}`,
            exception_type: "FileNotFoundError",
            traceback: [],
            current_inputs: {},
            current_outputs: {},
            timestamp: Date.now(),
          });
          end("error");
          return;
        }
        loaded.set(id, f);
      }
      if (n.class_type === "ImageScale" && Array.isArray(inputs.image)) {
        const from = loaded.get(String(inputs.image[0]));
        if (from) loaded.set(id, from); // passes its image through: a test sees which bytes went in
      }
      if (n.class_type === "KSampler") {
        const steps = Number(inputs.steps ?? 4);
        for (let i = 1; i <= steps; i++) {
          await new Promise((r) => setTimeout(r, this.opts.stepMs ?? 20));
          if (this.interruptRequested === q.id) {
            this.interruptRequested = null;
            ev("execution_interrupted", {
              prompt_id: q.id,
              node_id: id,
              node_type: n.class_type,
              executed: [],
              timestamp: Date.now(),
            });
            end("error");
            return;
          }
          this.send(c, "progress", { value: i, max: steps, prompt_id: q.id, node: id });
          this.preview(c, q.id, id, i);
          if (i === 1 && (this.mode === "forget-prompt" || this.mode === "bare-error")) {
            // A restart forgets the prompt; `bare-error` leaves a history entry that says no more than "error".
            if (this.mode === "bare-error")
              this.history[q.id] = {
                prompt: [],
                outputs: {},
                status: { status_str: "error", completed: false, messages: [] },
              };
            this.sockets.get(c)?.ws.terminate();
            return;
          }
          if (i === 1 && this.opts.dropSocketAfterFirstStep && !this.dropped) {
            this.dropped = true;
            this.sockets.get(c)?.ws.terminate();
          }
        }
      } else if (n.class_type === "SaveImage") {
        const size = Number(inputs._size ?? 1000);
        const name = `${String(inputs.filename_prefix ?? "ComfyUI")}_${String(q.number).padStart(5, "0")}_.png`;
        const from = Array.isArray(inputs.images) ? loaded.get(String(inputs.images[0])) : undefined;
        const bytes = from ? Buffer.from(from) : Buffer.alloc(size);
        if (!from) {
          for (let i = 0; i < size; i++) bytes[i] = (i * 7 + q.number) & 0xff;
          Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(bytes);
        }
        this.files.set(`output//${name}`, bytes);
        const output = { images: [{ filename: name, subfolder: "", type: "output" }] };
        if (this.mode !== "no-outputs") {
          outputs[id] = output;
          this.send(c, "executed", { node: id, display_node: id, output, prompt_id: q.id });
        }
      } else if (n.class_type === "Fail") {
        ev("execution_error", {
          prompt_id: q.id,
          node_id: id,
          node_type: "Fail",
          executed: [],
          exception_message: String(inputs.message ?? "boom"),
          exception_type: "RuntimeError",
          traceback: ["..."],
          current_inputs: {},
          current_outputs: {},
          timestamp: Date.now(),
        });
        end("error");
        return;
      }
    }
    ev("execution_success", { prompt_id: q.id, timestamp: Date.now() });
    end("success");
  }

  /** A preview per sampler step: type 4 (with metadata) to a socket that asked for it, else type 1 (legacy). */
  private preview(clientId: string, promptId: string, nodeId: string, step: number): void {
    const s = this.sockets.get(clientId);
    if (!s || s.ws.readyState !== s.ws.OPEN) return;
    const img = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(60, step)]);
    if (s.previewMeta) {
      const meta = Buffer.from(
        JSON.stringify({
          node_id: nodeId,
          prompt_id: promptId,
          display_node_id: nodeId,
          parent_node_id: null,
          real_node_id: nodeId,
          image_type: "image/jpeg",
        }),
      );
      const head = Buffer.alloc(8);
      head.writeUInt32BE(4, 0);
      head.writeUInt32BE(meta.length, 4);
      s.ws.send(Buffer.concat([head, meta, img]));
    } else {
      const head = Buffer.alloc(8);
      head.writeUInt32BE(1, 0);
      head.writeUInt32BE(1, 4);
      s.ws.send(Buffer.concat([head, img]));
    }
  }
}
