/**
 * API tokens on the gateway: every route but `/health` needs `Authorization: Bearer`;
 * the `/ws` upgrade also takes `?api_key=` or a `bearer.<token>` subprotocol and is refused with 401 before it
 * upgrades; the subprotocol answered is never the token; a reload (SIGHUP) closes what a revoked token opened,
 * and a token's expiry what it opened, when it comes;
 * refusals are logged (rate-limited) and no token reaches the gateway's log; malformed tokens are refused at
 * start-up without being quoted.
 */
import t from "tap";
import WebSocket from "ws";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileGatewayConfig } from "../../gateway/index.js";
import { InvalidConfigError } from "../../protocol/index.js";
import { api, tokensWorkflow, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { runNodeway, startGatewayProc, startAgentProc, ROOT } from "../helpers/procs.js";

const T1 = "tok1-aaaaaaaaaaaaaaaaaaaaaaaa";
const T2 = "tok2-bbbbbbbbbbbbbbbbbbbbbbbb";
const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` });

/** Opens `/ws`; resolves with the socket once open, or with the HTTP status of a refused upgrade. */
function openWs(
  base: string,
  opts: { query?: string; protocols?: readonly string[]; headers?: Record<string, string> } = {},
): Promise<
  { ws: WebSocket; protocol: string } | { status: number; body: string; wwwAuthenticate: string | undefined }
> {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/ws${opts.query ?? ""}`, [...(opts.protocols ?? [])], {
    headers: opts.headers ?? {},
  });
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve({ ws, protocol: ws.protocol }));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body, wwwAuthenticate: res.headers["www-authenticate"] }),
      );
    });
    ws.once("error", reject);
  });
}

