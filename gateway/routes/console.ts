/**
 * The web console at `/`: the files `vite build console` wrote to dist/console/, read once at start into memory
 * (a request names a key in that map, never a path on disk: no traversal), with the `.br`/`.gz` the build
 * precompressed. index.html is revalidated every time; hashed assets are immutable for a year. Every answer
 * carries a strict CSP. Open (no token): the page holds no data and signs in itself.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ErrorCode } from "../../protocol/index.js";
import { GatewayError } from "../errors.js";
import { etagMatches, type Reply, type Req } from "../http.js";
import type { RouteContext } from "./context.js";

/**
 * What the console may load: its own scripts and styles, its own API and socket, blobs it made.
 * `connect-src 'self'` covers the page's own socket in browsers of CSP level 3; for older ones the socket's
 * `ws://` and `wss://` origin is named too, from the request's Host when that is a plain host name.
 */
export function consoleCsp(host: string | undefined): string {
  const sockets = host !== undefined && PLAIN_HOST.test(host) ? ` ws://${host} wss://${host}` : "";
  return [`connect-src 'self'${sockets}`, ...CSP_REST].join("; ");
}
/** A Host header that is a name or address with an optional port, nothing that could end a CSP directive. */
const PLAIN_HOST = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;
const CSP_REST = [
  "default-src 'self'",
  "script-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' blob:",
  "style-src 'self' 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
];

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  woff2: "font/woff2",
  json: "application/json",
};

interface StaticFile {
  type: string;
  body: Buffer;
  gzip: Buffer | null;
  br: Buffer | null;
  etag: string;
  cacheControl: string;
}

/** An asset's name as the build writes them (`index-Cq7S_3_y.js`); anything else is not in the map anyway. */
const ASSET_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * dist/console beside the compiled gateway (dist/gateway/routes/) or the source tree (gateway/routes/). A build
 * has an assets/ folder; the console's sources (console/index.html) do not, and are never served.
 */
export function defaultConsoleDir(): string | null {
  for (const rel of ["../../dist/console/", "../../console/"]) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`) && existsSync(`${dir}assets`)) return dir;
  }
  return null;
}

const readOptional = (path: string): Buffer | null => (existsSync(path) ? readFileSync(path) : null);

function loadFile(path: string, immutable: boolean): StaticFile | null {
  const type = TYPES[path.slice(path.lastIndexOf(".") + 1)];
  if (!type) return null;
  const body = readFileSync(path);
  return {
    type,
    body,
    gzip: readOptional(`${path}.gz`),
    br: readOptional(`${path}.br`),
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
    cacheControl: immutable ? "public, max-age=31536000, immutable" : "no-cache",
  };
}

/** The console's files by URL path: `/` (index.html) and `/assets/<name>`. */
export function loadConsole(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  const index = loadFile(`${dir}index.html`, false);
  if (index) files.set("/", index);
  const assets = `${dir}assets/`;
  if (existsSync(assets)) {
    for (const name of readdirSync(assets)) {
      if (!ASSET_NAME.test(name) || name.endsWith(".gz") || name.endsWith(".br")) continue;
      const f = loadFile(`${assets}${name}`, true);
      if (f) files.set(`/assets/${name}`, f);
    }
  }
  return files;
}

/** The encoding to send: br, then gzip, when the client takes it and the build made it. */
function pickEncoding(f: StaticFile, acceptEncoding: string | undefined): "br" | "gzip" | null {
  const accepted = new Set((acceptEncoding ?? "").split(",").map((s) => s.split(";")[0]!.trim().toLowerCase()));
  if (f.br && accepted.has("br")) return "br";
  if (f.gzip && accepted.has("gzip")) return "gzip";
  return null;
}

function serveFile(f: StaticFile, req: Req, reply: Reply): Promise<void> {
  const headers: Record<string, string> = {
    ...SECURITY_HEADERS,
    "content-security-policy": consoleCsp(req.headers.host),
    "cache-control": f.cacheControl,
    etag: f.etag,
    vary: "accept-encoding",
  };
  if (etagMatches(req.headers["if-none-match"], f.etag)) {
    reply.empty(304, headers);
    return Promise.resolve();
  }
  const enc = pickEncoding(f, req.headers["accept-encoding"]);
  const body = enc === "br" ? f.br! : enc === "gzip" ? f.gzip! : f.body;
  if (enc) headers["content-encoding"] = enc;
  const source = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(body);
      c.close();
    },
  });
  return reply.sendBytes(200, f.type, body.byteLength, source, headers);
}

export function registerConsoleRoutes(ctx: RouteContext, dir: string | null = defaultConsoleDir()): void {
  const { router } = ctx;
  const files = dir ? loadConsole(dir) : new Map<string, StaticFile>();

  async function consolePage(req: Req, reply: Reply): Promise<void> {
    const f = files.get("/");
    if (!f) throw new GatewayError(ErrorCode.GW_ERR_NOT_FOUND, "the web console is not built: run `npm run build`");
    return serveFile(f, req, reply);
  }

  async function consoleAsset(req: Req, reply: Reply): Promise<void> {
    const f = files.get(`/assets/${req.params[0]!}`);
    if (!f) throw new GatewayError(ErrorCode.GW_ERR_NOT_FOUND, `console asset "${req.params[0]}" not found`);
    return serveFile(f, req, reply);
  }

  router.route("get", "/", consolePage, { open: true });
  router.route("get", "/index.html", consolePage, { open: true });
  router.route("get", "/assets/:name", consoleAsset, { open: true, grammar: ASSET_NAME });
}
