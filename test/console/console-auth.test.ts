/**
 * With API tokens on, the console asks for a token, refuses a wrong one, keeps the right one in the tab's session
 * storage (never local storage, never a URL, not even the WebSocket's), and runs a workflow with it.
 */
import t from "tap";
import { ensureConsoleBuilt, launchBrowser, openPage, shot, tokenText, until } from "../helpers/browser.js";
import { startStack } from "../helpers/stack.js";
import { tokensWorkflow } from "../reliability/lib.js";

const TOKEN = "console-test-token-aaaaaaaaaaaaaaaaaaaaaaaa";

t.test("console auth - sign in with a token kept in session storage only, then run a workflow", async (t) => {
  ensureConsoleBuilt();
  const s = await startStack(t, { agents: 1, gateway: { apiTokens: [TOKEN] } });
  const put = await fetch(`${s.url}/api/workflows/tok`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(tokensWorkflow(50, 200)),
  });
  t.equal(put.status, 200, "the workflow is saved with the token");

  const page0 = await fetch(`${s.url}/`);
  t.equal(page0.status, 200, "the console page itself loads without a token (it holds no data)");
  const api0 = await fetch(`${s.url}/api/workflows`);
  t.equal(api0.status, 401, "the API does not");

  const browser = await launchBrowser(t);
  const { page } = await openPage(browser);
  const urls: string[] = [];
  page.on("request", (r) => urls.push(r.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));
  await page.goto(`${s.url}/`);
  const input = page.locator('input[name="token"]');
  await input.waitFor();
  t.pass("the sign-in form is shown");
  await shot(t, page, "11-sign-in");

  await input.fill("wrong-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbb");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("The gateway refused that token.").waitFor();
  t.pass("a wrong token is refused");

  await input.fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: /tokens 50/ }).waitFor();
  t.pass("the right token opens the console");
  const stored = await page.evaluate(() => ({
    session: sessionStorage.getItem("nodeway.token"),
    local: Object.keys(localStorage).length,
  }));
  t.equal(stored.session, TOKEN, "the token is in the tab's session storage");
  t.equal(stored.local, 0, "nothing is in local storage");

  await page.getByRole("link", { name: /tokens 50/ }).click();
  await page.getByRole("button", { name: "Run" }).click();
  await page.waitForURL(/#\/jobs\//);
  const run = page.locator("section.run");
  await until("the run to complete", async () => (await run.getAttribute("data-status")) === "completed", 30_000);
  t.equal(await page.locator('pre[data-node="tok"]').textContent(), tokenText(50), "the run streamed over /ws");

  await page.reload();
  await run.waitFor();
  t.pass("a reload keeps the tab signed in");
  t.notOk(
    urls.some((u) => u.includes(TOKEN)),
    "no URL the page fetched or opened (WebSocket included) carries the token",
  );
  t.notMatch(page.url(), TOKEN, "nor the page's own URL");
});
