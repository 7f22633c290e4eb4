/**
 * The assets API over a real gateway and nats-server: files go into `nw_assets` (streamed, or from NodeTool's
 * multipart form), are listed, described, downloaded with their digest as ETag and deleted; uploads that are too
 * large, empty or malformed are refused with a clear error and leave nothing stored (not even chunks).
 */
import t from "tap";
import { createHash } from "node:crypto";
import { request } from "node:http";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { api } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

const pattern = (n: number, seed = 1) =>
  Buffer.from(Array.from({ length: n }, (_, i) => (i * 13 + seed + (i >> 9)) & 0xff));
const digestOf = (b: Buffer) => `SHA-256=${createHash("sha256").update(b).digest("base64url")}=`;

async function upload(
  base: string,
  body: Buffer,
  contentType: string,
  query = "",
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${base}/api/assets${query}`, {
    method: "POST",
    headers: { "content-type": contentType },
    body: new Uint8Array(body),
  });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** Messages in the bucket's stream: chunks and metadata entries. */
async function storedMessages(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  try {
    return (await (await jetstreamManager(nc)).streams.info("OBJ_nw_assets")).state.messages;
  } finally {
    await nc.close();
  }
}

t.test(
  "assets - an upload is stored, listed, described, downloaded with its digest as ETag, and deleted",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const bytes = pattern(300_000);
    const up = await upload(
      s.url,
      bytes,
      "image/png",
      "?name=" + encodeURIComponent("chat é.png") + "&workflow_id=wf1",
    );
    t.equal(up.status, 201);
    const a = up.body;
    t.match(a, {
      name: "chat é.png",
      content_type: "image/png",
      size: 300_000,
      digest: digestOf(bytes),
      workflow_id: "wf1",
      job_id: null,
    });
    t.match(String(a.id), /^[0-9a-z]{26}$/, "a time-ordered id");
    t.equal(a.uri, `asset://${String(a.id)}`);
    t.equal(a.get_url, `/api/assets/${String(a.id)}/content`);

    t.same((await api(s.url, "GET", `/api/assets/${String(a.id)}`)).body, a, "described as it was stored");
    const got = await fetch(s.url + String(a.get_url));
    t.equal(got.status, 200);
    t.equal(got.headers.get("content-type"), "image/png");
    t.equal(got.headers.get("content-length"), "300000");
    t.equal(got.headers.get("etag"), `"${digestOf(bytes)}"`);
    t.match(
      got.headers.get("content-disposition"),
      /filename\*=UTF-8''chat%20%C3%A9\.png/,
      "the name survives, encoded",
    );
    t.ok(Buffer.from(await got.arrayBuffer()).equals(bytes), "the same bytes come back");
    const cached = await fetch(s.url + String(a.get_url), { headers: { "if-none-match": `"${digestOf(bytes)}"` } });
    t.equal(cached.status, 304, "a matching If-None-Match gets 304");
    t.equal((await cached.arrayBuffer()).byteLength, 0, "without a body");
    // As caches and CDNs send it: weak, in a list, or `*`; a tag of other bytes does not match.
    const tag = `"${digestOf(bytes)}"`;
    for (const field of [`W/${tag}`, `"nope", ${tag}`, "*", `"a",W/${tag} `]) {
      const r = await fetch(s.url + String(a.get_url), { headers: { "if-none-match": field } });
      t.equal(r.status, 304, `If-None-Match: ${field.slice(0, 24)}…: 304`);
      await r.arrayBuffer();
    }
    const stale = await fetch(s.url + String(a.get_url), { headers: { "if-none-match": '"nope", W/"old"' } });
    t.equal(stale.status, 200, "other tags: the bytes");
    await stale.arrayBuffer();

    const other = await upload(s.url, pattern(10, 2), "text/plain");
    t.equal(other.status, 201);
    t.equal(other.body.name, other.body.id, "no name given: the id");
    const all = await api(s.url, "GET", "/api/assets");
    t.same(
      (all.body.assets as { id: string }[]).map((x) => x.id),
      [other.body.id, a.id],
      "listed newest first",
    );
    t.same(
      ((await api(s.url, "GET", "/api/assets/?content_type=image/")).body.assets as { id: string }[]).map((x) => x.id),
      [a.id],
      "filtered by content type prefix",
    );
    t.same(
      ((await api(s.url, "GET", "/api/assets?workflow_id=wf1")).body.assets as { id: string }[]).map((x) => x.id),
      [a.id],
      "and by workflow",
    );
    const page1 = await api(s.url, "GET", "/api/assets?limit=1");
    t.same(
      [(page1.body.assets as { id: string }[]).map((x) => x.id), page1.body.next],
      [[other.body.id], other.body.id],
      "a page and its cursor",
    );
    const page2 = await api(s.url, "GET", `/api/assets?limit=1&cursor=${String(page1.body.next)}`);
    t.same(
      [(page2.body.assets as { id: string }[]).map((x) => x.id), page2.body.next],
      [[a.id], null],
      "the last page",
    );

    const del = await fetch(`${s.url}/api/assets/${String(a.id)}`, { method: "DELETE" });
    t.equal(del.status, 204);
    t.equal((await api(s.url, "GET", `/api/assets/${String(a.id)}`)).status, 404, "gone");
    t.equal((await fetch(s.url + String(a.get_url))).status, 404, "its content too");
    t.equal(
      (await fetch(`${s.url}/api/assets/${String(a.id)}`, { method: "DELETE" })).status,
      404,
      "a second delete: 404",
    );
    t.same(
      ((await api(s.url, "GET", "/api/assets")).body.assets as { id: string }[]).map((x) => x.id),
      [other.body.id],
    );
  },
);

