/**
 * Provider errors never quote credentials embedded in a base URL (`http://user:secret@host/v1`, `?key=secret`) nor
 * the agent's key: against the fake providers over real sockets, each provider's failure names its endpoint without
 * them, and a job whose provider fails shows none of them in its error, its events, its record or the agent's log.
 */
import t from "tap";
import { streamChat, type ProviderName } from "../../agent/integrations/providers.js";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";

const SECRET = "s3cret-in-url";

async function failureOf(provider: ProviderName, env: NodeJS.ProcessEnv): Promise<string> {
  const req = {
    provider,
    model: "gpt-4o-mini",
    system: "",
    messages: [{ role: "user" as const, content: "hi" }],
    maxTokens: 8,
    signal: new AbortController().signal,
  };
  try {
    for await (const piece of streamChat(req, env)) void piece;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${provider} did not fail`);
}

t.test("providers - a failure names the endpoint without the credentials of its URL, nor the key", async (t) => {
  const fake = await FakeLlm.start();
  t.teardown(() => fake.stop());
  const dead = await FakeLlm.start();
  const deadPort = dead.port;
  await dead.stop();
  const withUser = (port: number, path = "") => `http://nodeway:${SECRET}@127.0.0.1:${port}${path}`;
  const cases: [ProviderName, NodeJS.ProcessEnv, RegExp][] = [
    [
      "openai",
      { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: withUser(fake.port, "/v1") },
      new RegExp(`openai at http://127\\.0\\.0\\.1:${fake.port}/v1 is unreachable`),
    ],
    [
      "openai",
      { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: `${fake.url}/v1?key=${SECRET}` },
      /openai refused the request \(HTTP 404\)/,
    ],
    [
      "anthropic",
      { ANTHROPIC_API_KEY: FAKE_KEY, ANTHROPIC_BASE_URL: withUser(fake.port) },
      new RegExp(`anthropic at http://127\\.0\\.0\\.1:${fake.port}/ is unreachable`),
    ],
    [
      "anthropic",
      { ANTHROPIC_API_KEY: FAKE_KEY, ANTHROPIC_BASE_URL: withUser(deadPort) },
      /anthropic at http:\/\/127\.0\.0\.1:\d+\/ is unreachable/,
    ],
    ["ollama", { OLLAMA_HOST: withUser(deadPort) }, /ollama/],
    [
      "ollama",
      { OLLAMA_HOST: `http://127.0.0.1:${deadPort}/?key=${SECRET}` },
      /ollama at http:\/\/127\.0\.0\.1:\d+\/\?key=\*\*\* is unreachable/,
    ],
  ];
  for (const [provider, env, said] of cases) {
    const message = await failureOf(provider, env);
    const name = `${provider} ${JSON.stringify(env)}`;
    t.notMatch(message, SECRET, `${name}: the secret is not in "${message}"`);
    t.notMatch(message, /nodeway:/, `${name}: nor the user`);
    t.match(message, said, `${name}: it still says what failed`);
  }
});

t.test(
  "providers - a job whose provider's base URL holds credentials fails without showing them anywhere",
  async (t) => {
    const fake = await FakeLlm.start();
    t.teardown(() => fake.stop());
    const base = `http://nodeway:${SECRET}@127.0.0.1:${fake.port}/v1`;
    const s = await startStack(t, { agents: 1, agentEnv: { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: base } });
    const ws = await WsClient.open(s.url, "json");
    t.teardown(() => ws.close());
    const graph = {
      nodes: [
        {
          id: "llm",
          type: "nodetool.llms.LLM",
          data: {
            model: { type: "language_model", provider: "openai", id: "gpt-4o-mini" },
            prompt: "hi",
            max_tokens: 8,
          },
        },
        { id: "answer", type: "nodetool.output.Output", data: { name: "answer" } },
      ],
      edges: [{ id: "e", source: "llm", sourceHandle: "text", target: "answer", targetHandle: "value" }],
    };
    const r = await ws.request("run_job", { graph, params: {} });
    const jobId = String((r.result as { job_id: string }).job_id);
    const end = await check(() => terminal(ws.events(jobId)) ?? null, 60_000, { name: "the job ended" });
    t.equal(end.status, "failed");
    t.match(
      end.error,
      {
        code: "JOB_ERR_NODE_FAILED",
        message: new RegExp(`openai at http://127\\.0\\.0\\.1:${fake.port}/v1 is unreachable`),
      },
      "the error names the endpoint",
    );
    t.notMatch(JSON.stringify(ws.events(jobId)), SECRET, "no event shows the password");
    t.notMatch(JSON.stringify((await api(s.url, "GET", `/api/jobs/${jobId}`)).body), SECRET, "nor the job's record");
    t.notMatch(JSON.stringify((await api(s.url, "GET", "/api/agents")).body), SECRET, "nor /api/agents");
    t.notMatch(s.agents[0]!.stderr(), SECRET, "nor the agent's log");
  },
);
