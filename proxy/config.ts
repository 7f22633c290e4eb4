/**
 * Proxy configuration: `ProxyOptions` (what a user writes in a config file, a flag or an env var) is compiled once by
 * `compileProxyConfig` into a frozen `ProxyConfig` in which URLs, CIDRs and host patterns are already parsed, so the
 * request path never re-validates anything.
 *
 * Naming contract with the CLI: every key is camelCase and maps mechanically
 * to a flag and an env var, `httpsPort` ↔ `--https-port` ↔ `NODEWAY_HTTPS_PORT`. Lists use singular names
 * (`--upstream a --upstream b`). Because env vars and flags arrive as strings, numbers may be given as decimal
 * strings, booleans as `"true"`/`"false"`/`"1"`/`"0"`, and lists as one comma-separated string.
 */
import { BlockList, isIP } from "node:net";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { InvalidConfigError } from "./errors.js";

/** How the proxy gets its certificates. */
export const TlsMode = {
  /** From an ACME CA (Let's Encrypt by default) over HTTP-01, renewed automatically. */
  acme: "acme",
  /** A self-signed certificate made and kept in `certDir`: for localhost and development. */
  selfSigned: "self-signed",
  /** Operator-provided PEM files (`certFile`, `keyFile`), re-read when they change. */
  files: "files",
} as const;
export type TlsMode = (typeof TlsMode)[keyof typeof TlsMode];

/** Let's Encrypt production. Staging is `https://acme-staging-v02.api.letsencrypt.org/directory`. */
export const LETS_ENCRYPT_DIRECTORY_URL = "https://acme-v02.api.letsencrypt.org/directory";

/**
 * What `nodeway up --tls` layers under the user's own settings: the proxy in front of the local gateway with a
 * self-signed certificate on loopback. HSTS is off here on purpose: browsers apply HSTS to a host name regardless
 * of port, so a year-long HSTS for `localhost` would force every other local dev server to HTTPS.
 */
export const DEV_TLS_OPTIONS = {
  tls: "self-signed",
  host: "127.0.0.1",
  httpsPort: 8443,
  httpPort: 8080,
  hstsMaxAgeSeconds: 0,
} as const satisfies Partial<ProxyOptions>;

