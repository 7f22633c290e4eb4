/**
 * The `Nw-Lease` header of a message, read from its raw header block. The library's header map (the block decoded
 * as one string, split into lines, each key checked and each value tested by a regular expression, then a `Map`)
 * cost about 1 µs per event: 6–8 % of the gateway's busy time fanning one job out to 100 sockets
 * (`bench/profile.ts fanout`). nats.js 3.x keeps the block in fields of its message that are not part of its API;
 * where they are not as expected, the library's own map answers instead. Same answer either way: the first value
 * of the key `Nw-Lease` exactly, trimmed (`test/nats/lease-header.test.ts`).
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { Msg, MsgHdrs } from "@nats-io/transport-node";
import { LEASE_HEADER, LastText } from "../protocol/index.js";

const KEY = new TextEncoder().encode(LEASE_HEADER);
const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
const utf8 = new TextDecoder();

/** Where nats.js 3.x keeps a received message's bytes: headers first, `hdr` bytes long (-1 without). */
interface RawMsg {
  _rdata?: unknown;
  _msg?: { hdr?: unknown };
}

/** The value of `Nw-Lease` on `m`, or undefined when it has none. */
export function leaseHeaderOf(m: JsMsg): string | undefined {
  const v = leaseInRaw((m as unknown as { msg?: RawMsg }).msg);
  return v === null ? leaseHeaderIn(m.headers) : v;
}

/** The value of `Nw-Lease` on a message of a core subscription, or undefined when it has none. */
export function leaseHeaderOfMsg(m: Msg): string | undefined {
  const v = leaseInRaw(m as unknown as RawMsg);
  return v === null ? leaseHeaderIn(m.headers) : v;
}

/** The lease in the raw header block of `raw`; null when the block is not where nats.js 3.x keeps it. */
function leaseInRaw(raw: RawMsg | undefined): string | undefined | null {
  const bytes = raw?._rdata;
  const hdr = raw?._msg?.hdr;
  if (!(bytes instanceof Uint8Array) || typeof hdr !== "number" || hdr > bytes.length) return null;
  return hdr < 0 ? undefined : leaseInBlock(bytes, hdr);
}

/** The value of `Nw-Lease` in headers the library decoded (a stored message read by sequence), or undefined. */
export function leaseHeaderIn(h: MsgHdrs | undefined): string | undefined {
  return h?.has(LEASE_HEADER) ? h.get(LEASE_HEADER) : undefined;
}

/**
 * The first `Nw-Lease` value in a header block (`bytes[0, end)`: a status line, then `key: value` lines, each ended
 * by CRLF), as the library reads it: lines split at CRLF, the key everything before the first colon, the value
 * the rest, trimmed.
 */
export function leaseInBlock(bytes: Uint8Array, end: number): string | undefined {
  let line = lineEnd(bytes, 0, end) + 2; // the status line (`NATS/1.0`) is never a header
  while (line < end) {
    const stop = lineEnd(bytes, line, end);
    if (isKeyAt(bytes, line, stop)) return valueAt(bytes, line + KEY.length + 1, stop);
    line = stop + 2;
  }
  return undefined;
}

/** The last lease value read (a token is 22 characters): every event of an attempt carries the same one. */
const lastValue = new LastText(64, (bytes, at, len) => utf8.decode(bytes.subarray(at, at + len)).trim());

/** The value in `bytes[from, to)`, trimmed. */
function valueAt(bytes: Uint8Array, from: number, to: number): string {
  return lastValue.of(bytes, from, to - from);
}

/** Index of the CR of the first CRLF at or after `from` (`end` when none). */
function lineEnd(bytes: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 1 < end; i++) if (bytes[i] === CR && bytes[i + 1] === LF) return i;
  return end;
}

/** Whether the line `[at, stop)` starts with `Nw-Lease:`. */
function isKeyAt(bytes: Uint8Array, at: number, stop: number): boolean {
  if (at + KEY.length >= stop || bytes[at + KEY.length] !== COLON) return false;
  for (let k = 0; k < KEY.length; k++) if (bytes[at + k] !== KEY[k]) return false;
  return true;
}
