/**
 * HTTP nodes (`lib.http.*`, `lib.rss.FetchRSSFeed`, `lib.markdown.ExtractLinks`) against a local server, under the
 * agent's outbound policy: the server (on 127.0.0.2) is reachable only because `NODEWAY_HTTP_ALLOW` allows that
 * address; a redirect from it to 127.0.0.1, a loopback address not allowed, is refused, as is a body over
 * `NODEWAY_HTTP_MAX_BYTES` and a request past `NODEWAY_HTTP_TIMEOUT_MS`.
 */
import t from "tap";
import sharp from "sharp";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

const RSS = `<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>
<item><title>First &amp; foremost</title><link>https://example.com/1</link><pubDate>Tue, 01 Dec 2026 10:00:00 GMT</pubDate>
<description><![CDATA[<p>One</p>]]></description><author>ann@example.com</author></item>
<item><title>Second</title><link>https://example.com/2</link><description>Two</description></item>
</channel></rss>`;

/** A 3×2 PNG, made once. */
const PNG_3X2 = await sharp({ create: { width: 3, height: 2, channels: 3, background: "#08f" } })
  .png()
  .toBuffer();

async function listen(server: Server, host: string): Promise<string> {
  await new Promise<void>((r) => server.listen(0, host, r));
  return `http://${host}:${(server.address() as AddressInfo).port}`;
}

async function run(ws: WsClient, graph: unknown): Promise<Msg> {
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  return check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
}
const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");
const one = (type: string, data: Record<string, unknown>, handles = ["output"]) => ({
  nodes: [
    { id: "n", type, data },
    ...handles.map((h) => ({ id: `o_${h}`, type: "nodetool.output.Output", data: { name: h } })),
  ],
  edges: handles.map((h) => ({ id: h, source: "n", sourceHandle: h, target: `o_${h}`, targetHandle: "value" })),
});

