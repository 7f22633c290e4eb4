/**
 * Web search (`search.*`) through SerpAPI (https://serpapi.com/search-api: `GET /search.json?engine=…&api_key=…`,
 * JSON results, `{"error": …}` on failure) with the agent's `SERPAPI_API_KEY`; `SERPAPI_BASE_URL` points the nodes
 * at another server speaking the same API (a proxy, a test's). Each search is also an agent tool (agent-tools.ts)
 * under NodeTool's tool name, so agent nodes can search.
 */
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "../engine/types.js";
import type { PropertyMetadata } from "../../protocol/index.js";
import { registerAgentTool } from "./agent-tools.js";
import { bodyText, safeFetch } from "./outbound.js";
import { asInt, asText, prop } from "./util.js";

/** Largest SerpAPI answer read (a results page is tens of KiB). */
const SERP_MAX_BYTES = 8 * 1024 * 1024;

/** One SerpAPI search: the whole JSON answer; its `error` fails the node with SerpAPI's words. */
export async function serpSearch(
  engine: string,
  params: Record<string, string | number | undefined>,
  signal: AbortSignal,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Record<string, unknown>> {
  const key = env.SERPAPI_API_KEY;
  if (!key)
    throw new NodeError(
      "this agent has no SERPAPI_API_KEY: search nodes call SerpAPI with the agent's key (set it there, or send the job to agents that have it)",
    );
  const url = new URL("search.json", `${(env.SERPAPI_BASE_URL || "https://serpapi.com").replace(/\/+$/, "")}/`);
  url.searchParams.set("engine", engine);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
  url.searchParams.set("api_key", key);
  const res = await safeFetch(url.href, { signal, trusted: true, maxBytes: SERP_MAX_BYTES });
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(bodyText(res)) as Record<string, unknown>;
  } catch {
    throw new NodeError(`SerpAPI (${engine}) answered ${res.status} with something that is not JSON`);
  }
  if (typeof body?.error === "string") throw new NodeError(`SerpAPI (${engine}): ${body.error}`);
  if (res.status >= 400) throw new NodeError(`SerpAPI (${engine}) answered ${res.status}`);
  return body;
}

/** NodeTool's `format_results`: "[position] title", then the given fields indented, a blank line between. */
export function formatResults(results: Record<string, unknown>[], fields: [string, string | null][]): string {
  const lines: string[] = [];
  results.forEach((r, i) => {
    lines.push(`[${String(r.position ?? i + 1)}] ${asText(r.title ?? "Untitled")}`);
    for (const [key, label] of fields) {
      const v = r[key];
      if (v !== undefined && v !== null && v !== "")
        lines.push(label ? `    ${label}: ${asText(v)}` : `    ${asText(v)}`);
    }
    lines.push("");
  });
  return lines.join("\n");
}

/** How one search node reads its inputs, calls SerpAPI and shapes its outputs. */
interface SearchSpec {
  type: string;
  title: string;
  description: string;
  /** NodeTool's agent-tool name. */
  tool: string;
  properties: PropertyMetadata[];
  /** The property that must be set (the query), with older names it also answers to. */
  required: string[];
  engine: string | ((inputs: NodeInputs) => string);
  params(inputs: NodeInputs): Record<string, string | number | undefined>;
  /** Where the results are; absent: the whole answer (metadata removed) is the output. */
  resultsKey?: string | ((body: Record<string, unknown>) => unknown[]);
  fields?: [string, string | null][];
  /** A different output shape than {results, text}. */
  shape?: (results: Record<string, unknown>[]) => Record<string, unknown>;
}

const str = (inputs: NodeInputs, ...names: string[]) => {
  for (const n of names) if (asText(inputs[n]) !== "") return asText(inputs[n]);
  return "";
};
const num = (inputs: NodeInputs, name = "num_results", dflt = 10) => asInt(inputs[name] ?? dflt, name);
const imageRefs = (rs: Record<string, unknown>[], key: string) =>
  rs.filter((r) => typeof r[key] === "string" && r[key] !== "").map((r) => ({ type: "image", uri: r[key] }));

