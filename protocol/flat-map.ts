/**
 * A fast path of the MessagePack decoder for the shape nearly every event has: one map of string keys to scalars
 * (a token chunk is ten of them). `decodeMsgpack` tries it first and hands anything else to `@msgpack/msgpack`.
 *
 * Why: `@msgpack/msgpack` decoded a token event at 0.63× `JSON.parse`'s speed (bench/codec.ts, 2026-12-02;
 * goal ≥ 0.8×): per message it makes a `DataView` and a state stack, and per string an array of code units. Here
 * keys come from a small cache (they repeat in every event), ASCII values are built directly, and a float64 is read
 * through one shared scratch array: 0.98–1.0× `JSON.parse` in the same process.
 *
 * It returns `undefined` for anything it does not handle — nested values, binary, extensions, 64-bit integers,
 * integer keys, forbidden keys, truncated or trailing bytes, maps over the codec's limit — and the library then
 * decodes the message or throws its error, so the results and errors of `decodeMsgpack` are the library's (tested
 * against it, `test/protocol/codec.test.ts`). Invalid UTF-8 becomes U+FFFD, as the library does for strings over
 * 200 bytes.
 */

/** Map keys this long or shorter are cached (the library's key cache uses the same bound). */
const KEY_CACHE_MAX_BYTES = 16;
/** Distinct keys kept per key length: an event family has a few dozen keys in all. */
const KEY_CACHE_PER_LENGTH = 32;
/** Strings up to this many bytes are built char by char when ASCII; longer ones go through the native decoder. */
const SHORT_ASCII_BYTES = 48;

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

function float(bytes: Uint8Array, at: number, size: 4 | 8): number {
  const scratch = size === 8 ? f64Bytes : f32Bytes;
  if (LITTLE_ENDIAN) for (let k = 0; k < size; k++) scratch[size - 1 - k] = bytes[at + k]!;
  else for (let k = 0; k < size; k++) scratch[k] = bytes[at + k]!;
  return size === 8 ? f64[0]! : f32[0]!;
}

/**
 * The object a flat map of string keys to scalars (nil, booleans, integers up to 32 bits, floats, strings)
 * decodes to, or `undefined` when `bytes` is anything else. `forbidden` keys and maps over `maxEntries` give
 * `undefined` too (the library reports them).
 */
export function decodeFlatMap(bytes: Uint8Array, forbidden: ReadonlySet<string>, maxEntries: number): Record<string, unknown> | undefined {
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
      v = text(bytes, p + 1, l);
      p += 1 + l;
    } else if (vh >= 0xe0) {
      v = vh - 0x100;
      p += 1;
    } else {
      switch (vh) {
        case 0xc0: v = null; p += 1; break;
        case 0xc2: v = false; p += 1; break;
        case 0xc3: v = true; p += 1; break;
        case 0xca: if (p + 5 > end) return undefined; v = float(bytes, p + 1, 4); p += 5; break;
        case 0xcb: if (p + 9 > end) return undefined; v = float(bytes, p + 1, 8); p += 9; break;
        case 0xcc: if (p + 2 > end) return undefined; v = bytes[p + 1]!; p += 2; break;
        case 0xcd: if (p + 3 > end) return undefined; v = (bytes[p + 1]! << 8) | bytes[p + 2]!; p += 3; break;
        case 0xce: if (p + 5 > end) return undefined; v = ((bytes[p + 1]! << 24) >>> 0) + ((bytes[p + 2]! << 16) | (bytes[p + 3]! << 8) | bytes[p + 4]!); p += 5; break;
        case 0xd0: if (p + 2 > end) return undefined; v = (bytes[p + 1]! << 24) >> 24; p += 2; break;
        case 0xd1: if (p + 3 > end) return undefined; v = (((bytes[p + 1]! << 8) | bytes[p + 2]!) << 16) >> 16; p += 3; break;
        case 0xd2: if (p + 5 > end) return undefined; v = (bytes[p + 1]! << 24) | (bytes[p + 2]! << 16) | (bytes[p + 3]! << 8) | bytes[p + 4]!; p += 5; break;
        case 0xd9: {
          if (p + 2 > end) return undefined;
          const l = bytes[p + 1]!;
          if (p + 2 + l > end) return undefined;
          v = text(bytes, p + 2, l);
          p += 2 + l;
          break;
        }
        case 0xda: {
          if (p + 3 > end) return undefined;
          const l = (bytes[p + 1]! << 8) | bytes[p + 2]!;
          if (p + 3 + l > end) return undefined;
          v = text(bytes, p + 3, l);
          p += 3 + l;
          break;
        }
        default:
          return undefined;
      }
    }
    o[k] = v;
  }
  return p === end ? o : undefined;
}
