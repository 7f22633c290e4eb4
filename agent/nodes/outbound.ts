/**
 * Outbound HTTP for nodes (lib.http, rss, downloads, search): only public addresses unless the agent allows more.
 * Every address a host name resolves to is checked before connecting (the connection uses only the checked
 * addresses, so a name cannot be re-resolved to another), every redirect hop is checked again, and a body is cut
 * off at a size and a time limit.
 *
 * Settings (the agent's environment, read once): `NODEWAY_HTTP_ALLOW` comma-separated CIDRs (`10.0.0.0/8`,
 * `127.0.0.1/32`) and host names (`intranet.example`, `.corp.example` for a domain) that may be reached although
 * private; `NODEWAY_HTTP_MAX_BYTES` largest body (default 64 MiB); `NODEWAY_HTTP_TIMEOUT_MS` whole-request time
 * limit (default 60 s).
 */
import { lookup as dnsLookup } from "node:dns";
import { request as httpRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { NodeError } from "../engine/types.js";

export interface OutboundPolicy {
  allowNets: BlockList;
  allowHosts: string[];
  maxBytes: number;
  timeoutMs: number;
}

/** Loopback, private, link-local, shared, unspecified, multicast and reserved ranges: refused unless allowed. */
const DENIED = new BlockList();
for (const [net, bits] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 3],
] as const)
  DENIED.addSubnet(net, bits, "ipv4");
for (const [net, bits] of [
  ["::", 128],
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
  ["64:ff9b::", 96],
  // Addresses that wrap an IPv4 one (6to4, Teredo, local NAT64), the deprecated site-local range, discard-only.
  ["2002::", 16],
  ["2001::", 32],
  ["64:ff9b:1::", 48],
  ["fec0::", 10],
  ["100::", 64],
] as const)
  DENIED.addSubnet(net, bits, "ipv6");

/** The policy from the agent's environment; a malformed setting throws naming it. */
export function outboundPolicy(env: NodeJS.ProcessEnv = process.env): OutboundPolicy {
  const allowNets = new BlockList();
  const allowHosts: string[] = [];
  for (const raw of (env.NODEWAY_HTTP_ALLOW ?? "").split(",")) {
    const entry = raw.trim().toLowerCase();
    if (entry === "") continue;
    const [net, bits] = entry.split("/");
    const family = isIP(net!);
    if (family === 0) {
      if (bits !== undefined) throw new Error(`NODEWAY_HTTP_ALLOW: "${entry}" is neither a CIDR nor a host name`);
      allowHosts.push(entry);
      continue;
    }
    const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128))
      throw new Error(`NODEWAY_HTTP_ALLOW: "${entry}" has a bad prefix length`);
    allowNets.addSubnet(net!, prefix, family === 4 ? "ipv4" : "ipv6");
  }
  const num = (name: string, dflt: number) => {
    const v = env[name];
    if (v === undefined || v === "") return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${v}"`);
    return n;
  };
  return {
    allowNets,
    allowHosts,
    maxBytes: num("NODEWAY_HTTP_MAX_BYTES", 64 * 1024 * 1024),
    timeoutMs: num("NODEWAY_HTTP_TIMEOUT_MS", 60_000),
  };
}

const ALLOW_ALL = new BlockList();
ALLOW_ALL.addSubnet("0.0.0.0", 0, "ipv4");
ALLOW_ALL.addSubnet("::", 0, "ipv6");

let cached: OutboundPolicy | null = null;
const policy = (): OutboundPolicy => (cached ??= outboundPolicy());

function hostAllowed(p: OutboundPolicy, host: string): boolean {
  const h = host.toLowerCase();
  return p.allowHosts.some((a) => (a.startsWith(".") ? h.endsWith(a) || h === a.slice(1) : h === a));
}

/** Why `address` may not be reached, or null. */
export function addressProblem(p: OutboundPolicy, address: string): string | null {
  const type = isIP(address) === 6 ? "ipv6" : "ipv4";
  if (p.allowNets.check(address, type)) return null;
  return DENIED.check(address, type)
    ? `${address} is a private, loopback or link-local address (allow it with NODEWAY_HTTP_ALLOW)`
    : null;
}