t.test("assets - NodeTool's multipart form: the file part, with name and workflow from the json part", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const bytes = pattern(200_000, 3);
  const form = new FormData();
  form.append("json", JSON.stringify({ name: "take 1.wav", workflow_id: "wf2" }));
  form.append("file", new Blob([bytes], { type: "audio/wav" }), "ignored.wav");
  const r = await fetch(`${s.url}/api/assets/`, { method: "POST", body: form });
  t.equal(r.status, 201);
  const a = (await r.json()) as Record<string, unknown>;
  t.match(a, {
    name: "take 1.wav",
    content_type: "audio/wav",
    size: 200_000,
    workflow_id: "wf2",
    digest: digestOf(bytes),
  });
  t.ok(Buffer.from(await (await fetch(s.url + String(a.get_url))).arrayBuffer()).equals(bytes), "downloaded whole");

  const plain = new FormData();
  plain.append("file", new Blob([pattern(5)], { type: "image/jpeg" }), "p.jpg");
  const p = await fetch(`${s.url}/api/assets`, { method: "POST", body: plain });
  t.match(
    await p.json(),
    { name: "p.jpg", content_type: "image/jpeg", size: 5 },
    "without a json part: the file's own name and type",
  );

  const noFile = new FormData();
  noFile.append("json", "{}");
  const nf = await fetch(`${s.url}/api/assets`, { method: "POST", body: noFile });
  t.equal(nf.status, 400);
  t.match(await nf.json(), { code: "GW_ERR_BAD_REQUEST", message: /needs a "file" part/ });
  const badJson = new FormData();
  badJson.append("json", "{nope");
  badJson.append("file", new Blob([pattern(5)]), "f");
  const bj = await fetch(`${s.url}/api/assets`, { method: "POST", body: badJson });
  t.equal(bj.status, 400);
  t.match(await bj.json(), { message: /the "json" part must be a JSON object/ });
  t.equal(
    ((await api(s.url, "GET", "/api/assets")).body.assets as unknown[]).length,
    2,
    "the refused forms stored nothing",
  );
});