/** `p`, or a rejection naming `what` after `ms` (a close that never comes fails the test, not the suite's timer). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_r, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

t.test("auth - malformed tokens and token files are refused at start-up, without quoting the token", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nw-auth-cfg-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const refused = (opts: Record<string, unknown>, key: string) => {
    try {
      compileGatewayConfig(opts);
    } catch (err) {
      t.ok(err instanceof InvalidConfigError, `${JSON.stringify(opts)}: InvalidConfigError`);
      t.equal((err as InvalidConfigError).key, key, "names the setting");
      return (err as Error).message;
    }
    t.fail(`${JSON.stringify(opts)} was accepted`);
    return "";
  };
  const short = "short-secret";
  t.notMatch(refused({ apiTokens: [short] }, "apiTokens"), short, "a short token is refused and not quoted");
  refused({ apiTokens: ["has/slash-and=equals-aaaaaaa"] }, "apiTokens");
  refused({ apiTokens: ["a-token-with a-space-aaaaaaa"] }, "apiTokens");
  refused({ apiTokensFile: join(dir, "missing") }, "apiTokensFile");
  const empty = join(dir, "empty");
  writeFileSync(empty, "# nothing but a comment\n\n");
  t.match(
    refused({ apiTokensFile: empty }, "apiTokensFile"),
    /holds no token/,
    "an empty token file would open the API: refused",
  );
  const bad = join(dir, "bad");
  writeFileSync(bad, `${T1}\nnot ok+token-aaaaaaaaaaaaa\n`);
  const msg = refused({ apiTokensFile: bad }, "apiTokensFile");
  t.match(msg, /line 2/, "names the line");
  t.notMatch(msg, /not ok/, "does not quote it");
  const good = join(dir, "good");
  writeFileSync(good, `# ops\n${T1}\r\n\n${T2}\n`);
  t.same(
    compileGatewayConfig({ apiTokensFile: good, apiTokens: "tok3-cccccccccccccccccccccccc" as never }).apiTokens.map(
      (a) => a.token,
    ),
    ["tok3-cccccccccccccccccccccccc", T1, T2],
    "list (env form: comma-separated) then file",
  );
  t.same(compileGatewayConfig({}).apiTokens, [], "none by default");

  const expiring = join(dir, "expiring");
  writeFileSync(
    expiring,
    `${T1} expires=2027-01-31T00:00:00Z\n${T2}\ttab-separated-aaaa expires=2027-01-31T01:00:00.5+01:00\n`,
  );
  t.match(
    refused({ apiTokensFile: expiring }, "apiTokensFile"),
    /line 2: after the token only `expires=<time>` may follow/,
    "a stray word after a token is refused, naming the line",
  );
  writeFileSync(expiring, `${T1} expires=2027-01-31T00:00:00Z\n${T2}   expires=2027-01-31T01:00:00.5+01:00\n`);
  t.same(
    compileGatewayConfig({ apiTokensFile: expiring }).apiTokens,
    [
      { token: T1, expiresAtMs: Date.parse("2027-01-31T00:00:00Z") },
      { token: T2, expiresAtMs: Date.parse("2027-01-31T00:00:00.5Z") },
    ],
    "expiry times with their offsets",
  );
  for (const [line, why] of [
    [`${T1} expires=2027-01-31`, "a date alone"],
    [`${T1} expires=2027-01-31T00:00:00`, "no offset: the host's zone would decide"],
    [`${T1} expires=tomorrow`, "not a time"],
    [`${T1} expires=2027-02-30T00:00:00Z`, "no such day"],
  ] as const) {
    writeFileSync(expiring, `${line}\n`);
    const m = refused({ apiTokensFile: expiring }, "apiTokensFile");
    t.match(m, /line 1: expires must be an RFC 3339 time with its offset/, `${why}: refused`);
    t.notMatch(m, T1, "without quoting the token");
  }
  writeFileSync(expiring, `${T1} expires=2027-01-31T00:00:00Z expires=2028-01-31T00:00:00Z\n`);
  t.match(refused({ apiTokensFile: expiring }, "apiTokensFile"), /expires is given twice/);
  writeFileSync(expiring, `${T1} expire=2027-01-31T00:00:00Z\n`);
  t.match(
    refused({ apiTokensFile: expiring }, "apiTokensFile"),
    /only `expires=<time>` may follow/,
    "a misspelt expires does not leave the token valid for ever",
  );
});

t.test("auth - HTTP: every route but /health needs a bearer token; ?api_key= is for the upgrade only", async (t) => {
  const s = await startStack(t, { agents: 0, gateway: { apiTokens: [T1, T2] } });
  t.equal((await api(s.url, "GET", "/health")).status, 200, "/health answers without a token");

  const none = await fetch(`${s.url}/api/workflows`);
  t.equal(none.status, 401, "no token: 401");
  t.equal(none.headers.get("www-authenticate"), 'Bearer realm="nodeway"');
  const noneBody = (await none.json()) as Msg;
  t.equal(noneBody.code, "GW_ERR_UNAUTHORIZED");
  t.match(String(noneBody.message), /Authorization: Bearer/, "says how to send one");

  const wrong = await fetch(`${s.url}/api/workflows`, { headers: bearer("tok9-zzzzzzzzzzzzzzzzzzzzzzzz") });
  t.equal(wrong.status, 401, "wrong token: 401");
  t.equal(wrong.headers.get("www-authenticate"), 'Bearer realm="nodeway", error="invalid_token"');
  t.equal(((await wrong.json()) as Msg).message, "invalid API token");

  t.equal((await api(s.url, "GET", "/api/workflows", undefined, bearer(T1))).status, 200, "first token accepted");
  t.equal(
    (await api(s.url, "GET", "/api/workflows", undefined, { authorization: `bearer ${T2}` })).status,
    200,
    "second token, lower-case scheme",
  );
  t.equal(
    (await api(s.url, "GET", "/api/workflows", undefined, { authorization: `Basic ${T1}` })).status,
    401,
    "another scheme is not a bearer token",
  );
  t.equal(
    (await api(s.url, "GET", "/api/workflows", undefined, { authorization: `Bearer ${T1.slice(0, -1)}` })).status,
    401,
    "a prefix of a token is not the token",
  );

  const query = await fetch(`${s.url}/api/workflows?api_key=${T1}`);
  t.equal(query.status, 401, "?api_key= on a REST route: 401");
  t.match(((await query.json()) as Msg).message, /upgrade only/);

  // Writes are refused too, and nothing is written.
  const put = await fetch(`${s.url}/api/workflows/w1`, {
    method: "PUT",
    body: JSON.stringify(tokensWorkflow(3, 100)),
    headers: { "content-type": "application/json" },
  });
  t.equal(put.status, 401, "PUT without a token: 401");
  t.equal((await api(s.url, "GET", "/api/workflows/w1", undefined, bearer(T1))).status, 404, "and nothing was saved");

  t.equal((await fetch(`${s.url}/no/such/route`)).status, 401, "an unknown path without a token: 401, not 404");
  t.equal((await fetch(`${s.url}/no/such/route`, { headers: bearer(T1) })).status, 404, "with one: 404");

  t.equal((await fetch(`${s.url}/metrics`)).status, 401, "/metrics needs a token");
  const m = await fetch(`${s.url}/metrics`, { headers: bearer(T1) }).then((r) => r.text());
  const refusedCount = Number(/^nodeway_unauthorized_total (\d+)$/m.exec(m)?.[1]);
  t.equal(refusedCount, 8, "each of the 8 refusals above is counted");
});

t.test(
  "auth - /ws: 401 before the upgrade without a valid token; header, ?api_key= and bearer subprotocol accepted",
  async (t) => {
    const s = await startStack(t, { agents: 1, gateway: { apiTokens: [T1], allowedOrigins: ["https://app.example"] } });

    const none = await openWs(s.url, { protocols: ["nodeway.json"] });
    t.ok("status" in none && none.status === 401, "no token: 401, no upgrade");
    if ("status" in none) {
      t.equal(JSON.parse(none.body).code, "GW_ERR_UNAUTHORIZED");
      t.equal(none.wwwAuthenticate, 'Bearer realm="nodeway"');
    }
    for (const [what, o] of [
      ["wrong header", { headers: bearer(T2) }],
      ["wrong ?api_key=", { query: `?api_key=${T2}` }],
      ["wrong subprotocol", { protocols: ["nodeway.json", `bearer.${T2}`] }],
    ] as const) {
      const r = await openWs(s.url, o);
      t.ok("status" in r && r.status === 401, `${what}: 401`);
    }
    const foreign = await openWs(s.url, { headers: { ...bearer(T1), origin: "https://evil.example" } });
    t.ok("status" in foreign && foreign.status === 403, "a valid token from a foreign origin: still 403");

    const viaHeader = await openWs(s.url, { headers: bearer(T1), protocols: ["nodeway.msgpack"] });
    t.ok("ws" in viaHeader && viaHeader.protocol === "nodeway.msgpack", "Authorization header: open");
    const viaQuery = await openWs(s.url, { query: `?api_key=${T1}` });
    t.ok("ws" in viaQuery, "?api_key=: open");
    const viaProto = await openWs(s.url, {
      protocols: [`bearer.${T1}`, "nodeway.json"],
      headers: { origin: "https://app.example" },
    });
    t.ok("ws" in viaProto, "bearer.<token> subprotocol: open");
    if (!("ws" in viaProto) || !("ws" in viaHeader) || !("ws" in viaQuery)) return;
    t.equal(viaProto.protocol, "nodeway.json", "the answered subprotocol is nodeway.json, never the token");
    t.teardown(() => {
      for (const w of [viaHeader.ws, viaQuery.ws, viaProto.ws]) w.terminate();
    });

    // The authenticated socket works: run a job and see it complete.
    const ws = viaProto.ws;
    const msgs: Msg[] = [];
    ws.on("message", (d) => msgs.push(JSON.parse(d.toString()) as Msg));
    ws.send(
      JSON.stringify({
        command: "run_job",
        data: { graph: tokensWorkflow(3, 200).graph, params: {} },
        request_id: "r1",
      }),
    );
    await check(() => msgs.find((m) => m.type === "job_update" && m.status === "completed"), 20_000, {
      name: "job completed over the token-authenticated socket",
    });
    t.same(
      msgs.filter((m) => m.type === "chunk" && !m.done).map((m) => m.content),
      ["tok0 ", "tok1 ", "tok2 "],
      "all its tokens arrived",
    );
  },
);

t.test(
  "auth - reloading the token file closes the sockets and streams of a revoked token; new tokens work",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-auth-reload-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "tokens");
    writeFileSync(file, `${T1}\n`);
    const s = await startStack(t, { agents: 1, gateway: { apiTokensFile: file } });
    await api(s.url, "PUT", "/api/workflows/slow", tokensWorkflow(100_000, 50), bearer(T1));
    const run = await api(s.url, "POST", "/api/workflows/slow/run", { params: {} }, bearer(T1));
    const jobId = String(run.body.job_id);
    t.teardown(() => api(s.url, "POST", `/api/jobs/${jobId}/cancel`, undefined, bearer(T2)).catch(() => undefined));
    // Running before the revocation, so that "ran on" below compares running with running (on a loaded machine the
    // agent's claim could still be on its way when the reload happened).
    for (
      const deadline = Date.now() + 20_000;
      (await api(s.url, "GET", `/api/jobs/${jobId}`, undefined, bearer(T1))).body.status !== "running";
    ) {
      if (Date.now() > deadline) throw new Error("the job did not start within 20 s");
      await new Promise((r) => setTimeout(r, 25));
    }

    const opened = await openWs(s.url, { headers: bearer(T1), protocols: ["nodeway.json"] });
    if (!("ws" in opened)) throw new Error("socket with T1 did not open");
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      opened.ws.once("close", (code, reason) => r({ code, reason: reason.toString() })),
    );
    const stream = await fetch(`${s.url}/api/jobs/${jobId}/events?after=0`, {
      headers: { ...bearer(T1), accept: "text/event-stream" },
    });
    t.equal(stream.status, 200, "an event stream opened with T1");
    const reader = stream.body!.getReader();
    await reader.read();
    const streamEnded = (async () => {
      try {
        for (;;) if ((await reader.read()).done) return "ended";
      } catch {
        return "cut";
      }
    })();

    writeFileSync(file, `# rotated\n${T2}\n`);
    t.equal(s.gw.reloadTokens(), 1, "one token accepted after the reload");
    t.same(
      await within(closed, 10_000, "socket closed"),
      { code: 1008, reason: "API token revoked" },
      "the socket opened with T1 is closed with 1008",
    );
    t.ok(
      ["ended", "cut"].includes(await within(streamEnded, 10_000, "stream closed")),
      "the event stream opened with T1 is closed",
    );
    t.equal((await api(s.url, "GET", "/api/workflows", undefined, bearer(T1))).status, 401, "T1 is refused now");
    t.equal((await api(s.url, "GET", `/api/jobs/${jobId}`, undefined, bearer(T2))).status, 200, "T2 is accepted");
    t.equal(
      (await api(s.url, "GET", `/api/jobs/${jobId}`, undefined, bearer(T2))).body.status,
      "running",
      "and the job ran on: revoking a token cancels nothing",
    );

    writeFileSync(file, "");
    t.throws(() => s.gw.reloadTokens(), /holds no token/, "an emptied file is refused");
    t.equal(
      (await api(s.url, "GET", "/api/workflows", undefined, bearer(T2))).status,
      200,
      "and the tokens in force stay",
    );
  },
);

t.test(
  "auth - an expired token is refused as expired; what a token opened closes when it expires; expiry never opens the API",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-auth-expiry-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "tokens");
    const T3 = "tok3-cccccccccccccccccccccccc";
    writeFileSync(file, `${T1} expires=2020-01-01T00:00:00Z\n${T3}\n`);
    const s = await startStack(t, { agents: 0, gateway: { apiTokensFile: file } });
    // T2 comes with a reload and lapses a few seconds later: time enough for a loaded machine to open sockets with it.
    const lapseAtMs = Date.now() + 3_000;
    writeFileSync(
      file,
      `${T1} expires=2020-01-01T00:00:00Z\n${T2} expires=${new Date(lapseAtMs).toISOString()}\n${T3}\n`,
    );
    t.equal(s.gw.reloadTokens(), 2, "two tokens accepted: T1 has expired");

    const old = await fetch(`${s.url}/api/workflows`, { headers: bearer(T1) });
    t.equal(old.status, 401, "a token past its expiry is refused");
    t.equal(
      ((await old.json()) as { error: { message: string } }).error.message,
      "expired API token",
      "saying it expired",
    );
    t.match(
      String(old.headers.get("www-authenticate")),
      /error="invalid_token", error_description="the token expired"/,
      "in the challenge too",
    );
    const oldWs = await openWs(s.url, { headers: bearer(T1) });
    t.equal("status" in oldWs ? oldWs.status : 0, 401, "and on the upgrade");
    const unknown = await api(s.url, "GET", "/api/workflows", undefined, bearer("tok9-zzzzzzzzzzzzzzzzzzzzzzzz"));
    t.equal(
      (unknown.body.error as { message: string }).message,
      "invalid API token",
      "an unknown token is still just invalid",
    );

    t.equal(
      (await api(s.url, "GET", "/api/workflows", undefined, bearer(T2))).status,
      200,
      "a token before its expiry is accepted",
    );
    const soon = await openWs(s.url, { headers: bearer(T2), protocols: ["nodeway.json"] });
    const keeps = await openWs(s.url, { headers: bearer(T3), protocols: ["nodeway.json"] });
    if (!("ws" in soon) || !("ws" in keeps)) throw new Error("sockets with T2 and T3 did not open");
    t.teardown(() => keeps.ws.close());
    const closed = new Promise<{ code: number; reason: string; atMs: number }>((r) =>
      soon.ws.once("close", (code, reason) => r({ code, reason: reason.toString(), atMs: Date.now() })),
    );
    let keptClosed = false;
    keeps.ws.once("close", () => (keptClosed = true));

    const c = await within(closed, 15_000, "socket of the expiring token closed");
    t.same(
      { code: c.code, reason: c.reason },
      { code: 1008, reason: "API token expired" },
      "the socket opened with T2 closes with 1008 when T2 expires",
    );
    t.ok(c.atMs >= lapseAtMs, "not before its expiry");
    t.ok(c.atMs < lapseAtMs + 5_000, "but at it, not at a reload");
    const after = await api(s.url, "GET", "/api/workflows", undefined, bearer(T2));
    t.equal(after.status, 401, "T2 is refused from then on");
    t.equal((after.body.error as { message: string }).message, "expired API token");
    await new Promise<void>((r) => keeps.ws.ping(undefined, undefined, () => r()));
    t.equal(keptClosed, false, "the socket of a token without expiry stays open");

    writeFileSync(file, `${T1} expires=2020-01-01T00:00:00Z\n`);
    t.equal(s.gw.reloadTokens(), 0, "a reload to a file whose only token expired accepts none");
    t.equal((await api(s.url, "GET", "/api/workflows")).status, 401, "and the API stays closed: expiry never opens it");
    t.equal(
      (await api(s.url, "GET", "/api/workflows", undefined, bearer(T3))).status,
      401,
      "T3, no longer in the file, is refused",
    );
  },
);

t.test(
  "auth - `nodeway gateway` with a token file: SIGHUP reloads it, `nodeway run --token` works, no token in the log",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nw-auth-cli-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const made = runNodeway(["token"]);
    t.equal(await made.exited, 0, "`nodeway token` exits 0");
    const fresh = made.stdout().trim();
    t.match(fresh, /^[A-Za-z0-9_-]{43}$/, "and prints a 32-byte base64url token");

    const file = join(dir, "tokens");
    writeFileSync(file, `${fresh}\n`);
    const s = await startStack(t, { agents: 0 });
    const agent = await startAgentProc(s.ns.url);
    t.teardown(() => agent.kill("SIGKILL"));
    const gw = await startGatewayProc(s.ns.url, ["--api-tokens-file", file, "--access-log"]);
    t.teardown(() => gw.kill("SIGKILL"));

    // Each transport, good and bad, so that any logging of a token would show.
    await fetch(`${gw.url}/api/workflows?api_key=${fresh}`);
    await fetch(`${gw.url}/api/workflows`, { headers: bearer(fresh) });
    await fetch(`${gw.url}/api/workflows`, { headers: bearer(T2) });
    for (const o of [
      { query: `?api_key=${fresh}` },
      { protocols: [`bearer.${fresh}`, "nodeway.json"] },
      { query: `?api_key=${T2}` },
    ]) {
      const r = await openWs(gw.url, o);
      if ("ws" in r) r.ws.close();
    }

    const hello = join(ROOT, "examples", "hello-world.json");
    const denied = runNodeway(["run", hello, "--param", "name=x", "--gateway", gw.url, "--quiet"]);
    t.equal(await denied.exited, 1, "`nodeway run` without a token fails");
    t.match(denied.stderr(), /GW_ERR_UNAUTHORIZED/, "saying why");
    const ran = runNodeway(["run", hello, "--param", "name=x", "--gateway", gw.url, "--quiet"], {
      NODEWAY_API_TOKEN: fresh,
    });
    t.equal(await ran.exited, 0, "with NODEWAY_API_TOKEN it runs");
    t.match(ran.stdout(), /"status": "completed"/);

    writeFileSync(file, `${T2}\n`);
    gw.proc.kill("SIGHUP");
    await check(() => /API tokens reloaded: 1 accepted/.test(gw.stderr()) || null, 10_000, { name: "reload logged" });
    t.equal(
      (await fetch(`${gw.url}/api/workflows`, { headers: bearer(fresh) })).status,
      401,
      "after SIGHUP the old token is refused",
    );
    const withFlag = runNodeway(["run", hello, "--param", "name=y", "--gateway", gw.url, "--quiet", "--token", T2]);
    t.equal(await withFlag.exited, 0, "and `--token` with the new one runs");

    writeFileSync(file, "short-tok\n");
    gw.proc.kill("SIGHUP");
    await check(() => /API tokens not reloaded/.test(gw.stderr()) || null, 10_000, { name: "bad reload reported" });
    t.equal(
      (await fetch(`${gw.url}/api/workflows`, { headers: bearer(T2) })).status,
      200,
      "a bad file leaves the tokens in force",
    );
    t.equal(gw.proc.exitCode, null, "and the gateway running");

    // A burst of refusals: logged, at most a line a second, with a count of the rest.
    const burstStart = Date.now();
    for (let i = 0; i < 20; i++)
      await fetch(`${gw.url}/api/jobs`, { headers: bearer(`tok${i}-xxxxxxxxxxxxxxxxxxxxxxxx`) });
    const burstS = (Date.now() - burstStart) / 1000;
    // Read a moment later, the lines could only be more; the burst's first may also have been held back (a refusal
    // earlier in this test within the same second), which the counted line below then reports.
    const burstLines = gw
      .stderr()
      .split("\n")
      .filter((l) => /refused GET \/api\/jobs/.test(l)).length;
    t.ok(
      burstLines <= Math.ceil(burstS) + 1,
      `20 refusals in ${burstS.toFixed(1)} s gave ${burstLines} log line(s), not 20`,
    );
    // The next line after the quiet second counts the ones it held back (each poll is one more refusal).
    await check(
      async () => {
        await fetch(`${gw.url}/api/jobs`, { headers: bearer("tok-late-xxxxxxxxxxxxxxxxxxxx") });
        return (
          /refused GET \/api\/jobs from 127\.0\.0\.1: invalid API token \(and \d+ more refused/.test(gw.stderr()) ||
          null
        );
      },
      10_000,
      { name: "held-back refusals counted", intervalMs: 200 },
    );
    t.match(
      gw.stderr(),
      /refused the \/ws upgrade from 127\.0\.0\.1: invalid API token|refused GET \/api\/workflows from 127\.0\.0\.1: (invalid|no) API token/,
      "refusals name the peer and what was refused",
    );

    const log = gw.stderr() + gw.stdout();
    t.match(log, /GET \/api\/workflows/, "requests were logged");
    for (const tok of [fresh, T2]) t.notOk(log.includes(tok), "no token in the gateway's log");
    t.notOk(log.includes("short-tok"), "nor the refused file's content");
  },
);
