/**
 * What a browser may do here. A page on any site can make a browser send requests to the gateway (a form post, a
 * WebSocket, a DNS name rebound to 127.0.0.1); these checks keep such a page from using an open gateway.
 *
 * - Host: with no API tokens, only loopback names, the address it listens on and `allowedHosts` are answered
 *   (DNS rebinding); with `allowedHosts` set, only those and loopback, tokens or not.
 * - Origin: a request that carries one (every cross-site POST and WebSocket does) must come from the same
 *   origin, a loopback origin or `allowedOrigins`; with tokens on and no `allowedOrigins`, any origin (the
 *   token is the credential a page cannot have).
 * - CORS stays off unless `corsOrigins` names origins: then those get the CORS headers and preflights.
 */
import type { GatewayConfig } from "./config.js";

type Policy = Pick<GatewayConfig, "host" | "allowedHosts" | "allowedOrigins" | "corsOrigins">;

/** The host name of a `Host` header or URL authority, lower case, without port or IPv6 brackets. */
export function hostName(authority: string): string {
  const a = authority.trim().toLowerCase();
  if (a.startsWith("[")) return a.slice(1, a.indexOf("]") > 0 ? a.indexOf("]") : undefined);
  const colon = a.lastIndexOf(":");
  return colon >= 0 && a.indexOf(":") === colon ? a.slice(0, colon) : a;
}

export function isLoopbackName(name: string): boolean {
  return (
    name === "localhost" ||
    name.endsWith(".localhost") ||
    name === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)
  );
}

export class BrowserPolicy {
  private readonly hosts: ReadonlySet<string>;
  private readonly origins: ReadonlySet<string>;
  private readonly cors: ReadonlySet<string>;
  /** The address the gateway listens on, unless a wildcard: a client that dials it names it. */
  private readonly ownAddress: string | null;
  constructor(
    config: Readonly<Policy>,
    private readonly tokensOn: () => boolean,
  ) {
    this.hosts = new Set(config.allowedHosts.map((h) => hostName(h)));
    const bound = hostName(config.host);
    this.ownAddress = bound === "0.0.0.0" || bound === "::" ? null : bound;
    this.origins = new Set(config.allowedOrigins.map((o) => o.toLowerCase().replace(/\/$/, "")));
    this.cors = new Set(config.corsOrigins.map((o) => o.toLowerCase().replace(/\/$/, "")));
  }

  /** Whether a request with this `Host` is answered (absent: not a browser, answered). */
  hostAllowed(host: string | undefined): boolean {
    if (!host) return true;
    const name = hostName(host);
    if (isLoopbackName(name) || this.hosts.has(name) || name === this.ownAddress) return true;
    if (this.hosts.size > 0) return false;
    return this.tokensOn();
  }

  /** Whether a request with this `Origin` may act (absent: not cross-site, allowed). */
  originAllowed(origin: string | undefined, host: string | undefined): boolean {
    if (!origin) return true;
    const o = origin.toLowerCase().replace(/\/$/, "");
    if (this.origins.has(o) || this.cors.has(o)) return true;
    let url: URL;
    try {
      url = new URL(o);
    } catch {
      return false; // "null" (sandboxed frames, file:) and garbage
    }
    if (host && url.host === host.toLowerCase()) return true; // same origin
    if (isLoopbackName(hostName(url.host))) return true;
    return this.tokensOn() && this.origins.size === 0;
  }

  /** The CORS response headers for `origin`, or null when CORS is not configured for it. */
  corsHeaders(origin: string | undefined): Record<string, string> | null {
    if (!origin || !this.cors.has(origin.toLowerCase().replace(/\/$/, ""))) return null;
    return { "access-control-allow-origin": origin, vary: "Origin" };
  }
}

/** Whether a `Content-Type` names JSON (`application/json`, `application/*+json`, any parameters). */
export function isJsonType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const t = contentType.split(";")[0]!.trim().toLowerCase();
  return t === "application/json" || (t.startsWith("application/") && t.endsWith("+json"));
}
