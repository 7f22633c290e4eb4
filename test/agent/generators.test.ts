/**
 * The generator nodes (`nodetool.generators.*`) call a model through the agent's providers (a local server speaking
 * OpenAI's streaming API, test/helpers/fake-llm.ts, which echoes the user's message word by word) and parse the
 * reply as it streams: ListGenerator sends each `<LIST_ITEM>` along its edges as soon as it is complete, in order,
 * with its index; DataGenerator sends each markdown-table row as a typed record, then the dataframe. An empty model
 * (no deployment default) fails naming NODEWAY_DEFAULT_MODEL.
 */
import t from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_KEY, FakeLlm } from "../helpers/fake-llm.js";

const MODEL = { type: "language_model", provider: "openai", id: "gpt-4o-mini" };

const generatorGraph = (type: string, data: Record<string, unknown>, handles: string[]) => ({
  nodes: [
    { id: "g", type, data },
    ...handles.map((h) => ({ id: `out_${h}`, type: "nodetool.output.Output", data: { name: h } })),
  ],
  edges: handles.map((h) => ({
    id: `e_${h}`,
    source: "g",
    sourceHandle: h,
    target: `out_${h}`,
    targetHandle: "value",
  })),
});

async function run(ws: WsClient, graph: unknown): Promise<{ end: Msg; events: Msg[] }> {
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
  return { end, events: ws.events(jobId) };
}

const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");

t.test("generators - list items and table rows stream along edges as the model writes them", async (t) => {
  // 40 ms between words: an item sent only at the reply's end would arrive with the last one.
  const fake = await FakeLlm.start(40);
  t.teardown(() => fake.stop());
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: `${fake.url}/v1` },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());

  const prompt =
    "<LIST_ITEM>alpha</LIST_ITEM> and then <LIST_ITEM>**beta**\n  gamma</LIST_ITEM> some words in between <LIST_ITEM>delta</LIST_ITEM> done";
  const list = await run(
    ws,
    generatorGraph("nodetool.generators.ListGenerator", { model: MODEL, prompt }, ["item", "index"]),
  );
  t.equal(list.end.status, "completed", errorOf(list.end));
  t.same(list.end.result, { item: ["alpha", "beta gamma", "delta"], index: [0, 1, 2] }, "items in order, cleaned");
  const items = list.events.filter((e) => e.type === "output_update" && e.node_name === "item");
  t.same(
    items.map((e) => e.value),
    ["alpha", "beta gamma", "delta"],
    "each item reached the Output as its own value",
  );
  const spread = Number(items[2]!.ts) - Number(items[0]!.ts);
  t.ok(spread >= 150, `the first item was sent while the model still wrote (${spread} ms before the last)`);
  const req = fake.requests.at(-1)!;
  t.match(req.body, { model: "gpt-4o-mini", stream: true }, "the model asked for");
  t.match(
    (req.body.messages as { role: string; content: string }[])[0]!.content,
    /<LIST_ITEM>/,
    "the system prompt asks for <LIST_ITEM> tags",
  );

  const none = await run(
    ws,
    generatorGraph("nodetool.generators.ListGenerator", { model: MODEL, prompt: "plain" }, ["item"]),
  );
  t.equal(none.end.status, "failed");
  t.match(errorOf(none.end), /did not find any <LIST_ITEM> tags/);

  const table = "\n| name | count | ripe |\n|------|-------|------|\n| apple | 3 | yes |\n| pear | None | no |\n";
  const data = await run(
    ws,
    generatorGraph(
      "nodetool.generators.DataGenerator",
      {
        model: MODEL,
        prompt: table,
        columns: {
          type: "record_type",
          columns: [
            { name: "name", data_type: "string" },
            { name: "count", data_type: "int" },
            { name: "ripe", data_type: "bool" },
          ],
        },
      },
      ["record", "index", "dataframe"],
    ),
  );
  t.equal(data.end.status, "completed", errorOf(data.end));
  t.same(
    data.end.result,
    {
      record: [
        { name: "apple", count: 3, ripe: true },
        { name: "pear", count: null, ripe: false },
      ],
      index: [0, 1],
      dataframe: [
        {
          type: "dataframe",
          columns: [
            { name: "name", data_type: "string" },
            { name: "count", data_type: "int" },
            { name: "ripe", data_type: "bool" },
          ],
          data: [
            ["apple", 3, true],
            ["pear", null, false],
          ],
        },
      ],
    },
    "typed records, their indexes, then the dataframe",
  );
  const order = data.events
    .filter((e) => e.type === "output_update")
    .map((e) => e.node_name)
    .filter((n, i, a) => a.indexOf(n) === i);
  t.equal(order.at(-1), "dataframe", "the dataframe comes after the records");
});

t.test("generators - an empty model fails naming the default-model setting", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const end = (
    await run(
      ws,
      generatorGraph("nodetool.generators.ListGenerator", { model: { type: "language_model" }, prompt: "x" }, ["item"]),
    )
  ).end;
  t.equal(end.status, "failed");
  t.match(errorOf(end), /NODEWAY_DEFAULT_MODEL/);
});
