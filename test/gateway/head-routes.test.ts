/**
 * HEAD works wherever GET does (RFC 9110 §9.3.2): the status and headers the GET would get, its length, no body.
 * Monitors and `curl -I` probe with HEAD; every GET route answered 405 to it but `/health` and asset content.
 */
import { readFile } from "node:fs/promises";
import t from "tap";
import { api } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

const TOKEN = "head-routes-token-0123456789abcdef";
const auth = { authorization: `Bearer ${TOKEN}` };

async function both(url: string, path: string, headers: Record<string, string> = auth) {
  const get = await fetch(url + path, { headers });
  const getBody = Buffer.from(await get.arrayBuffer());
  const head = await fetch(url + path, { method: "HEAD", headers });
  const headBody = await head.text();
  return { get, getBody, head, headBody };
}

t.test("head - every GET route answers HEAD with the GET's status, type and length and no body", async (t) => {
  const s = await startStack(t, { agents: 0, gateway: { apiTokens: [TOKEN] } as never });
  const put = await fetch(`${s.url}/api/workflows/w`, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ graph: { nodes: [], edges: [] } }),
  });
  t.equal(put.status, 200, "a workflow to read");
  const paths = [
    "/",
    "/openapi.json",
    "/metrics",
    "/api/workflows",
    "/api/workflows/",
    "/api/workflows/w",
    "/api/jobs",
    "/api/jobs?status=queued",
    "/api/agents",
    "/api/assets",
    "/api/threads",
    "/v1/models",
    "/api/workflows/nope",
    "/api/jobs/01jdq7zk3m8x4v5n6p7q8r9s0v",
    "/api/jobs?limit=0",
    "/no/such/route",
  ];
  for (const path of paths) {
    const { get, getBody, head, headBody } = await both(s.url, path);
    t.equal(head.status, get.status, `HEAD ${path}: the GET's status (${get.status})`);
    t.equal(headBody, "", `HEAD ${path}: no body`);
    t.equal(head.headers.get("content-type"), get.headers.get("content-type"), `HEAD ${path}: the GET's type`);
    // /metrics moves between the two requests (request counters); a 404 names the method it was asked with.
    if (path !== "/metrics" && path !== "/no/such/route") {
      const getLength = Number(get.headers.get("content-length") ?? getBody.byteLength);
      t.equal(Number(head.headers.get("content-length")), getLength, `HEAD ${path}: the GET's length`);
    }
  }
  const refused = await both(s.url, "/api/jobs", {});
  t.equal(refused.head.status, 401, "HEAD without the token is refused like the GET");
  t.equal(refused.headBody, "");
  t.equal((await fetch(`${s.url}/api/jobs/x/cancel`, { method: "HEAD", headers: auth })).status, 404);
});

t.test("head - HEAD on a job's event stream answers at once and holds no follow", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const graph = JSON.parse(await readFile(new URL("../../examples/hello-world.json", import.meta.url), "utf8")).graph;
  await api(s.url, "PUT", "/api/workflows/hello", { graph });
  const run = await api(s.url, "POST", "/api/workflows/hello/run", {});
  t.equal(run.status, 202, "a job that stays queued (no agent)");
  const jobId = (run.body as { job_id: string }).job_id;
  for (const accept of ["application/x-ndjson", "text/event-stream"]) {
    const head = await fetch(`${s.url}/api/jobs/${jobId}/events`, { method: "HEAD", headers: { accept } });
    t.equal(head.status, 200, `HEAD events (${accept}): 200`);
    t.equal(await head.text(), "", "no body, and the answer ends (the job is still queued)");
    t.match(head.headers.get("content-type"), accept === "text/event-stream" ? /event-stream/ : /ndjson/);
  }
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  t.match(metrics, /^nodeway_hub_listeners 0$/m, "no listener is left in the hub");
});
