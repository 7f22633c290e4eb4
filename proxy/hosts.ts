/**
 * Host names as the proxy compares them: the name of a `Host` field, and the `name` / `*.suffix` patterns of
 * `domain` and `onDemandAllow`. Which names are served is decided by `CertManager.servesHost`.
 */
import { isIP } from "node:net";

// A Host field: a reg-name of letters, digits, dots and hyphens, or a bracketed IPv6 literal; then an optional port.
const HOST_FIELD_RE = /^(?:([a-z0-9.-]{1,253})|\[([0-9a-f:.]{2,45})\])(?::\d{1,5})?$/i;

/**
 * The name in a `Host` field (`name`, `name:port`, `[v6]:port`): lower-case, without a trailing dot, IPv6 without
 * brackets. Null for anything else (userinfo, paths, spaces, an empty name), which must never be routed or echoed.
 */
export function hostName(field: string): string | null {
  const m = HOST_FIELD_RE.exec(field.trim());
  if (m === null) return null;
  if (m[2] !== undefined) return isIP(m[2]) === 6 ? m[2].toLowerCase() : null;
  const name = m[1]!.toLowerCase().replace(/\.$/, "");
  return name === "" || name.startsWith(".") || name.includes("..") ? null : name;
}

/** `name` as it goes back into a URL authority: IPv6 literals bracketed. */
export function hostAuthority(name: string): string {
  return isIP(name) === 6 ? `[${name}]` : name;
}

/** True when `name` is one of `patterns`: equal, or `*.suffix` plus exactly one label (as a wildcard certificate). */
export function matchesHostPattern(patterns: readonly string[], name: string): boolean {
  for (const pattern of patterns) {
    if (pattern === name) return true;
    if (pattern.startsWith("*.")) {
      const dot = name.indexOf(".");
      if (dot > 0 && name.slice(dot) === pattern.slice(1)) return true;
    }
  }
  return false;
}

/** 127.0.0.0/8 and ::1: what `localhost` resolves to, and what a browser on the machine sends as Host. */
export function isLoopbackLiteral(name: string): boolean {
  const v = isIP(name);
  return (v === 4 && name.startsWith("127.")) || (v === 6 && (name === "::1" || name === "0:0:0:0:0:0:0:1"));
}
