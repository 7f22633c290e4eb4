/**
 * Command-line parsing: a boolean flag takes an explicit `true`/`false` after it (`--access-log false` used to
 * leave the access log on and drop `false` as a stray argument), flags that take a value per command (`--tls` is
 * a switch for `up`, a mode for `proxy`), and arguments a command does not take are refused, not ignored.
 */
import t from "tap";
import { createServer } from "node:http";
import { request } from "node:https";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { parseArgs } from "../../bin/settings.js";
import { check } from "../helpers/check.js";
import { api, tokensWorkflow, type Msg } from "../helpers/clients.js";
import { runNodeway } from "../helpers/procs.js";
import { startStack } from "../helpers/stack.js";

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

t.test("cli - jobs, logs, agents, cancel and run, as tables and lines, and with --json", async (t) => {
  const s = await startStack(t);
  const gw = ["--gateway", s.url];
  const dir = mkdtempSync(join(tmpdir(), "nw-cli-jobs-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const wf = join(dir, "tok-cli.json");
  writeFileSync(wf, JSON.stringify(tokensWorkflow(8, 0)));

  const ran = runNodeway(["run", wf, "--json", ...gw]);
  t.equal(await ran.exited, 0, ran.stderr());
  const lines = ran
    .stdout()
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Msg);
  const result = lines.at(-1)!;
  t.match(result, {
    type: "result",
    status: "completed",
    outputs: { text: ["tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "] },
  });
  const events = lines.slice(0, -1);
  t.ok(
    events.every((e, i) => i === 0 || e.seq! > events[i - 1]!.seq!),
    "run --json: one event a line, in seq order",
  );
  t.equal(events.filter((e) => e.type === "chunk" && e.content).length, 8, "every token's chunk");
  const jobId = String(result.job_id);

  // A workflow file saved by an editor that writes a byte order mark (Notepad, PowerShell): run as it is, and its
  // JSON posted with the mark to the HTTP API too.
  const bomFile = join(dir, "tok-bom.json");
  writeFileSync(bomFile, `\ufeff${JSON.stringify({ ...tokensWorkflow(3, 0), id: "tok-bom" })}`);
  const bomRun = runNodeway(["run", bomFile, "--json", ...gw]);
  t.equal(await bomRun.exited, 0, `run of a file with a BOM: ${bomRun.stderr()}`);
  t.match(JSON.parse(bomRun.stdout().trim().split("\n").at(-1)!), { status: "completed" });
  const bomPost = await fetch(`${s.url}/api/workflows/tok-bom/run?wait=true`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: Buffer.from(`\ufeff${JSON.stringify({ params: {} })}`),
  });
  t.match(await bomPost.json(), { status: "completed" }, "a request body with a BOM");

  const piped = runNodeway(["run", wf, ...gw]);
  t.equal(await piped.exited, 0);
  t.match(piped.stdout(), /^tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 \n\{/, "piped: the tokens, then the result");
  t.match(piped.stderr(), /\[job \w+\] completed/, "plain progress lines on a pipe");
  t.notMatch(piped.stderr(), /\x1b\[/, "and no terminal escapes");

  const jobs = runNodeway(["jobs", "--workflow", "tok-cli", ...gw]);
  t.equal(await jobs.exited, 0);
  t.match(jobs.stdout(), /^JOB\s+STATUS\s+WORKFLOW\s+ATTEMPT\s+AGENT/, "jobs: a table");
  t.match(jobs.stdout(), new RegExp(`${jobId}\\s+completed\\s+tok-cli\\s+1`));
  const jobsJson = runNodeway(["jobs", "--workflow", "tok-cli", "--limit", "1", "--json", ...gw]);
  t.equal(await jobsJson.exited, 0);
  const page = JSON.parse(jobsJson.stdout()) as { jobs: { id: string }[]; next?: string };
  t.equal(page.jobs.length, 1, "jobs --json --limit 1: one job");
  t.ok(page.next, "and the cursor of the next page");

  const logs = runNodeway(["logs", jobId, ...gw]);
  t.equal(await logs.exited, 0);
  const logLines = logs.stdout().trim().split("\n");
  t.equal(logLines.length, events.length, "logs: one line per stored event");
  t.match(logLines[0], /^\s*\d+ job_update\s+queued/, "a line: seq, type, what it says");
  const after = events[5]!.seq!;
  const tail = runNodeway(["logs", jobId, "--after", String(after), "--json", ...gw]);
  t.equal(await tail.exited, 0);
  t.same(
    tail
      .stdout()
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as Msg).seq),
    events.slice(6).map((e) => e.seq),
    "logs --after --json: exactly the events after that seq",
  );

  const agents = runNodeway(["agents", ...gw]);
  t.equal(await agents.exited, 0);
  t.match(agents.stdout(), new RegExp(`^AGENT\\s+STATE\\s+POOLS[^\\n]*\\n${s.agents[0]!.id}\\s+\\w+\\s+cpu`));
  const agentsJson = runNodeway(["agents", "--json", ...gw]);
  t.equal(await agentsJson.exited, 0);
  t.match(JSON.parse(agentsJson.stdout()), [{ id: s.agents[0]!.id, pools: ["cpu"] }]);

  const offered = (await api(s.url, "GET", "/api/nodes/metadata")).body as unknown as { node_type: string }[];
  const nodes = runNodeway(["nodes", ...gw]);
  t.equal(await nodes.exited, 0);
  t.match(nodes.stdout(), /^NODE TYPE\s+TITLE\n/, "nodes: a table of node types");
  t.match(nodes.stdout(), /\nnodetool\.text\.FormatText\s+\S/, "naming each type with its title");
  t.match(nodes.stdout(), /NAMESPACE\s+TYPES[\s\S]*\nnodetool\.text\s+\d+\n/, "and the count per namespace");
  t.match(nodes.stdout(), new RegExp(`\\n${offered.length} node types\\n$`), "the total is what the gateway lists");
  const nodesJson = runNodeway(["nodes", "--json", ...gw]);
  t.equal(await nodesJson.exited, 0);
  const listed = JSON.parse(nodesJson.stdout()) as { node_type: string }[];
  t.same(
    listed.map((n) => n.node_type),
    offered.map((n) => n.node_type),
    "nodes --json: exactly /api/nodes/metadata",
  );
});

