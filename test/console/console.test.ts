/**
 * The web console in a real browser (headless Chromium): served with a strict CSP and long-cached assets, small
 * on first load; workflows drawn as graphs; a streaming run watched live, reloaded mid-run and continued with
 * every token once; 1,000 tokens/s drawn while the page keeps drawing; cancel; an image uploaded into an image input;
 * jobs listed, filtered and replayed; the fleet shown and an agent drained. Screenshots go to a temp dir.
 */
import t from "tap";
import sharp from "sharp";
import type { Page } from "playwright-core";
import {
  ensureConsoleBuilt,
  firstLoadGzipBytes,
  launchBrowser,
  openPage,
  screenshotDir,
  shot,
  tokenText,
  until,
} from "../helpers/browser.js";
import { startStack } from "../helpers/stack.js";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { type AddressInfo, connect, createServer } from "node:net";

const FIRST_LOAD_MAX_BYTES = 200 * 1024;

/** A GET whose path goes on the wire exactly as given; the status line and body as text. */
function rawGet(base: string, path: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\n\r\n`);
    });
    let out = "";
    sock.on("data", (d) => (out += d.toString()));
    sock.on("end", () => resolve(out));
    sock.on("error", reject);
  });
}

async function call(base: string, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const parsed = (await r.json()) as Record<string, unknown>;
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(parsed)}`);
  return parsed;
}

