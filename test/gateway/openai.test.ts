/**
 * `/v1/chat/completions` and `/v1/models`, driven by the official `openai` SDK as any OpenAI client
 * would, against a real gateway and agent processes whose providers are a local server speaking OpenAI's,
 * Anthropic's and Ollama's APIs (test/helpers/fake-llm.ts). The fleet lists what its agents' providers offer,
 * sends each completion to an agent holding the model's provider key, answers whole or as OpenAI's SSE chunks,
 * refuses bad requests in OpenAI's error shape, and cancels the job of a client that leaves.
 */
import t from "tap";
import OpenAI from "openai";
import type { GatewayOptions } from "../../gateway/index.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { spawn } from "node:child_process";
import { NODEWAY, runNodeway, startAgentProc } from "../helpers/procs.js";
import { FakeLlm, providerEnv } from "../helpers/fake-llm.js";
import { waitFor } from "../helpers/tls-tools.js";

/** The SDK as a client of the fleet; no retries, so a refusal is seen once. */
const clientOf = (url: string, apiKey = "unused") =>
  new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0, timeout: 30_000 });

async function modelsListed(client: OpenAI, n: number): Promise<OpenAI.Models.Model[]> {
  return check(
    async () => {
      const list: OpenAI.Models.Model[] = [];
      for await (const m of client.models.list()) list.push(m);
      return list.length >= n ? list : null;
    },
    30_000,
    { name: `${n} models listed` },
  );
}

const jobOf = (completionId: string) => completionId.replace(/^chatcmpl-/, "");

async function jobRecord(
  url: string,
  jobId: string,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const r = await fetch(`${url}/api/jobs/${jobId}`, { headers });
  return (await r.json()) as Record<string, unknown>;
}

