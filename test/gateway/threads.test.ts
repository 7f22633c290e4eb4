/**
 * Chat threads: NodeTool's `/api/threads` and `/api/messages` over KV
 * `nw_threads`, and `chat_message` on `/ws`, which stores the user's message, sends the conversation so far to the
 * model as a job and stores the model's reply, against a real gateway, agent processes and a local server
 * speaking the providers' APIs (test/helpers/fake-llm.ts).
 */
import t from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack, type Stack } from "../helpers/stack.js";
import { startGateway } from "../../gateway/index.js";
import { FakeLlm, providerEnv } from "../helpers/fake-llm.js";

async function api(
  s: Stack,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${s.url}${path}`, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}),
  });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

type Message = {
  id: string;
  role: string;
  content: string;
  job_id?: string;
  error?: { code: string };
  finish_reason?: string;
  usage?: Record<string, number>;
};
const messagesOf = async (s: Stack, threadId: string, q = "") =>
  (await api(s, "GET", `/api/messages?thread_id=${threadId}${q}`)).json as { messages: Message[]; next: string | null };

/** Waits for the model to answer: the gateway listed the fake's models from the agent's registration. */
async function modelsReady(s: Stack): Promise<void> {
  await check(async () => ((await api(s, "GET", "/v1/models")).json.data as unknown[]).length >= 5, 30_000, {
    name: "models listed",
  });
}

t.test(
  "threads - REST: threads and messages are kept, listed in order with cursors, and removed together",
  async (t) => {
    const s = await startStack(t, { agents: 0 });
    const a = await api(s, "POST", "/api/threads", { title: "first" });
    t.equal(a.status, 200);
    t.match(a.json, { id: /^[0-9a-z]{26}$/, title: "first", created_at: String, updated_at: String });
    const b = (await api(s, "POST", "/api/threads/", {})).json;
    t.equal(b.title, "New thread", "a title by default");
    t.same((await api(s, "GET", `/api/threads/${a.json.id}`)).json, a.json);
    const renamed = (await api(s, "PUT", `/api/threads/${a.json.id}`, { title: "renamed" })).json;
    t.equal(renamed.title, "renamed");
    const page = (await api(s, "GET", "/api/threads?limit=1")).json as { threads: { id: string }[]; next: string };
    t.same(
      page.threads.map((x) => x.id),
      [b.id],
      "newest first",
    );
    t.same(
      ((await api(s, "GET", `/api/threads?limit=1&cursor=${page.next}`)).json.threads as { id: string }[]).map(
        (x) => x.id,
      ),
      [a.json.id],
      "then the next page",
    );

    const ids: string[] = [];
    for (const [role, content] of [
      ["user", "q1"],
      ["assistant", "a1"],
      ["user", "q2"],
    ]) {
      const m = await api(s, "POST", "/api/messages", { thread_id: a.json.id, role, content });
      t.equal(m.status, 200);
      t.match(m.json, { thread_id: a.json.id, role, content });
      ids.push(m.json.id as string);
    }
    t.same(
      (await messagesOf(s, a.json.id as string)).messages.map((m) => m.content),
      ["q1", "a1", "q2"],
      "oldest first",
    );
    const rev = await messagesOf(s, a.json.id as string, "&reverse=true&limit=2");
    t.same(
      rev.messages.map((m) => m.content),
      ["q2", "a1"],
      "reverse: newest first, a page of two",
    );
    t.same(
      (await messagesOf(s, a.json.id as string, `&reverse=true&cursor=${rev.next}`)).messages.map((m) => m.content),
      ["q1"],
    );
    t.equal((await api(s, "GET", `/api/messages/${ids[1]}`)).json.content, "a1", "one message by id");

    const refusals: [string, string, unknown, number, RegExp][] = [
      ["POST", "/api/threads", { title: 3 }, 400, /"title" must be a string/],
      ["POST", "/api/threads", { title: "x".repeat(201) }, 400, /longer than 200/],
      [
        "GET",
        "/api/threads/00000000000000000000000000",
        undefined,
        404,
        /thread "00000000000000000000000000" not found/,
      ],
      ["GET", "/api/threads/bad.id", undefined, 400, /malformed id/],
      [
        "POST",
        "/api/messages",
        { thread_id: a.json.id, role: "system", content: "x" },
        400,
        /"role" must be "user" or "assistant"/,
      ],
      ["POST", "/api/messages", { thread_id: a.json.id, role: "user", content: 5 }, 400, /"content" must be a string/],
      ["POST", "/api/messages", { role: "user", content: "x" }, 400, /"thread_id" is required/],
      [
        "POST",
        "/api/messages",
        { thread_id: "00000000000000000000000000", role: "user", content: "x" },
        404,
        /not found/,
      ],
      ["GET", "/api/messages", undefined, 400, /"thread_id" is required/],
      ["GET", "/api/messages/00000000000000000000000000", undefined, 404, /message .* not found/],
    ];
    for (const [method, path, body, status, why] of refusals) {
      const r = await api(s, method, path, body);
      t.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)}`);
      t.match(r.json.message, why);
    }

    t.equal((await api(s, "DELETE", `/api/threads/${a.json.id}`)).status, 200);
    t.equal((await api(s, "GET", `/api/threads/${a.json.id}`)).status, 404, "the thread is gone");
    t.equal((await api(s, "GET", `/api/messages/${ids[0]}`)).status, 404, "and its messages with it");
    t.same(
      ((await api(s, "GET", "/api/threads")).json.threads as { id: string }[]).map((x) => x.id),
      [b.id],
    );
  },
);

