/**
 * API tokens: `Authorization: Bearer <token>` on every request, and on the `/ws`
 * upgrade also `?api_key=<token>` or a `bearer.<token>` subprotocol (browsers cannot set headers on
 * `new WebSocket`). Refused before the upgrade, never echoed (the subprotocol answered is only `nodeway.*`), and
 * never logged: the gateway logs paths without their query, and no message here quotes what the client sent.
 *
 * Tokens are kept as SHA-256 digests and compared in constant time against every accepted one, so neither a
 * timing difference nor a heap dump gives a token away. A token file can be re-read while running (SIGHUP):
 * sockets opened with a token no longer accepted are closed (`revoked`). A token in the file may carry an expiry
 * (`<token> expires=2027-01-31T00:00:00Z`): from then on it is refused (`expired`), and what it opened is closed
 * at that moment, without waiting for a reload.
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
    throw new InvalidConfigError(
      key,
      `${where}: a token must be 16-512 characters of A-Z a-z 0-9 . _ ~ - (a base64url or hex string; \`nodeway token\` makes one)`,
    );
  }
  return token;
}

/** An accepted token, and when it stops being accepted (null: never). */
export interface ApiToken {
  token: string;
  expiresAtMs: number | null;
}

/** Whether `t` has expired by `nowMs`. */
export const isExpired = (t: ApiToken, nowMs: number = Date.now()): boolean =>
  t.expiresAtMs !== null && t.expiresAtMs <= nowMs;

/** How many of `tokens` have expired by `nowMs`. */
export function expiredCount(tokens: readonly ApiToken[], nowMs: number = Date.now()): number {
  return tokens.filter((t) => isExpired(t, nowMs)).length;
}

/**
 * An RFC 3339 time with its offset (`Z` or `±hh:mm`): a time without one would mean whatever zone the gateway's
 * host is in. Seconds are required; fractions are allowed.
 */
const EXPIRY_SYNTAX = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-](\d{2}):(\d{2}))$/i;

/** Milliseconds since the epoch of an RFC 3339 time, or NaN: `Date.parse` alone takes February 30th as March 2nd. */
function parseExpiry(text: string): number {
  const m = EXPIRY_SYNTAX.exec(text);
  if (!m) return Number.NaN;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  const inRange =
    month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth && hour <= 23 && minute <= 59 && second <= 59;
  const offsetOk = m[9] === undefined || (Number(m[9]) <= 23 && Number(m[10]) <= 59);
  return inRange && offsetOk ? Date.parse(text) : Number.NaN;
}

/**
 * The tokens of a token file: one per line, `<token>` or `<token> expires=<RFC 3339 time>`; blank lines and lines
 * starting with `#` are skipped. Anything else on a line is refused, naming the line: a misspelt `expires` must
 * not leave a token that was meant to lapse valid for ever.
 */
export function readTokenFile(key: string, path: string): ApiToken[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidConfigError(
      key,
      `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const out: ApiToken[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `${path} line ${i + 1}`;
    const [token, ...attrs] = line.split(/[ \t]+/);
    let expiresAtMs: number | null = null;
    for (const attr of attrs) {
      const m = /^expires=(.*)$/.exec(attr);
      if (!m)
        throw new InvalidConfigError(
          key,
          `${where}: after the token only \`expires=<time>\` may follow (got something else)`,
        );
      const ms = parseExpiry(m[1]!);
      if (!Number.isFinite(ms))
        throw new InvalidConfigError(
          key,
          `${where}: expires must be an RFC 3339 time with its offset, as 2027-01-31T00:00:00Z (got ${JSON.stringify(m[1])})`,
        );
      if (expiresAtMs !== null) throw new InvalidConfigError(key, `${where}: expires is given twice`);
      expiresAtMs = ms;
    }
    out.push({ token: checkApiToken(key, token!, where), expiresAtMs });
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
  | {
      ok: false;
      reason: "missing" | "invalid" | "expired";
      code: typeof ErrorCode.GW_ERR_UNAUTHORIZED;
      message: string;
      header: string;
    };

const REALM = 'Bearer realm="nodeway"';

