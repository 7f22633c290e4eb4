/**
 * Fast paths of the MessagePack codec for the shape nearly every event has: one map of string keys to scalars (a
 * token chunk is ten of them). `decodeMsgpack` and `encodeMsgpack` try them first and hand anything else to
 * `@msgpack/msgpack`.
 *
 * Why: `@msgpack/msgpack` decoded a token event at 0.63× `JSON.parse`'s speed and encoded it at 0.82× of
 * `JSON.stringify` + `Buffer.from` (bench/codec.ts, 2026-12-02; goal ≥ 0.8× for both and the round trip): per
 * message it makes a `DataView` and a state stack, and per string an array of code units or a UTF-8 count. Here
 * keys come from small caches (they repeat in every event), ASCII strings are copied char by char, and floats go
 * through one shared scratch array: decode 1.07× `JSON.parse` in the same run.
 *
 * Each returns `undefined` for anything it does not handle — nested values, binary on encode, extensions (a `Date`),
 * 64-bit integers, integer keys, forbidden keys, truncated or trailing bytes, maps over the codec's limit, strings
 * with surrogates on encode (the library's two string encoders disagree on lone ones) — and the library then does
 * the work or throws its error. So the results, bytes and errors are the library's, which
 * `test/protocol/flat-map.test.ts` checks against it. Invalid UTF-8 decodes to U+FFFD, as the library does for
 * strings over 200 bytes.
 */

import { LastText } from "./last-text.js";

/** Map keys this long or shorter are cached (the library's key cache uses the same bound). */
const KEY_CACHE_MAX_BYTES = 16;
/** Distinct keys kept per key length: an event family has a few dozen keys in all. */
const KEY_CACHE_PER_LENGTH = 32;
/**
 * Strings up to this many bytes are built char by char when ASCII; longer ones go through the native decoder. Past
 * 12 characters each `+=` makes a cons string that a later lookup flattens: a 40-character job id cost 430 ns that
 * way against 110 through `TextDecoder` (Node 20); at 12 and below the loop is as fast or faster.
 */
const SHORT_ASCII_BYTES = 12;

const keyCache: { bytes: Uint8Array; text: string }[][] = Array.from({ length: KEY_CACHE_MAX_BYTES + 1 }, () => []);
const utf8 = new TextDecoder("utf-8");
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const f32 = new Float32Array(1);
const f32Bytes = new Uint8Array(f32.buffer);
/** MessagePack numbers are big-endian; the scratch arrays are in the host's order. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function text(bytes: Uint8Array, at: number, len: number): string {
  if (len <= SHORT_ASCII_BYTES) {
    let s = "";
    for (let i = at, end = at + len; i < end; i++) {
      const b = bytes[i]!;
      if (b >= 0x80) return utf8.decode(bytes.subarray(at, at + len));
      s += String.fromCharCode(b);
    }
    return s;
  }
  return utf8.decode(bytes.subarray(at, at + len));
}

function key(bytes: Uint8Array, at: number, len: number): string {
  if (len > KEY_CACHE_MAX_BYTES) return text(bytes, at, len);
  const bucket = keyCache[len]!;
  next: for (let j = 0; j < bucket.length; j++) {
    const e = bucket[j]!;
    const b = e.bytes;
    for (let k = 0; k < len; k++) if (b[k] !== bytes[at + k]) continue next;
    return e.text;
  }
  const s = text(bytes, at, len);
  if (bucket.length < KEY_CACHE_PER_LENGTH) bucket.push({ bytes: bytes.slice(at, at + len), text: s });
  return s;
}

/** The job id picked last (26-40 bytes): the same as the last event's while one job streams. */
const lastPicked = new LastText(64, text);

/**
 * A picked value is a head field: an event's type or status (a few strings, kept in the key cache) or its job id
 * (kept in a one-entry cache). Either way not built again.
 */
function picked(bytes: Uint8Array, at: number, len: number): string {
  return len <= KEY_CACHE_MAX_BYTES ? key(bytes, at, len) : lastPicked.of(bytes, at, len);
}