/** User-facing options. Everything but `upstream` has a default. */
export interface ProxyOptions {
  /** Gateways to route to, as `http://host:port` origins. Round-robin over the healthy ones. Required. */
  upstream: string | string[];
  /**
   * Host names served over HTTPS. With `tls: "acme"` a certificate is obtained for each.
   * @default [] (`["localhost"]` with `tls: "self-signed"`)
   */
  domain?: string | string[];
  /** Contact address given to the ACME CA (expiry notices). @default none */
  email?: string;
  /** Bind address for both listeners. @default all interfaces */
  host?: string;
  /** HTTPS listener port; 0 picks a free port (read it back from `RunningProxy.httpsPort`). @default 443 */
  httpsPort?: number | string;
  /** Plain HTTP listener: redirects to HTTPS and answers ACME HTTP-01 challenges. @default 80 */
  httpPort?: number | string;
  /** Certificate source. @default "acme" */
  tls?: TlsMode;
  /** PEM certificate chain (leaf first) for `tls: "files"`. @default none */
  certFile?: string;
  /** PEM private key for `tls: "files"`. @default none */
  keyFile?: string;
  /** ACME directory. @default Let's Encrypt production (`LETS_ENCRYPT_DIRECTORY_URL`) */
  acmeDirectoryUrl?: string;
  /** Extra PEM CA bundle trusted when talking to the ACME CA (e.g. Pebble's in tests). @default none */
  acmeCaBundleFile?: string;
  /** Certificate store: account key, certificates, keys, locks (`0700`, keys `0600`). @default `$NODEWAY_HOME/certs` (`~/.nodeway/certs`) */
  certDir?: string;
  /** Peers (IPs or CIDRs) whose `X-Forwarded-*` headers are believed and appended to. @default [] (nobody) */
  trustedProxies?: string | string[];
  /**
   * Hosts that may get a certificate on demand at their first TLS handshake (`tls: "acme"` only): exact names or
   * `*.example.com` (any single label). Nothing else triggers issuance, which protects the CA rate limit.
   * @default [] (no on-demand issuance)
   */
  onDemandAllow?: string | string[];
  /**
   * URL asked before a certificate is obtained on demand, as Caddy's `on_demand_tls ask`: `GET <url>?domain=<name>`,
   * issuance only on a 2xx answer. With `onDemandAllow` too, a name must match the list and be approved.
   * @default none
   */
  onDemandAsk?: string;
  /** Most names holding (or being issued) an on-demand certificate; past it, new names get none. @default 1000 */
  onDemandMaxNames?: number | string;
  /** Most ACME orders placed in any 60 s (renewals included); one over waits for the window. @default 10 */
  acmeOrdersPerMinute?: number | string;
  /** Largest request body accepted; larger gets 413. @default 268435456 (256 MiB, a gateway's largest asset upload) */
  maxBodyBytes?: number | string;
  /** Largest request head (request line + headers) accepted; larger gets 431. @default 16384 */
  maxHeaderBytes?: number | string;
  /** A request head not complete this long after its first byte gets 408 (slow-header clients). @default 60000 */
  headersTimeoutMs?: number | string;
  /** A whole request (head and body) not received this long after its first byte gets 408. @default 300000 */
  requestTimeoutMs?: number | string;
  /** A kept-alive client connection idle this long between requests is closed. @default 5000 */
  keepAliveTimeoutMs?: number | string;
  /** A WebSocket tunnel with no bytes either way for this long is closed. @default 600000 (10 min) */
  wsIdleTimeoutMs?: number | string;
  /** An upstream that has not answered a WebSocket upgrade this long after it was sent: the client gets 504. @default 30000 */
  wsUpgradeTimeoutMs?: number | string;
  /** Most open connections per listener; past it new ones are closed at accept, open ones unaffected. @default 10000 */
  maxConnections?: number | string;
  /**
   * Most open connections from one client IP per listener (peers in `trustedProxies` are not capped); past it a new
   * one is closed at accept. @default 256
   */
  maxConnectionsPerIp?: number | string;
  /** Period of active health checks (`GET healthPath`) against each upstream. @default 5000 */
  healthIntervalMs?: number | string;
  /** A health check slower than this counts as failed. @default 2000 */
  healthTimeoutMs?: number | string;
  /** Path probed by health checks. @default "/health" */
  healthPath?: string;
  /** `Strict-Transport-Security: max-age` on HTTPS responses; 0 sends no header. @default 31536000 (1 year) */
  hstsMaxAgeSeconds?: number | string;
  /** Redirect plain HTTP to HTTPS (308). When false, port 80 only answers ACME challenges (404 otherwise). @default true */
  redirectHttp?: boolean | string;
  /** Renew when less than this fraction of a certificate's lifetime is left. @default 0.3333 (a third) */
  renewalWindowRatio?: number | string;
  /** How often certificates are checked for renewal (and operator files for changes). @default 600000 (10 min) */
  renewCheckIntervalMs?: number | string;
  /** First retry delay after a failed issuance; doubles per failure. @default 60000 */
  acmeRetryMinMs?: number | string;
  /** Longest delay between issuance retries (Caddy uses one day too). @default 86400000 */
  acmeRetryMaxMs?: number | string;
  /** Write one access-log line per request (tokens redacted). @default true */
  accessLog?: boolean | string;
}

/** The compiled, frozen configuration. Build it with `compileProxyConfig`. */
export interface ProxyConfig {
  readonly upstream: readonly UpstreamTarget[];
  readonly domain: readonly string[];
  readonly email: string | null;
  readonly host: string | null;
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly tls: TlsMode;
  readonly certFile: string | null;
  readonly keyFile: string | null;
  readonly acmeDirectoryUrl: string;
  readonly acmeCaBundleFile: string | null;
  readonly certDir: string;
  readonly trustedProxies: readonly string[];
  readonly onDemandAllow: readonly string[];
  readonly onDemandAsk: string | null;
  readonly onDemandMaxNames: number;
  readonly acmeOrdersPerMinute: number;
  readonly maxBodyBytes: number;
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly wsIdleTimeoutMs: number;
  readonly wsUpgradeTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly healthIntervalMs: number;
  readonly healthTimeoutMs: number;
  readonly healthPath: string;
  readonly hstsMaxAgeSeconds: number;
  readonly redirectHttp: boolean;
  readonly renewalWindowRatio: number;
  readonly renewCheckIntervalMs: number;
  readonly acmeRetryMinMs: number;
  readonly acmeRetryMaxMs: number;
  readonly accessLog: boolean;
}

/** One gateway origin, parsed once. */
export interface UpstreamTarget {
  /** `http://host:port`, as written in logs and health snapshots. */
  readonly origin: string;
  readonly hostname: string;
  readonly port: number;
}