t.test(
  "threads - chat_message stores the question, streams the model's reply as the job's chunks and stores it; the next turn sends the conversation",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    await modelsReady(s);
    const ws = await WsClient.open(s.url, "msgpack");
    t.teardown(() => ws.close());

    const r1 = await ws.request("chat_message", { content: "hello there", model: "gpt-4o-mini", system: "Be brief." });
    const first = r1.result as { thread_id: string; message_id: string; job_id: string };
    t.match(
      first,
      { thread_id: /^[0-9a-z]{26}$/, message_id: /^[0-9a-z]{26}$/, job_id: /^[0-9a-z]{26}$/ },
      "no thread_id: a new thread",
    );
    const reply1 = await check(
      () => ws.messages.find((m) => m.type === "message" && m.job_id === first.job_id),
      20_000,
      { name: "the reply message" },
    );
    t.match(reply1, {
      thread_id: first.thread_id,
      role: "assistant",
      content: "echo: hello there",
      provider: "openai",
      model: "gpt-4o-mini",
      finish_reason: "stop",
      usage: { completion_tokens: 3 },
    });
    const chunks = ws
      .events(first.job_id)
      .filter((e) => e.type === "chunk" && e.content !== "")
      .map((e) => e.content);
    t.equal(chunks.join(""), "echo: hello there", "the reply streamed to the socket as its job's chunks");
    t.equal(
      (await api(s, "GET", `/api/threads/${first.thread_id}`)).json.title,
      "hello there",
      "the thread is titled by its first question",
    );

    const r2 = await ws.request("chat_message", {
      thread_id: first.thread_id,
      content: "and again",
      model: "qwen3:8b",
      provider: "ollama",
    });
    const second = r2.result as { job_id: string };
    await check(() => ws.messages.find((m) => m.type === "message" && m.job_id === second.job_id), 20_000, {
      name: "the second reply",
    });
    const sent = fake.requests.filter((r) => r.path === "/api/chat").at(-1)!.body as {
      messages: { role: string; content: string }[];
    };
    t.same(
      sent.messages.map((m) => [m.role, m.content]),
      [
        ["user", "hello there"],
        ["assistant", "echo: hello there"],
        ["user", "and again"],
      ],
      "the model got the conversation so far",
    );
    const stored = (await messagesOf(s, first.thread_id)).messages;
    t.same(
      stored.map((m) => [m.role, m.content]),
      [
        ["user", "hello there"],
        ["assistant", "echo: hello there"],
        ["user", "and again"],
        ["assistant", "echo: and again"],
      ],
    );
    t.equal(stored[0]!.job_id, first.job_id, "the question names the job that answers it");
    t.match((await api(s, "GET", `/api/jobs/${second.job_id}`)).json, {
      workflow_id: "chat-threads",
      pool: "ollama",
      status: "completed",
    });

    const refused = async (data: Record<string, unknown>) =>
      (await ws.request("chat_message", data)).error as { code: string; message: string };
    t.match(await refused({ content: "x" }), { code: "PROTO_ERR_SHAPE", message: /"model" is required/ });
    t.match(await refused({ content: "  ", model: "gpt-4o-mini" }), { message: /"content" is empty/ });
    t.match(await refused({ content: "x", model: "gpt-4o-mini", role: "assistant" }), {
      message: /"role" must be "user"/,
    });
    t.match(await refused({ content: "x", model: "nope" }), {
      code: "GW_ERR_NOT_FOUND",
      message: /`nope` does not exist or no live agent offers it/,
    });
    t.match(await refused({ content: "x", model: "gpt-4o-mini", thread_id: "00000000000000000000000000" }), {
      code: "GW_ERR_NOT_FOUND",
      message: /thread/,
    });
    t.equal((await messagesOf(s, first.thread_id)).messages.length, 4, "refused turns stored nothing");
  },
);