t.test("assets - one byte range of an asset (a video player's, a resumed download's) is served 206", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const bytes = pattern(300_000, 7);
  const up = await upload(s.url, bytes, "video/mp4", "?name=clip.mp4");
  const url = s.url + String(up.body.get_url);
  const etag = `"${digestOf(bytes)}"`;
  const get = async (headers: Record<string, string>) => {
    const r = await fetch(url, { headers });
    return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
  };
  const cases: [string, number, number][] = [
    ["bytes=0-10", 0, 10],
    ["bytes=131000-131100", 131_000, 131_100], // across the store's 128 KiB chunks
    ["bytes=299990-", 299_990, 299_999],
    ["bytes=-5", 299_995, 299_999],
    ["bytes=299000-999999", 299_000, 299_999],
    ["bytes=0-0", 0, 0],
  ];
  for (const [field, start, end] of cases) {
    const r = await get({ range: field });
    t.equal(r.status, 206, `${field}: 206`);
    t.equal(r.headers.get("content-range"), `bytes ${start}-${end}/300000`, `${field}: its Content-Range`);
    t.equal(r.headers.get("content-length"), String(end - start + 1), `${field}: its length`);
    t.ok(r.body.equals(bytes.subarray(start, end + 1)), `${field}: those bytes`);
  }
  const past = await get({ range: "bytes=300000-" });
  t.equal(past.status, 416, "a range past the end: 416");
  t.equal(past.headers.get("content-range"), "bytes */300000", "naming the size");
  for (const whole of ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-3"]) {
    const r = await get({ range: whole });
    t.equal(r.status, 200, `${whole}: the whole body`);
    t.ok(r.body.equals(bytes), `${whole}: every byte`);
  }
  t.equal((await get({ range: "bytes=0-9", "if-range": etag })).status, 206, "If-Range with its tag: the range");
  t.equal((await get({ range: "bytes=0-9", "if-range": '"old"' })).status, 200, "If-Range with another: the whole");
  const head = await fetch(url, { method: "HEAD" });
  t.equal(head.headers.get("accept-ranges"), "bytes", "HEAD says ranges are served");
});

t.test("assets - a compressed request body is refused 415, never stored or parsed as sent", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const { gzipSync } = await import("node:zlib");
  const json = gzipSync(Buffer.from(JSON.stringify({ graph: { nodes: [], edges: [] } })));
  for (const [method, path, body, type, enc] of [
    ["PUT", "/api/workflows/gz", json, "application/json", "gzip"],
    ["PUT", "/api/workflows/br", Buffer.from('{"graph":{"nodes":[],"edges":[]}}'), "application/json", "br"],
    ["POST", "/api/assets?name=a.txt", gzipSync(Buffer.from("hello")), "text/plain", "gzip"],
    ["POST", "/api/assets?name=b.bin", gzipSync(Buffer.alloc(4 << 20)), "application/octet-stream", "GZIP"],
  ] as const) {
    const r = await fetch(`${s.url}${path}`, {
      method,
      headers: { "content-type": type, "content-encoding": enc },
      body: new Uint8Array(body),
    });
    const answer = (await r.json()) as Record<string, unknown>;
    t.equal(r.status, 415, `${method} ${path} with Content-Encoding ${enc}: 415`);
    t.match(answer, { code: "GW_ERR_UNSUPPORTED_MEDIA", message: /Content-Encoding ".+" is not supported/ });
  }
  t.equal((await api(s.url, "GET", "/api/workflows/gz")).status, 404, "no workflow stored");
  t.same((await api(s.url, "GET", "/api/assets")).body.assets, [], "no asset stored");
  const plain = await fetch(`${s.url}/api/assets?name=c.txt`, {
    method: "POST",
    headers: { "content-type": "text/plain", "content-encoding": "identity" },
    body: "hello",
  });
  t.equal(plain.status, 201, "identity is no encoding: stored");
});

