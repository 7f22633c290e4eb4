/**
 * The one place that touches a Node internal: the request parser of Node's own HTTP server (`HTTPParser` of
 * `_http_common`, llhttp in strict mode), the parser the front reads every client request with.
 *
 * Why an internal: no maintained package parses as strictly (http-parser-js accepts CL with TE, obs-fold, bare LF
 * and bad chunk sizes, each a request-smuggling vector), and Node's public server, whose request and response
 * objects this avoids, costs the proxy's hot path too much (proxy/README.md has the measurements).
 *
 * The contract: `test/proxy/llhttp.test.ts` fails on any Node where this binding is missing or parses differently
 * (callbacks, header batches, error codes, the smuggling refusals), and `checkRequestParser()` refuses to start the
 * proxy where the binding's shape has changed. Checked on Node v20.20.2 (engines: >=20.19.2); run that test on
 * every Node upgrade.
 */
import { createRequire } from "node:module";
import { ProxyError, ProxyErrorCode } from "./errors.js";

/** Node releases on which `test/proxy/llhttp.test.ts` passed. */
export const CHECKED_NODE_VERSIONS: readonly string[] = ["v20.20.2"];

/** The shape of Node's `HTTPParser` binding relied on here. */
interface Binding {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | ParseError;
  close(): void;
  [k: number]: unknown;
}
interface BindingClass {
  new (): Binding;
  REQUEST: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
}

/** A refusal of llhttp's: `code` is its `HPE_*` name (`HPE_HEADER_OVERFLOW`, `HPE_CLOSED_CONNECTION`, …). */
export type ParseError = Error & { code?: string; bytesParsed?: number };

/** What the parser calls, synchronously, from inside `execute`; as plain functions (give arrows, not methods). */
export interface RequestParserCallbacks {
  /** A batch of header fields (`[name, value, …]`) and URL pieces sent before the head completes (> 32 fields). */
  onHeaders(headers: string[], url: string): void;
  /**
   * The head is complete. `headers` / `url` are undefined when they all came through `onHeaders` (url: or empty).
   * Return 0 (read a body if the framing says so).
   */
  onHeadersComplete(
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: string,
    url: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number;
  onBody(chunk: Buffer): void;
  onMessageComplete(): void;
}

/** One connection's parser. */
export interface RequestParser {
  /** Bytes consumed (after an upgrade head: the bytes up to its end), or the error that stopped parsing. */
  execute(data: Buffer): number | ParseError;
  /** Frees the parser; never call it from inside a callback. */
  close(): void;
}

let binding: { HTTPParser: BindingClass; methods: readonly string[] } | null = null;

/**
 * The binding, checked once: every method called and every callback slot set here must be there.
 * @throws ProxyError `PROXY_ERR_LISTEN` on a Node whose binding has another shape
 */
export function checkRequestParser(): { HTTPParser: BindingClass; methods: readonly string[] } {
  if (binding !== null) return binding;
  let common: { HTTPParser?: BindingClass; methods?: string[] } = {};
  try {
    common = createRequire(import.meta.url)("_http_common") as typeof common;
  } catch {
    // Checked below: a Node without the module fails like one whose binding changed.
  }
  const P = common.HTTPParser;
  const ok =
    typeof P === "function" &&
    Array.isArray(common.methods) &&
    typeof P.REQUEST === "number" &&
    [P.kOnHeaders, P.kOnHeadersComplete, P.kOnBody, P.kOnMessageComplete].every((k) => typeof k === "number") &&
    ["initialize", "execute", "close"].every(
      (m) => typeof (P.prototype as unknown as Record<string, unknown>)[m] === "function",
    );
  if (!ok) {
    throw new ProxyError(
      ProxyErrorCode.PROXY_ERR_LISTEN,
      `this Node (${process.version}) has no usable HTTP parser binding (_http_common.HTTPParser); ` +
        `the proxy was checked on ${CHECKED_NODE_VERSIONS.join(", ")}`,
    );
  }
  binding = { HTTPParser: P as BindingClass, methods: common.methods as string[] };
  return binding;
}

/** A strict request parser (no lenient flags) holding heads to `maxHeaderBytes`. */
export function newRequestParser(maxHeaderBytes: number, cb: RequestParserCallbacks): RequestParser {
  const { HTTPParser, methods } = checkRequestParser();
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {}, maxHeaderBytes, 0);
  p[HTTPParser.kOnHeaders] = cb.onHeaders;
  p[HTTPParser.kOnHeadersComplete] = (
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _status: unknown,
    _statusText: unknown,
    upgrade: boolean,
    keepAlive: boolean,
  ) => cb.onHeadersComplete(major, minor, headers, methods[method] ?? "", url, upgrade, keepAlive);
  p[HTTPParser.kOnBody] = cb.onBody;
  p[HTTPParser.kOnMessageComplete] = cb.onMessageComplete;
  return p;
}
