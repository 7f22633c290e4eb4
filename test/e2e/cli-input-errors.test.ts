/**
 * What the CLI says about bad input, through the compiled `nodeway`: a workflow file or config file that is not
 * what it must be stops the command at start, naming the file and what is wrong; a URL's password is never printed.
 */
import t from "tap";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exitWithin, runNodeway } from "../helpers/procs.js";

const dir = mkdtempSync(join(tmpdir(), "nw-cli-input-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

t.test("cli - nodeway run refuses a file that holds no workflow, naming the file and why", async (t) => {
  for (const [name, text, why] of [
    ["null.json", "null", /null\.json: a workflow is a JSON object, got null/],
    ["list.json", "[]", /list\.json: a workflow is a JSON object, got a list/],
    ["string.json", '"wf"', /string\.json: a workflow is a JSON object, got a string/],
    ["nodes5.json", '{"nodes": 5}', /nodes5\.json: no workflow in it: give \{"graph"/],
    ["cut.json", '{"graph":', /cut\.json: not valid JSON \(/],
  ] as const) {
    // No gateway listens there: the file is refused before any connection is tried.
    const p = runNodeway(["run", file(name, text), "--gateway", "http://127.0.0.1:9"]);
    t.equal(await exitWithin(p), 2, `${name}: exits 2`);
    t.match(p.stderr(), why, `${name}: says why`);
    t.notMatch(p.stderr(), /Cannot read properties|reading '/, `${name}: no JavaScript error`);
  }
});

t.test("cli - a config file that is not an object of sections stops a command at start, naming it", async (t) => {
  for (const [name, text, why] of [
    ["cfg-null.json", "null", /must hold a JSON object of sections \(gateway, agent, proxy\), got null/],
    ["cfg-list.json", "[1,2]", /must hold a JSON object of sections \(gateway, agent, proxy\), got a list/],
    ["cfg-string.json", '"str"', /must hold a JSON object of sections \(gateway, agent, proxy\), got a string/],
    ["cfg-proxy-list.json", '{"proxy":[]}', /"proxy" must be an object of settings, got a list/],
    ["cfg-cut.json", '{"gateway":', /not valid JSON \(/],
  ] as const) {
    const path = file(name, text);
    // The gateway would start and wait for this NATS; a refused config file ends it first.
    const p = runNodeway(["gateway", "--port", "0", "--nats", "nats://127.0.0.1:9"], { NODEWAY_CONFIG: path });
    t.equal(await exitWithin(p), 1, `${name}: exits 1 at start`);
    t.match(p.stderr(), `nodeway: config file ${path}: `, `${name}: names the file`);
    t.match(p.stderr(), why, `${name}: says what is wrong`);
  }
});

t.test("cli - a password in a gateway or NATS URL is never printed", async (t) => {
  const flagged = runNodeway(["jobs", "--gateway", "http://admin:s3cret@127.0.0.1:1"]);
  t.equal(await exitWithin(flagged), 2, "a gateway URL with a password is refused at start");
  t.match(
    flagged.stderr(),
    /--gateway http:\/\/admin:\*\*\*@127\.0\.0\.1:1: a user or password in the URL is never sent/,
  );
  const fromEnv = runNodeway(["agents"], { NODEWAY_GATEWAY_URL: "http://admin:s3cret@127.0.0.1:1" });
  t.equal(await exitWithin(fromEnv), 2);
  t.match(fromEnv.stderr(), /NODEWAY_GATEWAY_URL http:\/\/admin:\*\*\*@127\.0\.0\.1:1/);
  const run = runNodeway(["run", file("ok.json", '{"nodes":[],"edges":[]}'), "--gateway", "http://u:s3cret@h:1"]);
  t.equal(await exitWithin(run), 2);
  const nats = runNodeway(["gateway", "--port", "0", "--nats", "bob:s3cret@127.0.0.1:9"]);
  t.equal(await exitWithin(nats), 1, "a NATS URL that is no URL is refused");
  t.match(nats.stderr(), /bob:\*\*\*@127\.0\.0\.1:9/, "and shown without its password");
  const upstream = runNodeway(
    ["proxy", "--tls", "self-signed", "--upstream", "http://a:s3cret@127.0.0.1:9", "--cert-dir", join(dir, "c")],
    { NODEWAY_HOME: dir },
  );
  t.equal(await exitWithin(upstream), 1);
  t.match(upstream.stderr(), /upstream: http:\/\/a:\*\*\*@127\.0\.0\.1:9: credentials in the URL are not allowed/);
  for (const p of [flagged, fromEnv, run, nats, upstream]) t.notMatch(p.stderr(), /s3cret/, "no password printed");
});