t.test(
  "openai - /v1/models lists the agents' models; completions come back whole or streamed from the model's provider",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    const client = clientOf(s.url);

    const models = await modelsListed(client, 5);
    t.same(
      models.map((m) => [m.id, m.owned_by, m.object]).sort(),
      [
        ["claude-sonnet-4-5", "anthropic", "model"],
        ["gpt-4.1", "openai", "model"],
        ["gpt-4o-mini", "openai", "model"],
        ["llama3.2:1b", "ollama", "model"],
        ["qwen3:8b", "ollama", "model"],
      ],
      "every model each provider listed, named by its plain id and owned by its provider",
    );
    t.equal((await client.models.retrieve("qwen3:8b")).owned_by, "ollama", "one model by id");
    t.equal((await client.models.retrieve("ollama/qwen3:8b")).owned_by, "ollama", "or by <provider>/<id>");
    // `created`: since when the fleet offers the model, the start of the agent that offers it.
    const { agents } = (await (await fetch(`${s.url}/api/agents`)).json()) as { agents: { started_at: string }[] };
    const startedS = Math.floor(Date.parse(agents[0]!.started_at) / 1000);
    t.ok(startedS > 1_700_000_000, "the agent says when it started");
    t.same(
      [...new Set(models.map((m) => m.created))],
      [startedS],
      "every model listed was created when its agent started",
    );
    t.equal((await client.models.retrieve("qwen3:8b")).created, startedS, "and so says the model by id");

    const whole = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hello fleet" },
      ],
    });
    t.match(whole.id, /^chatcmpl-[0-9a-z]{26}$/, "the id names the job");
    t.equal(whole.object, "chat.completion");
    t.equal(whole.model, "gpt-4o-mini");
    t.equal(whole.choices.length, 1);
    t.same(
      whole.choices[0]!.message,
      { role: "assistant", content: "echo: hello fleet", refusal: null },
      "the provider's whole reply",
    );
    t.equal(whole.choices[0]!.finish_reason, "stop");
    t.same(whole.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 }, "the provider's token counts");
    const sent = fake.requests.filter((r) => r.path === "/v1/chat/completions").at(-1)!;
    t.match(
      sent.body,
      {
        model: "gpt-4o-mini",
        stream: true,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "hello fleet" },
        ],
      },
      "the agent called OpenAI with the conversation",
    );
    const rec = await jobRecord(s.url, jobOf(whole.id));
    t.match(
      rec,
      { workflow_id: "chat-completions", status: "completed", pool: "openai", agent_id: s.agents[0]!.id },
      "a job like any other, in the provider's pool",
    );

    const stream = await client.chat.completions.create({
      model: "claude-sonnet-4-5",
      messages: [
        { role: "user", content: "earlier question" },
        { role: "assistant", content: "earlier answer" },
        {
          role: "user",
          content: [
            { type: "text", text: "stream " },
            { type: "text", text: "this please" },
          ],
        },
      ],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    t.same(chunks[0]!.choices[0]!.delta, { role: "assistant", content: "" }, "the first chunk gives the role");
    const deltas = chunks.flatMap((c) => (c.choices[0]?.delta?.content ? [c.choices[0].delta.content] : []));
    t.ok(deltas.length >= 4, `the reply came in ${deltas.length} pieces`);
    t.equal(deltas.join(""), "echo: stream this please", "and they make the reply, in order");
    t.ok(
      chunks.every(
        (c) => c.object === "chat.completion.chunk" && c.id === chunks[0]!.id && c.model === "claude-sonnet-4-5",
      ),
    );
    const finishes = chunks.flatMap((c) => (c.choices[0]?.finish_reason ? [c.choices[0].finish_reason] : []));
    t.same(finishes, ["stop"], "one finish reason, at the end");
    t.same(chunks.at(-1)!.choices, [], "include_usage: a last chunk with no choices");
    t.same(chunks.at(-1)!.usage, { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 });
    const toAnthropic = fake.requests.filter((r) => r.path === "/v1/messages").at(-1)!;
    t.match(
      toAnthropic.body,
      {
        model: "claude-sonnet-4-5",
        messages: [
          { role: "user" },
          { role: "assistant", content: "earlier answer" },
          { role: "user", content: "stream this please" },
        ],
      },
      "the turns went to Anthropic",
    );

    const cut = await client.chat.completions.create({
      model: "ollama/llama3.2:1b",
      messages: [{ role: "user", content: "one two three four" }],
      max_completion_tokens: 2,
      temperature: 0.2,
    });
    t.equal(cut.choices[0]!.message.content, "echo: one ", "cut at the limit");
    t.equal(cut.choices[0]!.finish_reason, "length", "and it says so");
    t.match(
      fake.requests.filter((r) => r.path === "/api/chat").at(-1)!.body,
      { model: "llama3.2:1b", options: { num_predict: 2, temperature: 0.2 } },
      "limit and temperature reached Ollama",
    );

    for (const [model, path, want] of [
      ["gpt-4o-mini", "/v1/chat/completions", { stop: ["three"], top_p: 0.5 }],
      ["claude-sonnet-4-5", "/v1/messages", { stop_sequences: ["three"], top_p: 0.5 }],
      ["qwen3:8b", "/api/chat", { options: { stop: ["three"], top_p: 0.5 } }],
    ] as const) {
      const stopped = await client.chat.completions.create({
        model,
        messages: [{ role: "user", content: "one two three four" }],
        stop: "three",
        top_p: 0.5,
      });
      t.equal(
        stopped.choices[0]!.message.content,
        "echo: one two ",
        `${model}: the reply ends before the stop sequence`,
      );
      t.equal(stopped.choices[0]!.finish_reason, "stop");
      t.match(
        fake.requests.filter((r) => r.path === path).at(-1)!.body,
        want,
        `${model}: stop and top_p reached the provider in its own names`,
      );
    }
  },
);

t.test("openai - a completion goes only to agents that hold the model's provider key", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const s = await startStack(t, { agents: 1 }); // no keys
  const keyed = await startAgentProc(s.ns.url, ["--name", "keyed"], providerEnv(fake));
  t.teardown(() => keyed.kill("SIGKILL"));
  const client = clientOf(s.url);
  await modelsListed(client, 5);
  const ids = await Promise.all(
    Array.from(
      { length: 6 },
      async (_, i) =>
        (
          await client.chat.completions.create({
            model: i % 2 ? "gpt-4o-mini" : "qwen3:8b",
            messages: [{ role: "user", content: `q${i}` }],
          })
        ).id,
    ),
  );
  for (const id of ids)
    t.match(
      await jobRecord(s.url, jobOf(id)),
      { status: "completed", agent_id: keyed.id },
      "ran on the agent with the key",
    );
  const agents = (await (await fetch(`${s.url}/api/agents`)).json()) as {
    agents: { id: string; pools: string[]; capabilities: { providers: string[] } }[];
  };
  const providerPools = (id: string) =>
    agents.agents.find((a) => a.id === id)!.pools.filter((p) => ["openai", "anthropic", "ollama"].includes(p));
  t.same(providerPools(s.agents[0]!.id), [], "an agent without keys consumes no provider pool");
  t.same(providerPools(keyed.id), ["openai", "anthropic", "ollama"], "one with them consumes each");
  t.same(agents.agents.find((a) => a.id === keyed.id)!.capabilities.providers, ["openai", "anthropic", "ollama"]);
});

