/** Our TLS proxy (the compiled `nodeway proxy`, self-signed) as a benchmark process, when it is there and works. */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startNodeway, type Spawned } from "./procs.js";

/** Why the proxy variant cannot run, or null when `proxy/index.ts` exports what we need. */
export async function proxyUnavailable(): Promise<string | null> {
  const file = join(ROOT, "dist", "proxy", "index.js");
  if (!existsSync(file)) return "dist/proxy/index.js is missing (proxy not built)";
  try {
    const m = (await import(file)) as Record<string, unknown>;
    if (typeof m.startProxy !== "function" || typeof m.compileProxyConfig !== "function")
      return "proxy/index.ts does not export startProxy and compileProxyConfig";
  } catch (err) {
    return `proxy/index.ts does not load: ${(err as Error).message}`;
  }
  return null;
}

export interface OurProxy extends Spawned {
  httpsPort: number;
  dir: string;
}

export async function startOurProxy(
  upstream: string,
  opts: { cpu?: string; nodeArgs?: string[] } = {},
): Promise<OurProxy> {
  const dir = mkdtempSync(join(tmpdir(), "nw-bench-proxy-"));
  const p = startNodeway(
    "proxy",
    [
      "proxy",
      "--tls=self-signed",
      "--upstream",
      upstream,
      "--host",
      "127.0.0.1",
      "--https-port",
      "0",
      "--http-port",
      "0",
      "--cert-dir",
      join(dir, "certs"),
      "--access-log",
      "false",
      "--health-interval-ms",
      "60000",
    ],
    { ...opts, env: { NODEWAY_HOME: dir } },
  );
  p.exited.then(
    () => rmSync(dir, { recursive: true, force: true }),
    () => undefined,
  );
  const m = await p.waitFor(/proxy listening on https port (\d+)/, 60_000);
  return Object.assign(p, { httpsPort: Number(m[1]), dir });
}
