/**
 * Table nodes (`nodetool.data.*`) on NodeTool's dataframe, JSON text nodes, the save nodes (the job's assets, read
 * back over the gateway's HTTP API, with a `save_update` telling clients) and the service stubs, through a real
 * agent running graphs.
 */
import t, { type Test } from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";

type Node = { id: string; type: string; data?: Record<string, unknown> };
const edge = (source: string, sourceHandle: string, target: string, targetHandle: string) => ({
  id: `${source}.${sourceHandle}-${target}.${targetHandle}`,
  source,
  sourceHandle,
  target,
  targetHandle,
});
const out = (name: string): Node => ({ id: `out_${name}`, type: "nodetool.output.Output", data: { name } });

async function run(ws: WsClient, graph: unknown, strategy = "inline"): Promise<{ end: Msg; events: Msg[] }> {
  const r = await ws.request("run_job", { graph, params: {}, execution_strategy: strategy });
  const jobId = String((r.result as { job_id: string }).job_id);
  const end = await check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
  return { end, events: ws.events(jobId) };
}
const errorOf = (end: Msg) => String((end.error as { message?: string } | undefined)?.message ?? "");

const CSV =
  'Country Name,Country Code,Year,Value\nUnited States,USA,2020,"20,893"\nUnited States,USA,2021,23315\nFrance,FRA,2021,2957\n';

t.test("data nodes - CSV, filter, columns and lists", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());

  const { end } = await run(ws, {
    nodes: [
      { id: "csv", type: "nodetool.data.ImportCSV", data: { csv_data: CSV } },
      { id: "f", type: "nodetool.data.Filter", data: { condition: "`Country Code` == 'USA' and Year >= 2021" } },
      { id: "x", type: "nodetool.data.ExtractColumn", data: { column_name: "Value" } },
      { id: "l", type: "nodetool.data.FromList", data: { values: [{ a: 1, b: { value: "v" } }, { a: 2 }] } },
      { id: "tl", type: "nodetool.data.ToList" },
      { id: "in", type: "nodetool.data.Filter", data: { condition: "a in [2, 3] or not (a < 5)" } },
      out("csv"),
      out("value"),
      out("rows"),
      out("in"),
    ],
    edges: [
      edge("csv", "output", "f", "df"),
      edge("csv", "output", "out_csv", "value"),
      edge("f", "output", "x", "dataframe"),
      edge("x", "output", "out_value", "value"),
      edge("l", "output", "tl", "dataframe"),
      edge("tl", "output", "out_rows", "value"),
      edge("l", "output", "in", "df"),
      edge("in", "output", "out_in", "value"),
    ],
  });
  t.equal(end.status, "completed", errorOf(end));
  const r = end.result as Record<string, unknown[]>;
  t.same(
    r.csv![0],
    {
      type: "dataframe",
      columns: [
        { name: "Country Name", data_type: "string" },
        { name: "Country Code", data_type: "string" },
        { name: "Year", data_type: "int" },
        { name: "Value", data_type: "object" },
      ],
      data: [
        ["United States", "USA", 2020, "20,893"],
        ["United States", "USA", 2021, 23315],
        ["France", "FRA", 2021, 2957],
      ],
    },
    "CSV with a header, quoted fields and typed columns",
  );
  t.same(r.value, [[23315]], "the filtered rows' column");
  t.same(
    r.rows,
    [
      [
        { a: 1, b: "v" },
        { a: 2, b: null },
      ],
    ],
    "FromList takes {value} cells; ToList gives the rows back",
  );
  t.same((r.in![0] as { data: unknown[] }).data, [[2, null]], "in-lists and not");

  const bad = await run(ws, {
    nodes: [
      { id: "csv", type: "nodetool.data.ImportCSV", data: { csv_data: CSV } },
      { id: "f", type: "nodetool.data.Filter", data: { condition: "Population > 3" } },
    ],
    edges: [edge("csv", "output", "f", "df")],
  });
  t.equal(bad.end.status, "failed");
  t.match(errorOf(bad.end), /no column "Population"/, "an unknown column fails naming it");
});