/** Tokens at `rate`/s, `count` from an IntegerInput named "count" (the run form's field). */
const streamWorkflow = (name: string, count: number, rate: number) => ({
  name,
  description: "count tokens streamed as chunks",
  graph: {
    nodes: [
      { id: "count", type: "nodetool.input.IntegerInput", data: { name: "count", value: count } },
      { id: "tokens", type: "nodeway.test.Tokens", data: { rate } },
      { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
    ],
    edges: [
      { id: "e1", source: "count", sourceHandle: "output", target: "tokens", targetHandle: "count" },
      { id: "e2", source: "tokens", sourceHandle: "output", target: "out", targetHandle: "value" },
    ],
  },
});

const imageWorkflow = {
  name: "Echo image",
  graph: {
    nodes: [
      { id: "pic", type: "nodetool.input.ImageInput", data: { name: "picture" } },
      { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
    ],
    edges: [{ id: "e1", source: "pic", sourceHandle: "output", target: "out", targetHandle: "value" }],
  },
};

const streamText = (page: Page) => page.locator('pre[data-node="tokens"]').textContent();
const runStatus = (page: Page) => page.locator("section.run").getAttribute("data-status");

async function runFromForm(page: Page, base: string, workflowId: string): Promise<string> {
  await page.goto(`${base}/#/workflows/${workflowId}`);
  await page.locator(".react-flow__node").first().waitFor();
  await page.getByRole("button", { name: "Run" }).click();
  await page.waitForURL(/#\/jobs\//);
  return page.url().split("#/jobs/")[1]!;
}

t.test("console - the web console in headless Chromium against a real stack", async (t) => {
  ensureConsoleBuilt();
  const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "4"] });
  const base = s.url;
  await call(base, "PUT", "/api/workflows/stream", streamWorkflow("Streaming tokens", 300, 60));
  await call(base, "PUT", "/api/workflows/fast", streamWorkflow("1000 tokens per second", 4000, 1000));
  await call(base, "PUT", "/api/workflows/slow", streamWorkflow("Slow tokens", 5000, 20));
  await call(base, "PUT", "/api/workflows/image", imageWorkflow);
  const browser = await launchBrowser(t);
  t.comment(`screenshots in ${screenshotDir(t)}`);

  await t.test("serves index.html uncached and hashed assets immutable, with the CSP and precompressed", async (t) => {
    const r = await fetch(`${base}/`, { headers: { "accept-encoding": "br" } });
    t.equal(r.status, 200);
    t.equal(r.headers.get("cache-control"), "no-cache", "index.html is revalidated");
    const csp = r.headers.get("content-security-policy") ?? "";
    t.match(csp, /default-src 'self'/);
    t.match(csp, /script-src 'self'(;|$)/, "only same-origin scripts");
    const host = new URL(base).host;
    t.ok(csp.includes(`connect-src 'self' ws://${host} wss://${host};`), "sockets to its own host only");
    t.notMatch(csp, / wss?:( |;|$)/, "not to any host");
    t.equal(r.headers.get("x-content-type-options"), "nosniff");
    t.equal(r.headers.get("content-encoding"), "br", "brotli when accepted");
    const html = await r.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    t.ok(asset, "index.html names its hashed script");
    const a = await fetch(`${base}${asset}`, { headers: { "accept-encoding": "gzip" } });
    t.equal(a.status, 200);
    t.equal(a.headers.get("cache-control"), "public, max-age=31536000, immutable");
    t.equal(a.headers.get("content-encoding"), "gzip");
    t.match(a.headers.get("content-type") ?? "", /^text\/javascript/);
    const etag = r.headers.get("etag")!;
    const again = await fetch(`${base}/`, { headers: { "if-none-match": etag } });
    t.equal(again.status, 304, "a revalidation with the ETag is answered 304");
    // Sent as written (fetch would normalise the dots away).
    for (const p of [
      "/assets/..%2f..%2fpackage.json",
      "/assets/%2e%2e/%2e%2e/package.json",
      "/assets/../../package.json",
    ]) {
      const x = await rawGet(base, p);
      t.match(x, /^HTTP\/1\.1 40[04] /, `${p} is refused`);
      t.notMatch(x, /"name": "nodeway"/, `${p} does not leak a file`);
    }
  });

  await t.test("a script on the page cannot open a socket to another origin; the console's own connects", async (t) => {
    // Another socket server on loopback: reachable, so only the page's policy can stop the connection.
    const other = createServer((c) => c.destroy());
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
    t.teardown(() => other.close());
    const port = (other.address() as AddressInfo).port;
    const { page } = await openPage(browser);
    await page.goto(`${base}/#/jobs`);
    const tries = await page.evaluate(async (port) => {
      const attempt = (url: string) =>
        new Promise<string>((resolve) => {
          const blocked = (e: SecurityPolicyViolationEvent) => {
            if (e.blockedURI.startsWith(url.slice(0, url.lastIndexOf("/")))) resolve(`blocked ${e.violatedDirective}`);
          };
          document.addEventListener("securitypolicyviolation", blocked);
          try {
            const ws = new WebSocket(url);
            ws.onopen = () => resolve("open");
            ws.onerror = () => setTimeout(() => resolve("error"), 200);
          } catch (e) {
            resolve(`threw ${(e as Error).name}`);
          }
        });
      return {
        other: await attempt(`ws://127.0.0.1:${port}/ws`),
        own: await attempt(`${location.origin.replace(/^http/, "ws")}/ws`),
      };
    }, port);
    t.match(tries.other, /^blocked connect-src/, `another origin: ${tries.other}`);
    t.equal(tries.own, "open", "its own gateway's socket opens");
    await page.close();
  });

  await t.test("first load is under 200 KB gzip", async (t) => {
    const { bytes, urls } = await firstLoadGzipBytes(browser, `${base}/`);
    t.comment(`first load: ${(bytes / 1024).toFixed(1)} KB gzip over ${urls.length} responses\n  ${urls.join("\n  ")}`);
    t.ok(bytes < FIRST_LOAD_MAX_BYTES, `${bytes} B < ${FIRST_LOAD_MAX_BYTES} B`);
  });

  await t.test("workflows are listed and one opens as a graph with a run form", async (t) => {
    const { page, problems } = await openPage(browser);
    await page.goto(`${base}/`);
    await page.getByRole("link", { name: "Streaming tokens" }).waitFor();
    t.equal(await page.locator("tbody tr").count(), 4, "the four saved workflows are listed");
    await shot(t, page, "01-workflows");
    await page.getByRole("link", { name: "Streaming tokens" }).click();
    await page.locator(".react-flow__node").nth(2).waitFor();
    t.equal(await page.locator(".react-flow__node").count(), 3, "every node is drawn");
    t.equal(await page.locator(".react-flow__edge").count(), 2, "every edge is drawn");
    t.equal(await page.locator('input[name="count"]').inputValue(), "300", "the run form has the input's default");
    await shot(t, page, "02-workflow-graph");
    t.same(problems, [], "no console errors (a CSP violation would be one)");
    await page.close();
  });

  await t.test("a streaming run shows tokens live and a reload mid-run continues with every token once", async (t) => {
    const { page, problems } = await openPage(browser);
    const sent: string[] = [];
    page.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(String(f.payload))));
    const jobId = await runFromForm(page, base, "stream");
    await until("30 tokens on the page", async () => ((await streamText(page)) ?? "").includes("tok30 "));
    t.pass("tokens arrive while the job runs");
    t.equal(await runStatus(page), "running");
    await shot(t, page, "03-run-live");
    sent.length = 0;
    await page.reload();
    // The saved run may already show tok40 (a busy machine): wait for the resume itself, then for the live stream.
    await until("the page to resume the job", async () => sent.some((f) => f.includes('"reconnect_job"')));
    await until("the stream after the reload", async () => ((await streamText(page)) ?? "").includes("tok40 "));
    const resume = sent.map((f) => JSON.parse(f) as { command: string; data: { last_seq?: number } });
    const rc = resume.find((f) => f.command === "reconnect_job");
    t.ok(rc && (rc.data.last_seq ?? 0) > 0, `after the reload the page resumed from seq ${rc?.data.last_seq}, not 0`);
    await until("the run to complete", async () => (await runStatus(page)) === "completed", 30_000);
    t.equal(await streamText(page), tokenText(300), "every token exactly once, in order");
    await page.locator(".outputs .output").first().waitFor();
    await page.locator('.react-flow__node[data-id="tokens"] .n-completed').waitFor();
    t.pass("the graph shows the node done");
    const rec = await call(base, "GET", `/api/jobs/${jobId}`);
    t.equal(rec.status, "completed");
    await shot(t, page, "04-run-done");
    t.same(problems, []);
    await page.close();
  });

  await t.test("1,000 tokens/s are drawn while the page keeps drawing frames", async (t) => {
    const { page } = await openPage(browser);
    await page.goto(`${base}/#/workflows/fast`);
    await page.locator(".react-flow__node").first().waitFor();
    // Frame gaps on this document, idle first (the machine's own pace: tests share its cores), then streaming.
    await page.evaluate(() => {
      const w = window as unknown as { frameGaps: number[] };
      w.frameGaps = [];
      let last = performance.now();
      const tick = (now: number) => {
        w.frameGaps.push(now - last);
        last = now;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    const takeGaps = () =>
      page.evaluate(() => (window as unknown as { frameGaps: number[] }).frameGaps.splice(0).slice(1));
    await page.waitForTimeout(2_000); // the idle baseline is a duration, not a wait for something
    const idle = await takeGaps();
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForURL(/#\/jobs\//);
    await until("the stream to start", async () => ((await streamText(page)) ?? "").includes("tok10 "));
    await takeGaps();
    await until("the fast run to complete", async () => (await runStatus(page)) === "completed", 60_000);
    const busy = await takeGaps();
    t.equal(await streamText(page), tokenText(4000), "all 4,000 tokens, once each");
    const pct = (gaps: number[], p: number) => [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length * p)] ?? 0;
    const [idle50, idle95, busy50, busy95] = [pct(idle, 0.5), pct(idle, 0.95), pct(busy, 0.5), pct(busy, 0.95)];
    t.comment(
      `idle: ${idle.length} frames, p50 ${idle50.toFixed(1)} ms, p95 ${idle95.toFixed(1)} ms; streaming 1,000 ` +
        `tokens/s: ${busy.length} frames, p50 ${busy50.toFixed(1)} ms, p95 ${busy95.toFixed(1)} ms, max ` +
        `${Math.max(...busy).toFixed(1)} ms`,
    );
    // Frame pace is a speed figure (reported above, not asserted: the suite's cores are shared); what is asserted
    // is behaviour: the page kept drawing through the stream and never froze for a second.
    t.ok(busy.length >= 10, `the page drew ${busy.length} frames while 4,000 tokens streamed`);
    t.ok(Math.max(...busy) < 1_000, `no frame gap of a second or more (max ${Math.max(...busy).toFixed(1)} ms)`);
    await page.close();
  });

  await t.test("Cancel stops a running job", async (t) => {
    const { page } = await openPage(browser);
    const jobId = await runFromForm(page, base, "slow");
    await until("the slow run to stream", async () => ((await streamText(page)) ?? "").includes("tok3 "));
    await page.getByRole("button", { name: "Cancel" }).click();
    await until("the cancelled status", async () => (await runStatus(page)) === "cancelled", 20_000);
    const rec = await call(base, "GET", `/api/jobs/${jobId}`);
    t.equal(rec.status, "cancelled", "the gateway has the job cancelled");
    await shot(t, page, "05-run-cancelled");
    await page.close();
  });

  await t.test("a file uploaded into an image input runs and the image output is rendered", async (t) => {
    const { page, problems } = await openPage(browser);
    const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#3080ff" } })
      .png()
      .toBuffer();
    const file = join(screenshotDir(t), "input.png");
    writeFileSync(file, png);
    await page.goto(`${base}/#/workflows/image`);
    await page.locator('input[type="file"][name="picture"]').setInputFiles(file);
    await page.getByText(/uploaded input\.png as asset/).waitFor();
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForURL(/#\/jobs\//);
    await until("the image run to complete", async () => (await runStatus(page)) === "completed", 30_000);
    const img = page.locator(".outputs img.media").first();
    await img.waitFor();
    const size = await until("the image to decode", () =>
      img.evaluate((e: HTMLImageElement) => (e.naturalWidth > 0 ? [e.naturalWidth, e.naturalHeight] : null)),
    );
    t.same(size, [64, 48], "the uploaded image comes back and is drawn");
    await shot(t, page, "06-image-output");
    t.same(problems, []);
    await page.close();
  });

  await t.test("jobs are listed newest first, filtered, and a finished job replays", async (t) => {
    const { page } = await openPage(browser);
    await page.goto(`${base}/#/jobs`);
    await until("four jobs", async () => (await page.locator("tr[data-job]").count()) >= 4);
    const created = await page
      .locator("tr[data-job]")
      .evaluateAll((rows) => rows.map((r) => r.getAttribute("data-job")));
    const recs = await Promise.all(created.map((id) => call(base, "GET", `/api/jobs/${id}`)));
    const times = recs.map((r) => String(r.created_at));
    t.same(times, [...times].sort().reverse(), "newest first");
    await shot(t, page, "07-jobs");
    await page.locator('select[name="status"]').selectOption("cancelled");
    await until("only cancelled jobs", async () => {
      const statuses = await page.locator("tr[data-job] .status").allTextContents();
      return statuses.length === 1 && statuses[0] === "cancelled";
    });
    t.pass("the status filter leaves the cancelled job");
    await page.locator('select[name="status"]').selectOption("");
    await page.locator('select[name="workflow"]').selectOption("stream");
    await until("only the stream workflow's job", async () => (await page.locator("tr[data-job]").count()) === 1);
    await page.locator("tr[data-job] a").first().click();
    await until("the replay to finish", async () => (await runStatus(page)) === "completed", 20_000);
    t.equal(await streamText(page), tokenText(300), "the replayed job shows its whole stream");
    await page.close();
  });

  await t.test("a long text output (stored as an asset) is a link that opens the whole text", async (t) => {
    const half = "Nodeway ".repeat(20 * 1024); // 160 KiB, doubled past the 256 KiB kept inline
    await call(base, "PUT", "/api/workflows/long", {
      name: "Long text",
      graph: {
        nodes: [
          { id: "c", type: "nodetool.constant.String", data: { value: half } },
          { id: "cat", type: "nodetool.text.Concat", data: {} },
          { id: "out", type: "nodetool.output.Output", data: { name: "page" } },
        ],
        edges: [
          { id: "e1", source: "c", sourceHandle: "output", target: "cat", targetHandle: "a" },
          { id: "e2", source: "c", sourceHandle: "output", target: "cat", targetHandle: "b" },
          { id: "e3", source: "cat", sourceHandle: "output", target: "out", targetHandle: "value" },
        ],
      },
    });
    const { page, problems } = await openPage(browser);
    const jobId = String((await call(base, "POST", "/api/workflows/long/run", { params: {} })).job_id);
    await page.goto(`${base}/#/jobs/${jobId}`);
    await until("the long-text run to complete", async () => (await runStatus(page)) === "completed", 30_000);
    const link = page.locator(".outputs a.file-ref").first();
    await link.waitFor();
    t.equal(await link.textContent(), `Open the text, ${(half.length * 2).toLocaleString("en")} bytes`);
    const [tab] = await Promise.all([page.waitForEvent("popup"), link.click()]);
    await tab.waitForLoadState();
    const text = String(await tab.locator("body").textContent());
    t.ok(text === half + half, `the tab it opens shows the whole text (${text.length} characters)`);
    await tab.close();
    t.same(problems, []);
    await page.close();
  });

  await t.test("the fleet shows the agent and its queue, and drains it", async (t) => {
    const { page } = await openPage(browser);
    await page.goto(`${base}/#/fleet`);
    const row = page.locator("tr[data-agent]").first();
    await row.waitFor();
    t.match(await row.textContent(), /agent0/, "the agent is listed by name");
    t.match(await row.textContent(), /cpu/, "with its pools");
    await shot(t, page, "08-fleet");
    await row.getByRole("button", { name: "Drain" }).click();
    await row.getByRole("button", { name: "Confirm drain" }).click();
    // An idle agent told to drain shows "draining", then leaves the registry.
    await until(
      "the agent draining",
      async () =>
        (await page.locator("tr[data-agent]").count()) === 0 ||
        /draining/.test((await page.locator("tr[data-agent]").first().textContent({ timeout: 1_000 })) ?? ""),
      20_000,
    );
    t.pass("the agent drains");
    await page.goto(`${base}/#/chat`);
    await page.locator(".chat").waitFor();
    await shot(t, page, "09-chat");
    await page.close();
  });
});