function float(bytes: Uint8Array, at: number, size: 4 | 8): number {
  const scratch = size === 8 ? f64Bytes : f32Bytes;
  if (LITTLE_ENDIAN) for (let k = 0; k < size; k++) scratch[size - 1 - k] = bytes[at + k]!;
  else for (let k = 0; k < size; k++) scratch[k] = bytes[at + k]!;
  return size === 8 ? f64[0]! : f32[0]!;
}

/**
 * The object a flat map of string keys to scalars (nil, booleans, integers up to 32 bits, floats, strings, binary)
 * decodes to, or `undefined` when `bytes` is anything else. `forbidden` keys, maps over `maxEntries` and binary
 * over `maxBinBytes` give `undefined` too (the library reports them). With `pick`, only those keys are in the
 * object: the other values are stepped over unread (no string built), but the whole message is still checked, so
 * a picked result means the full decode would succeed.
 */
export function decodeFlatMap(
  bytes: Uint8Array,
  forbidden: ReadonlySet<string>,
  maxEntries: number,
  maxBinBytes: number,
  pick?: ReadonlySet<string>,
): Record<string, unknown> | undefined {
  const end = bytes.length;
  const h = bytes[0]!;
  let n: number;
  let p: number;
  if (h >= 0x80 && h <= 0x8f) {
    n = h & 0x0f;
    p = 1;
  } else if (h === 0xde && end >= 3) {
    n = (bytes[1]! << 8) | bytes[2]!;
    p = 3;
  } else {
    return undefined;
  }
  if (n > maxEntries) return undefined;
  const o: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    if (p >= end) return undefined;
    const kh = bytes[p]!;
    let kl: number;
    if (kh >= 0xa0 && kh <= 0xbf) {
      kl = kh & 0x1f;
      p += 1;
    } else if (kh === 0xd9 && p + 1 < end) {
      kl = bytes[p + 1]!;
      p += 2;
    } else {
      return undefined;
    }
    if (p + kl > end) return undefined;
    const k = key(bytes, p, kl);
    if (forbidden.has(k)) return undefined;
    const want = pick === undefined || pick.has(k);
    p += kl;
    if (p >= end) return undefined;
    const vh = bytes[p]!;
    let v: unknown;
    if (vh <= 0x7f) {
      v = vh;
      p += 1;
    } else if (vh >= 0xa0 && vh <= 0xbf) {
      const l = vh & 0x1f;
      if (p + 1 + l > end) return undefined;
      v = want ? (pick === undefined ? text(bytes, p + 1, l) : picked(bytes, p + 1, l)) : undefined;
      p += 1 + l;
    } else if (vh >= 0xe0) {
      v = vh - 0x100;
      p += 1;
    } else {
      switch (vh) {
        case 0xc0:
          v = null;
          p += 1;
          break;
        case 0xc2:
          v = false;
          p += 1;
          break;
        case 0xc3:
          v = true;
          p += 1;
          break;
        case 0xca:
          if (p + 5 > end) return undefined;
          v = float(bytes, p + 1, 4);
          p += 5;
          break;
        case 0xcb:
          if (p + 9 > end) return undefined;
          v = float(bytes, p + 1, 8);
          p += 9;
          break;
        case 0xcc:
          if (p + 2 > end) return undefined;
          v = bytes[p + 1]!;
          p += 2;
          break;
        case 0xcd:
          if (p + 3 > end) return undefined;
          v = (bytes[p + 1]! << 8) | bytes[p + 2]!;
          p += 3;
          break;
        case 0xce:
          if (p + 5 > end) return undefined;
          v = ((bytes[p + 1]! << 24) >>> 0) + ((bytes[p + 2]! << 16) | (bytes[p + 3]! << 8) | bytes[p + 4]!);
          p += 5;
          break;
        case 0xd0:
          if (p + 2 > end) return undefined;
          v = (bytes[p + 1]! << 24) >> 24;
          p += 2;
          break;
        case 0xd1:
          if (p + 3 > end) return undefined;
          v = (((bytes[p + 1]! << 8) | bytes[p + 2]!) << 16) >> 16;
          p += 3;
          break;
        case 0xd2:
          if (p + 5 > end) return undefined;
          v = (bytes[p + 1]! << 24) | (bytes[p + 2]! << 16) | (bytes[p + 3]! << 8) | bytes[p + 4]!;
          p += 5;
          break;
        case 0xd9: {
          if (p + 2 > end) return undefined;
          const l = bytes[p + 1]!;
          if (p + 2 + l > end) return undefined;
          v = want ? (pick === undefined ? text(bytes, p + 2, l) : picked(bytes, p + 2, l)) : undefined;
          p += 2 + l;
          break;
        }
        case 0xc4:
        case 0xc5:
        case 0xc6: {
          // Binary (an output's bytes): a view into `bytes`, as the library gives.
          const w = vh === 0xc4 ? 1 : vh === 0xc5 ? 2 : 4;
          if (p + 1 + w > end) return undefined;
          let l = 0;
          for (let k = 1; k <= w; k++) l = l * 256 + bytes[p + k]!;
          if (l > maxBinBytes || p + 1 + w + l > end) return undefined;
          v = want ? bytes.subarray(p + 1 + w, p + 1 + w + l) : undefined;
          p += 1 + w + l;
          break;
        }
        case 0xda: {
          if (p + 3 > end) return undefined;
          const l = (bytes[p + 1]! << 8) | bytes[p + 2]!;
          if (p + 3 + l > end) return undefined;
          v = want ? text(bytes, p + 3, l) : undefined;
          p += 3 + l;
          break;
        }
        default:
          return undefined;
      }
    }
    if (want) o[k] = v;
  }
  return p === end ? o : undefined;
}