t.test("json and save nodes - text out, the file as the job's asset, readable over HTTP", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline,threaded,subprocess"] });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const data = { city: "Oslo", tags: ["a", "b"] };
  const graph = {
    nodes: [
      { id: "d", type: "nodetool.constant.Dict", data: { value: data } },
      { id: "js", type: "lib.json.StringifyJSON", data: { indent: 4 } },
      { id: "tj", type: "nodetool.dictionary.ToJSON" },
      { id: "sj", type: "nodetool.dictionary.SaveJSON", data: { name: "report-%Y.json" } },
      { id: "st", type: "nodetool.text.SaveText", data: { text: "<h1>hi</h1>", name: "guide.html" } },
      out("js"),
      out("tj"),
      out("sj"),
      out("st"),
    ],
    edges: [
      edge("d", "output", "js", "data"),
      edge("d", "output", "tj", "dictionary"),
      edge("d", "output", "sj", "data"),
      edge("js", "output", "out_js", "value"),
      edge("tj", "output", "out_tj", "value"),
      edge("sj", "output", "out_sj", "value"),
      edge("st", "output", "out_st", "value"),
    ],
  };
  // In a thread or a process, the nodes reach the job's assets through the agent.
  for (const strategy of ["inline", "threaded", "subprocess"]) {
    t.test(strategy, (t) => saveRun(t, s.url, ws, graph, strategy, data));
  }
});

async function saveRun(
  t: Test,
  base: string,
  ws: WsClient,
  graph: unknown,
  strategy: string,
  data: unknown,
): Promise<void> {
  const { end, events } = await run(ws, graph, strategy);
  t.equal(end.status, "completed", errorOf(end));
  const r = end.result as Record<string, unknown[]>;
  t.equal(r.js![0], JSON.stringify(data, null, 4), "StringifyJSON indents as asked");
  t.equal(r.tj![0], JSON.stringify(data), "ToJSON is compact");
  t.equal(r.sj![0], JSON.stringify(data, null, 2), "SaveJSON outputs its JSON text");
  const text = r.st![0] as { type: string; asset_id: string; uri: string };
  t.match(text, { type: "text", uri: /^asset:\/\// }, "SaveText outputs the text's asset reference");
  const res = await fetch(`${base}/api/assets/${text.asset_id}/content`);
  t.equal(res.status, 200);
  t.equal(await res.text(), "<h1>hi</h1>", "the saved bytes, read back over the gateway's HTTP API");
  const year = new Date().getUTCFullYear();
  const saves = events.filter(
    (e) => e.type === "save_update" || (e.type === "log_update" && /^saved /.test(String(e.content))),
  );
  t.equal(saves.length, 2, "each save told clients");
  const sj = saves.find((e) => e.node_id === "sj")!;
  t.match(JSON.stringify(sj), new RegExp(`report-${year}\\.json`), "under its name, with the date filled in");
  const info = await (await fetch(`${base}/api/assets?job_id=${String(end.job_id)}`)).json();
  t.ok(JSON.stringify(info).includes(`report-${year}.json`), "the JSON file is among the job's assets");
}

t.test("service stubs - accepted, and fail naming the service and its setting", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  for (const [type, want] of [
    ["lib.mail.GmailSearch", /GOOGLE_MAIL_USER and GOOGLE_APP_PASSWORD/],
    ["vector.chroma.HybridSearch", /ChromaDB.*CHROMA_URL/],
    ["kie.image.NanoBanana", /kie\.ai.*KIE_API_KEY/],
    ["fal.text_to_image.NanoBanana2", /fal\.ai.*FAL_API_KEY/],
    ["openai.agents.RealtimeAgent", /Realtime API.*OPENAI_API_KEY/],
    ["nodetool.input.RealtimeAudioInput", /realtime audio stream/],
    ["lib.pymupdf.ExtractText", /PDF text extractor/],
  ] as const) {
    const { end } = await run(ws, { nodes: [{ id: "n", type, data: {} }], edges: [] });
    t.equal(end.status, "failed", type);
    t.match(errorOf(end), want, `${type}: ${errorOf(end)}`);
    t.notMatch(errorOf(end), /unknown node type/);
  }
});