t.test("assets - uploads too large, empty or malformed are refused, and leave no chunk behind", async (t) => {
  const s = await startStack(t, { agents: 0, gateway: { maxAssetBytes: 300_000 } });
  const before = await storedMessages(s.ns.url);

  const declared = await upload(s.url, pattern(400_000), "application/octet-stream");
  t.equal(declared.status, 413, "a Content-Length over the limit: 413 before reading");
  t.match(declared.body, { code: "GW_ERR_BODY_TOO_LARGE", message: /exceeds 300000/ });

  // Chunked, no length: refused once the stream passes the limit, with the chunks stored so far (two of the
  // object store's 128 KiB) purged.
  const port = new URL(s.url).port;
  const streamed = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/api/assets",
        headers: { "content-type": "image/png", "transfer-encoding": "chunked" },
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("error", () => undefined); // the gateway may close while we still send
    const chunk = pattern(32 * 1024);
    let sent = 0;
    const more = () => {
      while (sent < 800_000) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once("drain", more);
      }
      req.end();
    };
    more();
  });
  t.equal(streamed.status, 413, "a streamed body past the limit: 413");
  t.match(JSON.parse(streamed.body), { code: "GW_ERR_BODY_TOO_LARGE", message: /upload exceeds 300000 bytes/ });

  const empty = await upload(s.url, Buffer.alloc(0), "image/png");
  t.equal(empty.status, 400);
  t.match(empty.body, { message: /empty upload/ });
  const badType = await upload(s.url, pattern(10), "not a type");
  t.equal(badType.status, 400);
  t.match(badType.body, { message: /Content-Type must be a media type/ });
  const badName = await upload(s.url, pattern(10), "text/plain", "?name=" + encodeURIComponent("a\nb"));
  t.equal(badName.status, 400, "a name with a control character");
  const badWf = await upload(s.url, pattern(10), "text/plain", "?workflow_id=" + encodeURIComponent("a b"));
  t.equal(badWf.status, 400, "a workflow id that is no id");

  t.equal((await api(s.url, "GET", "/api/assets/nope")).status, 404, "an id of the wrong shape: 404");
  t.equal(
    (await api(s.url, "GET", "/api/assets/01m8t9vvrm4fp8kmj0fkgnar4h/content")).status,
    404,
    "an unknown id: 404",
  );
  t.equal((await api(s.url, "GET", "/api/assets?limit=100000")).status, 400, "a limit out of range: 400");
  t.same((await api(s.url, "GET", "/api/assets")).body.assets, [], "nothing listed");
  await check(async () => (await storedMessages(s.ns.url)) === before, 10_000, {
    name: "no chunk of a refused upload left in the bucket",
  });

  const ok = await upload(s.url, pattern(300_000), "image/png");
  t.equal(ok.status, 201, "an upload at the limit is taken");
});

t.test(
  "assets - a large upload streams through, and a client that leaves a download mid-way costs nothing",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const bytes = pattern(24 * 1024 * 1024, 5);
    const up = await upload(s.url, bytes, "video/mp4");
    t.equal(up.status, 201);
    t.equal(up.body.digest, digestOf(bytes), "24 MiB stored whole");

    // Read 1 MiB of it over a socket, then go away.
    const port = new URL(s.url).port;
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: String(up.body.get_url) }, (res) => {
        let got = 0;
        res.on("data", (d: Buffer) => {
          got += d.length;
          if (got >= 1024 * 1024) {
            res.destroy();
            resolve();
          }
        });
        res.on("error", () => undefined);
      });
      req.on("error", reject);
      req.end();
    });
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await check(
      async () => {
        for await (const c of jsm.consumers.list("OBJ_nw_assets")) if (c) return null;
        return true;
      },
      10_000,
      { name: "the abandoned download's reader removed" },
    );
    t.pass("the abandoned download's reader is gone from the server");
    const whole = await fetch(s.url + String(up.body.get_url));
    t.ok(Buffer.from(await whole.arrayBuffer()).equals(bytes), "the next download is whole");
    t.equal((await api(s.url, "GET", "/health")).status, 200, "and the gateway is well");
  },
);

