/**
 * A walk over MessagePack bytes that allocates nothing, run before the library decodes them. The library makes
 * each array as long as its header claims before reading one item: 2,000 nested headers claiming 100,000 items
 * each (10 KB) took 1.7 GB and 5 s, and a 1 MB message of them ran the process out of memory. Here every item
 * still claimed must have a byte left to start it, and containers nest at most `maxDepth` deep.
 */

/** Bytes a scalar's header is followed by (its payload and length fields), for the headers 0xc0–0xdb. */
function scalarSkip(b: Uint8Array, t: number, i: number): number {
  switch (t) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
      return 0;
    case 0xc4:
    case 0xd9:
      return 1 + (b[i] ?? 0);
    case 0xc5:
    case 0xda:
      return 2 + u16(b, i);
    case 0xc6:
    case 0xdb:
      return 4 + u32(b, i);
    case 0xc7:
      return 2 + (b[i] ?? 0);
    case 0xc8:
      return 3 + u16(b, i);
    case 0xc9:
      return 5 + u32(b, i);
    case 0xca:
    case 0xce:
    case 0xd2:
      return 4;
    case 0xcb:
    case 0xcf:
    case 0xd3:
      return 8;
    case 0xcc:
    case 0xd0:
      return 1;
    case 0xcd:
    case 0xd1:
      return 2;
    case 0xd4:
      return 2;
    case 0xd5:
      return 3;
    case 0xd6:
      return 5;
    case 0xd7:
      return 9;
    case 0xd8:
      return 17;
    default:
      return -1; // 0xc1: never used
  }
}

const u16 = (b: Uint8Array, i: number) => ((b[i] ?? 0) << 8) | (b[i + 1] ?? 0);
const u32 = (b: Uint8Array, i: number) => (b[i] ?? 0) * 0x1000000 + (u16(b, i + 1) << 8) + (b[i + 3] ?? 0);

/** The items a container header claims (a map's pairs count twice) and its header's length, or null for a scalar. */
function containerOf(b: Uint8Array, t: number, i: number): { items: number; skip: number } | null {
  if (t >= 0x80 && t <= 0x8f) return { items: (t & 0x0f) * 2, skip: 0 };
  if (t >= 0x90 && t <= 0x9f) return { items: t & 0x0f, skip: 0 };
  if (t === 0xdc) return { items: u16(b, i), skip: 2 };
  if (t === 0xdd) return { items: u32(b, i), skip: 4 };
  if (t === 0xde) return { items: u16(b, i) * 2, skip: 2 };
  if (t === 0xdf) return { items: u32(b, i) * 2, skip: 4 };
  return null;
}

/**
 * Why these bytes must not reach the decoder (containers nested past `maxDepth`, or claiming more items than
 * bytes are left to hold them), or null. Truncated or malformed bytes are left to the decoder, which refuses them.
 */
export function msgpackShapeProblem(b: Uint8Array, maxDepth: number): "depth" | "claims" | null {
  const open: number[] = []; // items each open container still expects, innermost last
  let owed = 1; // items still expected at all levels: the top value first
  let i = 0;
  while (i < b.length && owed > 0) {
    const t = b[i++]!;
    owed--;
    if (open.length > 0) open[open.length - 1]!--;
    const c = t <= 0x7f || t >= 0xe0 || (t >= 0xa0 && t <= 0xbf) ? null : containerOf(b, t, i);
    if (c) {
      i += c.skip;
      if (c.items > 0) {
        if (open.length >= maxDepth) return "depth";
        open.push(c.items);
        owed += c.items;
      }
    } else {
      const skip = t <= 0x7f || t >= 0xe0 ? 0 : t <= 0xbf ? t & 0x1f : scalarSkip(b, t, i);
      if (skip < 0) return null;
      i += skip;
    }
    if (i > b.length) return null; // a truncated scalar: the decoder says what is wrong with it
    if (owed > b.length - i) return "claims";
    while (open.length > 0 && open[open.length - 1] === 0) open.pop();
  }
  return null;
}
