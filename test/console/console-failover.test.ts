/**
 * The console behind the TLS proxy with two gateways: the gateway holding the page's WebSocket is killed mid-run
 * and the page resumes on the other through the proxy, showing every token once.
 */
import t from "tap";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileProxyConfig, startProxy } from "../../proxy/index.js";
import { ensureConsoleBuilt, launchBrowser, openPage, shot, tokenText, until } from "../helpers/browser.js";
import { putWorkflow, startAgent, startGateway, startNats, tokensWorkflow } from "../reliability/lib.js";

const TOKENS = 600;

/** Open WebSockets on a gateway, from its own /metrics. */
async function socketsOpen(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^nodeway_ws_sockets_open (\d+)/m.exec(text)?.[1] ?? "0");
}

t.test("console failover - a page watching a run resumes on the other gateway when its gateway dies", async (t) => {
  ensureConsoleBuilt();
  const ns = await startNats(t);
  const g1 = await startGateway(t, ns.url);
  const g2 = await startGateway(t, ns.url);
  await startAgent(t, ns.url, ["--max-jobs", "4"]);
  const certDir = mkdtempSync(join(tmpdir(), "nw-certs-"));
  t.teardown(() => rmSync(certDir, { recursive: true, force: true }));
  const proxy = await startProxy(
    compileProxyConfig({
      tls: "self-signed",
      host: "127.0.0.1",
      httpsPort: 0,
      httpPort: 0,
      upstream: [g1.url, g2.url],
      certDir,
      healthIntervalMs: 200,
      accessLog: false,
    }),
    { onEvent: () => undefined },
  );
  t.teardown(() => proxy.stop());
  const front = `https://127.0.0.1:${proxy.httpsPort}`;
  await putWorkflow(g1.url, "tok", tokensWorkflow(TOKENS, 100));

  const browser = await launchBrowser(t);
  const { page } = await openPage(browser);
  await page.goto(`${front}/#/workflows/tok`);
  await page.getByRole("button", { name: "Run" }).click();
  await page.waitForURL(/#\/jobs\//);
  const stream = page.locator('pre[data-node="tok"]');
  await until("50 tokens", async () => ((await stream.textContent()) ?? "").includes("tok50 "));

  const [on1, on2] = await Promise.all([socketsOpen(g1.url), socketsOpen(g2.url)]);
  t.equal(on1 + on2, 1, "the page holds one WebSocket, on one of the gateways");
  const [dead, alive] = on1 === 1 ? [g1, g2] : [g2, g1];
  await dead.kill("SIGKILL");
  t.comment(`killed the gateway that held the page's socket (${dead.url}); ${alive.url} lives`);

  await until("the socket back on the living gateway", async () => (await socketsOpen(alive.url)) === 1, 30_000);
  const status = page.locator("section.run");
  await until("the run to complete", async () => (await status.getAttribute("data-status")) === "completed", 60_000);
  t.equal(await stream.textContent(), tokenText(TOKENS), "every token once, in order, across the gateway's death");
  t.match(await page.getByTestId("resumes").textContent(), /resumed [1-9]/, "the page resumed the stream");
  await shot(t, page, "10-failover-resumed");
});