t.test("cli - logs --follow streams a running job to its end; cancel cancels it", async (t) => {
  const s = await startStack(t);
  const gw = ["--gateway", s.url];
  await api(s.url, "PUT", "/api/workflows/tok-follow", tokensWorkflow(5_000, 50));
  const started = await api(s.url, "POST", "/api/workflows/tok-follow/run", {});
  const jobId = String(started.body.job_id);
  const follow = runNodeway(["logs", jobId, "--follow", ...gw]);
  t.teardown(() => follow.kill("SIGKILL"));
  await check(() => /chunk\s+"tok3 "/.test(follow.stdout()), 20_000, { name: "live tokens in the log" });
  const cancel = runNodeway(["cancel", jobId, "--json", ...gw]);
  t.equal(await cancel.exited, 0);
  t.match(JSON.parse(cancel.stdout()), { job_id: jobId, message: /cancellation requested|job is cancelled/ });
  t.equal(await follow.exited, 0, "logs --follow ends with the job");
  t.match(follow.stdout(), /job_update\s+cancelled[^\n]*\n$/, "its last line is the cancellation");
  const again = runNodeway(["cancel", jobId, ...gw]);
  t.equal(await again.exited, 0, "cancel is idempotent");
  t.match(again.stdout(), new RegExp(`job ${jobId}: job is cancelled`));
  const missing = runNodeway(["cancel", "01jnosuchjob00000000000000", ...gw]);
  t.equal(await missing.exited, 1);
  t.match(missing.stderr(), /GW_ERR_NOT_FOUND/);
});
