/** The object store's digest of an object's bytes, as its entries carry it: `SHA-256=<padded base64url>`. */
import { createHash, type Hash } from "node:crypto";

/** A running digest: feed it the chunks in order, then read `text()`. */
export const objectHash = (): Hash => createHash("sha256");

/** The digest text of what `hash` (from `objectHash`) has taken. */
export function objectDigestText(hash: Hash): string {
  return `SHA-256=${hash.digest("base64").replace(/\+/g, "-").replace(/\//g, "_")}`;
}

/** The digest text of `bytes` at once. */
export const objectDigest = (bytes: Uint8Array): string => objectDigestText(objectHash().update(bytes));
