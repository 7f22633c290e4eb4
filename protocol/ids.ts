import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case: safe in subjects and URLs

/**
 * A time-ordered id (48-bit ms time + 80 random bits, base32): ids sort by creation, so a key-prefix scan
 * sorted in reverse lists newest first without a secondary index.
 */
export function newId(nowMs: number = Date.now()): string {
  let t = nowMs;
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const rnd = randomBytes(10);
  let r = "";
  for (let i = 0; i < 16; i++) {
    const bit = i * 5;
    const byte = bit >> 3;
    const off = bit & 7;
    const v = ((rnd[byte]! << 8) | (rnd[byte + 1] ?? 0)) >> (11 - off);
    r += ALPHABET[v & 31];
  }
  return time + r;
}
