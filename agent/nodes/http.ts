/**
 * HTTP (`lib.http.*`), markdown links (`lib.markdown.ExtractLinks`) and RSS (`lib.rss.FetchRSSFeed`), all fetching
 * under the agent's outbound policy (outbound.ts): private, loopback and link-local addresses are refused unless
 * `NODEWAY_HTTP_ALLOW` allows them. Downloads become the job's assets (NodeTool writes them into a folder).
 */
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "../engine/types.js";
import { folderPrefix, saveFile } from "./files.js";
import { bodyText, outboundPolicy, safeFetch, type FetchResult } from "./outbound.js";
import { asBool, asDict, asInt, asList, asText, capList, capString, output, prop } from "./util.js";

const URL_PROP = prop("url", "str", "", { description: "The URL to make the request to." });
const HEADERS = prop("headers", "dict", {}, { description: "Extra request headers." });
const AUTH = prop("auth", "str", null, { description: "Authorization header value (e.g. 'Bearer …')." });

function headersOf(inputs: NodeInputs, extra: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = { ...extra };
  for (const [k, v] of Object.entries(asDict(inputs.headers))) out[k] = asText(v);
  const auth = asText(inputs.auth);
  if (auth !== "") out.authorization = auth;
  return out;
}

async function call(ctx: NodeContext, inputs: NodeInputs, method: string, body?: string): Promise<FetchResult> {
  const url = asText(inputs.url);
  if (url === "") throw new NodeError("url is empty");
  const json = method !== "GET" && method !== "HEAD" && method !== "DELETE" && body !== undefined;
  const res = await safeFetch(url, {
    method,
    headers: headersOf(inputs, json && /^\s*[[{]/.test(body) ? { "content-type": "application/json" } : {}),
    ...(body !== undefined ? { body } : {}),
    signal: ctx.signal,
  });
  if (res.status >= 400) throw new NodeError(`${method} ${url} answered ${res.status}: ${bodyText(res).slice(0, 300)}`);
  return res;
}

const textOf = (ctx: NodeContext, r: FetchResult) => capString(ctx.limits, bodyText(r), "the response");

function requestNode(type: string, title: string, method: string, withData: boolean): NodeDef {
  return {
    kind: "process",
    type,
    title,
    description: `Perform an HTTP ${method} request and output the response body as text.`,
    properties: [
      URL_PROP,
      HEADERS,
      AUTH,
      ...(withData ? [prop("data", "str", "", { description: "Request body" })] : []),
    ],
    outputs: output("str"),
    process: async (ctx, inputs) => ({
      output: textOf(ctx, await call(ctx, inputs, method, withData ? asText(inputs.data) : undefined)),
    }),
  };
}

export const getRequest = requestNode("lib.http.GetRequest", "GET Request", "GET", false);
export const postRequest = requestNode("lib.http.PostRequest", "POST Request", "POST", true);
export const putRequest = requestNode("lib.http.PutRequest", "PUT Request", "PUT", true);
export const deleteRequest = requestNode("lib.http.DeleteRequest", "DELETE Request", "DELETE", false);

export const headRequest: NodeDef = {
  kind: "process",
  type: "lib.http.HeadRequest",
  title: "HEAD Request",
  description: "Retrieve the response headers of a URL.",
  properties: [URL_PROP, HEADERS, AUTH],
  outputs: output("dict[str, str]"),
  process: async (ctx, inputs) => ({ output: (await call(ctx, inputs, "HEAD")).headers }),
};

export const getRequestBinary: NodeDef = {
  kind: "process",
  type: "lib.http.GetRequestBinary",
  title: "GET Binary",
  description: "Perform an HTTP GET request and return raw binary data.",
  properties: [URL_PROP, HEADERS, AUTH],
  outputs: output("bytes"),
  process: async (ctx, inputs) => ({ output: (await call(ctx, inputs, "GET")).body }),
};

export const getRequestDocument: NodeDef = {
  kind: "process",
  type: "lib.http.GetRequestDocument",
  title: "GET Document",
  description: "Perform an HTTP GET request and return a document.",
  properties: [URL_PROP, HEADERS, AUTH],
  outputs: output("document"),
  process: async (ctx, inputs) => {
    const r = await call(ctx, inputs, "GET");
    return { output: { type: "document", uri: r.url, asset_id: null, data: r.body } };
  },
};

function jsonNode(type: string, title: string, method: string): NodeDef {
  return {
    kind: "process",
    type,
    title,
    description: `Send JSON with an HTTP ${method} request and output the JSON answer.`,
    properties: [URL_PROP, HEADERS, AUTH, ...(method === "GET" ? [] : [prop("data", "dict", {})])],
    outputs: output("dict"),
    process: async (ctx, inputs) => {
      const body = method === "GET" ? undefined : JSON.stringify(asDict(inputs.data));
      const r = await call(ctx, inputs, method, body);
      try {
        return { output: JSON.parse(textOf(ctx, r)) as unknown };
      } catch {
        throw new NodeError(`${method} ${asText(inputs.url)} did not answer JSON`);
      }
    },
  };
}

/** The last path segment of a URL (or the Content-Disposition filename), for a downloaded file's name. */
function fileNameOf(r: FetchResult): string {
  const cd = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(r.headers["content-disposition"] ?? "")?.[1];
  const last = new URL(r.url).pathname.split("/").filter(Boolean).pop();
  return decodeURIComponent(cd ?? last ?? "unnamed_file").replace(/[/\\]/g, "_") || "unnamed_file";
}

/** Most bytes DownloadFiles holds at once: its downloads, each up to the per-file cap, are in flight together. */
const DOWNLOAD_BYTES_IN_FLIGHT = 256 * 1024 * 1024;

/** Downloads run at once: as asked, but only as many as fit DOWNLOAD_BYTES_IN_FLIGHT at the per-file cap. */
function downloadWidth(asked: number): number {
  const perFile = outboundPolicy().maxBytes;
  return Math.min(asked, Math.max(1, Math.floor(DOWNLOAD_BYTES_IN_FLIGHT / perFile)));
}

/** `fn` over `items`, at most `width` at a time; results in the items' order. */
async function pooled<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

export const downloadFiles: NodeDef = {
  kind: "process",
  type: "lib.http.DownloadFiles",
  title: "Download Files",
  description:
    "Download files from a list of URLs into the job's assets; outputs the saved assets and failed URLs. " +
    "`max_concurrent_downloads` run at once, but never more than fit 256 MiB at the per-file cap " +
    "(NODEWAY_HTTP_MAX_BYTES, 64 MiB by default: 4 at once).",
  properties: [
    prop("urls", "list[str]", [], { description: "List of URLs to download." }),
    prop("output_folder", "str", "downloads", { description: "Folder (asset name prefix) for the files." }),
    HEADERS,
    AUTH,
    prop("max_concurrent_downloads", "int", 5, { min: 1, max: 32 }),
  ],
  outputs: [
    { name: "success", type: "list[str]" },
    { name: "failed", type: "list[str]" },
  ],
  process: async (ctx, inputs) => {
    const urls = asList(inputs.urls).map(asText);
    capList(ctx.limits, urls.length, "urls");
    const asked = Math.min(32, Math.max(1, asInt(inputs.max_concurrent_downloads ?? 5, "max_concurrent_downloads")));
    const prefix = folderPrefix(inputs.output_folder);
    let done = 0;
    const saved = await pooled(urls, downloadWidth(asked), async (url) => {
      try {
        const r = await call(ctx, { ...inputs, url }, "GET");
        const type = r.headers["content-type"]?.split(";")[0]?.trim() || "application/octet-stream";
        return (await saveFile(ctx, r.body, prefix + fileNameOf(r), type, "asset")).uri;
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        ctx.log(`download of ${url} failed: ${(err as Error).message}`, "warning");
        return null;
      } finally {
        ctx.progress(++done, urls.length);
      }
    });
    const success = saved.filter((uri): uri is string => Boolean(uri));
    const failed = urls.filter((_, i) => !saved[i]);
    return { success, failed };
  },
};

// ---- markdown and RSS --------------------------------------------------------------------------------------------

export const extractLinks: NodeDef = {
  kind: "process",
  type: "lib.markdown.ExtractLinks",
  title: "Extract Links",
  description: "Extracts all links ([text](url) and <url>) from markdown text.",
  properties: [
    prop("markdown", "str", "", { description: "The markdown text to analyze" }),
    prop("include_titles", "bool", true, { description: "Whether to include link titles in output" }),
  ],
  outputs: output("list[dict[str, str]]"),
  process: (ctx, inputs) => {
    const titles = asBool(inputs.include_titles);
    const links: { url: string; title: string }[] = [];
    for (const m of asText(inputs.markdown).matchAll(/\[([^\]]+)\]\(([^)]+)\)|<([^>]+)>/g)) {
      if (m[1] && m[2]) links.push({ url: m[2], title: titles ? m[1] : "" });
      else if (m[3]) links.push({ url: m[3], title: "" });
      capList(ctx.limits, links.length, "the links");
    }
    return { output: links };
  },
};

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** Text of an XML element's content: CDATA unwrapped, entities decoded. */
function xmlText(s: string): string {
  return s
    .replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, (_m, c: string) => c.replace(/&/g, "\u0000amp;"))
    .replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) =>
      e[0] === "#"
        ? String.fromCodePoint(
            Number.parseInt(e.slice(e[1] === "x" || e[1] === "X" ? 2 : 1), e[1]?.toLowerCase() === "x" ? 16 : 10),
          )
        : (ENTITIES[e.toLowerCase()] ?? m),
    )
    .replace(/\u0000amp;/g, "&")
    .trim();
}