const KNOWN_KEYS: ReadonlySet<string> = new Set<keyof ProxyOptions>([
  "upstream",
  "domain",
  "email",
  "host",
  "httpsPort",
  "httpPort",
  "tls",
  "certFile",
  "keyFile",
  "acmeDirectoryUrl",
  "acmeCaBundleFile",
  "certDir",
  "trustedProxies",
  "onDemandAllow",
  "maxBodyBytes",
  "maxHeaderBytes",
  "headersTimeoutMs",
  "requestTimeoutMs",
  "keepAliveTimeoutMs",
  "healthIntervalMs",
  "healthTimeoutMs",
  "healthPath",
  "hstsMaxAgeSeconds",
  "redirectHttp",
  "renewalWindowRatio",
  "renewCheckIntervalMs",
  "acmeRetryMinMs",
  "acmeRetryMaxMs",
  "accessLog",
  "onDemandAsk",
  "onDemandMaxNames",
  "acmeOrdersPerMinute",
  "wsIdleTimeoutMs",
  "wsUpgradeTimeoutMs",
  "maxConnections",
  "maxConnectionsPerIp",
]);

// RFC 1123 labels; a leading "*." is handled by the callers that allow wildcards.
export const HOSTNAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * Validates `opts`, applies defaults and returns a deeply frozen config.
 * @throws InvalidConfigError naming the key, for an unknown key, a bad value, or a contradiction
 *   (e.g. `certFile` without `tls: "files"`, `tls: "acme"` with no domain).
 */
export function compileProxyConfig(opts: ProxyOptions): Readonly<ProxyConfig> {
  const o = knownOptions(opts);
  const tls = oneOf("tls", o.tls, [TlsMode.acme, TlsMode.selfSigned, TlsMode.files], TlsMode.acme);
  const upstream = list("upstream", o.upstream).map((u) => parseUpstream(u));
  if (upstream.length === 0) throw new InvalidConfigError("upstream", "at least one upstream gateway is required");
  const names = compileNames(o, tls);
  const files = compileCertFiles(o, tls);
  const acme = compileAcme(o);
  const trustedProxies = list("trustedProxies", o.trustedProxies);
  for (const cidr of trustedProxies) parseCidr(cidr); // throws naming the key
  const httpsPort = port("httpsPort", o.httpsPort, 443);
  const httpPort = port("httpPort", o.httpPort, 80);
  if (httpsPort !== 0 && httpsPort === httpPort) throw new InvalidConfigError("httpPort", "must differ from httpsPort");
  const healthPath = optString("healthPath", o.healthPath) ?? "/health";
  if (!healthPath.startsWith("/")) throw new InvalidConfigError("healthPath", 'must start with "/"');
  const renewal = compileRenewal(o);
  const certDirRaw = optString("certDir", o.certDir);
  const certDir = certDirRaw !== null ? resolve(certDirRaw) : defaultCertDir();
  const host = optString("host", o.host);
  const acmeCaBundleFile = mapNull(optString("acmeCaBundleFile", o.acmeCaBundleFile), (f) => resolve(f));
  const limits = compileLimits(o);
  const config: ProxyConfig = {
    upstream,
    ...names,
    ...acme,
    host,
    httpsPort,
    httpPort,
    tls,
    ...files,
    acmeCaBundleFile,
    certDir,
    trustedProxies,
    ...limits,
    healthPath,
    ...renewal,
  };
  return deepFreeze(config);
}

/** The options as a record of unknowns, once every key is known. */
function knownOptions(opts: ProxyOptions): Record<string, unknown> {
  if (opts === null || typeof opts !== "object") throw new InvalidConfigError("(options)", "must be an object");
  for (const key of Object.keys(opts)) {
    if (!KNOWN_KEYS.has(key)) throw new InvalidConfigError(key, "unknown option");
  }
  return opts as unknown as Record<string, unknown>;
}