// ---- encoding -------------------------------------------------------------------------------------------------

/** How many bytes MessagePack takes for a non-negative safe integer: the smallest unsigned form that holds it. */
export function uintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : v < 0x1_0000_0000 ? 5 : 9;
}

/** Writes a non-negative safe integer at `p` as the library does (`uintSize` bytes); returns the position after it. */
export function writeUint(out: Buffer, p: number, v: number): number {
  if (v < 0x80) {
    out[p] = v;
    return p + 1;
  }
  if (v < 0x100) {
    out[p] = 0xcc;
    out[p + 1] = v;
    return p + 2;
  }
  if (v < 0x10000) {
    out[p] = 0xcd;
    out.writeUInt16BE(v, p + 1);
    return p + 3;
  }
  if (v < 0x1_0000_0000) {
    out[p] = 0xce;
    out.writeUInt32BE(v, p + 1);
    return p + 5;
  }
  out[p] = 0xcf;
  out.writeUInt32BE(Math.floor(v / 0x1_0000_0000), p + 1);
  out.writeUInt32BE(v >>> 0, p + 5);
  return p + 9;
}

/** Encoded keys (header and bytes), by key: the same few dozen keys go into every event. */
const encodedKeys = new Map<string, Uint8Array>();
const ENCODED_KEYS_MAX = 512;
/** Where a message is built before it is copied out; larger messages are left to the library. */
const scratch = Buffer.allocUnsafe(64 * 1024);
const LONE_SURROGATE = /[\ud800-\udfff]/;

/** Byte length of `s` in UTF-8, or -1 when it holds a surrogate (the library's two encoders differ on lone ones). */
function utf8Length(s: string): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    if (s.charCodeAt(i) >= 0x80) return LONE_SURROGATE.test(s) ? -1 : Buffer.byteLength(s, "utf8");
  }
  return n;
}

/** Writes `s` (its UTF-8 length `len`) with its header at `p`; returns the position after it, or -1 if it does not fit. */
function writeString(s: string, len: number, p: number): number {
  const room = scratch.length;
  if (len < 32) {
    if (p + 1 + len > room) return -1;
    scratch[p++] = 0xa0 | len;
  } else if (len < 0x100) {
    if (p + 2 + len > room) return -1;
    scratch[p++] = 0xd9;
    scratch[p++] = len;
  } else if (len < 0x10000) {
    if (p + 3 + len > room) return -1;
    scratch[p++] = 0xda;
    scratch[p++] = len >>> 8;
    scratch[p++] = len & 0xff;
  } else {
    return -1;
  }
  if (len === s.length) {
    for (let i = 0; i < len; i++) scratch[p + i] = s.charCodeAt(i);
  } else {
    scratch.write(s, p, len, "utf8");
  }
  return p + len;
}