/** What a digest is now: accepted, known but past its expiry, or not among the tokens at all. */
export type TokenStanding = "accepted" | "expired" | "unknown";

export class TokenCheck {
  private entries: { digest: Buffer; expiresAtMs: number }[] = [];
  constructor(
    tokens: readonly ApiToken[],
    private readonly nowMs: () => number = Date.now,
  ) {
    this.replace(tokens);
  }

  /**
   * Off when no token is configured (a gateway on loopback behind nothing, as `nodeway up` runs it). Tokens that
   * have all expired still count: expiry closes the gateway, never opens it.
   */
  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /** Replaces the accepted tokens (an empty list is refused by the caller: it would open the gateway). */
  replace(tokens: readonly ApiToken[]): void {
    this.entries = tokens.map((t) => ({
      digest: digest(t.token),
      expiresAtMs: t.expiresAtMs ?? Number.POSITIVE_INFINITY,
    }));
  }

  /** Whether a digest from an earlier `check` is accepted now, expired, or gone. Compares against every token. */
  standing(d: Buffer): TokenStanding {
    const nowMs = this.nowMs();
    let live = false;
    let known = false;
    for (const e of this.entries) {
      const hit = timingSafeEqual(e.digest, d);
      known = hit || known;
      live = (hit && e.expiresAtMs > nowMs) || live;
    }
    return live ? "accepted" : known ? "expired" : "unknown";
  }

  /** Whether a digest from an earlier `check` is still accepted. */
  stillAccepted(d: Buffer): boolean {
    return this.standing(d) === "accepted";
  }

  /** The next moment a token expires (ms since the epoch), or null when none is still to expire. */
  nextExpiryMs(): number | null {
    const nowMs = this.nowMs();
    let next = Number.POSITIVE_INFINITY;
    for (const e of this.entries) if (e.expiresAtMs > nowMs && e.expiresAtMs < next) next = e.expiresAtMs;
    return Number.isFinite(next) ? next : null;
  }

  /** `token` as presented (undefined when none was); `missingHint` says in the refusal how to send one. */
  check(token: string | undefined, missingHint: string): AuthResult {
    if (token === undefined || token === "") {
      return {
        ok: false,
        reason: "missing",
        code: ErrorCode.GW_ERR_UNAUTHORIZED,
        message: `missing API token: ${missingHint}`,
        header: REALM,
      };
    }
    const d = digest(token);
    const standing = this.standing(d);
    if (standing === "accepted") return { ok: true, digest: d };
    if (standing === "expired") {
      return {
        ok: false,
        reason: "expired",
        code: ErrorCode.GW_ERR_UNAUTHORIZED,
        message: "expired API token",
        header: `${REALM}, error="invalid_token", error_description="the token expired"`,
      };
    }
    return {
      ok: false,
      reason: "invalid",
      code: ErrorCode.GW_ERR_UNAUTHORIZED,
      message: "invalid API token",
      header: `${REALM}, error="invalid_token"`,
    };
  }
}

/**
 * Refused requests and upgrades, logged without what the client sent:
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
    this.log(`refused ${what} from ${peer}: ${result.reason === "missing" ? "no" : result.reason} API token${more}`);
  }
}

/** setTimeout's longest delay (~24.8 days): a later expiry is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Closes what a token opened when it expires, not at the next reload: one timer, for the next expiry.
 * `closeRefused` closes what tokens no longer accepted opened and says how many it closed.
 */
export class TokenExpiry {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  constructor(
    private readonly auth: TokenCheck,
    private readonly closeRefused: () => number,
    private readonly log: (line: string) => void,
  ) {}

  /** (Re)arms the timer for the next expiry among the tokens accepted now. */
  arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const next = this.auth.nextExpiryMs();
    if (next === null || this.stopped) return;
    this.timer = setTimeout(() => this.expired(next), Math.min(Math.max(0, next - Date.now()) + 1, MAX_TIMER_MS));
    this.timer.unref();
  }

  private expired(next: number): void {
    this.timer = null;
    const closed = this.closeRefused();
    if (this.auth.nextExpiryMs() !== next)
      this.log(`an API token expired${closed ? `: ${closed} connection(s) opened with it closed` : ""}`);
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
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
