/**
 * Access log: one line per request or tunnel, never a credential. Headers are not logged at all (so `Authorization`
 * and cookies cannot leak); query values of token-like parameters are replaced by `[REDACTED]`; a WebSocket
 * subprotocol of the form `bearer.<token>` (how browsers pass a token on `new WebSocket(url, protocols)`) is logged
 * as `bearer.[REDACTED]`.
 *
 * Format: `<ISO time> <peer> "<METHOD> <path>" <status> <ms>ms <upstream|->[ proto=<subprotocols>]`.
 */

const SECRET_PARAM = /([?&](?:api[_-]?key|access[_-]?token|token|key|auth|password|secret|sig|signature)=)[^&#]*/gi;

/** Redacts token-like query parameter values. Paths without a query are returned as is (the common case). */
export function redactUrl(url: string): string {
  if (url.indexOf("?") < 0) return url;
  return url.replace(SECRET_PARAM, "$1[REDACTED]");
}

/** Redacts `bearer.<token>` entries of a `Sec-WebSocket-Protocol` list. */
export function redactSubprotocols(value: string): string {
  return value.replace(/\bbearer\.[^,\s]*/gi, "bearer.[REDACTED]");
}

let lastMs = 0;
let lastIso = "";

/** ISO time, recomputed at most once per millisecond (the log runs at request rate). */
function isoNow(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastIso = new Date(now).toISOString();
  }
  return lastIso;
}

export function formatAccessLine(
  peer: string | undefined,
  method: string | undefined,
  url: string | undefined,
  status: number,
  ms: number,
  upstream: string | null,
  subprotocols?: string,
): string {
  const line = `${isoNow()} ${peer ?? "-"} "${method ?? "-"} ${redactUrl(url ?? "-")}" ${status} ${ms.toFixed(1)}ms ${upstream ?? "-"}`;
  return subprotocols === undefined ? line : `${line} proto=${redactSubprotocols(subprotocols)}`;
}

/**
 * The default sink: lines are batched and written to stdout once per event-loop turn, so the log costs one write
 * per batch rather than one syscall per request. `flush()` writes what is pending (called on stop).
 */
export function stdoutAccessLog(): { write: (line: string) => void; flush: () => void } {
  let pending: string[] = [];
  let armed = false;
  const flush = (): void => {
    armed = false;
    if (pending.length === 0) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    process.stdout.write(text);
  };
  return {
    write(line: string): void {
      pending.push(line);
      if (!armed) {
        armed = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}
