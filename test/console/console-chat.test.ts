/**
 * Chat in the console: the fleet's models listed, a message sent over `/ws` (`chat_message`) makes a thread, the
 * answer streams in from a provider (a local fake speaking OpenAI's wire protocol) and stays in the thread.
 */
import t from "tap";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";
import { ensureConsoleBuilt, launchBrowser, openPage, shot, until } from "../helpers/browser.js";
import { startStack } from "../helpers/stack.js";

const REPLY = "Hello from the fleet, one token at a time.";

t.test("console chat - a conversation with a fleet model streams its answer into a new thread", async (t) => {
  ensureConsoleBuilt();
  const fake = await FakeLlm.start(20);
  t.teardown(() => fake.stop());
  fake.reply = REPLY;
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
  const { page, problems } = await openPage(browser);
  await page.goto(`${s.url}/#/chat`);
  const model = page.locator('select[name="model"]');
  await until("a model to choose", async () => (await model.locator("option").count()) > 0);
  await model.selectOption("gpt-4o-mini");
  await page.locator('textarea[name="content"]').fill("Say hello");
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForURL(/#\/chat\/[0-9a-z]+/);
  t.pass("the first message made a thread and the page opened it");
  await until("the answer in the thread", async () =>
    (await page.locator(".msg.m-assistant:not(.streaming)").allTextContents()).some((x) => x.includes(REPLY)),
  );
  t.pass("the model's answer is shown and kept in the thread");
  t.match(await page.locator(".msg.m-user").first().textContent(), /Say hello/, "the question is shown");
  t.equal(await page.locator(".chat aside a.active").count(), 1, "the new thread is listed and selected");
  await shot(t, page, "12-chat");
  t.same(problems, []);
});
