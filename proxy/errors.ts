/**
 * Errors of the proxy. Each class carries a stable `code` (never reused or renamed; add new ones at the end) so that
 * the CLI and logs can report them as data. `proxy/` deliberately does not import `protocol/`: these codes live here.
 */
export const ProxyErrorCode = {
  /** A configuration key has a bad value, is unknown, or contradicts another key. `key` names it. */
  PROXY_ERR_INVALID_CONFIG: "PROXY_ERR_INVALID_CONFIG",
  /** A certificate failed validation (SAN, key match, validity window, chain) and was not installed. */
  PROXY_ERR_CERT_INVALID: "PROXY_ERR_CERT_INVALID",
  /** The ACME CA could not issue a certificate (network, protocol, or challenge failure). */
  PROXY_ERR_ACME: "PROXY_ERR_ACME",
  /** Another process holds the renewal lock for this name in a shared certificate store. */
  PROXY_ERR_STORE_LOCKED: "PROXY_ERR_STORE_LOCKED",
  /** A listener could not bind its address or port. */
  PROXY_ERR_LISTEN: "PROXY_ERR_LISTEN",
  /** A host asked for on-demand issuance but is not on the `onDemandAllow` list. */
  PROXY_ERR_HOST_NOT_ALLOWED: "PROXY_ERR_HOST_NOT_ALLOWED",
  /** No connection to an upstream could be made (refused, unreachable, or not accepted in time). */
  PROXY_ERR_UPSTREAM_CONNECT: "PROXY_ERR_UPSTREAM_CONNECT",
  /** An upstream connection closed or was reset before its response was complete. */
  PROXY_ERR_UPSTREAM_CLOSED: "PROXY_ERR_UPSTREAM_CLOSED",
  /** An upstream answered with something that is not a well-formed HTTP/1.1 response. */
  PROXY_ERR_UPSTREAM_PROTOCOL: "PROXY_ERR_UPSTREAM_PROTOCOL",
  /** A client sent bytes that are not a request this proxy will read (malformed, ambiguous framing, too large). */
  PROXY_ERR_BAD_REQUEST: "PROXY_ERR_BAD_REQUEST",
  /** A value the types rule out reached a switch over a union: a bug of the proxy's, not of its input. */
  PROXY_ERR_INTERNAL: "PROXY_ERR_INTERNAL",
  /** The upstream failed this request (refused, reset, or a bad response) and the client got a 502. */
  PROXY_ERR_UPSTREAM: "PROXY_ERR_UPSTREAM",
  /** No upstream is healthy: the client got a 503 at once rather than waiting on a dead one. */
  PROXY_ERR_NO_UPSTREAM: "PROXY_ERR_NO_UPSTREAM",
  /** The request's `Host` (or SNI) is not one this proxy serves: 421, never forwarded. */
  PROXY_ERR_MISDIRECTED: "PROXY_ERR_MISDIRECTED",
  /** A request body went past `maxBodyBytes`: 413 and the connection closed. */
  PROXY_ERR_BODY_TOO_LARGE: "PROXY_ERR_BODY_TOO_LARGE",
  /** An upstream did not answer a WebSocket upgrade within `wsUpgradeTimeoutMs`: 504. */
  PROXY_ERR_UPSTREAM_TIMEOUT: "PROXY_ERR_UPSTREAM_TIMEOUT",
} as const;
export type ProxyErrorCode = (typeof ProxyErrorCode)[keyof typeof ProxyErrorCode];

/** Base class: every error thrown by `proxy/` is a `ProxyError` with a stable `code`. */
export class ProxyError extends Error {
  readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ProxyError";
    this.code = code;
  }
}

/** Thrown by `compileProxyConfig` for a bad, unknown or contradictory option. `key` is the option's name. */
export class InvalidConfigError extends ProxyError {
  /** The option at fault, as spelled in `ProxyOptions` (the CLI maps it to `--kebab-case` / `NODEWAY_*`). */
  readonly key: string;
  constructor(key: string, message: string) {
    super(ProxyErrorCode.PROXY_ERR_INVALID_CONFIG, `${key}: ${message}`);
    this.name = "InvalidConfigError";
    this.key = key;
  }
}

/** A certificate that must not be served. `reason` is a short machine-readable word. */
export class CertificateError extends ProxyError {
  readonly reason: "parse" | "key_mismatch" | "expired" | "not_yet_valid" | "san_mismatch" | "chain";
  constructor(reason: CertificateError["reason"], message: string, options?: { cause?: unknown }) {
    super(ProxyErrorCode.PROXY_ERR_CERT_INVALID, message, options);
    this.name = "CertificateError";
    this.reason = reason;
  }
}

/** Issuance or renewal through the ACME CA failed; the old certificate (if any) stays in service. */
export class AcmeError extends ProxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ProxyErrorCode.PROXY_ERR_ACME, message, options);
    this.name = "AcmeError";
  }
}

/** The store's lock for a name is held by another process (which is renewing it right now). */
export class StoreLockedError extends ProxyError {
  constructor(name: string) {
    super(ProxyErrorCode.PROXY_ERR_STORE_LOCKED, `certificate store lock for ${name} is held by another process`);
    this.name = "StoreLockedError";
  }
}

/**
 * A proxied exchange with an upstream failed. `connectionLevel`: evidence that the upstream is gone (refused, reset,
 * closed), which ejects it, as opposed to one bad response. `retryable`: the request went out on a kept-alive
 * connection that closed before a single byte of answer came back, the race a retry of an idempotent request
 * exists for. `errno` is the socket error's code, when there was one (`ECONNREFUSED`, …).
 */
export class UpstreamError extends ProxyError {
  constructor(
    code:
      | typeof ProxyErrorCode.PROXY_ERR_UPSTREAM_CONNECT
      | typeof ProxyErrorCode.PROXY_ERR_UPSTREAM_CLOSED
      | typeof ProxyErrorCode.PROXY_ERR_UPSTREAM_PROTOCOL,
    message: string,
    readonly connectionLevel: boolean,
    readonly retryable: boolean,
    readonly errno: string | null = null,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "UpstreamError";
  }
}

/** Exhaustiveness guard for `switch` over a union. */
export function assertNever(x: never, what = "value"): never {
  throw new ProxyError(ProxyErrorCode.PROXY_ERR_INTERNAL, `unexpected ${what}: ${JSON.stringify(x)}`);
}

/**
 * A whole HTTP/1.1 answer that ends the connection, for a client whose bytes cannot be trusted any further: a
 * JSON body with a stable code says why, as every other refusal does.
 */
export function closingAnswer(
  status: number,
  reason: string,
  message: string,
  code: string = ProxyErrorCode.PROXY_ERR_BAD_REQUEST,
): string {
  const body = JSON.stringify({ code, message });
  return `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}