/** The names served and those that may get a certificate on demand. */
function compileNames(
  o: Record<string, unknown>,
  tls: TlsMode,
): Pick<ProxyConfig, "domain" | "onDemandAllow" | "onDemandAsk"> {
  let domain = list("domain", o.domain).map((d) => d.toLowerCase().replace(/\.$/, ""));
  for (const d of domain) {
    const bare = d.startsWith("*.") ? d.slice(2) : d;
    if (!HOSTNAME_RE.test(bare) && isIP(d) === 0)
      throw new InvalidConfigError("domain", `not a host name: ${JSON.stringify(d)}`);
    if (
      tls === TlsMode.acme &&
      (d.startsWith("*.") || isIP(d) !== 0 || d === "localhost" || d.endsWith(".localhost"))
    ) {
      throw new InvalidConfigError(
        "domain",
        `${d} cannot get a certificate over ACME HTTP-01 (wildcard, IP or localhost)`,
      );
    }
  }
  if (tls === TlsMode.selfSigned && domain.length === 0) domain = ["localhost"];
  domain = [...new Set(domain)];

  const onDemandAllow = list("onDemandAllow", o.onDemandAllow).map((p) => p.toLowerCase());
  for (const p of onDemandAllow) {
    const bare = p.startsWith("*.") ? p.slice(2) : p;
    if (!HOSTNAME_RE.test(bare))
      throw new InvalidConfigError("onDemandAllow", `not a host name or *.pattern: ${JSON.stringify(p)}`);
  }
  if (onDemandAllow.length > 0 && tls !== TlsMode.acme) {
    throw new InvalidConfigError("onDemandAllow", 'on-demand issuance needs tls: "acme"');
  }
  const onDemandAsk = mapNull(optString("onDemandAsk", o.onDemandAsk), (u) => parseAskUrl(u));
  if (onDemandAsk !== null && tls !== TlsMode.acme) {
    throw new InvalidConfigError("onDemandAsk", 'on-demand issuance needs tls: "acme"');
  }
  if (tls === TlsMode.acme && domain.length === 0 && onDemandAllow.length === 0 && onDemandAsk === null) {
    throw new InvalidConfigError("domain", 'tls: "acme" needs at least one domain (or onDemandAllow / onDemandAsk)');
  }
  return { domain, onDemandAllow, onDemandAsk };
}

/** `certFile` and `keyFile`: both with `tls: "files"`, neither otherwise. */
function compileCertFiles(o: Record<string, unknown>, tls: TlsMode): Pick<ProxyConfig, "certFile" | "keyFile"> {
  const certFile = optString("certFile", o.certFile);
  const keyFile = optString("keyFile", o.keyFile);
  if (tls === TlsMode.files) {
    if (certFile === null) throw new InvalidConfigError("certFile", 'required with tls: "files"');
    if (keyFile === null) throw new InvalidConfigError("keyFile", 'required with tls: "files"');
  } else {
    if (certFile !== null) throw new InvalidConfigError("certFile", 'only used with tls: "files"');
    if (keyFile !== null) throw new InvalidConfigError("keyFile", 'only used with tls: "files"');
  }
  return {
    certFile: certFile !== null ? resolve(certFile) : null,
    keyFile: keyFile !== null ? resolve(keyFile) : null,
  };
}

/** The ACME contact and directory. */
function compileAcme(o: Record<string, unknown>): Pick<ProxyConfig, "email" | "acmeDirectoryUrl"> {
  const email = optString("email", o.email);
  if (email !== null && !/^[^@\s]+@[^@\s]+$/.test(email))
    throw new InvalidConfigError("email", "not an e-mail address");
  const acmeDirectoryUrl = optString("acmeDirectoryUrl", o.acmeDirectoryUrl) ?? LETS_ENCRYPT_DIRECTORY_URL;
  let dirUrl: URL;
  try {
    dirUrl = new URL(acmeDirectoryUrl);
  } catch {
    throw new InvalidConfigError("acmeDirectoryUrl", "not a URL");
  }
  // RFC 8555 §6.1: ACME runs over HTTPS only.
  if (dirUrl.protocol !== "https:") throw new InvalidConfigError("acmeDirectoryUrl", "must be an https:// URL");
  return { email, acmeDirectoryUrl: dirUrl.href };
}

/** When certificates are renewed, and how issuance retries back off. */
function compileRenewal(
  o: Record<string, unknown>,
): Pick<ProxyConfig, "renewalWindowRatio" | "acmeRetryMinMs" | "acmeRetryMaxMs"> {
  const renewalWindowRatio = num("renewalWindowRatio", o.renewalWindowRatio, 1 / 3, {
    min: 0.01,
    max: 0.99,
    integer: false,
  });
  const acmeRetryMinMs = num("acmeRetryMinMs", o.acmeRetryMinMs, 60_000, { min: 1 });
  const acmeRetryMaxMs = num("acmeRetryMaxMs", o.acmeRetryMaxMs, 86_400_000, { min: 1 });
  if (acmeRetryMaxMs < acmeRetryMinMs) throw new InvalidConfigError("acmeRetryMaxMs", "must be >= acmeRetryMinMs");
  return { renewalWindowRatio, acmeRetryMinMs, acmeRetryMaxMs };
}

