/**
 * The code the build does not compile still has to: tests and benchmarks are run through a transpile-only loader,
 * so a type error (or a syntax error in a benchmark no quick run starts) would otherwise surface only when someone
 * runs that file.
 */
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import t from "tap";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

for (const project of ["test/tsconfig.json", "bench/tsconfig.json"]) {
  t.test(`typecheck - ${project} compiles under strict with no errors`, async (t) => {
    const r = await promisify(execFile)(process.execPath, [tsc, "-p", join(root, project), "--noEmit"], {
      cwd: root,
      maxBuffer: 16 << 20,
    }).then(
      () => ({ code: 0, out: "" }),
      (err: { code?: number; stdout?: string }) => ({ code: err.code ?? 1, out: err.stdout ?? "" }),
    );
    t.equal(r.code, 0, r.out.split("\n").slice(0, 20).join("\n"));
  });
}
