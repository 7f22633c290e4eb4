/**
 * The console against hostile or unlucky content: markup in every field a workflow, a node or a job can carry is
 * shown as text and runs nothing; a job that sends 20,000 outputs or tens of MB of streamed text leaves the page a
 * bounded DOM that keeps drawing; a 5,000-node graph is drawn in part, at once; a gateway answering HTML instead of
 * JSON is shown as an error line, not as markup; an agent registration with junk fields (an agent host writes its
 * own) leaves the fleet page drawn, the other agents listed. Numbers (frame gaps, DOM size, heap, times) are reported.
 */
import t from "tap";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { Page } from "playwright-core";
import { KV_AGENTS } from "../../protocol/index.js";
import { ensureConsoleBuilt, launchBrowser, openPage, rewriteChunks, until } from "../helpers/browser.js";
import { startStack } from "../helpers/stack.js";

/** Markup that sets `window.__pwned` if any of it ever runs, with bidi, zero-width and astral characters. */
const EVIL = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>\u202Egnp.exe\u200B😀`;
const EVIL_SVG = `data:image/svg+xml,${encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=3"><script>window.__pwned=4</script></svg>',
)}`;
/** The console's limits (console/src/run-state.ts, graph.tsx), with the slack they cut back from. */
const OUTPUT_KEPT_MAX = 250;
const TEXT_KEPT_MAX = (1 << 20) * 1.25;
const DRAW_MAX = 500;

async function send(base: string, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const parsed = (await r.json()) as Record<string, unknown>;
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(parsed)}`);
  return parsed;
}

const edge = (source: string, sourceHandle: string, target: string, targetHandle: string) => ({
  id: `${source}-${target}`,
  source,
  sourceHandle,
  target,
  targetHandle,
});

/** Markup as the workflow's name, description, a node's property and id, an output, an error and an image. */
const evilWorkflow = {
  name: EVIL,
  description: EVIL,
  graph: {
    nodes: [
      { id: "s", type: "nodetool.input.StringInput", data: { name: "s", value: EVIL, [EVIL]: EVIL } },
      { id: "pic", type: "nodetool.input.ImageInput", data: { name: "pic" } },
      { id: "o1", type: "nodetool.output.Output", data: { name: EVIL } },
      { id: "o2", type: "nodetool.output.Output", data: { name: "pic" } },
      { id: EVIL, type: "nodeway.test.Fail", data: { message: EVIL } },
    ],
    edges: [edge("s", "output", "o1", "value"), edge("pic", "output", "o2", "value")],
  },
};

/** `count` tokens, as fast as they go, each both a text chunk and an output. */
const tokensWorkflow = (count: number, rate: number) => ({
  name: `${count} tokens`,
  graph: {
    nodes: [
      { id: "tokens", type: "nodeway.test.Tokens", data: { count, rate } },
      { id: "out", type: "nodetool.output.Output", data: { name: "token" } },
    ],
    edges: [edge("tokens", "chunk", "out", "value")],
  },
});

/** A chain of `n` nodes with no saved positions, its edges listed last to first (the worst order to lay out). */
function chainWorkflow(n: number) {
  const nodes = Array.from({ length: n }, (_, i) => ({ id: `n${i}`, type: "nodeway.test.Sleep", data: {} }));
  const edges = Array.from({ length: n - 1 }, (_, k) => edge(`n${n - 2 - k}`, "output", `n${n - 1 - k}`, "seconds"));
  return { name: `chain of ${n}`, graph: { nodes, edges } };
}

const pwned = (page: Page) => page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned);
const runStatus = (page: Page) => page.locator("section.run").getAttribute("data-status");

