/** The one error the client throws: a stable `code` (the gateway's `ErrorCode`, or one of the client's own). */
import type { WireError } from "../protocol/errors.js";

/** The client's own codes, for what never reached the gateway or never came back from it. */
export const ClientErrorCode = {
  /** The gateway could not be reached, or refused the WebSocket upgrade. */
  unreachable: "CLIENT_ERR_UNREACHABLE",
  /** The connection dropped while a command was unanswered: whether it took effect is unknown. */
  disconnected: "CLIENT_ERR_DISCONNECTED",
  /** `close()` was called. */
  closed: "CLIENT_ERR_CLOSED",
  /** The gateway closed the socket for good (revoked or expired token: close code 1008). */
  refused: "CLIENT_ERR_REFUSED",
  /**
   * A command over the frame size the gateway takes (`maxFrameBytes`): it was not sent; or a REST answer over
   * `maxResponseBytes`: it was not read.
   */
  tooLarge: "CLIENT_ERR_TOO_LARGE",
  /** A frame or body the client could not read, or an answer without what the command needs. */
  protocol: "CLIENT_ERR_PROTOCOL",
  /** No answer within `requestTimeoutMs`: whether a command that was sent took effect is unknown. */
  timeout: "CLIENT_ERR_TIMEOUT",
} as const;
export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

export class NodewayError extends Error {
  override readonly name = "NodewayError";
  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status of a REST answer; absent for `/ws` and client-side errors. */
    readonly status?: number,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }

  static of(e: WireError | { code?: string; message?: string }, status?: number): NodewayError {
    const { code, message, ...rest } = e as WireError & Record<string, unknown>;
    return new NodewayError(code ?? "GW_ERR_INTERNAL", message ?? "error", status, rest);
  }
}