const LIST_OUT = [
  { name: "results", type: "list[dict]" },
  { name: "text", type: "str" },
];

function resultsOf(spec: SearchSpec, body: Record<string, unknown>, limit: number): Record<string, unknown>[] {
  const key = spec.resultsKey!;
  const raw = typeof key === "function" ? key(body) : body[key];
  const list = Array.isArray(raw) ? (raw as Record<string, unknown>[]) : [];
  return limit > 0 ? list.slice(0, limit) : list;
}

/** Runs the search `spec` describes with `inputs`: the node's outputs (also the tool's result). */
async function runSearch(spec: SearchSpec, inputs: NodeInputs, signal: AbortSignal): Promise<Record<string, unknown>> {
  if (spec.required.length > 0 && str(inputs, ...spec.required) === "")
    throw new NodeError(`${spec.title}: "${spec.required[0]}" is required`);
  const engine = typeof spec.engine === "function" ? spec.engine(inputs) : spec.engine;
  const body = await serpSearch(engine, spec.params(inputs), signal);
  if (!spec.resultsKey) {
    const { search_metadata: _m, search_parameters: _p, search_information: _i, ...rest } = body;
    return { output: rest };
  }
  const results = resultsOf(spec, body, inputs.num_results === undefined ? 0 : num(inputs));
  if (spec.shape) return spec.shape(results);
  return {
    results,
    text: formatResults(
      results,
      spec.fields ?? [
        ["link", null],
        ["snippet", null],
      ],
    ),
  };
}

function searchNode(spec: SearchSpec): NodeDef {
  const outputs = spec.shape
    ? Object.keys(spec.shape([])).map((name) => ({
        name,
        type: name === "images" || name === "output" ? "list[image]" : "list[dict]",
      }))
    : spec.resultsKey
      ? LIST_OUT
      : [{ name: "output", type: "dict" }];
  return {
    kind: "process",
    type: spec.type,
    title: spec.title,
    description: spec.description,
    properties: spec.properties,
    outputs,
    process: (ctx: NodeContext, inputs) => runSearch(spec, inputs, ctx.signal),
  };
}

const q = (name = "query", description = "Search query") => prop(name, "str", "", { description });
const n = (dflt = 10) => prop("num_results", "int", dflt, { description: "Maximum number of results to return" });

