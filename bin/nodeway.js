#!/usr/bin/env -S node --no-memory-reducer --max-semi-space-size=4
// Thin entry: the compiled CLI lives in dist/ (`npm run build`).
import("../dist/bin/main.js").catch((err) => {
  process.stderr.write(`nodeway: cannot load dist/bin/main.js (${err.message}); run \`npm run build\` first\n`);
  process.exit(1);
});
