/**
 * A local server speaking SerpAPI's search API as documented (https://serpapi.com/search-api): `GET /search.json`
 * with `engine`, the engine's query parameters and `api_key`; it answers JSON whose result list is under the
 * engine's key (`organic_results`, `news_results`, `images_results`, `video_results`, `local_results`…), with
 * `search_metadata` and `search_parameters`, and `{"error": "Invalid API key. …"}` (401) for a wrong key.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export const FAKE_SERP_KEY = "serp-test-nodeway";

/** Where each engine puts its results. */
const RESULTS_KEY: Record<string, string> = {
  google: "organic_results",
  google_news: "news_results",
  google_images: "images_results",
  google_jobs: "jobs_results",
  google_maps: "local_results",
  google_shopping: "shopping_results",
  google_scholar: "organic_results",
  bing: "organic_results",
  duckduckgo: "organic_results",
  amazon: "organic_results",
  walmart: "organic_results",
  yelp: "organic_results",
  youtube: "video_results",
  google_events: "events_results",
  google_hotels: "properties",
};

/** The query an engine's request carries (SerpAPI names it differently per engine). */
const queryOf = (p: URLSearchParams) =>
  p.get("q") ?? p.get("k") ?? p.get("query") ?? p.get("search_query") ?? p.get("find_desc") ?? "";

export class FakeSerp {
  readonly requests: URLSearchParams[] = [];
  private server!: Server;
  port = 0;

  static async start(): Promise<FakeSerp> {
    const f = new FakeSerp();
    f.server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      f.requests.push(url.searchParams);
      const json = (status: number, v: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(v));
      };
      if (url.pathname !== "/search.json") return json(404, { error: "Unsupported path." });
      const p = url.searchParams;
      if (p.get("api_key") !== FAKE_SERP_KEY)
        return json(401, { error: "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key" });
      const engine = p.get("engine") ?? "google";
      const meta = { search_metadata: { id: "fake", status: "Success" }, search_parameters: Object.fromEntries(p) };
      if (engine === "amazon_product" || engine === "walmart_product")
        return json(200, { ...meta, product_result: { id: p.get("asin") ?? p.get("product_id"), title: "A product" } });
      if (engine === "google_finance") return json(200, { ...meta, summary: { title: queryOf(p), price: "$1.00" } });
      const q = queryOf(p);
      const results = Array.from({ length: 12 }, (_, i) => ({
        position: i + 1,
        title: `${engine} result ${i + 1} for ${q}`,
        link: `https://example.com/${engine}/${i + 1}`,
        snippet: `snippet ${i + 1}`,
        original: `https://img.example.com/${i + 1}.png`,
      }));
      json(200, { ...meta, [RESULTS_KEY[engine] ?? "organic_results"]: results });
    });
    await new Promise<void>((r) => f.server.listen(0, "127.0.0.1", r));
    f.port = (f.server.address() as AddressInfo).port;
    return f;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}
