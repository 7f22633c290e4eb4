/** The gateway's REST API over global `fetch`: JSON in and out, errors as `NodewayError`. */
import { ClientErrorCode, NodewayError } from "./errors.js";

export class Http {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  /** `path` with `query`'s defined values. */
  static path(path: string, query: Record<string, string | number | undefined> = {}): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") q.set(k, String(v));
    const s = q.toString();
    return s ? `${path}?${s}` : path;
  }

  /** One call; a body that is not bytes is sent as JSON. Answers other than 2xx throw with the gateway's code. */
  async call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let payload: BodyInit | undefined;
    if (body instanceof Uint8Array || (typeof Blob !== "undefined" && body instanceof Blob)) {
      payload = body as BodyInit;
      headers["content-type"] = contentType ?? "application/octet-stream";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["content-type"] = "application/json";
    }
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, { method, headers, ...(payload === undefined ? {} : { body: payload }) });
    } catch (err) {
      throw new NodewayError(
        ClientErrorCode.unreachable,
        `cannot reach the gateway at ${this.baseUrl}: ${causeOf(err)}`,
      );
    }
    const text = await res.text();
    if (!res.ok) throw errorOf(res.status, text);
    try {
      return (text ? JSON.parse(text) : null) as T;
    } catch {
      throw new NodewayError(ClientErrorCode.protocol, `${method} ${path}: the answer is not JSON`, res.status);
    }
  }
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