/** The options that are a plain number or switch with a default. */
type PlainSettings = Pick<
  ProxyConfig,
  | "onDemandMaxNames"
  | "acmeOrdersPerMinute"
  | "maxBodyBytes"
  | "maxHeaderBytes"
  | "headersTimeoutMs"
  | "requestTimeoutMs"
  | "keepAliveTimeoutMs"
  | "wsIdleTimeoutMs"
  | "wsUpgradeTimeoutMs"
  | "maxConnections"
  | "maxConnectionsPerIp"
  | "healthIntervalMs"
  | "healthTimeoutMs"
  | "hstsMaxAgeSeconds"
  | "redirectHttp"
  | "renewCheckIntervalMs"
  | "accessLog"
>;

/** Limits, timeouts, health checks and switches, checked in the order of `ProxyConfig`. */
function compileLimits(o: Record<string, unknown>): PlainSettings {
  return {
    onDemandMaxNames: num("onDemandMaxNames", o.onDemandMaxNames, 1000, { min: 1 }),
    // Let's Encrypt allows 300 new orders per account per 3 hours: 10 a minute stays clear of it in bursts only.
    acmeOrdersPerMinute: num("acmeOrdersPerMinute", o.acmeOrdersPerMinute, 10, { min: 1 }),
    // As large as the largest body a gateway takes (an asset upload, 256 MiB by default): bodies stream through.
    maxBodyBytes: num("maxBodyBytes", o.maxBodyBytes, 256 * 1024 * 1024, { min: 0 }),
    maxHeaderBytes: num("maxHeaderBytes", o.maxHeaderBytes, 16 * 1024, { min: 1024, max: 1024 * 1024 }),
    // Node's server defaults, which the proxy had before it read HTTP itself (front.ts).
    headersTimeoutMs: num("headersTimeoutMs", o.headersTimeoutMs, 60_000, { min: 10 }),
    requestTimeoutMs: num("requestTimeoutMs", o.requestTimeoutMs, 300_000, { min: 10 }),
    keepAliveTimeoutMs: num("keepAliveTimeoutMs", o.keepAliveTimeoutMs, 5_000, { min: 10 }),
    wsIdleTimeoutMs: num("wsIdleTimeoutMs", o.wsIdleTimeoutMs, 600_000, { min: 10 }),
    // A gateway answers an upgrade as soon as it has checked the token: one silent this long is stuck.
    wsUpgradeTimeoutMs: num("wsUpgradeTimeoutMs", o.wsUpgradeTimeoutMs, 30_000, { min: 10 }),
    maxConnections: num("maxConnections", o.maxConnections, 10_000, { min: 1 }),
    // A browser opens about six connections per host, a NAT'd office a few hundred: one address cannot take them all.
    maxConnectionsPerIp: num("maxConnectionsPerIp", o.maxConnectionsPerIp, 256, { min: 1 }),
    healthIntervalMs: num("healthIntervalMs", o.healthIntervalMs, 5_000, { min: 10 }),
    healthTimeoutMs: num("healthTimeoutMs", o.healthTimeoutMs, 2_000, { min: 10 }),
    hstsMaxAgeSeconds: num("hstsMaxAgeSeconds", o.hstsMaxAgeSeconds, 31_536_000, { min: 0 }),
    redirectHttp: bool("redirectHttp", o.redirectHttp, true),
    renewCheckIntervalMs: num("renewCheckIntervalMs", o.renewCheckIntervalMs, 600_000, { min: 10 }),
    accessLog: bool("accessLog", o.accessLog, true),
  };
}

/**
 * Parses an IP or CIDR into a one-entry BlockList-compatible description.
 * @throws InvalidConfigError with key `trustedProxies`
 */
export function parseCidr(text: string): { address: string; prefix: number; family: "ipv4" | "ipv6" } {
  const [address = "", prefixText] = text.split("/", 2);
  const v = isIP(address);
  if (v === 0) throw new InvalidConfigError("trustedProxies", `not an IP or CIDR: ${JSON.stringify(text)}`);
  const max = v === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (
    !Number.isInteger(prefix) ||
    prefix < 0 ||
    prefix > max ||
    (prefixText !== undefined && !/^\d+$/.test(prefixText))
  ) {
    throw new InvalidConfigError("trustedProxies", `bad prefix length in ${JSON.stringify(text)}`);
  }
  return { address, prefix, family: v === 4 ? "ipv4" : "ipv6" };
}

