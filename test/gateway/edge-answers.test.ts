/**
 * Requests a fuzzer sent that got a 500 or no answer a client could wait on: each now gets a clear 400 (or the
 * answer to its request_id), and the gateway goes on serving.
 */
import t from "tap";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test("edge - limit=0, a job id no job can have, and malformed commands are answered, not 500s", async (t) => {
  const s = await startStack(t, { agents: 0 });
  for (const path of ["/api/threads", "/api/workflows", "/api/assets", "/api/jobs"]) {
    const r = await api(s.url, "GET", `${path}?limit=0`);
    t.match(
      r,
      { status: 400, body: { code: "GW_ERR_BAD_REQUEST", message: /"limit" must be an integer in \[1, 1000\]/ } },
      `${path}?limit=0`,
    );
  }
  for (const q of ["limit=1e3", "limit=0x10", "limit=%20%205", "limit=5.0", "limit=-1"]) {
    const r = await api(s.url, "GET", `/api/jobs?${q}`);
    t.match(r, { status: 400, body: { code: "GW_ERR_BAD_REQUEST" } }, `?${q}: decimal digits only`);
  }
  for (const after of ["1e308", "99999999999999999999999", "0x10", "%201"]) {
    const r = await api(s.url, "GET", `/api/jobs/01jdq7zk3m8x4v5n6p7q8r9s0v/events?after=${after}`);
    t.match(r, { status: 400, body: { code: "GW_ERR_BAD_REQUEST" } }, `events ?after=${after}`);
  }
  t.match(
    await api(s.url, "GET", "/api/assets?job_id=%3E"),
    { status: 400, body: { message: /"job_id" must be an id/ } },
    "an asset filter that is no id is refused, not an empty list",
  );
  t.match(
    await api(s.url, "GET", "/api/jobs?status=bogus"),
    { status: 400, body: { message: /"status" must be one of queued, .*completed/ } },
    "an unknown status filter is refused, not an empty list",
  );
  await api(s.url, "PUT", "/api/workflows/w", { graph: { nodes: [], edges: [] } });
  t.match(
    await api(s.url, "POST", "/api/workflows/w/run", { timeout_s: 0 }),
    { status: 400, body: { message: /"timeout_s" must be more than 0/ } },
    "a timeout of 0 says what it must be",
  );
  for (const [how, req] of [
    ["body", () => api(s.url, "DELETE", "/api/workflows/w/run", { job_id: "é" })],
    ["query", () => api(s.url, "DELETE", "/api/workflows/w/run?job_id=%E0")],
    ["query, a dot", () => api(s.url, "DELETE", "/api/workflows/w/run?job_id=a.b")],
  ] as const) {
    const r = await req();
    t.match(
      r,
      { status: 400, body: { message: /"job_id" is no job id/ } },
      `cancel with a non-id job_id in the ${how}`,
    );
  }

  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  ws.sendRaw(JSON.stringify({ command: "run_job", request_id: "r1", data: [] }));
  ws.sendRaw(JSON.stringify({ command: "cancel_job", request_id: 7, data: "x" }));
  ws.sendRaw(JSON.stringify({ command: "launch_rockets", request_id: "r3", data: {} }));
  ws.sendRaw(JSON.stringify({ command: "reconnect_job", request_id: "r4", data: { job_id: "a", last_seq: -1 } }));
  for (const [id, code, message] of [
    ["r1", "PROTO_ERR_SHAPE"],
    ["7", "PROTO_ERR_SHAPE"],
    ["r3", "PROTO_ERR_UNKNOWN_TYPE"],
    ["r4", "PROTO_ERR_SHAPE", /"data.last_seq" must be at least 0/],
  ] as const) {
    const answer = await check(() => ws.messages.find((m) => m.type === "rpc_response" && m.request_id === id), 5_000, {
      name: `an answer to ${id}`,
    });
    t.match(
      answer,
      { error: { code, message: message ?? /./ } },
      `a refused command is answered on its request_id (${id})`,
    );
  }
  ws.sendRaw(JSON.stringify({ command: "launch_rockets", data: {} }));
  await check(() => ws.messages.find((m) => m.type === "error" && /unknown command/.test(String(m.message))), 5_000, {
    name: "an unknown command without a request_id gets an error frame",
  });
  const preflight = await fetch(`${s.url}/api/workflows`, {
    method: "OPTIONS",
    headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
  });
  t.match(
    { status: preflight.status, body: await preflight.json() },
    { status: 403, body: { code: "GW_ERR_FORBIDDEN", message: /no CORS for this origin/ } },
    "a refused preflight says why, as every error does",
  );
  t.match(
    await api(s.url, "GET", "/api/nope"),
    {
      status: 404,
      body: { code: "GW_ERR_NOT_FOUND", error: { code: "GW_ERR_NOT_FOUND", message: /no route for GET/ } },
    },
    "a 404 has the same body shape as every route's errors",
  );
  const long = await api(s.url, "POST", "/api/messages", { thread_id: "t".repeat(10_000), role: "user", content: "x" });
  t.ok(long.status >= 400 && long.status < 500, `a 10,000-character thread_id is refused (${long.status})`);
  t.ok(JSON.stringify(long.body).length < 600, "without echoing all of it back");
  const v1 = await fetch(`${s.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "text/plain" },
    body: "hello",
  });
  t.equal(v1.status, 415);
  t.match(await v1.json(), { error: { type: "invalid_request_error" } }, "/v1: a 4xx is the client's error type");
  t.equal((await api(s.url, "GET", "/health")).status, 200, "the gateway goes on serving");
});

t.test(
  "edge - a resume after a seq no stored event has is refused; one at the last stored seq goes on live",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    await api(s.url, "PUT", "/api/workflows/wait", { graph: { nodes: [], edges: [] } });
    const run = await api(s.url, "POST", "/api/workflows/wait/run", {});
    const jobId = String((run.body as { job_id: string }).job_id); // no agent: it stays queued
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());
    /** The answer to one resume: its `job_resumed`, or its refusal. */
    const resumed = (after: number) => {
      const request_id = `resume-${after}`;
      const from = ws.messages.length;
      ws.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: after }, request_id });
      return check(
        () =>
          ws.messages
            .slice(from)
            .find(
              (m) =>
                (m.type === "job_resumed" && m.job_id === jobId) ||
                (m.type === "rpc_response" && m.request_id === request_id),
            ),
        5_000,
      );
    };
    const first = await resumed(0);
    const stored = Number(first.last_seq);
    t.ok(stored > 0, `the job's events are stored up to seq ${stored}`);
    for (const past of [Number.MAX_SAFE_INTEGER, stored + 1_000_000]) {
      const r = await ws.request("reconnect_job", { job_id: jobId, last_seq: past });
      t.match(
        r,
        { error: { code: "GW_ERR_BAD_REQUEST", message: /no stored event has a seq past \d+/ } },
        `a socket's resume after ${past}`,
      );
      const http = await api(s.url, "GET", `/api/jobs/${jobId}/events?after=${past}`);
      t.match(http, { status: 400, body: { code: "GW_ERR_BAD_REQUEST" } }, `an HTTP stream after ${past}`);
    }
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    t.match(metrics, /nodeway_ws_follows\{via="direct"\} 0\b/, "a refused resume leaves no follow behind");
    const live = await WsClient.open(s.url, "msgpack");
    t.teardown(() => live.close());
    live.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: stored } });
    await check(() => live.messages.find((m) => m.type === "job_resumed"));
    t.equal((await api(s.url, "POST", `/api/jobs/${jobId}/cancel`)).status, 200);
    const end = await live.waitTerminal(jobId);
    t.match(end, { status: "cancelled" }, "a resume at the last stored seq gets the job's later events");
    t.ok(end.seq! > stored, "after that seq only");
    t.match(end, { error: { code: "JOB_ERR_CANCELLED" } }, "the cancelled update carries the record's error");
    // `?wait=true` answers a job cancelled while it waited with the same error.
    const waited = api(s.url, "POST", "/api/workflows/wait/run?wait=true", {});
    const queued = await check(async () => {
      const page = (await api(s.url, "GET", "/api/jobs?status=queued")).body as { jobs: { id: string }[] };
      return page.jobs.find((j) => j.id !== jobId)?.id;
    });
    await api(s.url, "POST", `/api/jobs/${queued}/cancel`);
    t.match(
      await waited,
      { status: 200, body: { status: "cancelled", error: { code: "JOB_ERR_CANCELLED" } } },
      "a waited run cancelled in the queue says why",
    );
  },
);