function tagText(block: string, ...names: string[]): string {
  for (const n of names) {
    const m = new RegExp(`<${n}(?:\\s[^>]*)?>([\\s\\S]*?)</${n}>`, "i").exec(block);
    if (m) return xmlText(m[1]!);
  }
  return "";
}

/** The entries of an RSS 2.0 or Atom feed. */
export function feedEntries(
  xml: string,
): { title: string; link: string; published: string; summary: string; author: string }[] {
  const blocks = [...xml.matchAll(/<(item|entry)(?:\s[^>]*)?>([\s\S]*?)<\/\1>/gi)].map((m) => m[2]!);
  return blocks.map((b) => {
    const href = /<link[^>]*href="([^"]*)"/i.exec(b)?.[1];
    const date = tagText(b, "pubDate", "published", "updated", "dc:date");
    const parsed = date ? new Date(date) : new Date();
    return {
      title: tagText(b, "title"),
      link: tagText(b, "link") || xmlText(href ?? ""),
      published: Number.isNaN(parsed.getTime()) ? date : parsed.toISOString(),
      summary: tagText(b, "description", "summary", "content"),
      author: tagText(b, "author", "dc:creator", "name"),
    };
  });
}

export const fetchRssFeed: NodeDef = {
  kind: "generator",
  type: "lib.rss.FetchRSSFeed",
  title: "Fetch RSS Feed",
  description: "Fetches and parses an RSS or Atom feed; each entry's fields are sent in turn.",
  properties: [prop("url", "str", "", { description: "URL of the RSS feed to fetch" })],
  outputs: [
    { name: "title", type: "str" },
    { name: "link", type: "str" },
    { name: "published", type: "datetime" },
    { name: "summary", type: "str" },
    { name: "author", type: "str" },
  ],
  async *generate(ctx, inputs) {
    const entries = feedEntries(textOf(ctx, await call(ctx, inputs, "GET")));
    for (const e of entries) {
      yield { handle: "title", value: e.title };
      yield { handle: "link", value: e.link };
      yield { handle: "published", value: e.published };
      yield { handle: "summary", value: e.summary };
      yield { handle: "author", value: e.author };
    }
  },
};

export const HTTP_NODES: readonly NodeDef[] = [
  getRequest,
  postRequest,
  putRequest,
  deleteRequest,
  headRequest,
  getRequestBinary,
  getRequestDocument,
  jsonNode("lib.http.JSONPostRequest", "POST JSON", "POST"),
  jsonNode("lib.http.JSONPutRequest", "PUT JSON", "PUT"),
  jsonNode("lib.http.JSONGetRequest", "GET JSON", "GET"),
  downloadFiles,
  extractLinks,
  fetchRssFeed,
];
