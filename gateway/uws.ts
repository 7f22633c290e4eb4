/**
 * Loads uWebSockets.js and says which build it got. The npm package we use falls back to a slow pure-JS server
 * when no native binary matches this platform; the gateway refuses that unless told otherwise.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type * as UwsTypes from "uWebSockets.js";

const require = createRequire(import.meta.url);

export interface LoadedUws {
  uws: typeof UwsTypes;
  native: boolean;
  /** Human description for the start-up log. */
  build: string;
}

export function loadUws(): LoadedUws {
  const entry = require.resolve("uWebSockets.js");
  const binary = join(
    dirname(entry),
    "..",
    "binaries",
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  let native = process.env.UWS_USE_FALLBACK === undefined || !/^(1|true)$/i.test(process.env.UWS_USE_FALLBACK);
  if (native) {
    try {
      require(binary);
    } catch {
      native = false;
    }
  }
  const uws = require("uWebSockets.js") as typeof UwsTypes;
  const version = (require("uWebSockets.js/package.json") as { version: string }).version;
  const build = native
    ? `uWebSockets.js ${version} native (${process.platform}-${process.arch}, ABI ${process.versions.modules})`
    : `uWebSockets.js ${version} PURE-JS FALLBACK (no native binary for ${process.platform}-${process.arch} ABI ${process.versions.modules}; slow)`;
  return { uws, native, build };
}