/** One raw HTTP/1.1 exchange: what comes back on the socket until the server has answered and gone quiet. */
async function rawHttp(url: string, head: string): Promise<{ status: number; text: string }> {
  const { connect } = await import("node:net");
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(head));
    let text = "";
    s.on("data", (d) => {
      text += d.toString("latin1");
      if (/\r\n\r\n/.test(text) && /\}$/.test(text.trimEnd())) s.end();
    });
    s.on("error", reject);
    s.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    s.setTimeout(5_000, () => s.destroy());
  });
}

t.test("edge - a GET of /ws that is no WebSocket upgrade says what is wrong, not 404", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const host = new URL(s.url).host;
  const upgrade = (key: string | null) =>
    `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
    `${key === null ? "" : `Sec-WebSocket-Key: ${key}\r\n`}\r\n`;
  for (const [label, key] of [
    ["missing", null],
    ["too short", "abc"],
    ["23 characters", "dGhlIHNhbXBsZSBub25jZQ="],
    ["10 KB", "A".repeat(10_000)],
    ["24 characters, not base64", "!!!!!!!!!!!!!!!!!!!!!!=="],
  ] as const) {
    const r = await rawHttp(s.url, upgrade(key));
    t.equal(r.status, 400, `a key ${label}: 400`);
    t.match(r.text, /"code":"GW_ERR_BAD_REQUEST".*Sec-WebSocket-Key must be 16 bytes in base64/, "saying why");
  }
  const plain = await rawHttp(s.url, `GET /ws HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  t.equal(plain.status, 426, "a plain GET of /ws: 426 Upgrade Required");
  t.match(plain.text, /upgrade: websocket/i);
  t.match(plain.text, /"code":"GW_ERR_BAD_REQUEST"/);
  t.equal((await api(s.url, "GET", "/health")).status, 200, "the gateway goes on serving");
});

