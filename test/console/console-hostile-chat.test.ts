/**
 * A chat answer that streams without end: the page keeps the last MiB of it while it streams, not all of it. Each of
 * the model's words is blown up to 512 KiB on its way to the page (a route in the browser), 15 MiB by the time it
 * is measured.
 */
import t from "tap";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";
import { ensureConsoleBuilt, launchBrowser, openPage, rewriteChunks, until } from "../helpers/browser.js";
import { startStack } from "../helpers/stack.js";

/** The console's limit (console/src/run-state.ts TEXT_MAX) with the slack it cuts back from. */
const TEXT_KEPT_MAX = (1 << 20) * 1.25;
const WORDS = 80;
const MEASURED_AFTER = 30;

t.test("console hostile chat - a streamed answer keeps its last MiB on the page", async (t) => {
  ensureConsoleBuilt();
  const fake = await FakeLlm.start(100);
  t.teardown(() => fake.stop());
  fake.reply = Array.from({ length: WORDS }, (_, i) => `w${i} `).join("");
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: `${fake.url}/v1` },
  });
  await until(
    "the fleet's models",
    async () => ((await (await fetch(`${s.url}/v1/models`)).json()) as { data: unknown[] }).data.length > 0,
    30_000,
  );
  const browser = await launchBrowser(t);
  const { page } = await openPage(browser);
  const big = "x".repeat(512 * 1024);
  let blownUp = 0;
  await rewriteChunks(page, (ev) => {
    blownUp++;
    return { ...ev, content: `${big}[${ev.content.trim()}]` };
  });
  await page.goto(`${s.url}/#/chat`);
  const model = page.locator('select[name="model"]');
  await until("a model to choose", async () => (await model.locator("option").count()) > 0);
  await model.selectOption("gpt-4o-mini");
  await page.locator('textarea[name="content"]').fill("Talk");
  await page.getByRole("button", { name: "Send" }).click();
  await until(`${MEASURED_AFTER} words of 512 KiB`, () => blownUp >= MEASURED_AFTER, 30_000);
  const shown = await until("the streaming answer", () =>
    page.evaluate(() => document.querySelector(".msg.streaming div")?.textContent?.length ?? 0),
  );
  t.comment(`${blownUp} chunks of 512 KiB received; the streaming answer holds ${shown} characters`);
  t.ok(shown <= TEXT_KEPT_MAX, `${shown} characters kept, not ${blownUp * 512} KiB`);
  await until("the answer stored in the thread", async () =>
    (await page.locator(".msg.m-assistant:not(.streaming)").allTextContents()).some((x) => x.includes(`w${WORDS - 1}`)),
  );
  t.pass("the answer ends and is kept in the thread");
});
