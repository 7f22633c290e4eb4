/**
 * A local server speaking OpenAI's documented image and audio endpoints, for the media nodes' tests (the official
 * `openai` SDK talks to it over a real socket; Bearer key `FAKE_KEY`):
 * - `POST /v1/images/generations` (JSON): `{created, data: [{b64_json}]}`, a PNG of the asked `size` filled with
 *   `GENERATED_COLOR`;
 * - `POST /v1/images/edits` (multipart `image`, `prompt`, `model`, `size`): the uploaded image inverted, as PNG;
 * - `POST /v1/audio/transcriptions` (multipart `file`, `model`, `response_format`, `timestamp_granularities[]`):
 *   `{text}` naming the model and the bytes heard, or `verbose_json` with segments and words;
 * - `POST /v1/audio/speech` (JSON): a WAV (24 kHz mono int16) of a tone lasting 50 ms per word of `input`;
 * - `POST /v1/videos` (multipart or JSON): a queued video job; `GET /v1/videos/<id>` reports it `in_progress`
 *   once, then `completed` (model `sora-fails`: `failed`); `GET /v1/videos/<id>/content` sends `videoBytes`.
 * Model `missing` is unknown (404 with OpenAI's error body); a wrong key gets 401.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import sharp from "sharp";
import type { Msg, WsClient } from "./clients.js";

export { FAKE_KEY } from "./fake-llm.js";
import { FAKE_KEY } from "./fake-llm.js";

export const GENERATED_COLOR = { r: 10, g: 200, b: 30 };

export interface MediaRequest {
  path: string;
  headers: IncomingMessage["headers"];
  /** The JSON body, or the multipart form's text fields. */
  fields: Record<string, unknown>;
  /** Multipart files by field name: their bytes and file name. */
  files: Record<string, { bytes: Uint8Array; name: string; type: string }>;
}

/** A mono 16-bit PCM WAV of `samples` samples at `rate` Hz: a 440 Hz tone. */
export function toneWav(samples: number, rate = 24_000): Uint8Array {
  const buf = Buffer.alloc(44 + samples * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + samples * 2, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++)
    buf.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return new Uint8Array(buf);
}

export class FakeMedia {
  readonly requests: MediaRequest[] = [];
  private server!: Server;
  port = 0;
  /** What a finished video job downloads as. */
  videoBytes: Uint8Array = new Uint8Array([0, 0, 0, 8, 0x66, 0x74, 0x79, 0x70]);
  private readonly videos = new Map<string, { model: string; polls: number; seconds: string; size: string }>();

