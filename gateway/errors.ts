/** Gateway errors: one class, a stable code, one table from code to HTTP status, and the log they are reported to. */
import { createLogger } from "../obs/index.js";
import { ErrorCode, GraphError, ProtocolError, type WireError } from "../protocol/index.js";

/** The gateway's one logger. */
export const log = createLogger("gateway");

/** A failure nobody expected (a 500): logged once, with its stack as `err`. */
export function logInternal(err: unknown, what: string): void {
  log.error({ err }, what);
}

export class GatewayError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "GatewayError";
  }
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  GW_ERR_NOT_FOUND: 404,
  GW_ERR_BAD_REQUEST: 400,
  GW_ERR_BODY_TOO_LARGE: 413,
  GW_ERR_UNSUPPORTED_MEDIA: 415,
  GW_ERR_UNAVAILABLE: 503,
  GW_ERR_CONFLICT: 409,
  GW_ERR_IDEMPOTENCY_MISMATCH: 422,
  GW_ERR_UNAUTHORIZED: 401,
  GW_ERR_FORBIDDEN: 403,
  GW_ERR_LIMIT: 429,
  GW_ERR_STORE_FULL: 507,
  GW_ERR_NO_AGENT: 503,
  GW_ERR_INTERNAL: 500,
};

/** Any thrown value → HTTP status and wire error. Graph and protocol errors are the client's: 400. */
export function toWireError(err: unknown): { status: number; body: WireError & Record<string, unknown> } {
  if (err instanceof GatewayError)
    return { status: STATUS[err.code] ?? 500, body: { code: err.code, message: err.message, ...err.details } };
  if (err instanceof GraphError)
    return { status: 400, body: { code: err.code, message: err.message, ...(err.ref ? { ref: err.ref } : {}) } };
  if (err instanceof ProtocolError) {
    return {
      status: err.code === ErrorCode.PROTO_ERR_TOO_LARGE ? 413 : 400,
      body: { code: err.code, message: err.message },
    };
  }
  // A write NATS refused as larger than one message (a thread message of multibyte text under its character cap).
  if (err instanceof Error && /max_payload size exceeded/.test(err.message)) {
    const message = "the item is larger than one NATS message may be (the server's max_payload)";
    return { status: 413, body: { code: ErrorCode.GW_ERR_BODY_TOO_LARGE, message } };
  }
  // A stream at its max_bytes that discards new writes: the asset store (`assetsMaxBytes`).
  if (err instanceof Error && /maximum bytes exceeded/i.test(err.message)) {
    const message = "the asset store is full (assetsMaxBytes): delete assets or wait for old ones to age out";
    return { status: 507, body: { code: ErrorCode.GW_ERR_STORE_FULL, message } };
  }
  return { status: 500, body: { code: ErrorCode.GW_ERR_INTERNAL, message: "internal error" } };
}

/** A 404 naming what was asked for: clipped, since an id in a body may be any length a client sends. */
export const notFound = (what: string) =>
  new GatewayError(ErrorCode.GW_ERR_NOT_FOUND, `${what.length > 200 ? `${what.slice(0, 200)}…` : what} not found`);
export const badRequest = (msg: string) => new GatewayError(ErrorCode.GW_ERR_BAD_REQUEST, msg);
