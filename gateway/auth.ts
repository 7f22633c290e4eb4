/**
 * API tokens (design §6, reliability S5): `Authorization: Bearer <token>` on every request, and on the `/ws`
 * upgrade also `?api_key=<token>` or a `bearer.<token>` subprotocol (browsers cannot set headers on
 * `new WebSocket`). Refused before the upgrade, never echoed (the subprotocol answered is only `nodeway.*`), and
 * never logged: the gateway logs paths without their query, and no message here quotes what the client sent.
 *
 * Tokens are kept as SHA-256 digests and compared in constant time against every accepted one, so neither a
 * timing difference nor a heap dump gives a token away. A token file can be re-read while running (SIGHUP):
 * sockets opened with a token no longer accepted are closed (`revoked`).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { HttpResponse } from "uWebSockets.js";
import { ErrorCode, InvalidConfigError } from "../protocol/index.js";

/**
 * RFC 6750's b64token less `/` and `=` (a `Sec-WebSocket-Protocol` value cannot carry them) and `+` (a query
 * string may decode it as a space): base64url and hex tokens fit. At least 16 characters: a token is the whole
 * credential.
 */
const TOKEN_SYNTAX = /^[A-Za-z0-9._~-]{16,512}$/;

/** Checks one configured token; throws `InvalidConfigError` naming the setting, never quoting the token. */
export function checkApiToken(key: string, token: string, where: string): string {
  if (!TOKEN_SYNTAX.test(token)) {
    throw new InvalidConfigError(key, `${where}: a token must be 16-512 characters of A-Z a-z 0-9 . _ ~ - (a base64url or hex string; \`nodeway token\` makes one)`);
  }
  return token;
}

/** The tokens of a token file: one per line; blank lines and lines starting with `#` are skipped. */
export function readTokenFile(key: string, path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidConfigError(key, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const out: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    out.push(checkApiToken(key, line, `${path} line ${i + 1}`));
  });
  return out;
}

/** A new random token (32 bytes, base64url): what `nodeway token` prints. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

const digest = (token: string): Buffer => createHash("sha256").update(token, "utf8").digest();

export type AuthResult =
  | { ok: true; digest: Buffer }
  | { ok: false; reason: "missing" | "invalid"; code: typeof ErrorCode.GW_ERR_UNAUTHORIZED; message: string; header: string };

const REALM = 'Bearer realm="nodeway"';

export class TokenCheck {
  private digests: Buffer[];
  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  /** Off when no token is configured (a gateway on loopback behind nothing, as `nodeway up` runs it). */
  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** Replaces the accepted tokens (an empty list is refused by the caller: it would open the gateway). */
  replace(tokens: readonly string[]): void {
    this.digests = tokens.map(digest);
  }

  /** Whether a digest from an earlier `check` is still accepted. */
  stillAccepted(d: Buffer): boolean {
    let hit = false;
    for (const x of this.digests) hit = timingSafeEqual(x, d) || hit;
    return hit;
  }

  /** `token` as presented (undefined when none was); `missingHint` says in the refusal how to send one. */
  check(token: string | undefined, missingHint: string): AuthResult {
    if (token === undefined || token === "") {
      return { ok: false, reason: "missing", code: ErrorCode.GW_ERR_UNAUTHORIZED, message: `missing API token: ${missingHint}`, header: REALM };
    }
    const d = digest(token);
    if (this.stillAccepted(d)) return { ok: true, digest: d };
    return { ok: false, reason: "invalid", code: ErrorCode.GW_ERR_UNAUTHORIZED, message: "invalid API token", header: `${REALM}, error="invalid_token"` };
  }
}

/**
 * Refused requests and upgrades, logged (reliability S5/S6: denied and logged) without what the client sent:
 * the peer, the path and whether a token was missing or wrong. At most one line per `everyMs`, with a count of
 * the refusals in between, so a flood of bad tokens cannot flood the log.
 */
export class RefusalLog {
  /** Every refusal, logged or held back (`nodeway_unauthorized_total`). */
  total = 0;
  private lastMs = Number.NEGATIVE_INFINITY;
  private suppressed = 0;
  constructor(
    private readonly log: (line: string) => void,
    private readonly everyMs = 1_000,
  ) {}

  refused(what: string, peer: string, result: Extract<AuthResult, { ok: false }>): void {
    this.total++;
    const nowMs = Date.now();
    if (nowMs - this.lastMs < this.everyMs) {
      this.suppressed++;
      return;
    }
    const more = this.suppressed > 0 ? ` (and ${this.suppressed} more refused since the last such line)` : "";
    this.suppressed = 0;
    this.lastMs = nowMs;
    this.log(`refused ${what} from ${peer}: ${result.reason === "missing" ? "no" : "invalid"} API token${more}`);
  }
}

/** The 401 body, shaped like every gateway error (`{error: {code, message}, code, message}`). */
export function refusalBody(a: Extract<AuthResult, { ok: false }>): Record<string, unknown> {
  return { error: { code: a.code, message: a.message }, code: a.code, message: a.message };
}

/** The peer's address as uWS has it (call before the handler returns or awaits). */
export function peerOf(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString() || "?";
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m ? m[1] : undefined;
}

/** The token of a `bearer.<token>` entry among offered subprotocols, or undefined. */
export function subprotocolToken(offered: readonly string[]): string | undefined {
  for (const p of offered) if (p.length > 7 && p.slice(0, 7).toLowerCase() === "bearer.") return p.slice(7);
  return undefined;
}
