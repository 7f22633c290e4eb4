/**
 * Listings of large items: job records, workflows and thread messages run to about 1 MB each. A page ends early
 * once it holds 8 MiB, and its `next` goes on from there, so following `next` still gives every item once. The
 * gateway must stay on NATS throughout (a page of a hundred 1 MB records read at once overran NATS's pending limit
 * for its connection, which NATS then dropped).
 */
import t from "tap";
import { api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

const PAGE_MAX_BYTES = 8 * 1024 * 1024;
const BIG = "x".repeat(900_000);

/** Every page of `path` (following `next`), with each page's size as sent. */
async function allPages(base: string, path: string, key: string): Promise<{ items: unknown[]; pageBytes: number[] }> {
  const items: unknown[] = [];
  const pageBytes: number[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 100; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const r = await fetch(`${base}${path}${cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ""}`);
    if (r.status !== 200) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    const text = await r.text();
    pageBytes.push(Buffer.byteLength(text));
    const body = JSON.parse(text) as Record<string, unknown>;
    items.push(...(body[key] as unknown[]));
    cursor = body.next as string | null;
    if (!cursor) break;
  }
  return { items, pageBytes };
}

t.test("list bytes - pages of large jobs and workflows end at 8 MiB and together hold every item once", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const graph = {
    nodes: [{ id: "name", type: "nodetool.input.StringInput", data: { name: "name", value: "" } }],
    edges: [],
  };
  const jobIds: string[] = [];
  for (let i = 0; i < 24; i++) {
    const r = await api(s.url, "PUT", `/api/workflows/big${String(i).padStart(2, "0")}`, {
      graph,
      settings: { blob: BIG },
    });
    t.equal(r.status, 200, `workflow ${i} saved`);
    const run = await api(s.url, "POST", `/api/workflows/big${String(i).padStart(2, "0")}/run`, {
      params: { name: BIG },
    });
    t.equal(run.status, 202, `job ${i} queued`);
    jobIds.push((run.body as { job_id: string }).job_id);
  }
  // The listing reads the gateway's view of the records, which follows the writes by a moment.
  await check(async () => {
    const first = (await api(s.url, "GET", "/api/jobs?limit=1")).body as { jobs: { id: string }[] };
    return first.jobs[0]?.id === jobIds.at(-1);
  });
  for (const [path, key, want] of [
    ["/api/jobs?limit=100", "jobs", jobIds.length],
    ["/api/jobs?status=queued&limit=100", "jobs", jobIds.length],
    ["/api/workflows?limit=100", "workflows", 24],
  ] as const) {
    const { items, pageBytes } = await allPages(s.url, path, key);
    const ids = items.map((x) => (x as { id: string }).id);
    t.equal(new Set(ids).size, ids.length, `${path}: no item twice`);
    t.ok(ids.length >= want, `${path}: every item (${ids.length})`);
    t.ok(pageBytes.length > 1, `${path}: more than one page (${pageBytes.length})`);
    t.ok(
      pageBytes.every((b) => b <= PAGE_MAX_BYTES + 1_100_000),
      `${path}: no page past 8 MiB and one item (${pageBytes.map((b) => (b / 1e6).toFixed(1)).join(", ")} MB)`,
    );
  }
  for (const id of jobIds) t.equal((await api(s.url, "GET", `/api/jobs/${id}`)).status, 200);
  t.equal((await api(s.url, "GET", "/health")).status, 200, "the gateway stayed on NATS");
});

t.test("list bytes - a thread's large messages page by bytes; one past NATS's message size is a 413", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const thread = (await api(s.url, "POST", "/api/threads", { title: "big" })).body as { id: string };
  const posted: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await api(s.url, "POST", "/api/messages", { thread_id: thread.id, role: "user", content: BIG });
    t.equal(r.status, 200, `message ${i} stored`);
    posted.push((r.body as { id: string }).id);
  }
  const { items, pageBytes } = await allPages(s.url, `/api/messages?thread_id=${thread.id}&limit=100`, "messages");
  t.same(
    items.map((m) => (m as { id: string }).id),
    posted,
    `every message once, in order, over ${pageBytes.length} pages`,
  );
  t.ok(pageBytes.length > 1 && pageBytes.every((b) => b <= PAGE_MAX_BYTES + 1_100_000), `pages: ${pageBytes}`);
  // 600,000 characters are under the character cap, but 1.8 MB of UTF-8.
  const wide = await api(s.url, "POST", "/api/messages", {
    thread_id: thread.id,
    role: "user",
    content: "€".repeat(600_000),
  });
  t.match(
    wide,
    { status: 413, body: { code: "GW_ERR_BODY_TOO_LARGE", message: /max_payload/ } },
    "multibyte past max_payload",
  );
  t.equal((await api(s.url, "GET", "/health")).status, 200);
});
