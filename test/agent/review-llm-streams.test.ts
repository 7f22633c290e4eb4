/**
 * Providers that misbehave (test/helpers/fake-llm.ts's hostile models, over real sockets) fail the chat quickly and
 * say why, naming the provider: a reply that stalls after its headers, an Ollama that never answers, a rate limit
 * asking for a wait of a day, a stream that ends without its API's end (cut off, a web page, a non-streamed reply),
 * one huge line, a piece that is not JSON, tool arguments that are not a JSON object.
 */
import t from "tap";
import { streamChat, type ChatRequest, type ProviderName } from "../../agent/integrations/providers.js";
import { check } from "../helpers/check.js";
import { FakeLlm, providerEnv } from "../helpers/fake-llm.js";

const PROVIDERS: ProviderName[] = ["openai", "anthropic", "ollama"];
/** How long any chat here may take before the test gives up on it. */
const DEADLINE_MS = 15_000;

interface Outcome {
  text: string;
  error: string | null;
  ms: number;
  args?: unknown;
}

/** A chat with `model` to its end: the text it gave, how it failed, how long it took. */
async function chat(
  fake: FakeLlm,
  provider: ProviderName,
  model: string,
  extra: Partial<ChatRequest> = {},
): Promise<Outcome> {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  const req: ChatRequest = {
    provider,
    model,
    system: "",
    messages: [{ role: "user", content: "hi" }],
    maxTokens: 64,
    signal,
    ...extra,
  };
  const started = Date.now();
  let text = "";
  let args: unknown;
  try {
    for await (const piece of streamChat(req, providerEnv(fake))) {
      if (piece.type === "text") text += piece.text;
      else args = piece.tool_calls?.[0]?.args;
    }
    return { text, error: null, ms: Date.now() - started, args };
  } catch (err) {
    const error = signal.aborted ? `no end within ${DEADLINE_MS} ms` : (err as Error).message;
    return { text, error, ms: Date.now() - started };
  }
}

t.test(
  "providers - a reply that stalls after its headers fails at the idle deadline, its request aborted",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    for (const provider of PROVIDERS) {
      const before = fake.abandoned;
      const r = await chat(fake, provider, "stalls", { timeouts: { idleMs: 500 } });
      t.match(
        r.error,
        new RegExp(`^${provider} sent nothing for 0\\.5 s in the middle of its answer: the stream stalled`),
      );
      t.ok(r.ms < 5_000, `${provider}: failed in ${r.ms} ms`);
      await check(() => fake.abandoned > before, 5_000, { name: `${provider}: the stalled request was closed` });
    }
  },
);

t.test("providers - an Ollama that never answers fails at the start deadline", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const r = await chat(fake, "ollama", "silent", { timeouts: { startMs: 500 } });
  t.match(r.error, /^ollama sent no answer within 0\.5 s/);
  t.ok(r.ms < 5_000, `failed in ${r.ms} ms`);
  await check(() => fake.abandoned > 0, 5_000, { name: "the request was closed" });
});

t.test("providers - a cancel ends an Ollama request still waiting for its answer", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const stop = new AbortController();
  setTimeout(() => stop.abort(new Error("cancelled by the test")), 300);
  const r = await chat(fake, "ollama", "silent", { signal: stop.signal });
  t.equal(r.error, "cancelled by the test", "the job's reason");
  t.ok(r.ms < 5_000, `in ${r.ms} ms`);
  await check(() => fake.abandoned > 0, 5_000, { name: "the request was closed" });
});

t.test("providers - a rate limit asking for a longer wait than a node waits fails at once, naming it", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  for (const [provider, said] of [
    ["openai", "Rate limit reached for requests"],
    ["anthropic", "Number of requests has exceeded your rate limit"],
  ] as const) {
    const before = fake.requests.length;
    const r = await chat(fake, provider, "rate-limited");
    t.equal(
      r.error,
      `${provider} refused the request (HTTP 429): ${said}; it asks to wait 99999 s before a retry, more than the 60 s a node waits`,
    );
    t.ok(r.ms < 5_000, `${provider}: failed in ${r.ms} ms`);
    t.equal(fake.requests.length - before, 1, `${provider}: no retry was made`);
  }
});

t.test(
  "providers - a stream that ends without its API's end fails rather than pass a cut reply as whole",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    for (const [provider, end] of [
      ["openai", "finish_reason"],
      ["anthropic", "message_stop"],
    ] as const) {
      for (const model of ["unfinished", "html", "json-reply"]) {
        const r = await chat(fake, provider, model);
        t.match(
          r.error,
          `${provider} failed: the stream ended without finishing (no ${end})`,
          `${provider}, ${model}: ${r.error}`,
        );
      }
    }
    t.match((await chat(fake, "ollama", "unfinished")).error, "ollama failed: the stream ended without finishing");
    t.match(
      (await chat(fake, "ollama", "html")).error,
      "ollama sent a piece of its stream that is not JSON: <html>",
      "Ollama: a web page is no NDJSON",
    );
    t.match(
      await chat(fake, "ollama", "json-reply"),
      { text: "Not streamed", error: null },
      "Ollama's non-streamed reply is its one last part",
    );
    for (const provider of PROVIDERS) {
      t.same((await chat(fake, provider, "gpt-4o-mini")).error, null, `${provider}: a whole reply still completes`);
    }
  },
);

t.test("providers - one huge line fails quickly, before the SDK decodes it", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  for (const provider of PROVIDERS) {
    const r = await chat(fake, provider, "big-line");
    t.match(r.error, new RegExp(`^${provider} sent a line of more than 4 MiB`), provider);
    t.equal(r.text, "", `${provider}: none of it was yielded`);
    t.ok(r.ms < 5_000, `${provider}: failed in ${r.ms} ms`);
  }
});

t.test("providers - a piece that is not JSON fails the chat with each provider", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  for (const provider of PROVIDERS) {
    const r = await chat(fake, provider, "bad-json");
    t.match(r.error, new RegExp(`^${provider} sent a piece of its stream that is not JSON: \\{not json`), provider);
  }
});

t.test("providers - Ollama's tool arguments as text are read as JSON, and refused when they are not", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const tools = [{ name: "lookup", description: "looks up", parameters: { type: "object" } }];
  fake.toolArgsText = '{"q": "abc"}';
  t.same((await chat(fake, "ollama", "llama3.2", { tools })).args, { q: "abc" }, "JSON text of an object");
  fake.toolArgsText = '{"q": "ab';
  for (const provider of PROVIDERS) {
    t.match(
      (await chat(fake, provider, "gpt-4o-mini", { tools })).error,
      `${provider} asked for tool "lookup" with arguments that are not JSON: {"q": "ab`,
      provider,
    );
  }
  fake.toolArgsText = "[1, 2]";
  t.match(
    (await chat(fake, "ollama", "llama3.2", { tools })).error,
    'ollama asked for tool "lookup" with arguments that are not an object',
  );
});

t.test("providers - Ollama's refusals say what it said, not [object Object]", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  t.equal(
    (await chat(fake, "ollama", "rate-limited")).error,
    "ollama refused the request (HTTP 429): too many requests, slow down",
  );
  t.equal(
    (await chat(fake, "ollama", "missing")).error,
    'ollama refused the request (HTTP 404): model "missing" not found, try pulling it first',
  );
});
