/** The gateway's REST API over global `fetch`: JSON in and out, errors as `NodewayError`. */
import { ClientErrorCode, NodewayError } from "./errors.js";

/** What bounds a REST call. */
export interface HttpLimits {
  /** The whole call, from the request to the answer's last byte; an upload gets more (`UPLOAD_BYTES_PER_S`). */
  timeoutMs: number;
  /** The most an answer's body may hold: a larger one is not read. */
  maxResponseBytes: number;
}

/** The slowest upload a deadline allows for: each 256 KiB sent adds a second to `timeoutMs`. */
const UPLOAD_BYTES_PER_S = 256 * 1024;

export class Http {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly limits: HttpLimits,
  ) {}

  /** `path` with `query`'s defined values. */
  static path(path: string, query: Record<string, string | number | undefined> = {}): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") q.set(k, String(v));
    const s = q.toString();
    return s ? `${path}?${s}` : path;
  }

  /**
   * One call; a body that is not bytes is sent as JSON. Answers other than 2xx throw with the gateway's code; no
   * answer by the deadline is `CLIENT_ERR_TIMEOUT`, one cut short `CLIENT_ERR_DISCONNECTED`.
   */
  async call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let payload: BodyInit | undefined;
    let sent = 0;
    if (body instanceof Uint8Array || (typeof Blob !== "undefined" && body instanceof Blob)) {
      payload = body as BodyInit;
      sent = body instanceof Uint8Array ? body.byteLength : body.size;
      headers["content-type"] = contentType ?? "application/octet-stream";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["content-type"] = "application/json";
    }
    const what = `${method} ${path}`;
    const ms = this.limits.timeoutMs + Math.ceil((sent / UPLOAD_BYTES_PER_S) * 1000);
    const signal = AbortSignal.timeout(ms);
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers,
        signal,
        ...(payload === undefined ? {} : { body: payload }),
      });
    } catch (err) {
      if (signal.aborted) throw timeoutError(what, ms);
      throw new NodewayError(
        ClientErrorCode.unreachable,
        `cannot reach the gateway at ${this.baseUrl}: ${causeOf(err)}`,
      );
    }
    const text = await this.read(res, what, signal, ms);
    if (!res.ok) throw errorOf(res.status, text);
    try {
      return (text ? JSON.parse(text) : null) as T;
    } catch {
      throw new NodewayError(ClientErrorCode.protocol, `${what}: the answer is not JSON`, res.status);
    }
  }

  /** The answer's body as text, read as a stream so that one over `maxResponseBytes` is dropped, not buffered. */
  private async read(res: Response, what: string, signal: AbortSignal, ms: number): Promise<string> {
    const max = this.limits.maxResponseBytes;
    const declared = Number(res.headers.get("content-length") ?? Number.NaN);
    if (declared > max) {
      await res.body?.cancel().catch(() => undefined);
      throw tooLargeError(what, `${declared}`, max, res.status);
    }
    if (!res.body) return "";
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parts: string[] = [];
    let size = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > max) {
          await reader.cancel().catch(() => undefined);
          throw tooLargeError(what, `over ${max}`, max, res.status);
        }
        parts.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      if (err instanceof NodewayError) throw err;
      if (signal.aborted) throw timeoutError(what, ms);
      throw new NodewayError(
        ClientErrorCode.disconnected,
        `${what}: the answer was cut after ${size} bytes: ${causeOf(err)}`,
        res.status,
      );
    }
    parts.push(decoder.decode());
    return parts.join("");
  }
}

function timeoutError(what: string, ms: number): NodewayError {
  return new NodewayError(
    ClientErrorCode.timeout,
    `${what}: no complete answer within ${ms} ms (requestTimeoutMs): whether it took effect is unknown`,
  );
}

function tooLargeError(what: string, size: string, max: number, status: number): NodewayError {
  return new NodewayError(
    ClientErrorCode.tooLarge,
    `${what}: an answer of ${size} bytes; the client reads up to ${max} (maxResponseBytes)`,
    status,
  );
}

function causeOf(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

function errorOf(status: number, text: string): NodewayError {
  try {
    const e = JSON.parse(text) as { code?: string; message?: string };
    if (e && typeof e.message === "string") return NodewayError.of(e, status);
  } catch {
    /* not JSON: said as it is */
  }
  return new NodewayError(`HTTP_${status}`, `${status} ${text.slice(0, 200)}`, status);
}