/** Starts recording the gaps between animation frames on `page`; the returned function takes them. */
async function frameGaps(page: Page): Promise<() => Promise<number[]>> {
  await page.evaluate(() => {
    const w = window as unknown as { gaps: number[] };
    w.gaps = [];
    let last = performance.now();
    const tick = (now: number) => {
      w.gaps.push(now - last);
      last = now;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  return () => page.evaluate(() => (window as unknown as { gaps: number[] }).gaps.splice(0));
}

/** Elements in the document and the JS heap in MB (Chromium's `performance.memory`). */
const pageSize = (page: Page) =>
  page.evaluate(() => ({
    elements: document.getElementsByTagName("*").length,
    heapMB: Math.round(
      ((performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0) / 1e6,
    ),
  }));

t.test("console hostile - markup, floods and huge graphs against the web console", async (t) => {
  ensureConsoleBuilt();
  const s = await startStack(t, { agents: 1, agentArgs: ["--max-jobs", "4"] });
  const base = s.url;
  await send(base, "PUT", "/api/workflows/evil", evilWorkflow);
  await send(base, "PUT", "/api/workflows/flood", tokensWorkflow(20_000, 0));
  await send(base, "PUT", "/api/workflows/big-text", tokensWorkflow(40, 40));
  await send(base, "PUT", "/api/workflows/many-lines", tokensWorkflow(3_000, 0));
  await send(base, "PUT", "/api/workflows/chain", chainWorkflow(5_000));
  const browser = await launchBrowser(t);

  await t.test(
    "markup in names, properties, outputs, errors and an SVG image is shown as text and never runs",
    async (t) => {
      const { page } = await openPage(browser);
      const job = await send(base, "POST", "/api/workflows/evil/run?wait=true", { params: { pic: EVIL_SVG } });
      t.equal(job.status, "failed", "the job ran (its Fail node fails it with the markup as message)");
      await page.goto(`${base}/#/workflows`);
      const link = page.locator('tbody a[href="#/workflows/evil"]');
      await link.waitFor();
      // Its right-to-left override is shown as an escape: drawn, "\u202egnp.exe" would read as "exe.png".
      t.equal(
        await link.textContent(),
        EVIL.replace("\u202E", "\\u202e"),
        "the name is shown as text, its RLO visible",
      );
      await page.goto(`${base}/#/workflows/evil`);
      await until("the graph", async () => (await page.locator(".react-flow__node").count()) === 5);
      t.equal(await page.locator("h2 + p.muted").textContent(), EVIL, "the description is text");
      await page.goto(`${base}/#/jobs/${job.job_id}`);
      await until("the failed run", async () => (await runStatus(page)) === "failed");
      await page.locator(".outputs img.media").waitFor();
      t.match(await page.locator("p.error").textContent(), EVIL, "the error message is text");
      t.match(await page.locator(`.output[data-output="${EVIL.replace(/"/g, '\\"')}"] pre`).textContent(), EVIL);
      t.equal(await page.locator("img[src=x], main script").count(), 0, "no element was made from the markup");
      t.equal(await pwned(page), undefined, "no script, handler or SVG onload ran");
      await page.close();
    },
  );

  await t.test("20,000 outputs and chunks leave a bounded page that keeps drawing", async (t) => {
    const { page } = await openPage(browser);
    await page.goto(`${base}/#/jobs`);
    const takeGaps = await frameGaps(page);
    const started = Date.now();
    const { job_id } = await send(base, "POST", "/api/workflows/flood/run", {});
    await page.goto(`${base}/#/jobs/${job_id}`);
    await until("the flood to end", async () => (await runStatus(page)) === "completed", 50_000);
    const ms = Date.now() - started;
    const gaps = (await takeGaps()).slice(1);
    const size = await pageSize(page);
    const shown = await page.locator(".outputs .output[data-output=token]").count();
    t.comment(
      `20,000 outputs: completed on the page after ${ms} ms, ${gaps.length} frames, max gap ` +
        `${Math.max(...gaps).toFixed(0)} ms, ${size.elements} elements, heap ${size.heapMB} MB, ${shown} outputs shown`,
    );
    t.ok(shown > 0 && shown <= OUTPUT_KEPT_MAX, `${shown} outputs drawn, not 20,000`);
    t.match(await page.getByText(/earlier outputs not shown/).textContent(), /^[\d,]+ earlier outputs not shown$/);
    t.equal(await page.locator(".outputs .output pre").last().textContent(), "tok19999 ", "the newest is kept");
    t.ok(size.elements < 5_000, `the document holds ${size.elements} elements`);
    const t0 = Date.now();
    await page.locator("summary").click();
    await page.locator("details[open]").waitFor();
    t.comment(`a click answered in ${Date.now() - t0} ms`);
    await page.close();
  });

  await t.test("20 MB of streamed text keeps its last MiB and the page keeps drawing", async (t) => {
    const { page } = await openPage(browser);
    const big = "x".repeat(512 * 1024);
    // Each of the job's 40 chunks becomes 512 KiB on its way to the page: 20 MiB in all.
    await rewriteChunks(page, (ev) => ({ ...ev, content: `${big}[${ev.content.trim()}]` }));
    await page.goto(`${base}/#/jobs`);
    const takeGaps = await frameGaps(page);
    const { job_id } = await send(base, "POST", "/api/workflows/big-text/run", {});
    await page.goto(`${base}/#/jobs/${job_id}`);
    await until("the big stream to end", async () => (await runStatus(page)) === "completed", 40_000);
    const gaps = (await takeGaps()).slice(1);
    const text = (await page.locator('pre[data-node="tokens"]').textContent()) ?? "";
    const size = await pageSize(page);
    t.comment(
      `20 MiB of text: ${text.length} characters shown, ${gaps.length} frames, max gap ` +
        `${Math.max(...gaps).toFixed(0)} ms, heap ${size.heapMB} MB`,
    );
    t.ok(text.length <= TEXT_KEPT_MAX, `${text.length} characters kept, not 20 MiB`);
    t.ok(text.endsWith("[tok39]"), "the newest text is kept");
    t.match(await page.getByText(/earlier characters not shown/).textContent(), /^[\d,]+ earlier characters/);
    await page.close();
  });

  await t.test("log lines of 512 KiB are kept in part", async (t) => {
    const { page } = await openPage(browser);
    const big = "y".repeat(512 * 1024);
    // Each of the job's 40 chunks becomes a 512 KiB log line on its way to the page.
    await rewriteChunks(page, (ev) => ({
      ...ev,
      type: "log_update",
      severity: "info",
      content: `${big}[${ev.content}]`,
    }));
    const { job_id } = await send(base, "POST", "/api/workflows/big-text/run", {});
    await page.goto(`${base}/#/jobs/${job_id}`);
    await until("the run to end", async () => (await runStatus(page)) === "completed", 40_000);
    const lines = await page.locator(".logs .log").evaluateAll((els) => els.map((e) => e.textContent?.length ?? 0));
    t.comment(`${lines.length} log lines, the longest ${Math.max(...lines)} characters`);
    t.ok(lines.length >= 40, "every line is listed");
    t.ok(Math.max(...lines) < 5_000, "each cut to its first 4 K characters");
    await page.close();
  });

  await t.test("3,000 log lines: each new line draws one row, not all 2,000 again", async (t) => {
    const { page } = await openPage(browser);
    await rewriteChunks(page, (ev) => ({ ...ev, type: "log_update", severity: "info", content: ev.content }));
    // Counts text changes inside the log list: rows rewritten in place, as opposed to rows added or removed.
    await page.addInitScript(() => {
      const w = window as unknown as { logRewrites: number };
      w.logRewrites = 0;
      new MutationObserver((records) => {
        for (const r of records) if (r.target.parentElement?.closest(".logs")) w.logRewrites++;
      }).observe(document, { subtree: true, characterData: true });
    });
    const { job_id } = await send(base, "POST", "/api/workflows/many-lines/run", {});
    await page.goto(`${base}/#/jobs/${job_id}`);
    await until("the run to end", async () => (await runStatus(page)) === "completed", 60_000);
    const rewrites = await page.evaluate(() => (window as unknown as { logRewrites: number }).logRewrites);
    const rows = await page.locator(".logs .log").count();
    const summary = (await page.locator("details summary", { hasText: "Logs" }).textContent()) ?? "";
    t.comment(`${rows} rows kept, ${rewrites} rows rewritten in place; "${summary}"`);
    t.ok(rewrites < 100, `${rewrites} rows rewritten in place (each line past 2,000 rewrote all of them before)`);
    t.ok(rows >= 2_000 && rows <= 2_500, `${rows} rows kept`);
    t.match(summary, /earlier not shown/, "the list says it let older lines go");
    await page.close();
  });

  await t.test("a 5,000-node graph is drawn in part, at once", async (t) => {
    const { page, problems } = await openPage(browser);
    await page.goto(`${base}/#/jobs`);
    const started = Date.now();
    await page.goto(`${base}/#/workflows/chain`);
    await page.locator(".react-flow__node").first().waitFor();
    const ms = Date.now() - started;
    const size = await pageSize(page);
    const drawn = await page.locator(".react-flow__node").count();
    t.comment(
      `5,000 nodes: first node after ${ms} ms, ${drawn} drawn, ${size.elements} elements, heap ${size.heapMB} MB`,
    );
    t.equal(drawn, DRAW_MAX, `the first ${DRAW_MAX} nodes are drawn`);
    t.equal(await page.getByTestId("graph-part").textContent(), "500 of 5,000 nodes drawn", "and the page says so");
    t.same(problems, []);
    await page.close();
  });

  await t.test("an agent's malformed registration leaves the fleet page drawn, the other agents listed", async (t) => {
    // Written as an agent host may write it: the gateway checks only type, id, name and pools.
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const junk = {
      type: "agent.registration",
      id: "junk1",
      name: EVIL,
      pools: ["cpu", { evil: 1 }],
      state: { evil: true },
      capabilities: { gpus: [null, { name: { evil: 1 } }], strategies: "inline" },
      running_jobs: null,
      heartbeat_at: new Date().toISOString(),
    };
    await (await new Kvm(nc).open(KV_AGENTS)).put("junk1", JSON.stringify(junk));
    const { page, problems } = await openPage(browser);
    await page.goto(`${base}/#/fleet`);
    await until("both agents listed", async () => (await page.locator("tr[data-agent]").count()) === 2);
    t.equal(
      await page.locator('tr[data-agent="junk1"] b').textContent(),
      EVIL.replace("\u202E", "\\u202e"),
      "the junk agent's name is text, its RLO visible",
    );
    t.match(await page.locator("tr[data-agent]:not([data-agent=junk1])").textContent(), /agent0/, "the real one");
    t.equal(await pwned(page), undefined);
    t.same(problems, [], "nothing was thrown while drawing");
    await page.close();
  });

  await t.test("an answer of the wrong shape shows an error under the nav, and the next page draws", async (t) => {
    const { page } = await openPage(browser);
    // A thread whose title is an object (a gateway of another version): React cannot draw it as text.
    await page.route(/\/api\/threads/, (r) =>
      r.fulfill({ status: 200, contentType: "application/json", body: '{"threads":[{"id":"t1","title":{"x":1}}]}' }),
    );
    await page.goto(`${base}/#/chat`);
    await page.getByTestId("page-error").waitFor();
    t.match(await page.getByTestId("page-error").textContent(), /could not be drawn/, "the fault is said");
    await page.getByRole("link", { name: "Jobs" }).click();
    await page.locator("table.jobs").waitFor();
    t.pass("the shell stayed and the next page draws");
    await page.close();
  });

  await t.test("a listing whose cursor never ends is stopped, not followed forever", async (t) => {
    const { page } = await openPage(browser);
    let calls = 0;
    await page.route(/\/api\/threads/, (r) => {
      calls++;
      return r.fulfill({ status: 200, contentType: "application/json", body: '{"threads":[],"next":"again"}' });
    });
    await page.goto(`${base}/#/chat`);
    const line = page.locator(".chat aside p.error");
    await line.waitFor();
    t.match(await line.textContent(), /again/, "the listing fails, naming the repeated cursor");
    t.ok(calls <= 3, `${calls} pages asked for`);
    await page.close();
  });

  await t.test("a gateway answering HTML instead of JSON is shown as an error line, not as markup", async (t) => {
    const { page } = await openPage(browser);
    await page.route(/\/api\/workflows/, (r) =>
      r.fulfill({ status: 502, contentType: "text/html", body: `<h1 id="evil">Bad gateway</h1>${EVIL}` }),
    );
    await page.goto(`${base}/#/workflows`);
    const line = page.locator("p.error");
    await line.waitFor();
    t.match(await line.textContent(), /^502 <h1 id="evil">/, "the answer is quoted as text");
    t.equal(await page.locator("#evil, img[src=x]").count(), 0, "no element was made from it");
    t.equal(await pwned(page), undefined);
    await page.close();
  });
});
