/**
 * A one-entry cache from bytes to their text, for a value that repeats from one event to the next (a job id while
 * one job streams, an attempt's lease token): the last bytes read are kept with their text, given again without a
 * decode when the next are the same. Every byte is compared whatever differs, so a secret held here (a token)
 * takes as long to miss as to match.
 */
export class LastText {
  private readonly held: Uint8Array;
  private len = -1;
  private text = "";

  /** Values up to `maxBytes` are kept; `decode` builds the text of bytes not the last ones. */
  constructor(
    maxBytes: number,
    private readonly decode: (bytes: Uint8Array, at: number, len: number) => string,
  ) {
    this.held = new Uint8Array(maxBytes);
  }

  /** The text of `bytes[at, at + len)`. */
  of(bytes: Uint8Array, at: number, len: number): string {
    if (len === this.len) {
      const held = this.held;
      let diff = 0;
      for (let k = 0; k < len; k++) diff |= held[k]! ^ bytes[at + k]!;
      if (diff === 0) return this.text;
    }
    const text = this.decode(bytes, at, len);
    if (len <= this.held.length) {
      this.held.set(bytes.subarray(at, at + len));
      this.len = len;
      this.text = text;
    }
    return text;
  }
}
