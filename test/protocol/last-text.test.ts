/**
 * The one-entry bytes-to-text cache the codec and the lease reader share: whatever the last bytes were, the text
 * given back is always the text of the bytes asked about.
 */
import t from "tap";
import { LastText } from "../../protocol/index.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

t.test("last text - every answer is the text of the bytes asked about, cached or not", async (t) => {
  let decodes = 0;
  const cache = new LastText(8, (b, at, len) => {
    decodes++;
    return dec.decode(b.subarray(at, at + len));
  });
  const id = enc.encode("xxabcdefgh");
  t.equal(cache.of(id, 2, 8), "abcdefgh");
  t.equal(cache.of(enc.encode("abcdefgh"), 0, 8), "abcdefgh", "the same bytes from another buffer");
  t.equal(decodes, 1, "the repeat is not decoded again");
  for (let i = 0; i < 8; i++) {
    const other = enc.encode("abcdefgh");
    other[i] = 0x5a;
    t.equal(cache.of(other, 0, 8), dec.decode(other), `one byte differs at ${i}`);
    t.equal(cache.of(enc.encode("abcdefgh"), 0, 8), "abcdefgh", "and back");
  }
  t.equal(cache.of(enc.encode("abcdefg"), 0, 7), "abcdefg", "a prefix of the held bytes");
  t.equal(cache.of(enc.encode("a longer value"), 0, 14), "a longer value", "longer than kept");
  t.equal(cache.of(enc.encode("abcdefg"), 0, 7), "abcdefg", "the held value outlives a longer one");
  t.equal(cache.of(new Uint8Array(0), 0, 0), "", "empty");
});