t.test(
  "threads - a new turn cancels the running one; stop ends a turn; a reply is stored after its socket left",
  async (t) => {
    const fake = await FakeLlm.start(150);
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: { ...providerEnv(fake) }, agentArgs: ["--max-jobs", "4"] });
    await modelsReady(s);
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const long = "a b c d e f g h i j k l m n o p q r s t";
    const firstChunk = (jobId: string) =>
      check(() => ws.events(jobId).some((e) => e.type === "chunk" && e.content !== ""), 20_000, {
        name: "the first chunk",
      });

    const one = (await ws.request("chat_message", { content: long, model: "gpt-4o-mini" })).result as {
      thread_id: string;
      job_id: string;
    };
    await firstChunk(one.job_id);
    const two = (await ws.request("chat_message", { thread_id: one.thread_id, content: "short", model: "gpt-4o-mini" }))
      .result as { job_id: string };
    t.equal((await ws.waitTerminal(one.job_id)).status, "cancelled", "the turn it superseded was cancelled");
    await check(() => ws.messages.find((m) => m.type === "message" && m.job_id === two.job_id), 20_000, {
      name: "the second reply",
    });
    t.same(
      (await messagesOf(s, one.thread_id)).messages.map((m) => [m.role, m.content]),
      [
        ["user", long],
        ["user", "short"],
        ["assistant", "echo: short"],
      ],
      "no reply to the superseded question",
    );

    const three = (await ws.request("chat_message", { thread_id: one.thread_id, content: long, model: "gpt-4o-mini" }))
      .result as { job_id: string };
    await firstChunk(three.job_id);
    ws.send({ command: "stop", data: { thread_id: one.thread_id } });
    const stopped = await check(
      () => ws.messages.find((m: Msg) => m.type === "generation_stopped" && m.thread_id === one.thread_id),
      10_000,
      { name: "generation_stopped" },
    );
    t.equal(stopped.job_id, three.job_id, "stop names the turn it ended");
    t.equal((await ws.waitTerminal(three.job_id)).status, "cancelled");
    const partial = await check(
      () => ws.messages.find((m) => m.type === "message" && m.job_id === three.job_id),
      10_000,
      { name: "the stopped reply" },
    );
    t.match(
      partial,
      { role: "assistant", error: { code: "JOB_ERR_CANCELLED" } },
      "a stopped reply keeps what came, marked",
    );
    t.ok(
      String(partial.content).startsWith("echo: ") && String(partial.content).length < `echo: ${long}`.length,
      `what came before the stop: ${JSON.stringify(partial.content)}`,
    );

    const four = (
      await ws.request("chat_message", { thread_id: one.thread_id, content: "gone soon", model: "gpt-4o-mini" })
    ).result as { job_id: string };
    await firstChunk(four.job_id);
    await ws.close();
    const after = await check(
      async () =>
        (await messagesOf(s, one.thread_id)).messages.find((m) => m.job_id === four.job_id && m.role === "assistant"),
      20_000,
      { name: "the reply stored without its socket" },
    );
    t.equal(after.content, "echo: gone soon");
  },
);

t.test(
  "threads - a turn whose gateway died before the reply was stored gets its reply from the job's record, on any gateway",
  async (t) => {
    const fake = await FakeLlm.start(100);
    t.teardown(() => fake.stop());
    const s = await startStack(t, { agents: 1, agentEnv: providerEnv(fake) });
    const other = await startGateway({ natsUrl: s.ns.url, port: 0 });
    t.teardown(() => other.stop());
    await modelsReady(s);
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const question = "a b c d e f g h i j";
    const turn = (await ws.request("chat_message", { content: question, model: "gpt-4o-mini" })).result as {
      thread_id: string;
      message_id: string;
      job_id: string;
    };
    await check(() => ws.events(turn.job_id).some((e) => e.type === "chunk" && e.content !== ""), 20_000, {
      name: "the first chunk",
    });
    await s.gw.stop(); // the gateway that took the turn is gone; the agent runs on

    const at = (path: string) => fetch(`${other.url}${path}`).then((r) => r.json() as Promise<Record<string, unknown>>);
    await check(async () => (await at(`/api/jobs/${turn.job_id}`)).status === "completed" || null, 30_000, {
      name: "the turn's job completed",
    });
    const listed = (await at(`/api/messages?thread_id=${turn.thread_id}`)) as { messages: Message[] };
    t.same(
      listed.messages.map((m) => [m.id, m.role, m.content]),
      [
        [turn.message_id, "user", question],
        [`${turn.message_id}-reply`, "assistant", `echo: ${question}`],
      ],
      "the other gateway wrote the reply from the job's record, right after its question",
    );
    t.equal(listed.messages[1]!.job_id, turn.job_id);
    t.match(
      listed.messages[1],
      { finish_reason: "stop", usage: { completion_tokens: 11 } },
      "with how it ended, from the job's events",
    );
    t.equal(
      ((await at(`/api/messages?thread_id=${turn.thread_id}`)) as { messages: Message[] }).messages.length,
      2,
      "once",
    );
  },
);