t.test(
  "openai - bad requests, unknown models and failing providers get OpenAI's error shape; a failure after the first token ends the stream with an error",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    const client = clientOf(s.url);
    await modelsListed(client, 5);
    const refused = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (err) {
        return err as InstanceType<typeof OpenAI.APIError>;
      }
      throw new Error("the request was not refused");
    };
    const user = [{ role: "user" as const, content: "hi" }];

    const unknown = await refused(client.chat.completions.create({ model: "no-such-model", messages: user }));
    t.equal(unknown.status, 404);
    t.equal(unknown.code, "model_not_found", "OpenAI's code for it");
    t.match(unknown.message, /no-such-model.*no live agent offers it/);
    t.equal((await refused(client.models.retrieve("no-such-model"))).status, 404);
    t.equal(
      (await refused(client.chat.completions.create({ model: "gemini/x", messages: user }))).status,
      404,
      "a provider the fleet does not have",
    );

    const bad: [Record<string, unknown>, string, RegExp][] = [
      [{ model: "gpt-4o-mini" }, "messages", /"messages" must be a non-empty list/],
      [{ model: "gpt-4o-mini", messages: [] }, "messages", /non-empty/],
      [{ messages: user }, "model", /"model" is required/],
      [
        { model: "gpt-4o-mini", messages: [{ role: "robot", content: "x" }] },
        "messages[0].role",
        /must be "system", "developer", "user", "assistant" or "tool"/,
      ],
      [
        { model: "gpt-4o-mini", messages: [...user, { role: "tool", content: "x" }] },
        "messages[1].tool_call_id",
        /tool_call_id is required/,
      ],
      [
        {
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x/y.png" } }] }],
        },
        "messages[0].content",
        /"image_url" part: this fleet's models take text parts only/,
      ],
      [
        { model: "gpt-4o-mini", messages: [{ role: "system", content: "only a system prompt" }] },
        "messages",
        /no user message/,
      ],
      [
        { model: "gpt-4o-mini", messages: user, tools: [{ type: "function", function: { name: "bad name!" } }] },
        "tools",
        /tools\[0\] must be/,
      ],
      [
        { model: "gpt-4o-mini", messages: user, functions: [{ name: "f" }] },
        "functions",
        /"functions" is not supported/,
      ],
      [{ model: "gpt-4o-mini", messages: user, tool_choice: "always" }, "tool_choice", /"tool_choice" must be/],
      [{ model: "gpt-4o-mini", messages: user, n: 2 }, "n", /"n" must be 1/],
      [{ model: "gpt-4o-mini", messages: user, max_tokens: 0 }, "max_tokens", /positive integer/],
      [{ model: "gpt-4o-mini", messages: user, temperature: 3 }, "temperature", /\[0, 2\]/],
      [{ model: "gpt-4o-mini", messages: user, stream: "yes" }, "stream", /boolean/],
      [{ model: "gpt-4o-mini", messages: user, stop: ["a", "b", "c", "d", "e"] }, "stop", /up to 4 non-empty strings/],
      [{ model: "gpt-4o-mini", messages: user, top_p: 0 }, "top_p", /\(0, 1\]/],
    ];
    for (const [body, param, why] of bad) {
      const r = await fetch(`${s.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const got = (await r.json()) as { error: { message: string; type: string; param: string | null } };
      t.equal(r.status, 400, JSON.stringify(body));
      t.match(got.error, { type: "invalid_request_error", param, message: why });
    }
    const malformed = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    t.equal(malformed.status, 400, "a body that is not JSON");
    t.match(((await malformed.json()) as { error: { message: string } }).error.message, /JSON/);
    const jobsBefore = (
      (await (await fetch(`${s.url}/api/jobs?workflow_id=chat-completions`)).json()) as { jobs: unknown[] }
    ).jobs.length;
    t.equal(jobsBefore, 0, "no refused request became a job");

    // `<provider>/<id>` reaches a model the provider did not list: here one it does not have.
    const upstream = await refused(client.chat.completions.create({ model: "openai/missing", messages: user }));
    t.equal(upstream.status, 502, "the provider refused before the first token: an HTTP error");
    t.match(
      upstream.message,
      /openai refused the request \(HTTP 404\): The model `missing` does not exist/,
      "saying which provider and what it said",
    );
    t.match((upstream.error as { nodeway_code?: string }).nodeway_code, "JOB_ERR_NODE_FAILED");

    const stream = await client.chat.completions.create({
      model: "openai/breaks",
      messages: [{ role: "user", content: "a b c d e f" }],
      stream: true,
    });
    const got: string[] = [];
    const midway = await refused(
      (async () => {
        for await (const c of stream) if (c.choices[0]?.delta?.content) got.push(c.choices[0].delta.content);
      })(),
    );
    t.same(got, ["echo: ", "a ", "b "], "the pieces before the provider broke off");
    t.match(midway.message, /openai/, "then the SDK raises the error chunk, naming the provider");
  },
);

t.test("openai - a client that goes away cancels its completion's job and the provider's stream", async (t) => {
  const fake = await FakeLlm.start(300);
  t.teardown(() => fake.stop());
  const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
  const client = clientOf(s.url);
  await modelsListed(client, 5);
  const ac = new AbortController();
  const stream = await client.chat.completions.create(
    { model: "gpt-4o-mini", messages: [{ role: "user", content: "a b c d e f g h i j k l m n o p" }], stream: true },
    { signal: ac.signal },
  );
  let id = "";
  try {
    for await (const c of stream) {
      id = c.id;
      if (c.choices[0]?.delta?.content) ac.abort();
    }
  } catch {
    /* the abort */
  }
  t.ok(id, "the stream had begun");
  const rec = await check(
    async () => {
      const r = await jobRecord(s.url, jobOf(id));
      return r.status === "cancelled" ? r : null;
    },
    20_000,
    { name: "the job cancelled" },
  );
  t.equal(rec.status, "cancelled");
  await check(() => fake.abandoned === 1, 10_000, { name: "the provider's stream was closed by the agent" });
});

t.test("openai - /v1 takes the fleet's API token as OpenAI's api key", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const token = "nwt-openai-compatible-token-0123456789";
  const s = await startStack(t, {
    agents: 1,
    agentEnv: providerEnv(fake),
    gateway: { apiTokens: [token] } as GatewayOptions,
  });
  const refusedStatus = await clientOf(s.url, "wrong-token-wrong-token-wrong-token")
    .models.list()
    .then(
      () => 200,
      (err: { status?: number }) => err.status,
    );
  t.equal(refusedStatus, 401, "a wrong key is refused");
  const client = clientOf(s.url, token);
  await modelsListed(client, 5);
  const r = await client.chat.completions.create({
    model: "gpt-4.1",
    messages: [{ role: "user", content: "with a token" }],
  });
  t.equal(r.choices[0]!.message.content, "echo: with a token");
});

t.test(
  "openai - `nodeway chat` asks the fleet's models and streams the answer; `nodeway models` lists them",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    await modelsListed(clientOf(s.url), 5);

    const models = runNodeway(["models", "--gateway", s.url]);
    t.equal(await models.exited, 0);
    t.same(models.stdout().trim().split("\n").sort(), [
      "claude-sonnet-4-5\tanthropic",
      "gpt-4.1\topenai",
      "gpt-4o-mini\topenai",
      "llama3.2:1b\tollama",
      "qwen3:8b\tollama",
    ]);

    const one = runNodeway([
      "chat",
      "--model",
      "gpt-4o-mini",
      "--system",
      "Be brief.",
      "--gateway",
      s.url,
      "hello",
      "from",
      "the",
      "cli",
    ]);
    t.equal(await one.exited, 0, one.stderr());
    t.equal(one.stdout(), "echo: hello from the cli\n", "the answer, streamed to stdout");
    t.match(fake.requests.filter((r) => r.path === "/v1/chat/completions").at(-1)!.body, {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hello from the cli" },
      ],
    });

    const piped = spawn(process.execPath, [NODEWAY, "chat", "--model", "ollama/qwen3:8b", "--gateway", s.url], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    piped.stdout.on("data", (d: Buffer) => (out += d.toString()));
    piped.stdin.end("a piped question\n");
    t.equal(await new Promise((r) => piped.once("exit", r)), 0);
    t.equal(out, "echo: a piped question\n", "from a pipe, stdin is the prompt");

    // On a terminal: a conversation, each question sent with the turns before it. `script` gives the CLI a pty.
    const tty = spawn(
      "script",
      ["-qfec", `${process.execPath} ${NODEWAY} chat --model gpt-4o-mini --gateway ${s.url}`, "/dev/null"],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let screen = "";
    tty.stdout.on("data", (d: Buffer) => (screen += d.toString()));
    const ttyExit = new Promise((r) => tty.once("exit", r));
    t.teardown(() => tty.kill("SIGKILL"));
    await waitFor(() => screen.includes("> "), 10_000, "the prompt");
    t.match(screen, /chatting with gpt-4o-mini \(Ctrl-D to end\)/);
    tty.stdin.write("first question\r");
    // A line typed before the next prompt is lost by readline, as it would be at a terminal: wait for the prompt.
    await waitFor(() => /echo: first question[\s\S]*> /.test(screen), 10_000, "the first answer, then the prompt");
    tty.stdin.write("second question\r");
    await waitFor(() => screen.includes("echo: second question"), 10_000, "the second answer");
    const turns = fake.requests.filter((r) => r.path === "/v1/chat/completions").at(-1)!.body as {
      messages: unknown[];
    };
    t.same(
      turns.messages,
      [
        { role: "user", content: "first question" },
        { role: "assistant", content: "echo: first question" },
        { role: "user", content: "second question" },
      ],
      "the second question carries the first turn",
    );
    tty.stdin.write("\x04");
    t.equal(await ttyExit, 0, "Ctrl-D ends the conversation");

    const which = runNodeway(["chat", "--gateway", s.url, "hi"]);
    t.equal(await which.exited, 2, "no --model and several models");
    t.match(which.stderr(), /choose one with --model: .*gpt-4o-mini/);
    const unknown = runNodeway(["chat", "--model", "nope", "--gateway", s.url, "hi"]);
    t.equal(await unknown.exited, 1);
    t.match(unknown.stderr(), /`nope` does not exist or no live agent offers it/);
    const dead = runNodeway(["chat", "--model", "gpt-4o-mini", "--gateway", "http://127.0.0.1:9", "hi"]);
    t.equal(await dead.exited, 1);
    t.match(dead.stderr(), /cannot reach the gateway at http:\/\/127\.0\.0\.1:9/);
  },
);

t.test(
  "openai - tools: the model's calls come back as OpenAI's tool_calls, whole or streamed, and results go back",
  async (t) => {
    const fake = await FakeLlm.start(1);
    t.teardown(() => fake.stop());
    fake.toolArgs = { city: "Paris" };
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    const client = clientOf(s.url);
    await modelsListed(client, 5);
    const tools: OpenAI.Chat.ChatCompletionTool[] = [
      {
        type: "function",
        function: {
          name: "get_weather",
          description: "The weather in a city",
          parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        },
      },
    ];
    const user = { role: "user" as const, content: "weather in Paris?" };
    for (const model of ["gpt-4o-mini", "claude-sonnet-4-5", "qwen3:8b"]) {
      const whole = await client.chat.completions.create({ model, messages: [user], tools, tool_choice: "auto" });
      const choice = whole.choices[0]!;
      t.equal(choice.finish_reason, "tool_calls", `${model}: the reply asks for a tool`);
      t.equal(choice.message.content, null, `${model}: and has no text`);
      const call = choice.message.tool_calls?.[0] as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
      t.match(call, { type: "function", function: { name: "get_weather" } });
      t.same(JSON.parse(call.function.arguments), { city: "Paris" }, `${model}: with the model's arguments`);

      const answer = await client.chat.completions.create({
        model,
        tools,
        messages: [
          user,
          { role: "assistant", content: null, tool_calls: [call] },
          { role: "tool", tool_call_id: call.id, content: "sunny, 21 C" },
        ],
      });
      t.equal(
        answer.choices[0]!.message.content,
        "tool said: sunny, 21 C",
        `${model}: the tool's result reached the model`,
      );
      t.equal(answer.choices[0]!.finish_reason, "stop");
    }
    const sent = fake.requests.filter((r) => r.path === "/v1/chat/completions").at(-1)!.body;
    t.match(sent.tools, [{ type: "function", function: { name: "get_weather", parameters: { required: ["city"] } } }]);
    t.match(sent.messages, [
      { role: "user" },
      { role: "assistant", tool_calls: [{ type: "function", function: { name: "get_weather" } }] },
      { role: "tool", content: "sunny, 21 C" },
    ]);

    const stream = client.chat.completions.stream({ model: "gpt-4o-mini", messages: [user], tools, stream: true });
    const final = await stream.finalChatCompletion();
    t.equal(final.choices[0]!.finish_reason, "tool_calls", "streamed: the same ending");
    const streamedCall = final.choices[0]!.message.tool_calls?.[0] as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
    t.same(
      JSON.parse(streamedCall.function.arguments),
      { city: "Paris" },
      "streamed: the call put together by the SDK",
    );

    const none = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [user],
      tools,
      tool_choice: "none",
    });
    t.equal(none.choices[0]!.message.content, "echo: weather in Paris?", '"none": the model answers in text');
  },
);
