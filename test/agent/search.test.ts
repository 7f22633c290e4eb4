/**
 * The `search.*` nodes call SerpAPI's search API with the agent's key (`SERPAPI_API_KEY`) at the agent's
 * `SERPAPI_BASE_URL`, here a local server speaking SerpAPI's JSON (test/helpers/fake-search.ts): each node sends its
 * engine and query, outputs the results (cut to num_results) and NodeTool's text, and fails with SerpAPI's own error
 * or, without a key, naming the setting. The searches are agent tools under NodeTool's names.
 */
import t from "tap";
import { WsClient, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";
import { terminal } from "../helpers/strategy-jobs.js";
import { FAKE_SERP_KEY, FakeSerp } from "../helpers/fake-search.js";

const searchGraph = (type: string, data: Record<string, unknown>, handles: string[]) => ({
  nodes: [
    { id: "s", type, data },
    ...handles.map((h) => ({ id: `out_${h}`, type: "nodetool.output.Output", data: { name: h } })),
  ],
  edges: handles.map((h) => ({
    id: `e_${h}`,
    source: "s",
    sourceHandle: h,
    target: `out_${h}`,
    targetHandle: "value",
  })),
});

async function run(ws: WsClient, graph: unknown): Promise<Msg> {
  const r = await ws.request("run_job", { graph, params: {} });
  const jobId = String((r.result as { job_id: string }).job_id);
  return check(() => terminal(ws.events(jobId)) ?? null, 30_000, { name: `job ${jobId} ended` });
}

const errorOf = (end: Msg) =>
  String((end.error as { message?: string } | undefined)?.message ?? JSON.stringify(end.error ?? end.message ?? ""));

t.test("search nodes - SerpAPI engines, queries and results, with the agent's key", async (t) => {
  const serp = await FakeSerp.start();
  t.teardown(() => serp.stop());
  const s = await startStack(t, {
    agents: 1,
    agentEnv: { SERPAPI_API_KEY: FAKE_SERP_KEY, SERPAPI_BASE_URL: serp.url },
  });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());

  const google = await run(
    ws,
    searchGraph("search.google.GoogleSearch", { keyword: "nodeway fleet", num_results: 3 }, ["results", "text"]),
  );
  t.equal(google.status, "completed", errorOf(google));
  const result = google.result as { results: Record<string, unknown>[][]; text: string[] };
  t.equal(result.results[0]!.length, 3, "cut to num_results");
  t.equal(result.results[0]![0]!.title, "google result 1 for nodeway fleet", "SerpAPI's organic_results");
  t.match(
    result.text[0],
    /^\[1\] google result 1 for nodeway fleet\n {4}https:\/\/example\.com\/google\/1\n/,
    "NodeTool's text",
  );
  const req = serp.requests.at(-1)!;
  t.equal(req.get("engine"), "google");
  t.equal(req.get("q"), "nodeway fleet");
  t.equal(req.get("api_key"), FAKE_SERP_KEY, "the agent's key went to SerpAPI");

  for (const [type, data, engine, param] of [
    ["search.youtube.YouTubeSearch", { query: "cats" }, "youtube", "search_query"],
    ["search.amazon.AmazonSearch", { query: "kettle" }, "amazon", "k"],
    ["search.yelp.YelpSearch", { query: "pizza", location: "Rome" }, "yelp", "find_desc"],
    ["search.google.GoogleMaps", { keyword: "museum" }, "google_maps", "q"],
    ["search.scholar.GoogleScholar", { query: "graphs" }, "google_scholar", "q"],
  ] as const) {
    const end = await run(ws, searchGraph(type, data, ["results"]));
    t.equal(end.status, "completed", `${type}: ${errorOf(end)}`);
    t.equal(serp.requests.at(-1)!.get("engine"), engine, `${type} uses engine ${engine}`);
    t.equal(serp.requests.at(-1)!.get(param), Object.values(data)[0], `${type} sends its query as ${param}`);
    t.equal((end.result as { results: unknown[][] }).results[0]!.length, 10, `${type}: 10 results by default`);
  }

  const images = await run(
    ws,
    searchGraph("search.google.GoogleImages", { keyword: "owls", num_results: 2 }, ["output"]),
  );
  t.same(
    (images.result as { output: unknown[] }).output[0],
    [
      { type: "image", uri: "https://img.example.com/1.png" },
      { type: "image", uri: "https://img.example.com/2.png" },
    ],
    "GoogleImages outputs image references",
  );
  const product = await run(ws, searchGraph("search.amazon.AmazonProduct", { product_id: "B0TEST" }, ["output"]));
  t.match((product.result as { output: unknown[] }).output[0], { product_result: { id: "B0TEST" } });

  const empty = await run(ws, searchGraph("search.google.GoogleSearch", { keyword: "" }, ["results"]));
  t.equal(empty.status, "failed");
  t.match(errorOf(empty), /"keyword" is required/, "an empty query fails before calling SerpAPI");
});

t.test("search nodes - SerpAPI's error and a missing key fail the node saying so", async (t) => {
  const serp = await FakeSerp.start();
  t.teardown(() => serp.stop());
  const s = await startStack(t, { agents: 1, agentEnv: { SERPAPI_API_KEY: "wrong", SERPAPI_BASE_URL: serp.url } });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  const end = await run(ws, searchGraph("search.bing.BingSearch", { query: "x" }, ["results"]));
  t.equal(end.status, "failed");
  t.match(errorOf(end), /SerpAPI \(bing\): Invalid API key/, "SerpAPI's own words");

  const s2 = await startStack(t, { agents: 1, agentEnv: { SERPAPI_API_KEY: "", SERPAPI_BASE_URL: serp.url } });
  const ws2 = await WsClient.open(s2.url, "msgpack");
  t.teardown(() => ws2.close());
  const nokey = await run(ws2, searchGraph("search.duckduckgo.DuckDuckGoSearch", { query: "x" }, ["results"]));
  t.equal(nokey.status, "failed");
  t.match(errorOf(nokey), /no SERPAPI_API_KEY/, "names the setting");
});

t.test("search nodes - each is an agent tool under NodeTool's name", async (t) => {
  const serp = await FakeSerp.start();
  t.teardown(() => serp.stop());
  const { resolveTools, toolOfNodeType } = await import("../../agent/nodes/agent-tools.js");
  await import("../../agent/nodes/search.js");
  const [tool] = resolveTools([{ type: "tool_name", name: "google_search" }]);
  t.equal(toolOfNodeType("search.google.GoogleSearch")?.name, "google_search");
  const saved = { ...process.env };
  t.teardown(() => {
    process.env = saved;
  });
  process.env.SERPAPI_API_KEY = FAKE_SERP_KEY;
  process.env.SERPAPI_BASE_URL = serp.url;
  const out = (await tool!.run({ keyword: "tools" }, { signal: new AbortController().signal } as never)) as {
    results: { title: string }[];
  };
  t.equal(out.results[0]!.title, "google result 1 for tools", "the tool searches as the node does");
});