  static async start(): Promise<FakeMedia> {
    const f = new FakeMedia();
    f.server = createServer((req, res) => void f.handle(req, res).catch((err: Error) => f.fail(res, 500, err.message)));
    await new Promise<void>((r) => f.server.listen(0, "127.0.0.1", r));
    f.port = (f.server.address() as AddressInfo).port;
    return f;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private fail(res: ServerResponse, status: number, message: string, code = "invalid_request_error"): void {
    if (res.headersSent) return void res.end();
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message, type: code, param: null, code: null } }));
  }

  private async parse(req: IncomingMessage, path: string): Promise<MediaRequest> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const parsed: MediaRequest = { path, headers: req.headers, fields: {}, files: {} };
    const type = req.headers["content-type"] ?? "";
    if (type.startsWith("multipart/form-data")) {
      const form = await new Request("http://fake/", {
        method: "POST",
        headers: { "content-type": type },
        body,
      }).formData();
      for (const [k, v] of form.entries()) {
        if (typeof v === "string") {
          const prev = parsed.fields[k];
          parsed.fields[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
        } else parsed.files[k] = { bytes: new Uint8Array(await v.arrayBuffer()), name: v.name, type: v.type };
      }
    } else if (body.length > 0) parsed.fields = JSON.parse(body.toString()) as Record<string, unknown>;
    return parsed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0]!;
    const r = await this.parse(req, path);
    this.requests.push(r);
    if (req.headers.authorization !== `Bearer ${FAKE_KEY}`)
      return this.fail(res, 401, "Incorrect API key provided.", "invalid_api_key");
    if (r.fields.model === "missing")
      return this.fail(res, 404, "The model `missing` does not exist or you do not have access to it.");
    const json = (v: unknown) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    switch (path) {
      case "/v1/images/generations":
        return json(await this.generation(r));
      case "/v1/images/edits":
        return json(await this.edit(r));
      case "/v1/audio/transcriptions":
        return json(this.transcription(r));
      case "/v1/audio/speech": {
        const words = String(r.fields.input ?? "")
          .split(/\s+/)
          .filter(Boolean).length;
        res.writeHead(200, { "content-type": "audio/wav" });
        return void res.end(toneWav(Math.max(1, words) * 1200));
      }
      case "/v1/videos": {
        const id = `video_${this.videos.size + 1}`;
        const job = {
          model: String(r.fields.model),
          polls: 0,
          seconds: String(r.fields.seconds ?? "4"),
          size: String(r.fields.size ?? "1280x720"),
        };
        this.videos.set(id, job);
        return json(this.videoObject(id, "queued"));
      }
      default:
        return this.videoRoute(path, res, json);
    }
  }

  private videoObject(id: string, status: string): unknown {
    const job = this.videos.get(id)!;
    const failed = status === "failed";
    return {
      id,
      object: "video",
      model: job.model,
      status,
      progress: status === "completed" ? 100 : 0,
      created_at: Math.floor(Date.now() / 1000),
      completed_at: null,
      expires_at: null,
      prompt: null,
      remixed_from_video_id: null,
      seconds: job.seconds,
      size: job.size,
      error: failed ? { code: "moderation_blocked", message: "the prompt was blocked" } : null,
    };
  }

  private videoRoute(path: string, res: ServerResponse, json: (v: unknown) => void): void {
    const m = /^\/v1\/videos\/([\w-]+)(\/content)?$/.exec(path);
    const job = m ? this.videos.get(m[1]!) : undefined;
    if (!m || !job) return this.fail(res, 404, `no route ${path}`);
    if (m[2]) {
      res.writeHead(200, { "content-type": "video/mp4" });
      return void res.end(this.videoBytes);
    }
    job.polls++;
    const status = job.polls < 2 ? "in_progress" : job.model === "sora-fails" ? "failed" : "completed";
    json(this.videoObject(m[1]!, status));
  }

  private async generation(r: MediaRequest): Promise<unknown> {
    const [w, h] = String(r.fields.size ?? "1024x1024")
      .split("x")
      .map(Number);
    const png = await sharp({ create: { width: w!, height: h!, channels: 3, background: GENERATED_COLOR } })
      .png()
      .toBuffer();
    return { created: Math.floor(Date.now() / 1000), data: [{ b64_json: png.toString("base64") }] };
  }

  private async edit(r: MediaRequest): Promise<unknown> {
    const image = r.files.image ?? r.files["image[]"];
    if (!image) throw new Error("no image in the edit request");
    const png = await sharp(image.bytes).negate({ alpha: false }).png().toBuffer();
    return { created: Math.floor(Date.now() / 1000), data: [{ b64_json: png.toString("base64") }] };
  }

  private transcription(r: MediaRequest): unknown {
    const file = r.files.file;
    if (!file) throw new Error("no file in the transcription request");
    const text = `heard ${file.bytes.byteLength} bytes of ${file.name} with ${String(r.fields.model)}`;
    if (r.fields.response_format !== "verbose_json") return { text };
    const words = text.split(" ").map((word, i) => ({ word, start: i * 0.5, end: i * 0.5 + 0.4 }));
    const segments = [{ id: 0, start: 0, end: words.length * 0.5, text }];
    return { task: "transcribe", language: "english", duration: words.length * 0.5, text, words, segments };
  }
}

/** A media value as a `data:` URI (how a client passes a small image as a param). */
export function dataUri(bytes: Uint8Array, type = "image/png"): string {
  return `data:${type};base64,${Buffer.from(bytes).toString("base64")}`;
}

/** Runs `graph` over the WebSocket and waits for its end (the job's events, its terminal update). */
export async function runGraph(
  ws: WsClient,
  graph: unknown,
  params: Record<string, unknown> = {},
  timeoutMs = 60_000,
): Promise<{ jobId: string; end: Msg; events: Msg[] }> {
  const r = await ws.request("run_job", { graph, params });
  if (!r.result) throw new Error(`run_job refused: ${JSON.stringify(r).slice(0, 500)}`);
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await ws.waitTerminal(jobId, timeoutMs);
  return { jobId, end, events: ws.events(jobId) };
}

/** The bytes of an output value: inline bytes, or the asset it was stored as (fetched from the gateway). */
export async function outputBytes(gatewayUrl: string, value: unknown): Promise<Uint8Array> {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string" && value.startsWith("data:"))
    return new Uint8Array(Buffer.from(value.slice(value.indexOf(",") + 1), "base64"));
  const id = (value as { asset_id?: unknown } | null)?.asset_id;
  if (typeof id !== "string") throw new Error(`not bytes nor an asset: ${JSON.stringify(value)?.slice(0, 200)}`);
  const res = await fetch(`${gatewayUrl}/api/assets/${id}/content`);
  if (!res.ok) throw new Error(`asset ${id}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** A graph: node specs `[id, type, data]` and edges `"src.handle>dst.handle"`. */
export function graphOf(nodes: [string, string, Record<string, unknown>][], edges: string[]) {
  return {
    nodes: nodes.map(([id, type, data]) => ({ id, type, data })),
    edges: edges.map((e, i) => {
      const [from, to] = e.split(">") as [string, string];
      const [source, sourceHandle] = from.split(".") as [string, string];
      const [target, targetHandle] = to.split(".") as [string, string];
      return { id: `e${i}`, source, sourceHandle, target, targetHandle };
    }),
  };
}