t.test("http nodes - requests, redirects re-checked, limits, RSS and links", async (t) => {
  const loopback = createServer((_req, res) => res.end("secret on 127.0.0.1"));
  const loopUrl = await listen(loopback, "127.0.0.1");
  t.teardown(() => loopback.close());
  const seen: { method: string; path: string; body: string; auth?: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ method: req.method!, path: req.url!, body, auth: req.headers.authorization });
      if (req.url === "/hello") return res.end("héllo");
      if (req.url === "/echo") return res.end(`${req.method} ${body}`);
      if (req.url === "/hop") return res.writeHead(302, { location: "/hello" }).end();
      if (req.url === "/to-loopback") return res.writeHead(302, { location: `${loopUrl}/` }).end();
      if (req.url === "/big") return res.end("x".repeat(5000));
      if (req.url === "/slow") return void setTimeout(() => res.end("late"), 3000);
      if (req.url === "/feed") return res.writeHead(200, { "content-type": "application/rss+xml" }).end(RSS);
      if (req.url === "/pic.png") return res.writeHead(200, { "content-type": "image/png" }).end(PNG_3X2);
      res.writeHead(404).end("no");
    });
  });
  const url = await listen(server, "127.0.0.2");
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { NODEWAY_HTTP_ALLOW: "127.0.0.2", NODEWAY_HTTP_MAX_BYTES: "4096", NODEWAY_HTTP_TIMEOUT_MS: "1000" },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());

  const get = await run(ws, one("lib.http.GetRequest", { url: `${url}/hello`, auth: "Bearer t0k" }));
  t.equal(get.status, "completed", errorOf(get));
  t.same(get.result, { output: ["héllo"] }, "GET: the body as text");
  t.equal(seen.at(-1)!.auth, "Bearer t0k", "auth goes as the Authorization header");

  const post = await run(ws, one("lib.http.PostRequest", { url: `${url}/echo`, data: "a=1" }));
  t.same(post.result, { output: ["POST a=1"] }, "POST sends its data");

  const hop = await run(ws, one("lib.http.GetRequest", { url: `${url}/hop` }));
  t.same(hop.result, { output: ["héllo"] }, "a redirect to an allowed address is followed");

  const redirected = await run(ws, one("lib.http.GetRequest", { url: `${url}/to-loopback` }));
  t.equal(redirected.status, "failed", "a redirect to 127.0.0.1 is refused");
  t.match(errorOf(redirected), /127\.0\.0\.1 is a private, loopback or link-local address.*NODEWAY_HTTP_ALLOW/);

  const direct = await run(ws, one("lib.http.GetRequest", { url: `${loopUrl}/` }));
  t.equal(direct.status, "failed");
  t.match(errorOf(direct), /loopback/, "so is 127.0.0.1 asked for directly");
  const named = await run(ws, one("lib.http.GetRequest", { url: `http://localhost:${new URL(loopUrl).port}/` }));
  t.equal(named.status, "failed");
  t.match(errorOf(named), /localhost resolves to .* loopback/, "and a name resolving to it");
  const file = await run(ws, one("lib.http.GetRequest", { url: "file:///etc/passwd" }));
  t.match(errorOf(file), /only http and https/, "and other schemes");

  const big = await run(ws, one("lib.http.GetRequest", { url: `${url}/big` }));
  t.match(errorOf(big), /larger than 4096 bytes \(NODEWAY_HTTP_MAX_BYTES\)/, "a body over the cap fails");
  const slow = await run(ws, one("lib.http.GetRequest", { url: `${url}/slow` }));
  t.match(errorOf(slow), /longer than 1000 ms \(NODEWAY_HTTP_TIMEOUT_MS\)/, "a request past the time limit fails");

  // A media reference by URL (NodeTool's ImageRef with an http uri) is downloaded under the same policy.
  const meta = await run(
    ws,
    one("nodetool.image.GetMetadata", { image: { type: "image", uri: `${url}/pic.png` } }, ["width", "height"]),
  );
  t.equal(meta.status, "completed", errorOf(meta));
  t.same(meta.result, { width: [3], height: [2] }, "an image given by URL is downloaded and read");
  const privatePic = await run(
    ws,
    one("nodetool.image.GetMetadata", { image: { type: "image", uri: `${loopUrl}/pic.png` } }, ["width"]),
  );
  t.match(
    errorOf(privatePic),
    /127\.0\.0\.1 is a private, loopback or link-local address.*NODEWAY_HTTP_ALLOW/,
    "an image URL on a private address is refused",
  );

  const doc = await run(ws, one("lib.http.GetRequestDocument", { url: `${url}/hello` }));
  t.match((doc.result as { output: unknown[] }).output[0], { type: "document", uri: `${url}/hello` });

  const feed = await run(
    ws,
    one("lib.rss.FetchRSSFeed", { url: `${url}/feed` }, ["title", "link", "summary", "published"]),
  );
  t.equal(feed.status, "completed", errorOf(feed));
  t.same(
    feed.result,
    {
      title: ["First & foremost", "Second"],
      link: ["https://example.com/1", "https://example.com/2"],
      summary: ["<p>One</p>", "Two"],
      published: ["2026-12-01T10:00:00.000Z", (feed.result as { published: string[] }).published[1]],
    },
    "each entry's fields, in order",
  );

  const links = await run(
    ws,
    one("lib.markdown.ExtractLinks", { markdown: "See [the paper](https://a.example/p.pdf) and <https://b.example>." }),
  );
  t.same(links.result, {
    output: [
      [
        { url: "https://a.example/p.pdf", title: "the paper" },
        { url: "https://b.example", title: "" },
      ],
    ],
  });
});

t.test("http nodes - DownloadFiles holds at most 256 MiB of bodies at once", async (t) => {
  const BODY = Buffer.alloc(4 * 1024 * 1024, 7);
  let open = 0;
  let maxOpen = 0;
  let held: (() => void)[] = [];
  let release: NodeJS.Timeout | undefined;
  // Each answer waits until no request has come for 200 ms: requests made together are all open together.
  const server = createServer((req, res) => {
    open++;
    maxOpen = Math.max(maxOpen, open);
    res.on("close", () => open--);
    held.push(() => res.writeHead(200, { "content-type": "application/octet-stream" }).end(BODY));
    clearTimeout(release);
    release = setTimeout(() => {
      for (const answer of held) answer();
      held = [];
    }, 200);
    req.resume();
  });
  const url = await listen(server, "127.0.0.2");
  t.teardown(() => {
    clearTimeout(release);
    server.closeAllConnections();
    server.close();
  });
  // A per-file cap of 128 MiB: two downloads at once fill the 256 MiB.
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { NODEWAY_HTTP_ALLOW: "127.0.0.2", NODEWAY_HTTP_MAX_BYTES: String(128 * 1024 * 1024) },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const urls = Array.from({ length: 8 }, (_, i) => `${url}/file${i}.bin`);
  const end = await run(
    ws,
    one("lib.http.DownloadFiles", { urls, max_concurrent_downloads: 32 }, ["success", "failed"]),
  );
  t.equal(end.status, "completed", errorOf(end));
  const result = end.result as { success: string[][]; failed: string[][] };
  t.equal(result.success[0]?.length, 8, "every file is saved");
  t.same(result.failed, [[]]);
  t.equal(maxOpen, 2, "but only 2 of the 32 asked for were downloading at once (2 × 128 MiB)");
});