t.test("edge - a stop sent right after a resume of the same job wins: nothing of the job follows it", async (t) => {
  const s = await startStack(t, { agents: 0 });
  await api(s.url, "PUT", "/api/workflows/wait", { graph: { nodes: [], edges: [] } });
  const jobId = String(((await api(s.url, "POST", "/api/workflows/wait/run", {})).body as { job_id: string }).job_id);
  const witness = await WsClient.open(s.url, "msgpack");
  t.teardown(() => witness.close());
  witness.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
  await check(() => witness.messages.find((m) => m.type === "job_resumed"));
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  // Both in one go: the resume waits on the job's record while the stop is handled.
  ws.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
  ws.send({ command: "stop", data: { job_id: jobId } });
  await check(() => ws.messages.find((m) => m.type === "generation_stopped"));
  await api(s.url, "POST", `/api/jobs/${jobId}/cancel`);
  await witness.waitTerminal(jobId);
  // Frames to one socket keep their order: once this answer is in, anything sent to it before is too.
  await ws.request("reconnect_job", { job_id: "01jdq7zk3m8x4v5n6p7q8r9s0v", last_seq: 0 }).catch(() => undefined);
  const stoppedAt = ws.messages.findIndex((m) => m.type === "generation_stopped");
  const after = ws.messages.slice(stoppedAt + 1).filter((m) => m.job_id === jobId);
  t.same(
    after.map((m) => m.type),
    [],
    "no job_resumed and no event of the job after the stop",
  );
});
