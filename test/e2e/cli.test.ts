/**
 * Command-line parsing: a boolean flag takes an explicit `true`/`false` after it (`--access-log false` used to
 * leave the access log on and drop `false` as a stray argument), flags that take a value per command (`--tls` is
 * a switch for `up`, a mode for `proxy`), and arguments a command does not take are refused, not ignored.
 */
import t from "tap";
import { createServer } from "node:http";
import { request } from "node:https";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { parseArgs } from "../../bin/settings.js";
import { check } from "../helpers/check.js";
import { runNodeway } from "../helpers/procs.js";

t.test("cli - parseArgs: boolean flags take an explicit true/false, other flags take the next argument", async (t) => {
  const spec = { switches: new Set(["access-log", "quiet"]), values: new Set(["tls", "port"]), positionals: true };
  t.same(
    parseArgs(["--access-log", "false"], spec),
    { positional: [], flags: new Map([["access-log", ["false"]]]) },
    "--access-log false",
  );
  t.same(parseArgs(["--access-log=false"], spec).flags.get("access-log"), ["false"], "--access-log=false");
  t.same(
    parseArgs(["--access-log", "--quiet"], spec).flags,
    new Map([
      ["access-log", ["true"]],
      ["quiet", ["true"]],
    ]),
    "bare switches are on",
  );
  t.same(
    parseArgs(["--quiet", "file.json"], spec),
    { positional: ["file.json"], flags: new Map([["quiet", ["true"]]]) },
    "a switch does not swallow a positional argument",
  );
  t.same(
    parseArgs(["--tls", "self-signed"], spec).flags.get("tls"),
    ["self-signed"],
    "a flag that is not a switch takes its value",
  );
  t.throws(() => parseArgs(["--port"], spec), /--port needs a value/);
  t.throws(
    () => parseArgs(["--prot", "1"], spec),
    /unknown flag --prot/,
    "a flag the command does not take is refused",
  );
  t.throws(() => parseArgs(["x"], { ...spec, positionals: false }), /unexpected argument "x"/);
  t.same(parseArgs(["--port", "1", "--port=2"], spec).flags.get("port"), ["1", "2"], "repeated flags collect");
});

t.test("cli - an argument the command does not take is refused", async (t) => {
  const p = runNodeway(["gateway", "--port", "0", "stray"]);
  t.equal(await p.exited, 2);
  t.match(p.stderr(), /unexpected argument "stray"/);
});

t.test("cli - `nodeway proxy --access-log false` logs no requests; the default logs each one", async (t) => {
  const upstream = createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  t.teardown(() => upstream.close());
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;

  const run = async (extra: string[]) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-cli-proxy-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const p = runNodeway(
      [
        "proxy",
        "--tls",
        "self-signed",
        "--upstream",
        upstreamUrl,
        "--host",
        "127.0.0.1",
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--cert-dir",
        join(dir, "certs"),
        ...extra,
      ],
      { NODEWAY_HOME: dir },
    );
    t.teardown(() => p.kill("SIGKILL"));
    const port = Number(
      await check(() => /proxy listening on https port (\d+)/.exec(p.stdout() + p.stderr())?.[1], 30_000, {
        name: "proxy listening",
      }),
    );
    const status = await new Promise<number>((resolve, reject) => {
      const r = request({ host: "127.0.0.1", port, path: "/hello", rejectUnauthorized: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      r.on("error", reject);
      r.end();
    });
    t.equal(status, 200, "the request went through");
    return p;
  };

  // Everything a proxy logged is in once it has exited on SIGTERM and its stdout has closed: the same end for both
  // runs, so the one that logs shows the line would have been seen.
  const allOutput = async (p: ReturnType<typeof runNodeway>) => {
    const closed = new Promise((r) => p.proc.stdout!.once("close", r));
    await p.kill("SIGTERM");
    await closed;
    return p.stdout();
  };
  const on = await run([]);
  t.match(await allOutput(on), /"GET \/hello" 200/, "with the default, the request is in the access log");
  const off = await run(["--access-log", "false"]);
  t.notMatch(await allOutput(off), /"GET \/hello"/, "with --access-log false, nothing is logged");
});
