/**
 * A `fetch` for the providers' SDKs that bounds what a streamed reply may do to the agent: a reply that stalls
 * (nothing for `idleMs` between two pieces, or no answer within `startMs`) fails and its request is aborted; a line
 * longer than `maxLineBytes` fails before an SDK's line decoder, quadratic in a line's length, spins on it; and
 * each event of a 2xx stream must be JSON (SSE `data:` fields, `[DONE]` aside; NDJSON lines), as the SDKs skip
 * some pieces that are not rather than fail. Each failure is a `NodeError` naming the provider.
 */
import { NodeError } from "../engine/types.js";

export interface StreamGuard {
  /** Who answers, for messages ("openai"). */
  provider: string;
  /** The longest wait for the answer's headers; absent: left to the caller (the SDKs have their own). */
  startMs?: number;
  /** The longest silence between two pieces of the answer's body. */
  idleMs: number;
  /** The longest line of the body, in bytes. */
  maxLineBytes: number;
  /** What a 2xx body is: Server-Sent Events or newline-delimited JSON. */
  format: "sse" | "ndjson";
  /** The job's signal: an abort ends the request at any point, its headers included. */
  signal?: AbortSignal;
}

const seconds = (ms: number) => `${Math.round(ms / 100) / 10} s`;

/** `fetch` under `g`'s bounds. */
export function guardedFetch(g: StreamGuard): typeof fetch {
  return async (input, init) => {
    const guard = new AbortController();
    const signal = AbortSignal.any([
      guard.signal,
      ...(init?.signal ? [init.signal] : []),
      ...(g.signal ? [g.signal] : []),
    ]);
    const fail = (message: string) => guard.abort(new NodeError(message));
    const startMs = g.startMs;
    const start = startMs
      ? setTimeout(() => fail(`${g.provider} sent no answer within ${seconds(startMs)}`), startMs)
      : undefined;
    let res: Response;
    try {
      res = await fetch(input, { ...init, signal });
    } finally {
      clearTimeout(start);
    }
    if (!res.body) return res;
    const body = guardBody(res.body, g, res.ok ? g.format : null, guard);
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** `body` read on demand, each read within `g.idleMs`, its lines checked; a failure aborts the request. */
function guardBody(
  body: ReadableStream<Uint8Array>,
  g: StreamGuard,
  format: StreamGuard["format"] | null,
  guard: AbortController,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const lines = new LineCheck(g, format);
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let timer: NodeJS.Timeout | undefined;
        const idle = new Promise<never>((_, reject) => {
          const said = `${g.provider} sent nothing for ${seconds(g.idleMs)} in the middle of its answer: the stream stalled`;
          timer = setTimeout(() => reject(new NodeError(said)), g.idleMs);
        });
        try {
          const { done, value } = await Promise.race([reader.read(), idle]);
          if (done) {
            lines.end();
            controller.close();
          } else {
            lines.feed(value);
            controller.enqueue(value);
          }
        } catch (err) {
          // Ours (a stall, a bad line): the request is aborted, which frees its connection.
          if (err instanceof NodeError) guard.abort(err);
          controller.error(err);
        } finally {
          clearTimeout(timer);
        }
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  );
}

const LF = 0x0a;
const CR = 0x0d;

/** Splits a body into lines (LF, CR or CRLF) to bound their length and check the events they make are JSON. */
class LineCheck {
  private readonly pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private afterCR = false;
  /** The `data:` fields of the SSE event being read. */
  private data: string[] = [];
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly g: StreamGuard,
    private readonly format: StreamGuard["format"] | null,
  ) {}

  feed(chunk: Uint8Array): void {
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b !== LF && b !== CR) continue;
      const crlf = b === LF && this.afterCR && i === from && this.pendingBytes === 0;
      this.afterCR = b === CR;
      if (!crlf) {
        this.add(chunk.subarray(from, i));
        this.line();
      }
      from = i + 1;
    }
    if (from < chunk.length) this.afterCR = false;
    this.add(chunk.subarray(from));
  }

  /** The body ended: its last line, and its last event, count too. */
  end(): void {
    if (this.pendingBytes > 0) this.line();
    if (this.format === "sse") this.event();
  }

  private add(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.pendingBytes += bytes.length;
    if (this.pendingBytes > this.g.maxLineBytes)
      throw new NodeError(
        `${this.g.provider} sent a line of more than ${this.g.maxLineBytes / 1024 / 1024} MiB: not a reply this agent reads`,
      );
    this.pending.push(bytes);
  }

  private line(): void {
    const text = this.decoder.decode(Buffer.concat(this.pending));
    this.pending.length = 0;
    this.pendingBytes = 0;
    if (this.format === "ndjson" && text.trim() !== "") this.json(text);
    if (this.format !== "sse") return;
    if (text === "") this.event();
    else if (text.startsWith("data:")) this.data.push(text.slice(text.startsWith("data: ") ? 6 : 5));
  }

  /** An SSE event ends (a blank line): its data, the fields' lines joined, is JSON or `[DONE]` (OpenAI's end). */
  private event(): void {
    const data = this.data.join("\n");
    this.data = [];
    if (data !== "" && data !== "[DONE]") this.json(data);
  }

  private json(text: string): void {
    try {
      JSON.parse(text);
    } catch {
      throw new NodeError(`${this.g.provider} sent a piece of its stream that is not JSON: ${text.slice(0, 200)}`);
    }
  }
}