/** Builds the matcher for `trustedProxies`; `null` when the list is empty (the common, fast case). */
export function trustedProxyMatcher(cidrs: readonly string[]): ((peer: string) => boolean) | null {
  if (cidrs.length === 0) return null;
  const list = new BlockList();
  for (const c of cidrs) {
    const { address, prefix, family } = parseCidr(c);
    list.addSubnet(address, prefix, family);
  }
  return (peer: string): boolean => {
    // Dual-stack sockets report IPv4 peers as IPv4-mapped IPv6 ("::ffff:10.0.0.1"); match them as IPv4.
    if (peer.startsWith("::ffff:") && isIP(peer.slice(7)) === 4) peer = peer.slice(7);
    const family = isIP(peer);
    if (family === 0) return false;
    return list.check(peer, family === 4 ? "ipv4" : "ipv6");
  };
}

/** `$NODEWAY_HOME/certs`, `~/.nodeway/certs` when unset. */
function defaultCertDir(): string {
  const home = process.env.NODEWAY_HOME;
  const base = home !== undefined && home !== "" ? home : join(homedir(), ".nodeway");
  return join(isAbsolute(base) ? base : resolve(base), "certs");
}

function parseUpstream(text: string): UpstreamTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidConfigError("upstream", `not a URL: ${JSON.stringify(text)}`);
  }
  // Gateways sit on loopback or a private network; TLS to them is not supported yet.
  if (url.protocol !== "http:")
    throw new InvalidConfigError("upstream", `${text}: only http:// upstreams are supported`);
  if (url.username !== "" || url.password !== "")
    throw new InvalidConfigError("upstream", `${text}: credentials in the URL are not allowed`);
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    throw new InvalidConfigError("upstream", `${text}: give an origin only (no path, query or fragment)`);
  }
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  return { origin: url.origin, hostname, port: url.port === "" ? 80 : Number(url.port) };
}

/** The on-demand ask hook: an http(s) URL without credentials or fragment (`?domain=` is added to its query). */
function parseAskUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidConfigError("onDemandAsk", `not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidConfigError("onDemandAsk", "must be an http:// or https:// URL");
  }
  if (url.username !== "" || url.password !== "" || url.hash !== "") {
    throw new InvalidConfigError("onDemandAsk", "no credentials or fragment in the URL");
  }
  return url.href;
}

function list(key: string, value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const items = typeof value === "string" ? value.split(",") : value;
  if (!Array.isArray(items)) throw new InvalidConfigError(key, "must be a list of strings");
  const out: string[] = [];
  for (const item of items) {
    if (typeof item !== "string") throw new InvalidConfigError(key, "must be a list of strings");
    const t = item.trim();
    if (t !== "") out.push(t);
  }
  return out;
}

function optString(key: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new InvalidConfigError(key, "must be a string");
  return value === "" ? null : value;
}

function oneOf<T extends string>(key: string, value: unknown, allowed: readonly T[], dflt: T): T {
  if (value === undefined || value === null) return dflt;
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw new InvalidConfigError(key, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
  }
  return value as T;
}

function num(
  key: string,
  value: unknown,
  dflt: number,
  range: { min?: number; max?: number; integer?: boolean },
): number {
  if (value === undefined || value === null) return dflt;
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isFinite(n))
    throw new InvalidConfigError(key, `must be a number, got ${JSON.stringify(value)}`);
  if (range.integer !== false && !Number.isInteger(n))
    throw new InvalidConfigError(key, `must be an integer, got ${n}`);
  if (range.min !== undefined && n < range.min) throw new InvalidConfigError(key, `must be >= ${range.min}, got ${n}`);
  if (range.max !== undefined && n > range.max) throw new InvalidConfigError(key, `must be <= ${range.max}, got ${n}`);
  return n;
}

function port(key: string, value: unknown, dflt: number): number {
  return num(key, value, dflt, { min: 0, max: 65535 });
}

function bool(key: string, value: unknown, dflt: boolean): boolean {
  if (value === undefined || value === null) return dflt;
  if (typeof value === "boolean") return value;
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  throw new InvalidConfigError(key, `must be true or false, got ${JSON.stringify(value)}`);
}

function mapNull<T, U>(v: T | null, f: (v: T) => U): U | null {
  return v === null ? null : f(v);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Every option key, for the CLI (flags and `NODEWAY_*` env names are derived from these). */
export const PROXY_OPTION_KEYS: ReadonlySet<string> = KNOWN_KEYS;
