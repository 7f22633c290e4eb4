/**
 * The gateway's edge holds against what a hostile client sends: malformed path parameters, cross-site requests,
 * rebound Host names, bodies of the wrong type or shape, WebSocket commands with wrong types, and one socket
 * following without end. Every answer is a JSON error with a stable code, and the gateway keeps serving.
 */
import t from "tap";
import { request } from "node:http";
import WebSocket from "ws";
import { startStack, type Stack } from "../helpers/stack.js";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";

/** A raw request whose path and headers go out exactly as given (fetch would normalise both). */
function raw(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; text: string; headers: Record<string, unknown> }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, method, path, headers, setHost: !("host" in headers) },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const healthy = async (s: Stack) => (await fetch(`${s.url}/health`)).status === 200;

const helloGraph = {
  nodes: [
    { id: "n", type: "nodetool.input.StringInput", data: { name: "name", value: "x" } },
    { id: "o", type: "nodetool.output.Output", data: { name: "out" } },
  ],
  edges: [{ id: "e", source: "n", sourceHandle: "output", target: "o", targetHandle: "value" }],
};

t.test("guard - the gateway's edge refuses hostile input with stable codes and keeps serving", async (t) => {
  const s = await startStack(t, { agents: 0, gateway: { wsMaxFollowsPerSocket: 3, jobTimeoutMaxS: 600 } });

  t.test("a path parameter that does not decode or match the id grammar is 400, for every route", async (t) => {
    const paths = [
      ["GET", "/api/jobs/%"],
      ["GET", "/api/jobs/%E0%A4%A"],
      ["GET", "/api/assets/%/content"],
      ["HEAD", "/api/assets/%/content"],
      ["GET", "/api/threads/%C0%AF"],
      ["GET", "/api/workflows/%ZZ"],
      ["PUT", "/api/workflows/%"],
      ["DELETE", "/api/workflows/a.b"],
      ["POST", "/api/workflows/%25%/run"],
      ["POST", "/api/jobs/%FF/cancel"],
      ["GET", "/api/jobs/x%20y/events"],
      ["POST", "/api/agents/%/drain"],
      ["GET", "/api/messages/%"],
      ["GET", "/v1/models/%"],
    ];
    for (const [method, path] of paths) {
      const r = await raw(s.url, method!, path!, { "content-type": "application/json" });
      t.equal(r.status, 400, `${method} ${path} answers 400`);
      if (method !== "HEAD") t.match(JSON.parse(r.text), { code: "GW_ERR_BAD_REQUEST" }, `${method} ${path} says why`);
      t.ok(await healthy(s), `still serving after ${method} ${path}`);
    }
  });

  t.test("cross-site requests: a form-type body is 415, a foreign Origin is 403, a rebound Host is 421", async (t) => {
    t.equal((await api(s.url, "PUT", "/api/workflows/hello", { graph: helloGraph })).status, 200);
    const plain = await raw(s.url, "POST", "/api/workflows/hello/run", { "content-type": "text/plain" }, "{}");
    t.equal(plain.status, 415, "text/plain body refused");
    t.match(JSON.parse(plain.text), { code: "GW_ERR_UNSUPPORTED_MEDIA" });
    const emptyPlain = await raw(s.url, "POST", "/api/workflows/hello/run", { "content-type": "text/plain" });
    t.equal(emptyPlain.status, 415, "an empty text/plain post is refused too");
    const evil = await raw(s.url, "POST", "/api/jobs/abc/cancel", { origin: "https://evil.example" });
    t.equal(evil.status, 403, "a foreign Origin may not act");
    t.match(JSON.parse(evil.text), { code: "GW_ERR_FORBIDDEN" });
    const local = await raw(
      s.url,
      "POST",
      "/api/workflows/hello/run",
      { origin: "http://localhost:3000", "content-type": "application/json" },
      "{}",
    );
    t.equal(local.status, 202, "a loopback origin may");
    const rebound = await raw(s.url, "GET", "/api/workflows", { host: "evil.example" });
    t.equal(rebound.status, 421, "a name this gateway does not answer for is refused");
    const rebound404 = await raw(s.url, "GET", "/nothing/here", { host: "evil.example:8000" });
    t.equal(rebound404.status, 421, "also on paths with no route");
    t.equal(
      (await raw(s.url, "GET", "/api/workflows", { host: "10.1.2.3:8000" })).status,
      421,
      "another address is refused",
    );
    t.equal(
      (await raw(s.url, "GET", "/api/workflows", { host: "[::ffff:1.2.3.4]" })).status,
      421,
      "an IPv6 form of one too",
    );
    t.equal(
      (await raw(s.url, "GET", "/api/workflows", { host: "app.localhost" })).status,
      200,
      "a *.localhost name is answered",
    );
    t.equal(
      (await raw(s.url, "OPTIONS", "/api/workflows", { origin: "https://evil.example" })).status,
      403,
      "no CORS unless configured",
    );
  });

  t.test("bodies are checked against their schema: wrong types are 400 with the field named", async (t) => {
    const cases: [string, string, unknown, RegExp][] = [
      ["POST", "/api/workflows/hello/run", { params: [] }, /params/],
      ["POST", "/api/workflows/hello/run", { timeout_s: "soon" }, /timeout_s/],
      ["POST", "/api/workflows/hello/run", { execution_strategy: "rocket" }, /execution_strategy/],
      ["POST", "/api/workflows/hello/run", { requirements: { pool: "a.b" } }, /pool/],
      ["POST", "/api/workflows/hello/run", { timeout_s: 601 }, /timeout_s/],
      ["PUT", "/api/workflows/w1", { graph: { nodes: "x", edges: [] } }, /nodes/],
      ["PUT", "/api/workflows/w1", { graph: { nodes: [{ id: 1, type: "x" }], edges: [] } }, /id/],
      ["PUT", "/api/workflows/w1", [1, 2], /object/],
    ];
    for (const [method, path, body, field] of cases) {
      const r = await api(s.url, method, path, body);
      t.equal(r.status, 400, `${JSON.stringify(body)} refused`);
      t.match(String(r.body.message), field, `the message names ${field}`);
    }
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    t.equal((await api(s.url, "PUT", "/api/workflows/w1", deep)).status, 400, "deep JSON is refused");
    t.ok(await healthy(s));
  });

  t.test("a workflow as NodeTool exports it, with null for empty fields, is saved and read back", async (t) => {
    const exported = {
      name: "from NodeTool",
      description: null,
      tags: null,
      settings: null,
      thumbnail_url: null,
      run_mode: null,
      graph: helloGraph,
    };
    const r = await api(s.url, "PUT", "/api/workflows/exported", exported);
    t.equal(r.status, 200, `saved: ${JSON.stringify(r.body).slice(0, 200)}`);
    const back = (await api(s.url, "GET", "/api/workflows/exported")).body as Record<string, unknown>;
    t.equal(back.name, "from NodeTool");
    t.notOk("settings" in back && back.settings === null, "an empty field is left out, not stored as null");
    t.equal((await api(s.url, "PUT", "/api/workflows/exported", { ...exported, settings: 3 })).status, 400);
    // A workflow NodeTool never saved is exported with "id": "": POST gives it an id of its own.
    const fresh = await api(s.url, "POST", "/api/workflows", { ...exported, id: "" });
    t.equal(fresh.status, 200, `an empty id is "make one": ${JSON.stringify(fresh.body).slice(0, 200)}`);
    t.match(fresh.body.id, /^[\w-]{8,}$/, "the new workflow has an id");
    t.equal((await api(s.url, "GET", `/api/workflows/${String(fresh.body.id)}`)).status, 200);
    t.equal(
      (await api(s.url, "POST", "/api/workflows", { ...exported, id: "../x" })).status,
      400,
      "a bad id is still refused",
    );
    // POST creates: an id that exists is a conflict, never a silent overwrite (PUT replaces).
    const again = await api(s.url, "POST", "/api/workflows", { ...exported, id: "exported", name: "other" });
    t.match(again, { status: 409, body: { code: "GW_ERR_CONFLICT", message: /exists: PUT/ } }, "POST of an id taken");
    t.equal(((await api(s.url, "GET", "/api/workflows/exported")).body as { name: string }).name, "from NodeTool");
    const racing = await Promise.all(
      [1, 2, 3].map((n) => api(s.url, "POST", "/api/workflows", { ...exported, id: "raced", name: `r${n}` })),
    );
    t.same(racing.map((r) => r.status).sort(), [200, 409, 409], "three creates of one id at once: one lands");
  });

  t.test("a job without timeout_s gets the gateway's default (never past its maximum)", async (t) => {
    const r = await api(s.url, "POST", "/api/workflows/hello/run", {});
    t.equal(r.status, 202);
    const rec = await api(s.url, "GET", `/api/jobs/${String(r.body.job_id)}`);
    t.equal(rec.body.timeout_s, 600, "the default, cut to this gateway's maximum");
  });

  t.test("/openapi.json describes the routes with the schemas the gateway enforces", async (t) => {
    const r = await fetch(`${s.url}/openapi.json`);
    t.equal(r.status, 200);
    const doc = (await r.json()) as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, unknown> };
    };
    t.equal(doc.openapi, "3.1.0");
    t.ok(doc.paths["/api/workflows/{id}/run"], "the run route is there");
    t.match(doc.components.schemas.RunOptions, { type: "object", properties: { timeout_s: {} } });
  });

  t.test("WebSocket: a foreign Origin is refused before the upgrade; loopback and none are accepted", async (t) => {
    const wsUrl = s.url.replace(/^http/, "ws") + "/ws";
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(wsUrl, { origin: "https://evil.example" });
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("open", () => {
        ws.close();
        resolve(101);
      });
      ws.on("error", () => undefined);
    });
    t.equal(status, 403);
    const ok = await WsClient.open(s.url, "json", { wsOptions: { origin: "http://127.0.0.1:5173" } });
    t.equal((await ok.request("get_status", {})).type, "rpc_response", "a loopback origin is served");
    await ok.close();
  });

  t.test("WebSocket commands with wrong types are answered with PROTO_ERR_SHAPE and the socket stays", async (t) => {
    const c = await WsClient.open(s.url, "json");
    t.teardown(() => c.close());
    const bad: [string, Record<string, unknown>][] = [
      ["get_status", { job_id: { $gt: "" } }],
      ["cancel_job", { job_id: 42 }],
      ["reconnect_job", { job_id: "x", last_seq: "zero" }],
      ["stop", { job_id: ["a"] }],
      ["run_job", { workflow_id: "hello", params: "nope" }],
      ["run_job", { graph: { nodes: 5 } }],
      ["set_mode", { mode: "loud" }],
    ];
    for (const [command, data] of bad) {
      const r = await c.request(command, data);
      t.match(r.error, { code: "PROTO_ERR_SHAPE" }, `${command} ${JSON.stringify(data)} refused`);
    }
    c.sendRaw(JSON.stringify({ command: "rm -rf", data: {} }));
    c.sendRaw("{not json");
    const pong = await c.request("get_status", {});
    t.same(pong.result, { active_jobs: [] }, "the socket still answers");
  });

  t.test("one socket follows at most wsMaxFollowsPerSocket jobs", async (t) => {
    const c = await WsClient.open(s.url, "json");
    t.teardown(() => c.close());
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await api(s.url, "POST", "/api/workflows/hello/run", {});
      ids.push(String(r.body.job_id));
    }
    // Sent at once: the limit holds for commands in flight, not only for those already answered.
    for (const job_id of ids) c.send({ command: "reconnect_job", data: { job_id, last_seq: 0 } });
    const limited = () =>
      c.messages.filter(
        (m) => m.type === "rpc_response" && (m.error as { code?: string } | undefined)?.code === "GW_ERR_LIMIT",
      );
    const resumed = () => c.messages.filter((m) => m.type === "job_resumed");
    await check(() => limited().length + resumed().length === 5, 10_000, { name: "5 answers" });
    t.equal(limited().length, 2, "2 of 5 refused");
    t.equal(resumed().length, 3, "3 of 5 followed");
    t.ok(await healthy(s));
  });
});
