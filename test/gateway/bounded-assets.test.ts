/**
 * Bounded memory per client and files served safely: a multipart upload streams into the object store (its bytes
 * land whole, whatever the part order), downloads of active content (HTML, SVG) come as sandboxed attachments,
 * and asset and job listings page through many records reading at most a bounded number per call.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { encodeJson, jobKeys, newId, type JobRecord } from "../../protocol/index.js";
import { compileGatewayConfig } from "../../gateway/index.js";
import { connectNats } from "../../gateway/nats.js";
import { AssetsApi } from "../../gateway/assets.js";
import { JobManager } from "../../gateway/jobs.js";
import type { Reply, Req } from "../../gateway/http.js";
import { startStack } from "../helpers/stack.js";
import { NatsServer } from "../helpers/nats-server.js";

const pattern = (n: number, seed = 1) =>
  Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed + (i >> 11)) & 0xff));
const digestOf = (b: Buffer) => `SHA-256=${createHash("sha256").update(b).digest("base64url")}=`;

t.test(
  "bounded assets - a multipart upload of many chunks streams into the store whole, json part before or after",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const bytes = pattern(1_500_000, 7); // ~12 object-store chunks of 128 KiB
    for (const order of ["json first", "json last"]) {
      const form = new FormData();
      const json = JSON.stringify({ name: `big ${order}.bin`, workflow_id: "wf9", content_type: "image/png" });
      if (order === "json first") form.append("json", json);
      form.append("file", new Blob([bytes], { type: "application/octet-stream" }), "f.bin");
      if (order === "json last") form.append("json", json);
      const r = await fetch(`${s.url}/api/assets`, { method: "POST", body: form });
      t.equal(r.status, 201, order);
      const a = (await r.json()) as Record<string, unknown>;
      t.match(
        a,
        {
          name: `big ${order}.bin`,
          content_type: "image/png",
          workflow_id: "wf9",
          size: bytes.length,
          digest: digestOf(bytes),
        },
        `${order}: stored as sent`,
      );
      const got = Buffer.from(await (await fetch(s.url + String(a.get_url))).arrayBuffer());
      t.ok(got.equals(bytes), `${order}: the same ${bytes.length} bytes come back`);
    }
    const tiny = new FormData();
    tiny.append("other", "ignored");
    tiny.append("file", new Blob([Buffer.from("--\r\n--x\r\n")], { type: "text/plain" }), "edge.txt");
    const e = await fetch(`${s.url}/api/assets`, { method: "POST", body: tiny });
    const ea = (await e.json()) as Record<string, unknown>;
    t.match(ea, { name: "edge.txt", size: 9 }, "bytes that look like a boundary stay in the file");
    const truncated = await fetch(`${s.url}/api/assets`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=zz" },
      body: '--zz\r\ncontent-disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
    });
    t.equal(truncated.status, 400, "a form cut before its closing boundary is refused");
    const b71 = "b".repeat(71);
    const longBoundary = await fetch(`${s.url}/api/assets`, {
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${b71}` },
      body: `--${b71}\r\ncontent-disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n--${b71}--\r\n`,
    });
    t.equal(longBoundary.status, 400, "a boundary over RFC 2046's 70 characters is refused");
    t.match(
      ((await longBoundary.json()) as { message: string }).message,
      "the multipart boundary is 71 characters; RFC 2046 allows at most 70",
      "saying so (it was cut to 70 and the form read as never closed)",
    );
    const list = (await (await fetch(`${s.url}/api/assets`)).json()) as { assets: unknown[] };
    t.equal(list.assets.length, 3, "and leaves nothing stored");
  },
);

t.test("bounded assets - HTML and SVG are served as sandboxed attachments, a PNG inline", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const up = async (type: string, body: string) => {
    const r = await fetch(`${s.url}/api/assets?name=x`, { method: "POST", headers: { "content-type": type }, body });
    return String(((await r.json()) as { id: string }).id);
  };
  const cases: [string, string, boolean][] = [
    ["text/html", "<script>alert(1)</script>", false],
    ["image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', false],
    ["text/html; charset=utf-8", "<b>x</b>", false],
    ["image/png", "\x89PNG fake", true],
    ["text/plain", "hello", true],
  ];
  for (const [type, body, inline] of cases) {
    const id = await up(type, body);
    for (const method of ["GET", "HEAD"]) {
      const r = await fetch(`${s.url}/api/assets/${id}/content`, { method });
      t.match(
        r.headers.get("content-disposition"),
        inline ? /^inline;/ : /^attachment;/,
        `${method} ${type}: ${inline ? "inline" : "attachment"}`,
      );
      t.equal(r.headers.get("content-security-policy"), "sandbox", `${method} ${type}: CSP sandbox`);
      t.equal(r.headers.get("x-content-type-options"), "nosniff", `${method} ${type}: nosniff`);
      await r.arrayBuffer();
    }
  }
});

t.test(
  "bounded lists - filtered asset and job listings page through many records, reading a bounded number per call",
  async (t) => {
    const ns = await NatsServer.start();
    t.teardown(() => ns.stop());
    const n = await connectNats(compileGatewayConfig({ natsUrl: ns.url }), () => undefined);
    t.teardown(() => n.nc.close());
    const SCAN = 10;

    // Assets: 60, every third of workflow "w3".
    const w3: string[] = [];
    for (let i = 0; i < 60; i++) {
      const id = newId();
      const metadata: Record<string, string> = {
        name: `a${i}`,
        content_type: "text/plain",
        created_at: new Date().toISOString(),
      };
      if (i % 3 === 0) {
        metadata.workflow_id = "w3";
        w3.push(id);
      }
      await n.assets.putBlob({ name: id, metadata }, Buffer.from(`asset ${i}`));
    }
    let infoReads = 0;
    const os = new Proxy(n.assets, {
      get(target, p, recv) {
        const v = Reflect.get(target, p, recv) as unknown;
        if (p === "info" && typeof v === "function")
          return (...args: unknown[]) => (infoReads++, (v as (...a: unknown[]) => unknown).apply(target, args));
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const api = new AssetsApi(n.js, os, 1 << 20, null, SCAN);
    const listAssets = async (q: string) => {
      let body: { assets: { id: string }[]; next: string | null } | null = null;
      const reply = { json: (_s: number, b: unknown) => void (body = b as typeof body) } as unknown as Reply;
      await api.list({ query: new URLSearchParams(q) } as unknown as Req, reply, 4);
      return body!;
    };
    const seen: string[] = [];
    let cursor = "";
    for (let calls = 0; calls < 20; calls++) {
      infoReads = 0;
      const page = await listAssets(`workflow_id=w3${cursor ? `&cursor=${cursor}` : ""}`);
      t.ok(infoReads <= SCAN, `assets call ${calls}: read ${infoReads} objects`);
      seen.push(...page.assets.map((a) => a.id));
      if (page.next === null) break;
      cursor = page.next;
    }
    t.same(seen, [...w3].sort().reverse(), "every w3 asset once, newest first, across pages");

    // Jobs: 60 records, every fourth completed.
    const done: string[] = [];
    for (let i = 0; i < 60; i++) {
      const id = newId();
      const status = i % 4 === 0 ? "completed" : "queued";
      if (status === "completed") done.push(id);
      const rec = {
        v: 1,
        id,
        workflow_id: "wf",
        status,
        pool: "cpu",
        attempt: 0,
        agent_id: null,
        params: {},
        created_at: new Date().toISOString(),
        started_at: null,
        finished_at: null,
        timeout_s: null,
        error: null,
        outputs: null,
        idempotency_key: null,
      } as unknown as JobRecord;
      await n.jobsKv.put(jobKeys.record(id), encodeJson(rec));
    }
    let gets = 0;
    const jobsKv = n.jobsKv;
    const counted = {
      ...n,
      jobsKv: new Proxy(jobsKv, {
        get: (target, p) =>
          p === "get" ? (k: string) => (gets++, target.get(k)) : (Reflect.get(target, p) as unknown),
      }),
    };
    const jobs = new JobManager(counted, {
      idempotencyOrphanMs: 30_000,
      jobTimeoutDefaultS: 3600,
      jobTimeoutMaxS: 86_400,
      listScanMaxRecords: SCAN,
    });
    await jobs.start(() => undefined);
    t.teardown(() => jobs.stop());
    const listed: string[] = [];
    let jc: string | undefined;
    for (let calls = 0; calls < 20; calls++) {
      gets = 0;
      const page = await jobs.list({ status: "completed", limit: 3, ...(jc ? { cursor: jc } : {}) });
      t.ok(gets <= SCAN, `jobs call ${calls}: read ${gets} records`);
      t.ok(
        page.jobs.every((j) => j.status === "completed"),
        "only the status asked for",
      );
      listed.push(...page.jobs.map((j) => j.id));
      if (page.next === null) break;
      jc = page.next;
    }
    t.same(listed, [...done].sort().reverse(), "every completed job once, newest first, across pages");
  },
);
