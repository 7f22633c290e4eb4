import { randomFillSync } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case: safe in subjects and URLs

/**
 * Random bytes for ids, drawn from the CSPRNG 400 ids at a time: one `randomBytes(10)` per id was ~30 µs of every
 * submit here (a Buffer and a call into OpenSSL each time); the bytes are the same quality either way.
 */
const RANDOM_BYTES_PER_ID = 10;
const pool = Buffer.alloc(RANDOM_BYTES_PER_ID * 400);
let poolAt = pool.length;

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
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const at = poolAt;
  poolAt += RANDOM_BYTES_PER_ID;
  let r = "";
  for (let i = 0; i < 16; i++) {
    const bit = i * 5;
    const byte = bit >> 3;
    const off = bit & 7;
    const next = byte + 1 < RANDOM_BYTES_PER_ID ? pool[at + byte + 1]! : 0;
    const v = ((pool[at + byte]! << 8) | next) >> (11 - off);
    r += ALPHABET[v & 31];
  }
  return time + r;
}