/** A DNS lookup that yields only addresses the policy allows, and fails naming the first it does not. */
function checkedLookup(p: OutboundPolicy, host: string): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (err, addresses) => {
      if (err) return callback(err, "", 0);
      if (!hostAllowed(p, host))
        for (const a of addresses) {
          const problem = addressProblem(p, a.address);
          if (problem) return callback(new OutboundRefused(`${host} resolves to ${problem}`), "", 0);
        }
      if (options.all) return (callback as unknown as (e: null, a: typeof addresses) => void)(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** A request the policy refused: never retried, and its message says which setting allows it. */
export class OutboundRefused extends NodeError {}

export interface FetchOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  signal: AbortSignal;
  /** Largest body accepted, at most the policy's. */
  maxBytes?: number;
  /** The agent's own configured endpoint (a search service's base URL): no address checks, as for its providers. */
  trusted?: boolean;
}

export interface FetchResult {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  /** The URL answered, after redirects. */
  url: string;
}

const MAX_REDIRECTS = 5;

/** The URL's problem for the policy (scheme, literal address), or null. */
function urlProblem(p: OutboundPolicy, url: URL): string | null {
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return `only http and https URLs may be fetched, not ${url.protocol}`;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (isIP(host) !== 0 && !hostAllowed(p, host)) return addressProblem(p, host);
  return null;
}

/** Fetches `url` under the outbound policy, following redirects (each hop checked); throws `NodeError`. */
export async function safeFetch(rawUrl: string, opts: FetchOptions): Promise<FetchResult> {
  const p = opts.trusted ? { ...policy(), allowNets: ALLOW_ALL, allowHosts: [] } : policy();
  const deadline = AbortSignal.timeout(p.timeoutMs);
  const signal = AbortSignal.any([opts.signal, deadline]);
  let url = parseUrl(rawUrl);
  let { method = "GET", body } = opts;
  let headers = opts.headers ?? {};
  for (let hop = 0; ; hop++) {
    const problem = urlProblem(p, url);
    if (problem) throw new OutboundRefused(`refused to fetch ${url.origin}: ${problem}`);
    let res: FetchResult;
    try {
      res = await once(p, url, method, headers, body, signal, Math.min(opts.maxBytes ?? p.maxBytes, p.maxBytes));
    } catch (err) {
      if (err instanceof NodeError) throw err;
      if (deadline.aborted)
        throw new NodeError(`fetching ${url.origin} took longer than ${p.timeoutMs} ms (NODEWAY_HTTP_TIMEOUT_MS)`);
      if (opts.signal.aborted) throw opts.signal.reason;
      throw new NodeError(`fetching ${url.origin}${url.pathname} failed: ${(err as Error).message}`);
    }
    const location = res.headers.location;
    if (res.status < 300 || res.status >= 400 || location === undefined || res.status === 304) return res;
    if (hop >= MAX_REDIRECTS) throw new NodeError(`${rawUrl} redirected more than ${MAX_REDIRECTS} times`);
    const next = parseUrl(location, url);
    // Credentials were given for the first origin: a redirect elsewhere does not carry them (as browsers drop
    // Authorization), and it does not come back to them either.
    if (next.origin !== url.origin) headers = withoutCredentials(headers);
    url = next;
    if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
      method = "GET";
      body = undefined;
    }
  }
}

/** Headers that carry credentials: the standard ones, and any whose name says key, token, secret or auth. */
const CREDENTIAL_HEADER = /^(authorization|proxy-authorization|cookie)$|api[-_]?key|token|secret|auth|session/i;

function withoutCredentials(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !CREDENTIAL_HEADER.test(k)));
}

function parseUrl(raw: string, base?: URL): URL {
  try {
    return new URL(raw, base);
  } catch {
    throw new NodeError(`${JSON.stringify(raw.slice(0, 200))} is not a URL`);
  }
}

function once(
  p: OutboundPolicy,
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: Uint8Array | string | undefined,
  signal: AbortSignal,
  maxBytes: number,
): Promise<FetchResult> {
  const req: RequestOptions = {
    method,
    headers: { "user-agent": "nodeway", ...headers },
    signal,
    lookup: checkedLookup(p, url.hostname),
  };
  return new Promise((resolve, reject) => {
    const r = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, req, (res) =>
      readBody(res, maxBytes, url).then(
        (b) => resolve({ status: res.statusCode ?? 0, headers: flatHeaders(res), body: b, url: url.href }),
        reject,
      ),
    );
    r.on("error", reject);
    r.end(body);
  });
}

function flatHeaders(res: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  return out;
}

async function readBody(res: IncomingMessage, maxBytes: number, url: URL): Promise<Uint8Array> {
  const declared = Number(res.headers["content-length"]);
  const tooLarge = () =>
    new NodeError(`the response from ${url.origin} is larger than ${maxBytes} bytes (NODEWAY_HTTP_MAX_BYTES)`);
  if (Number.isFinite(declared) && declared > maxBytes) {
    res.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res) {
    size += (c as Buffer).byteLength;
    if (size > maxBytes) {
      res.destroy();
      throw tooLarge();
    }
    chunks.push(c as Buffer);
  }
  return new Uint8Array(Buffer.concat(chunks, size));
}

/** Text of a body in the charset its content type names (UTF-8 by default). */
export function bodyText(r: FetchResult): string {
  const charset =
    /charset=([^;]+)/i
      .exec(r.headers["content-type"] ?? "")?.[1]
      ?.trim()
      .toLowerCase() ?? "utf-8";
  try {
    return new TextDecoder(charset).decode(r.body);
  } catch {
    return new TextDecoder().decode(r.body);
  }
}