t.test(
  "assets - a client that stops reading a download holds a few chunks of it in the gateway, not the whole asset",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const bytes = pattern(24 * 1024 * 1024, 7);
    const up = await upload(s.url, bytes, "video/mp4");
    t.equal(up.status, 201);
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info("OBJ_nw_assets");
    const chunks = info.state.messages - 1; // one meta entry
    t.ok(chunks >= 150, `the asset is ${chunks} chunks in the store`);

    // Read the first bytes, then stop reading (the socket paused, its buffers fill).
    const port = new URL(s.url).port;
    let received = 0;
    const res = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: String(up.body.get_url) }, resolve);
      req.on("error", reject);
      req.end();
    });
    t.teardown(() => res.destroy());
    let paused = false;
    res.on("data", (d: Buffer) => {
      received += d.length;
      if (!paused && received >= 256 * 1024) {
        paused = true;
        res.pause();
      }
    });
    /** Chunks the gateway's readers have taken from the store for this download, as the server counts them. */
    const taken = async () => {
      let n = 0;
      for await (const c of jsm.consumers.list("OBJ_nw_assets")) n += c.delivered.consumer_seq;
      return n;
    };
    // Settled: the count stays the same across half a second.
    let last = -1;
    const settled = await check(
      async () => {
        const now = await taken();
        const same = now === last;
        last = now;
        if (!same) await new Promise((r) => setTimeout(r, 500));
        return same ? now : null;
      },
      30_000,
      { name: "the download's reads settle", intervalMs: 0 },
    );
    t.ok(
      settled < chunks / 2,
      `a paused download took ${settled} of ${chunks} chunks from the store (the socket's buffers hold the rest of what was sent)`,
    );
    res.resume();
    const rest = await new Promise<number>((resolve) => {
      res.on("end", () => resolve(received));
    });
    t.equal(rest, bytes.length, "once the client reads again, the whole asset arrives");
    await check(
      async () => {
        for await (const c of jsm.consumers.list("OBJ_nw_assets")) if (c) return null;
        return true;
      },
      10_000,
      { name: "the download's consumer removed" },
    );
    t.pass("and its reader left nothing on the server");
  },
);

t.test("assets - bytes that do not match the asset's digest are never served as a whole body", async (t) => {
  const s = await startStack(t, { agents: 0 });
  const bytes = pattern(400_000, 3);
  const up = await upload(s.url, bytes, "application/octet-stream");
  const nc = await connect({ servers: s.ns.url });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  // Rewrite the object's metadata with the digest of other bytes (a store damaged behind the gateway's back).
  // The store names an object's metadata by its name in padded base64url.
  const b64 = Buffer.from(String(up.body.id)).toString("base64url");
  const subject = `$O.nw_assets.M.${b64}${"=".repeat((4 - (b64.length % 4)) % 4)}`;
  const meta = (await jsm.streams.getMessage("OBJ_nw_assets", { last_by_subj: subject }))!.json<
    Record<string, unknown>
  >();
  nc.publish(subject, JSON.stringify({ ...meta, digest: digestOf(pattern(400_000, 4)) }));
  await nc.flush();
  await check(
    async () => (await api(s.url, "GET", `/api/assets/${up.body.id}`)).body.digest === digestOf(pattern(400_000, 4)),
    10_000,
    { name: "the damaged metadata is read" },
  );
  const r = await fetch(s.url + String(up.body.get_url));
  t.equal(r.status, 200, "the download starts (the digest is checked as the bytes pass)");
  const body = await r.arrayBuffer().then(
    (b) => Buffer.from(b),
    (err: Error) => err,
  );
  t.ok(
    body instanceof Error,
    `and is cut short, not completed: ${body instanceof Error ? body.message : `${(body as Buffer).length} bytes`}`,
  );
});

