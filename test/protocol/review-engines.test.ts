/**
 * package.json's `engines.node` admits only Node 20 releases with the llhttp request-smuggling fixes (20.12.1:
 * CVE-2024-27982; 20.19.2: CVE-2025-23167), and the Node this suite runs on.
 */
import t from "tap";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

// tap's own dependency; it has no types here.
const semver = createRequire(import.meta.url)("semver") as {
  validRange(range: string): string | null;
  satisfies(version: string, range: string): boolean;
};

t.test("package - engines.node needs a Node 20 with the HTTP parser's smuggling fixes", async (t) => {
  const pkg = JSON.parse(readFileSync(join(process.cwd(), "package.json"), "utf8")) as { engines?: { node?: string } };
  const range = pkg.engines?.node ?? "";
  t.ok(semver.validRange(range), `"${range}" is a semver range`);
  for (const old of ["20.0.0", "20.12.0", "20.19.1"]) t.notOk(semver.satisfies(old, range), `${old} is refused`);
  for (const ok of ["20.19.2", "20.20.2", process.versions.node]) t.ok(semver.satisfies(ok, range), `${ok} is allowed`);
});
