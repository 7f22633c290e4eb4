/** The web console's build: `vite build console` writes hashed assets to dist/console/, served by the gateway at `/`. */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import react from "@vitejs/plugin-react";
import { defineConfig, type Plugin } from "vite";

const OUT_DIR = join(import.meta.dirname, "../dist/console");

/** Writes `<file>.gz` and `<file>.br` beside each text file, so the gateway serves them without compressing. */
function precompress(): Plugin {
  return {
    name: "nodeway-precompress",
    apply: "build",
    closeBundle() {
      for (const entry of readdirSync(OUT_DIR, { recursive: true, withFileTypes: true })) {
        if (!entry.isFile() || !/\.(js|css|html|svg|json)$/.test(entry.name)) continue;
        const path = join(entry.parentPath, entry.name);
        const body = readFileSync(path);
        writeFileSync(`${path}.gz`, gzipSync(body, { level: 9 }));
        writeFileSync(`${path}.br`, brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
      }
    },
  };
}

export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  plugins: [react(), precompress()],
  build: {
    outDir: OUT_DIR,
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    // No inline scripts or data: fonts: the gateway's CSP allows only same-origin scripts.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
});
