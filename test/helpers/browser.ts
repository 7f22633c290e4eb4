/**
 * A real browser for the console tests: headless Chromium (the Debian package) driven by playwright-core, a new
 * profile in a temp dir per launch, screenshots written outside git (printed, kept for a reviewer).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { ROOT } from "./procs.js";

export const CHROMIUM = process.env.NW_CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--no-sandbox",
  "--headless",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

interface Teardown {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
}

/** Builds the console (dist/console/) unless `npm run build` already did. */
export function ensureConsoleBuilt(): void {
  if (existsSync(join(ROOT, "dist", "console", "index.html"))) return;
  execFileSync(process.execPath, [join(ROOT, "node_modules", "vite", "bin", "vite.js"), "build", "console"], {
    cwd: ROOT,
    stdio: "ignore",
  });
}

/** Where this run's screenshots go: `NW_ARTIFACT_DIR`, else a new temp dir; made once per process. */
let shotsDir: string | null = null;
export function screenshotDir(t: Teardown): string {
  if (!shotsDir) {
    shotsDir = process.env.NW_ARTIFACT_DIR
      ? join(process.env.NW_ARTIFACT_DIR, "console")
      : mkdtempSync(join(tmpdir(), "nodeway-console-shots-"));
    mkdirSync(shotsDir, { recursive: true });
    t.comment(`console screenshots: ${shotsDir}`);
  }
  return shotsDir;
}

export async function shot(t: Teardown, page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(screenshotDir(t), `${name}.png`), fullPage: true });
}

/** A headless Chromium with a fresh profile, closed (and its profile removed) at teardown. */
export async function launchBrowser(t: Teardown): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), "nw-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1400, height: 900 },
    ignoreHTTPSErrors: true,
  });
  t.teardown(async () => {
    await ctx.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
  });
  return ctx;
}

/** A new page whose console errors and failed requests are collected (a CSP violation shows up there). */
export async function openPage(ctx: BrowserContext): Promise<{ page: Page; problems: string[] }> {
  const page = await ctx.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return { page, problems };
}

/**
 * Opens `url` in a new page and sums the gzip size of every response the first load fetched (each body gzipped
 * here at the default level, whatever encoding it came with), until the network is idle.
 */
export async function firstLoadGzipBytes(ctx: BrowserContext, url: string): Promise<{ bytes: number; urls: string[] }> {
  const page = await ctx.newPage();
  const bodies: Promise<{ url: string; size: number }>[] = [];
  page.on("response", (r) => {
    bodies.push(
      r.body().then(
        (b) => ({ url: r.url(), size: gzipSync(b).byteLength }),
        () => ({ url: r.url(), size: 0 }),
      ),
    );
  });
  await page.goto(url, { waitUntil: "networkidle" });
  const all = await Promise.all(bodies);
  await page.close();
  return { bytes: all.reduce((n, b) => n + b.size, 0), urls: all.map((b) => `${b.url} ${b.size}`) };
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function until<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The text `count` tokens of `nodeway.test.Tokens` stream, in order. */
export const tokenText = (count: number): string => Array.from({ length: count }, (_, i) => `tok${i} `).join("");

/**
 * Rewrites every non-empty `chunk` event the gateway sends `page` over its WebSocket (`/ws`) into what `rewrite`
 * returns, as a gateway or job sending that would; everything else passes unchanged both ways.
 */
export async function rewriteChunks(
  page: Page,
  rewrite: (chunk: Record<string, unknown> & { content: string }) => Record<string, unknown>,
): Promise<void> {
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      const ev = typeof m === "string" ? (JSON.parse(m) as Record<string, unknown>) : null;
      if (ev?.type !== "chunk" || typeof ev.content !== "string" || ev.content === "") return ws.send(m);
      ws.send(JSON.stringify(rewrite(ev as Record<string, unknown> & { content: string })));
    });
  });
}