function encodedKey(k: string): Uint8Array | null {
  let e = encodedKeys.get(k);
  if (e !== undefined) return e;
  const len = utf8Length(k);
  if (len < 0 || len >= 0x10000) return null;
  // Not built in `scratch`: a key first seen mid-message would overwrite the message.
  const head = len < 32 ? [0xa0 | len] : len < 0x100 ? [0xd9, len] : [0xda, len >>> 8, len & 0xff];
  e = Buffer.concat([Uint8Array.from(head), Buffer.from(k, "utf8")]);
  if (encodedKeys.size < ENCODED_KEYS_MAX) encodedKeys.set(k, e);
  return e;
}

/**
 * The bytes `new Encoder({ ignoreUndefined: true }).encode(value)` gives, for a plain object whose values are all
 * strings, numbers (not integers beyond 32 bits), booleans, null or undefined (left out); `undefined` for anything
 * else, which the library then encodes. The bytes are a fresh Buffer.
 */
export function encodeFlatMap(value: unknown): Uint8Array | undefined {
  if (value === null || typeof value !== "object") return undefined;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return undefined;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o);
  let count = 0;
  for (let i = 0; i < keys.length; i++) {
    const v = o[keys[i]!];
    if (v === undefined) continue;
    // Binary and nested values go to the library before anything is written (an output with 4 KB of bytes paid
    // ~600 ns for a half-written map otherwise).
    if (v !== null && typeof v === "object") return undefined;
    count++;
  }
  if (count > 0xffff) return undefined;
  let p: number;
  if (count < 16) {
    scratch[0] = 0x80 | count;
    p = 1;
  } else {
    scratch[0] = 0xde;
    scratch[1] = count >>> 8;
    scratch[2] = count & 0xff;
    p = 3;
  }
  const room = scratch.length;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = o[k];
    if (v === undefined) continue;
    const ek = encodedKey(k);
    if (ek === null || p + ek.length + 9 > room) return undefined;
    scratch.set(ek, p);
    p += ek.length;
    if (typeof v === "string") {
      const len = utf8Length(v);
      if (len < 0) return undefined;
      p = writeString(v, len, p);
      if (p < 0) return undefined;
    } else if (typeof v === "number") {
      if (Number.isSafeInteger(v)) {
        if (v >= 0) {
          if (v >= 0x1_0000_0000) return undefined;
          p = writeUint(scratch, p, v);
        } else {
          if (v >= -0x20) scratch[p++] = 0xe0 | (v + 0x20);
          else if (v >= -0x80) {
            scratch[p++] = 0xd0;
            scratch[p++] = v & 0xff;
          } else if (v >= -0x8000) {
            scratch[p++] = 0xd1;
            scratch.writeInt16BE(v, p);
            p += 2;
          } else if (v >= -0x80000000) {
            scratch[p++] = 0xd2;
            scratch.writeInt32BE(v, p);
            p += 4;
          } else return undefined;
        }
      } else {
        scratch[p++] = 0xcb;
        f64[0] = v;
        if (LITTLE_ENDIAN) for (let b = 0; b < 8; b++) scratch[p + b] = f64Bytes[7 - b]!;
        else for (let b = 0; b < 8; b++) scratch[p + b] = f64Bytes[b]!;
        p += 8;
      }
    } else if (typeof v === "boolean") {
      scratch[p++] = v ? 0xc3 : 0xc2;
    } else if (v === null) {
      scratch[p++] = 0xc0;
    } else {
      return undefined;
    }
  }
  const out = Buffer.allocUnsafe(p);
  scratch.copy(out, 0, 0, p);
  return out;
}
