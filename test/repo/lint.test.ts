/**
 * Formatting and lint rules hold for every source, test and benchmark file (biome.json): a change that breaks
 * them fails the test command, not only a reviewer's eye.
 */
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import t from "tap";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const biome = join(root, "node_modules", "@biomejs", "biome", "bin", "biome");

t.test("lint - biome check (format and lint) finds no error", async (t) => {
  const r = await promisify(execFile)(process.execPath, [biome, "check", "--reporter=summary", "."], {
    cwd: root,
    maxBuffer: 16 << 20,
  }).then(
    () => ({ code: 0, out: "" }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({
      code: err.code ?? 1,
      out: `${err.stdout ?? ""}${err.stderr ?? ""}`,
    }),
  );
  t.equal(r.code, 0, r.out.split("\n").slice(0, 40).join("\n"));
});
