/**
 * `nodeway up --tls`'s front is DEV_TLS_OPTIONS under the user's proxy settings: no HSTS by default (a year of it
 * for `localhost` forced HTTPS on every local port), the config file's `proxy` section applied, and a setting that
 * the dev front cannot use refused before anything starts, naming where it came from.
 */
import t, { type Test } from "tap";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check } from "../helpers/check.js";
import { runNodeway, type Proc } from "../helpers/procs.js";

const UP = ["up", "--port", "0", "--no-examples", "--tls", "--https-port", "0", "--http-port", "0"];

/** A fresh Nodeway home with `config` as its config file (none when undefined). */
function home(t: Test, config?: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), "nw-up-tls-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  if (config !== undefined) writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

/** Starts `up --tls` and resolves with its HTTPS front once it says it is up. */
async function upFront(t: Test, dir: string): Promise<{ up: Proc; front: string }> {
  const up = runNodeway(UP, { NODEWAY_HOME: dir });
  t.teardown(() => up.kill("SIGKILL"));
  const front = await check(
    () =>
      /nodeway is up: (https:\S+)/.exec(up.stdout())?.[1] ??
      (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
    60_000,
    { name: "up --tls" },
  );
  return { up, front };
}

/** One request over a real TLS connection (the front's certificate is self-signed). */
function https(
  url: string,
  opts: { method?: string; body?: Buffer } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? "GET", rejectUnauthorized: false }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** How `up` ended: its exit code, or "started" (then it is stopped) if it came up instead of refusing to. */
async function ending(up: Proc): Promise<number | string> {
  const how = await check(
    () => (up.proc.exitCode !== null ? up.proc.exitCode : /nodeway is up/.test(up.stdout()) ? "started" : null),
    60_000,
    { name: "up ended or started" },
  );
  if (how === "started") await up.kill("SIGKILL");
  return how;
}

t.test("cli up --tls - the dev front sends no Strict-Transport-Security for localhost", async (t) => {
  const { up, front } = await upFront(t, home(t));
  t.match(front, /^https:\/\/localhost:\d+$/);
  const res = await https(`${front}/health`);
  t.equal(res.status, 200, "the gateway answers through the front");
  t.equal(res.headers["strict-transport-security"], undefined, "no HSTS");
  up.proc.kill("SIGINT");
  t.equal(await up.exited, 0, "stops cleanly");
});

t.test("cli up --tls - the config file's proxy section applies to the dev front", async (t) => {
  const { up, front } = await upFront(t, home(t, { proxy: { hstsMaxAgeSeconds: 120, maxBodyBytes: 4096 } }));
  const health = await https(`${front}/health`);
  t.equal(health.headers["strict-transport-security"], "max-age=120", "hstsMaxAgeSeconds");
  const big = await https(`${front}/api/assets?name=x`, { method: "POST", body: Buffer.alloc(8192) });
  t.equal(big.status, 413, "maxBodyBytes: the front refuses a larger body");
  t.match(big.body, /PROXY_ERR_BODY_TOO_LARGE/, "the front, not the gateway");
  up.proc.kill("SIGINT");
  t.equal(await up.exited, 0, "stops cleanly");
});

t.test("cli up --tls - a proxy setting the dev front cannot use is refused at start, naming its source", async (t) => {
  const cases: { name: string; config?: unknown; env?: NodeJS.ProcessEnv; args?: string[]; said: RegExp }[] = [
    {
      name: "an upstream (the front's is this gateway)",
      config: { proxy: { upstream: ["http://127.0.0.1:9"] } },
      said: /"proxy\.upstream" in config file \S+config\.json: not for nodeway up --tls/,
    },
    {
      name: "an ACME setting",
      env: { NODEWAY_EMAIL: "ops@example.com" },
      said: /NODEWAY_EMAIL: not for nodeway up --tls/,
    },
    {
      name: "ACME certificates",
      config: { proxy: { tls: "acme" } },
      said: /"proxy\.tls" in config file \S+: nodeway up --tls serves a self-signed certificate/,
    },
    {
      name: "a bad value",
      config: { proxy: { hstsMaxAgeSeconds: -1 } },
      said: /"proxy\.hstsMaxAgeSeconds" in config file \S+: hstsMaxAgeSeconds: must be >= 0, got -1/,
    },
    { name: "a bad port flag", args: ["--https-port", "x"], said: /--https-port: httpsPort: must be a number/ },
  ];
  for (const c of cases) {
    const dir = home(t, c.config);
    const up = runNodeway([...UP, ...(c.args ?? [])], { NODEWAY_HOME: dir, ...c.env });
    t.teardown(() => up.kill("SIGKILL"));
    t.equal(await ending(up), 1, `${c.name}: exits 1`);
    t.match(up.stderr(), c.said, `${c.name}: says which setting and where it came from`);
    t.notOk(existsSync(join(dir, "nats")), `${c.name}: refused before nats-server started`);
  }
});