t.test(
  "assets - HEAD on an asset's content answers its length, type and ETag without the bytes; refusals too have no body",
  async (t) => {
    const token = "assets-head-token-0123456789abcdef";
    const s = await startStack(t, { agents: 0, gateway: { apiTokens: [token] } as never });
    const auth = { authorization: `Bearer ${token}` };
    const bytes = pattern(300_000, 9);
    const r = await fetch(`${s.url}/api/assets?name=clip.bin`, {
      method: "POST",
      headers: { ...auth, "content-type": "video/mp4" },
      body: new Uint8Array(bytes),
    });
    const a = (await r.json()) as { id: string; get_url: string; digest: string };
    const head = await fetch(s.url + a.get_url, { method: "HEAD", headers: auth });
    t.equal(head.status, 200);
    t.equal(head.headers.get("content-length"), String(bytes.length), "the length a GET would send");
    t.equal(head.headers.get("content-type"), "video/mp4");
    t.equal(head.headers.get("etag"), `"${a.digest}"`);
    t.equal((await head.arrayBuffer()).byteLength, 0, "and no body");
    const again = await fetch(s.url + a.get_url, {
      method: "HEAD",
      headers: { ...auth, "if-none-match": `"${a.digest}"` },
    });
    t.equal(again.status, 304, "a matching If-None-Match: 304");
    t.equal(
      (await fetch(`${s.url}/api/assets/00000000000000000000000000/content`, { method: "HEAD", headers: auth })).status,
      404,
      "an unknown asset: 404",
    );
    const refused = await fetch(s.url + a.get_url, { method: "HEAD" });
    t.equal(refused.status, 401, "no token: 401");
    t.match(refused.headers.get("www-authenticate"), /^Bearer/);
    // A keep-alive connection after a HEAD stays in step: the next request on it is answered normally.
    const after = await fetch(s.url + a.get_url, { headers: auth });
    t.ok(Buffer.from(await after.arrayBuffer()).equals(bytes), "the GET after it gets the bytes");
  },
);

t.test(
  "assets - a media type that would split a response is refused; one stored before is served as bytes",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    for (const ct of [
      "text/html\r\n\r\n;<script>alert(document.domain)</script>",
      "text/html;\r\nset-cookie: a=b",
      "text/html\nx-injected: 1",
      "text/plain; charset=utf-8\u0000",
      "text/html; x=\u00e9",
    ]) {
      const form = new FormData();
      form.append("json", JSON.stringify({ name: "x.html", content_type: ct }));
      form.append("file", new Blob([pattern(5)]), "x.html");
      const r = await fetch(`${s.url}/api/assets`, { method: "POST", body: form });
      t.equal(r.status, 400, `refused: ${JSON.stringify(ct)}`);
      t.match(await r.json(), { code: "GW_ERR_BAD_REQUEST", message: /must be a media type/ });
    }
    const ok = new FormData();
    ok.append("json", JSON.stringify({ content_type: "text/plain; charset=utf-8" }));
    ok.append("file", new Blob([pattern(5)]), "a.txt");
    t.equal((await fetch(`${s.url}/api/assets`, { method: "POST", body: ok })).status, 201, "parameters still pass");
    // A name with a lone surrogate (JSON carries one as \ud800): stored, and its download still answers.
    const odd = new FormData();
    odd.append("json", '{"name": "a\\ud800b.txt"}');
    odd.append("file", new Blob([pattern(3)]), "x");
    const up = await fetch(`${s.url}/api/assets`, { method: "POST", body: odd });
    t.equal(up.status, 201, "a name with a lone surrogate is stored");
    const down = await fetch(`${s.url}/api/assets/${((await up.json()) as { id: string }).id}/content`);
    t.equal(down.status, 200, "and downloaded");
    t.match(down.headers.get("content-disposition"), /filename\*=UTF-8''a%EF%BF%BDb\.txt/, "named with U+FFFD");

    // An entry written before the check (or by anything else with access to the bucket): its type is not trusted.
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const store = await new Objm(nc).open("nw_assets");
    const id = "01jdq7zk3m8x4v5n6p7q8r9s0v";
    await store.putBlob({ name: id, metadata: { content_type: "text/html\r\n\r\n<script>1</script>" } }, pattern(7));
    const raw = await fetch(`${s.url}/api/assets/${id}/content`);
    t.equal(raw.status, 200);
    t.equal(raw.headers.get("content-type"), "application/octet-stream", "served as bytes");
    t.match(raw.headers.get("content-disposition"), /^attachment/, "as an attachment");
    t.equal(Buffer.from(await raw.arrayBuffer()).length, 7, "the body is the asset's, nothing injected");
  },
);