export const SEARCH_SPECS: readonly SearchSpec[] = [
  {
    type: "search.google.GoogleSearch",
    title: "Google Search",
    description: "Search Google to retrieve organic search results from the web.",
    tool: "google_search",
    properties: [q("keyword", "Search query or keyword to search for"), n()],
    required: ["keyword", "query"],
    engine: "google",
    params: (i) => ({ q: str(i, "keyword", "query"), num: num(i) }),
    resultsKey: "organic_results",
    fields: [
      ["link", null],
      ["date", "Date"],
      ["snippet", null],
    ],
  },
  {
    type: "search.google.GoogleNews",
    title: "Google News",
    description: "Search Google News to retrieve current news articles and headlines.",
    tool: "google_news",
    properties: [q("keyword", "Search query or keyword for news articles"), n()],
    required: ["keyword", "query"],
    engine: "google_news",
    params: (i) => ({ q: str(i, "keyword", "query") }),
    resultsKey: "news_results",
    fields: [
      ["link", null],
      ["date", "Date"],
    ],
  },
  {
    type: "search.google.GoogleImages",
    title: "Google Images",
    description: "Search Google Images, or search by image (reverse image search) with image_url.",
    tool: "google_images",
    properties: [q("keyword", "Search query for images"), q("image_url", "URL of an image to search by"), n(20)],
    required: ["keyword", "image_url"],
    engine: (i) => (str(i, "image_url") ? "google_reverse_image" : "google_images"),
    params: (i) => (str(i, "image_url") ? { image_url: str(i, "image_url") } : { q: str(i, "keyword") }),
    resultsKey: (b) => (b.images_results ?? b.image_results ?? []) as unknown[],
    shape: (rs) => ({ output: imageRefs(rs, "original") }),
  },
  {
    type: "search.google.GoogleFinance",
    title: "Google Finance",
    description: "Retrieve financial market data and stock information from Google Finance.",
    tool: "google_finance",
    properties: [q("query", "Stock symbol or company name"), prop("window", "str", "", { description: "1D, 5D, 1M…" })],
    required: ["query"],
    engine: "google_finance",
    params: (i) => ({ q: str(i, "query"), window: str(i, "window") || undefined }),
  },
  {
    type: "search.google.GoogleJobs",
    title: "Google Jobs",
    description: "Search Google Jobs for employment opportunities and job listings.",
    tool: "google_jobs",
    properties: [q("query", "Job title, skills, or company name"), q("location", "Location"), n()],
    required: ["query", "keyword"],
    engine: "google_jobs",
    params: (i) => ({ q: str(i, "query", "keyword"), location: str(i, "location") || undefined }),
    resultsKey: "jobs_results",
    fields: [
      ["company_name", "Company"],
      ["location", "Location"],
      ["via", "Via"],
    ],
  },
  {
    type: "search.google.GoogleLens",
    title: "Google Lens",
    description: "Search with an image through Google Lens: visual matches and their images.",
    tool: "google_lens",
    properties: [q("image_url", "URL of the image to analyze"), n()],
    required: ["image_url"],
    engine: "google_lens",
    params: (i) => ({ url: str(i, "image_url") }),
    resultsKey: "visual_matches",
    shape: (rs) => ({ results: rs, images: imageRefs(rs, "thumbnail") }),
  },
  {
    type: "search.google.GoogleMaps",
    title: "Google Maps",
    description: "Search Google Maps for places and businesses.",
    tool: "google_maps",
    properties: [q("query", "Place name, address, or location query"), n()],
    required: ["query", "keyword"],
    engine: "google_maps",
    params: (i) => ({ q: str(i, "query", "keyword"), type: "search" }),
    resultsKey: "local_results",
    fields: [
      ["address", "Address"],
      ["rating", "Rating"],
      ["type", "Type"],
      ["phone", "Phone"],
    ],
  },
  {
    type: "search.google.GoogleShopping",
    title: "Google Shopping",
    description: "Search Google Shopping for products, prices and sellers.",
    tool: "google_shopping",
    properties: [
      q("query", "Product name or description"),
      prop("country", "str", "us"),
      prop("min_price", "int", 0),
      prop("max_price", "int", 0),
      prop("condition", "str", ""),
      prop("sort_by", "str", ""),
      n(),
    ],
    required: ["query", "keyword"],
    engine: "google_shopping",
    params: (i) => ({ q: str(i, "query", "keyword"), gl: str(i, "country") || undefined }),
    resultsKey: "shopping_results",
    fields: [
      ["price", "Price"],
      ["source", "Source"],
      ["link", null],
    ],
  },
  {
    type: "search.google_extra.GoogleEvents",
    title: "Google Events",
    description: "Search Google Events for concerts, shows and happenings.",
    tool: "google_events",
    properties: [q("query", "Event search query"), q("location", "Location"), n()],
    required: ["query"],
    engine: "google_events",
    params: (i) => ({ q: str(i, "query"), location: str(i, "location") || undefined }),
    resultsKey: "events_results",
    fields: [["link", null]],
  },
  {
    type: "search.google_extra.GoogleFlights",
    title: "Google Flights",
    description: "Search Google Flights for flights between two airports.",
    tool: "google_flights",
    properties: [
      q("departure_id", "Departure airport code"),
      q("arrival_id", "Arrival airport code"),
      q("outbound_date", "YYYY-MM-DD"),
      q("return_date", "YYYY-MM-DD (round trips)"),
      prop("trip_type", "int", 1, { description: "1 round trip, 2 one way" }),
      prop("adults", "int", 1),
      prop("travel_class", "int", 1, { description: "1 economy … 4 first" }),
      prop("currency", "str", "USD"),
      prop("stops", "int", 0),
      prop("sort_by", "int", 1),
    ],
    required: ["departure_id"],
    engine: "google_flights",
    params: (i) => ({
      departure_id: str(i, "departure_id"),
      arrival_id: str(i, "arrival_id"),
      outbound_date: str(i, "outbound_date"),
      return_date: str(i, "return_date") || undefined,
      type: num(i, "trip_type", 1),
      adults: num(i, "adults", 1),
      travel_class: num(i, "travel_class", 1),
      currency: str(i, "currency"),
      stops: num(i, "stops", 0) || undefined,
      sort_by: num(i, "sort_by", 1),
    }),
    resultsKey: (b) => [...((b.best_flights as unknown[]) ?? []), ...((b.other_flights as unknown[]) ?? [])],
    fields: [
      ["price", "Price"],
      ["total_duration", "Minutes"],
      ["type", "Type"],
    ],
  },
  {
    type: "search.google_extra.GoogleHotels",
    title: "Google Hotels",
    description: "Search Google Hotels for places to stay.",
    tool: "google_hotels",
    properties: [
      q("query", "Hotel search query"),
      q("check_in_date", "YYYY-MM-DD"),
      q("check_out_date", "YYYY-MM-DD"),
      prop("adults", "int", 2),
      prop("children", "int", 0),
      prop("currency", "str", "USD"),
      prop("sort_by", "int", 0),
      prop("min_price", "int", 0),
      prop("max_price", "int", 0),
      prop("hotel_class", "int", 0),
    ],
    required: ["query"],
    engine: "google_hotels",
    params: (i) => ({
      q: str(i, "query"),
      check_in_date: str(i, "check_in_date"),
      check_out_date: str(i, "check_out_date"),
      adults: num(i, "adults", 2),
      currency: str(i, "currency"),
      children: num(i, "children", 0) || undefined,
      sort_by: num(i, "sort_by", 0) || undefined,
      min_price: num(i, "min_price", 0) || undefined,
      max_price: num(i, "max_price", 0) || undefined,
      hotel_class: num(i, "hotel_class", 0) || undefined,
    }),
    resultsKey: "properties",
    fields: [
      ["link", null],
      ["overall_rating", "Rating"],
    ],
  },
  {
    type: "search.scholar.GoogleScholar",
    title: "Google Scholar",
    description: "Search Google Scholar for academic papers and citations.",
    tool: "google_scholar",
    properties: [q("query", "Academic search query"), n()],
    required: ["query"],
    engine: "google_scholar",
    params: (i) => ({ q: str(i, "query"), num: num(i) }),
    resultsKey: "organic_results",
    fields: [
      ["link", null],
      ["snippet", null],
    ],
  },
  {
    type: "search.trends.GoogleTrends",
    title: "Google Trends",
    description: "Interest over time for a search term from Google Trends.",
    tool: "google_trends",
    properties: [q("query", "Search term"), q("date", "today 12-m, now 7-d…"), q("geo", "Country code")],
    required: ["query"],
    engine: "google_trends",
    params: (i) => ({ q: str(i, "query"), date: str(i, "date") || undefined, geo: str(i, "geo") || undefined }),
  },
  {
    type: "search.amazon.AmazonSearch",
    title: "Amazon Search",
    description: "Search Amazon for products.",
    tool: "amazon_search",
    properties: [q("query", "Product name or description"), prop("amazon_domain", "str", "amazon.com"), n()],
    required: ["query"],
    engine: "amazon",
    params: (i) => ({ k: str(i, "query"), amazon_domain: str(i, "amazon_domain") || undefined }),
    resultsKey: "organic_results",
    fields: [
      ["price", "Price"],
      ["rating", "Rating"],
      ["link", null],
    ],
  },
  {
    type: "search.amazon.AmazonProduct",
    title: "Amazon Product",
    description: "The details of one Amazon product by its ASIN.",
    tool: "amazon_product",
    properties: [q("product_id", "Amazon ASIN"), prop("amazon_domain", "str", "amazon.com")],
    required: ["product_id"],
    engine: "amazon_product",
    params: (i) => ({ asin: str(i, "product_id"), amazon_domain: str(i, "amazon_domain") || undefined }),
  },
  {
    type: "search.walmart.WalmartSearch",
    title: "Walmart Search",
    description: "Search Walmart for products.",
    tool: "walmart_search",
    properties: [
      q("query", "Product name or description"),
      n(),
      prop("sort_by", "str", "best_match"),
      prop("min_price", "float", null),
      prop("max_price", "float", null),
    ],
    required: ["query"],
    engine: "walmart",
    params: (i) => ({
      query: str(i, "query"),
      sort: str(i, "sort_by") || undefined,
      min_price: i.min_price === null || i.min_price === undefined ? undefined : String(i.min_price),
      max_price: i.max_price === null || i.max_price === undefined ? undefined : String(i.max_price),
    }),
    resultsKey: "organic_results",
    fields: [
      ["product_page_url", null],
      ["rating", "Rating"],
    ],
  },
  {
    type: "search.walmart.WalmartProduct",
    title: "Walmart Product",
    description: "The details of one Walmart product by its id.",
    tool: "walmart_product",
    properties: [q("product_id", "Walmart product id")],
    required: ["product_id"],
    engine: "walmart_product",
    params: (i) => ({ product_id: str(i, "product_id") }),
  },
  {
    type: "search.bing.BingSearch",
    title: "Bing Search",
    description: "Search Bing for web results.",
    tool: "bing_search",
    properties: [q("query", "Search query"), n()],
    required: ["query"],
    engine: "bing",
    params: (i) => ({ q: str(i, "query"), count: num(i) }),
    resultsKey: "organic_results",
    fields: [
      ["link", null],
      ["snippet", null],
    ],
  },
  {
    type: "search.duckduckgo.DuckDuckGoSearch",
    title: "DuckDuckGo Search",
    description: "Search DuckDuckGo for web results.",
    tool: "duckduckgo_search",
    properties: [q("query", "Search query"), n()],
    required: ["query"],
    engine: "duckduckgo",
    params: (i) => ({ q: str(i, "query") }),
    resultsKey: "organic_results",
    fields: [
      ["link", null],
      ["snippet", null],
    ],
  },
  {
    type: "search.yelp.YelpSearch",
    title: "Yelp Search",
    description: "Search Yelp for businesses.",
    tool: "yelp_search",
    properties: [q("query", "Business type or name"), q("location", "e.g. San Francisco, CA"), n()],
    required: ["query"],
    engine: "yelp",
    params: (i) => ({ find_desc: str(i, "query"), find_loc: str(i, "location") || undefined }),
    resultsKey: "organic_results",
    fields: [
      ["rating", "Rating"],
      ["price", "Price"],
      ["link", null],
    ],
  },
  {
    type: "search.youtube.YouTubeSearch",
    title: "YouTube Search",
    description: "Search YouTube for videos.",
    tool: "youtube_search",
    properties: [q("query", "Search query for YouTube videos"), n()],
    required: ["query"],
    engine: "youtube",
    params: (i) => ({ search_query: str(i, "query") }),
    resultsKey: "video_results",
    fields: [
      ["link", null],
      ["views", "Views"],
    ],
  },
];

export const SEARCH_NODES: readonly NodeDef[] = SEARCH_SPECS.map(searchNode);

/** JSON Schema of a search's arguments: its string and integer properties. */
function argsSchema(spec: SearchSpec): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const p of spec.properties) {
    const type = p.type === "int" ? "integer" : p.type === "float" ? "number" : "string";
    properties[p.name] = { type, ...(p.description ? { description: p.description } : {}) };
  }
  return { type: "object", properties, required: [spec.properties[0]!.name] };
}

for (const spec of SEARCH_SPECS) {
  registerAgentTool(
    {
      name: spec.tool,
      description: spec.description,
      inputSchema: argsSchema(spec),
      run: (args, ctx) =>
        runSearch(
          spec,
          { ...Object.fromEntries(spec.properties.map((p) => [p.name, p.default])), ...args },
          ctx.signal,
        ),
    },
    { nodeTypes: [spec.type] },
  );
}
