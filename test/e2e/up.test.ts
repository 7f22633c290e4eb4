import t from "tap";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check } from "../helpers/check.js";
import { ROOT, runNodeway } from "../helpers/procs.js";
import { NatsServer } from "../helpers/nats-server.js";

function processesUnder(home: string): string[] {
  try {
    return execFileSync("pgrep", ["-af", home])
      .toString()
      .split("\n")
      .filter((l) => l.trim() && !l.includes("pgrep"));
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

t.test(
  "up - starts nats-server, gateway and agent, runs the examples through nodeway run, and stops cleanly",
  async (t) => {
    const home = mkdtempSync(join(tmpdir(), "nw-home-"));
    t.teardown(() => rmSync(home, { recursive: true, force: true }));
    const up = runNodeway(["up", "--port", "0", "--test-nodes"], { NODEWAY_HOME: home });
    t.teardown(() => up.kill("SIGKILL"));
    const url = await check(
      () =>
        /nodeway is up: (\S+)/.exec(up.stdout())?.[1] ??
        (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
      30_000,
      { name: "up" },
    );
    const health = await fetch(`${url}/health`).then((r) => r.json() as Promise<Record<string, unknown>>);
    t.match(health, { status: "ok", agents: 1 }, "/health is ok with one agent");
    const wfs = await fetch(`${url}/api/workflows`).then((r) => r.json() as Promise<{ workflows: { id: string }[] }>);
    t.ok(
      wfs.workflows.some((w) => w.id === "hello-world"),
      "the sample workflows are loaded",
    );

    const hello = runNodeway([
      "run",
      join(ROOT, "examples", "hello-world.json"),
      "--param",
      "name=Tester",
      "--gateway",
      url,
    ]);
    t.equal(await hello.exited, 0, "hello-world exits 0");
    t.match(hello.stdout(), /"greeting": \[\s*"Hello, Tester!"/, "prints the outputs");
    t.match(hello.stderr(), /completed/, "shows progress");

    const stream = runNodeway([
      "run",
      join(ROOT, "examples", "streaming-tokens.json"),
      "--param",
      "count=5",
      "--gateway",
      url,
    ]);
    t.equal(await stream.exited, 0, "streaming example exits 0");
    t.match(stream.stdout(), /^tok0 tok1 tok2 tok3 tok4 /, "tokens are printed as they come");
    t.match(stream.stdout(), /TOK0 TOK1 TOK2 TOK3 TOK4/, "and the output at the end");

    const failing = join(home, "failing.json");
    writeFileSync(
      failing,
      JSON.stringify({ nodes: [{ id: "f", type: "nodeway.test.Fail", data: { message: "nope" } }], edges: [] }),
    );
    const bad = runNodeway(["run", failing, "--gateway", url]);
    t.equal(await bad.exited, 1, "a failed run exits non-zero");
    t.match(bad.stdout(), /"status": "failed"/);

    const badParam = runNodeway([
      "run",
      join(ROOT, "examples", "hello-world.json"),
      "--param",
      "nope=1",
      "--gateway",
      url,
    ]);
    t.equal(await badParam.exited, 1, "a rejected run exits non-zero");
    t.match(badParam.stderr(), /unknown param "nope"/, "and says why");

    t.ok(processesUnder(home).length >= 1, "nats-server runs with its store in the data dir");
    up.proc.kill("SIGINT");
    t.equal(await up.exited, 0, "Ctrl-C exits 0");
    await check(() => processesUnder(home).length === 0, 10_000, { name: "no stray processes" });
    t.pass("no stray processes");
  },
);

t.test(
  "up - the agent runs in a child process: SIGKILL to it leaves the gateway answering, and it comes back",
  async (t) => {
    const home = mkdtempSync(join(tmpdir(), "nw-home-"));
    t.teardown(() => rmSync(home, { recursive: true, force: true }));
    const up = runNodeway(["up", "--port", "0", "--max-jobs", "3"], { NODEWAY_HOME: home });
    t.teardown(() => up.kill("SIGKILL"));
    const url = await check(
      () =>
        /nodeway is up: (\S+)/.exec(up.stdout())?.[1] ??
        (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
      30_000,
      { name: "up" },
    );
    const first = /agent (\S+) running in pid (\d+)/.exec(up.stderr());
    t.ok(first, "up names the agent's pid");
    const [, firstId, pidText] = first!;
    const pid = Number(pidText);
    t.not(pid, up.proc.pid, "the agent runs in a process other than the gateway's");
    t.match(up.stdout(), new RegExp(`agent ${firstId}\\)`), "the up line names the agent");
    const agents = async () =>
      (
        (await fetch(`${url}/api/agents`).then((r) => r.json())) as {
          agents: { id: string; capabilities: { max_jobs: number } }[];
        }
      ).agents;
    const listed = await check(async () => (await agents()).find((a) => a.id === firstId), 10_000, {
      name: "agent listed",
    });
    t.equal(listed.capabilities.max_jobs, 3, "an agent flag given to up reaches the agent child");

    process.kill(pid, "SIGKILL");
    const again = await check(
      () => {
        const ids = [...up.stderr().matchAll(/agent (\S+) running in pid (\d+)/g)];
        return ids.length >= 2 ? ids.at(-1)! : null;
      },
      20_000,
      { name: "agent restarted" },
    );
    t.match(
      up.stderr(),
      /the agent \(pid \d+\) exited \(signal SIGKILL\); restarting it/,
      "up says the agent died and is restarted",
    );
    t.not(again[2], String(pid), "a new agent process");
    t.equal(up.proc.exitCode, null, "up (the gateway) still runs");
    const health = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
    t.equal(health.status, 200, "/health answers");
    await check(async () => (await agents()).some((a) => a.id === again[1]), 10_000, { name: "new agent listed" });
    const run = await fetch(`${url}/api/workflows/hello-world/run?wait=true`, {
      method: "POST",
      body: JSON.stringify({ params: { name: "Back" } }),
      headers: { "content-type": "application/json" },
    });
    t.match(
      await run.json(),
      { status: "completed", outputs: { greeting: ["Hello, Back!"] } },
      "the restarted agent runs a job",
    );

    up.proc.kill("SIGINT");
    t.equal(await up.exited, 0, "Ctrl-C exits 0");
    t.throws(() => process.kill(Number(again[2]), 0), "the agent child is gone with up");
  },
);

t.test("up - a nats-server left running by a killed up is stopped by the next up on the same home", async (t) => {
  const home = mkdtempSync(join(tmpdir(), "nw-home-"));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const upOnce = async () => {
    const up = runNodeway(["up", "--port", "0", "--no-examples"], { NODEWAY_HOME: home });
    t.teardown(() => up.kill("SIGTERM"));
    await check(
      () =>
        /nodeway is up/.test(up.stdout()) ||
        (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
      30_000,
      { name: "up" },
    );
    return up;
  };
  const first = await upOnce();
  const pid = Number(readFileSync(join(home, "nats-server.pid"), "utf8"));
  await first.kill("SIGKILL");
  const alive = (p: number) => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  };
  t.ok(alive(pid), "SIGKILL of up leaves its nats-server running (what the next up must deal with)");
  const second = await upOnce();
  t.notOk(alive(pid), "the next up stopped the stale nats-server");
  t.match(second.stderr() + second.stdout(), new RegExp(`stopping nats-server ${pid}`), "and said so");
  second.proc.kill("SIGINT");
  t.equal(await second.exited, 0, "the second up stops cleanly");
  t.same(processesUnder(home), [], "nothing is left running on the home");
});

t.test("up - a second up on a home whose up still runs refuses, and leaves the first one's NATS alone", async (t) => {
  const home = mkdtempSync(join(tmpdir(), "nw-home-"));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const first = runNodeway(["up", "--port", "0", "--no-examples"], { NODEWAY_HOME: home });
  t.teardown(() => first.kill("SIGTERM"));
  await check(() => /nodeway is up/.test(first.stdout()) || null, 30_000, { name: "first up" });
  const pid = Number(readFileSync(join(home, "nats-server.pid"), "utf8"));
  const second = runNodeway(["up", "--port", "0", "--no-examples"], { NODEWAY_HOME: home });
  t.not(await second.exited, 0, "the second up exits with an error");
  t.match(second.stderr(), new RegExp(`another nodeway up \\(pid ${first.proc.pid}\\) runs on .*NODEWAY_HOME`));
  t.doesNotThrow(() => process.kill(pid, 0), "the first up's nats-server still runs");
  first.proc.kill("SIGINT");
  t.equal(await first.exited, 0, "the first up stops cleanly");
});

t.test("up - a missing nats-server is a clear error naming the package", async (t) => {
  const home = mkdtempSync(join(tmpdir(), "nw-home-"));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const up = runNodeway(["up", "--port", "0"], { NODEWAY_HOME: home, PATH: "/nonexistent" });
  t.equal(await up.exited, 3);
  t.match(up.stderr(), /nats-server was not found.*apt-get install nats-server/);
});

t.test("cli - flags have NODEWAY_* env twins and unknown flags are refused", async (t) => {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const gw = runNodeway(["gateway", "--port", "0"], { NODEWAY_NATS_URL: ns.url });
  t.teardown(() => gw.kill("SIGKILL"));
  const url = await check(() => /gateway listening on (\S+)/.exec(gw.stdout())?.[1], 20_000, {
    name: "gateway via env",
  });
  const agent = runNodeway(["agent", "--name", "envtest"], { NODEWAY_NATS_URL: ns.url, NODEWAY_MAX_JOBS: "3" });
  t.teardown(() => agent.kill("SIGKILL"));
  const listed = await check(
    async () => {
      const r = (await fetch(`${url}/api/agents`).then((x) => x.json())) as {
        agents: { name: string; capabilities: { max_jobs: number } }[];
      };
      return r.agents.find((a) => a.name === "envtest");
    },
    20_000,
    { name: "agent registered" },
  );
  t.equal(listed.capabilities.max_jobs, 3, "NODEWAY_MAX_JOBS reached the agent");
  t.equal(await agent.kill("SIGTERM"), 0, "SIGTERM drains and exits 0");
  // The gateway's agent list is a watch on nw_agents: the deletion reaches it shortly after the agent exits.
  const left = await check(
    async () => {
      const r = (await fetch(`${url}/api/agents`).then((x) => x.json())) as { agents: unknown[] };
      return r.agents.length === 0 ? r.agents : undefined;
    },
    10_000,
    { name: "drained agent gone from /api/agents" },
  );
  t.equal(left.length, 0, "a drained agent deregisters");
  const bad = runNodeway(["agent", "--nats", ns.url, "--max-jbos", "2"]);
  t.equal(await bad.exited, 2);
  t.match(bad.stderr(), /unknown flag --max-jbos/);
  const badVal = runNodeway(["agent", "--nats", ns.url, "--max-jobs", "zero"]);
  t.equal(await badVal.exited, 1);
  t.match(badVal.stderr(), /maxJobs: must be a positive integer/);
});

t.test("up - --tls puts the proxy in front with a self-signed certificate for localhost", async (t) => {
  const https = await import("node:https");
  const home = mkdtempSync(join(tmpdir(), "nw-home-"));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const up = runNodeway(["up", "--port", "0", "--tls", "--https-port", "0", "--http-port", "0"], {
    NODEWAY_HOME: home,
  });
  t.teardown(() => up.kill("SIGKILL"));
  const front = await check(
    () =>
      /nodeway is up: (https:\S+)/.exec(up.stdout())?.[1] ??
      (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
    30_000,
    { name: "up --tls" },
  );
  const res = await new Promise<{ status: number; hsts: string | undefined; body: string }>((resolve, reject) => {
    const req = https.get(`${front}/health`, { rejectUnauthorized: false }, (r) => {
      let body = "";
      r.on("data", (d: Buffer) => (body += d.toString()));
      r.on("end", () =>
        resolve({
          status: r.statusCode ?? 0,
          hsts: r.headers["strict-transport-security"] as string | undefined,
          body,
        }),
      );
    });
    req.on("error", reject);
  });
  t.equal(res.status, 200, "health through the proxy");
  t.match(res.body, /"status":"ok"/);
  t.equal(res.hsts, undefined, "no HSTS for localhost (DEV_TLS_OPTIONS): it would force HTTPS on every local port");
  up.proc.kill("SIGINT");
  t.equal(await up.exited, 0, "stops cleanly");
});

t.test(
  "up - --tls with an API token file: the examples are seeded, a browser-style WSS token runs a job, the proxy log redacts it",
  async (t) => {
    const { default: WebSocket } = await import("ws");
    const home = mkdtempSync(join(tmpdir(), "nw-home-"));
    t.teardown(() => rmSync(home, { recursive: true, force: true }));
    const token = "e2e-token-0123456789abcdefghij";
    writeFileSync(join(home, "tokens"), `${token}\n`, { mode: 0o600 });
    const up = runNodeway(
      [
        "up",
        "--port",
        "0",
        "--tls",
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--api-tokens-file",
        join(home, "tokens"),
      ],
      { NODEWAY_HOME: home },
    );
    t.teardown(() => up.kill("SIGKILL"));
    const front = await check(
      () =>
        /nodeway is up: (https:\S+)/.exec(up.stdout())?.[1] ??
        (up.proc.exitCode !== null ? Promise.reject(new Error(up.stderr())) : null),
      30_000,
      { name: "up --tls" },
    );
    t.match(up.stdout(), /API tokens are on/, "the hint says a token is needed");
    const wss = front.replace(/^https/, "wss") + "/ws";

    const refused = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(wss, ["nodeway.json"], { rejectUnauthorized: false });
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.once("open", () => reject(new Error("opened without a token")));
      ws.once("error", reject);
    });
    t.equal(refused, 401, "through the proxy, no token: 401 before the upgrade");

    const ws = new WebSocket(wss, ["nodeway.json", `bearer.${token}`], { rejectUnauthorized: false });
    t.teardown(() => ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    t.equal(ws.protocol, "nodeway.json", "the proxy and gateway answer nodeway.json, not the token");
    const msgs: Record<string, unknown>[] = [];
    ws.on("message", (d) => msgs.push(JSON.parse(d.toString()) as Record<string, unknown>));
    ws.send(JSON.stringify({ command: "run_job", data: { workflow_id: "hello-world", params: { name: "Ada" } } }));
    const done = await check(
      () => msgs.find((m) => m.type === "job_update" && ["completed", "failed"].includes(String(m.status))),
      30_000,
      { name: "seeded example ran" },
    );
    t.equal(done.status, "completed", "the example seeded with the token runs over the token-authenticated socket");

    ws.close();
    await check(() => (/proto=\S*bearer\.\[REDACTED\]/.test(up.stdout()) ? true : null), 10_000, {
      name: "proxy access line for the tunnel",
    });
    t.notOk((up.stdout() + up.stderr()).includes(token), "the token is in no log");
    up.proc.kill("SIGINT");
    t.equal(await up.exited, 0, "stops cleanly");
  },
);

t.test("cli - an agent and a gateway started before nats-server wait for it, then work", async (t) => {
  const { freePort, NatsServer } = await import("../helpers/nats-server.js");
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const gw = runNodeway(["gateway", "--nats", url, "--port", "0"]);
  t.teardown(() => gw.kill("SIGKILL"));
  const agent = runNodeway(["agent", "--nats", url, "--name", "early"]);
  t.teardown(() => agent.kill("SIGKILL"));
  await check(() => /connecting to NATS/.test(gw.stderr()) && /connecting to NATS/.test(agent.stderr()), 10_000, {
    name: "both waiting",
  });
  t.equal(gw.proc.exitCode, null, "gateway still waiting");
  const ns = await NatsServer.startOn(port);
  t.teardown(() => ns.stop());
  const gwUrl = await check(() => /gateway listening on (\S+)/.exec(gw.stdout())?.[1], 30_000, { name: "gateway up" });
  await check(
    async () => ((await fetch(`${gwUrl}/health`).then((r) => r.json())) as { agents: number }).agents === 1,
    30_000,
    { name: "agent registered" },
  );
  t.pass("both connected once nats-server started");
});
