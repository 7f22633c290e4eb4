/**
 * The hostile-input harness: a real `nodeway up` (optionally with the TLS proxy in front), a counter of inputs,
 * a `/health` probe after each (a miss: no 200 within 1 s) and the verdicts every answer must pass (no 5xx; a 4xx
 * is JSON with a stable `code`). The suites (suites.ts) record failures as `route input → observed` lines.
 */
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Test } from "tap";
import { check } from "../helpers/check.js";
import { runNodeway, type Proc } from "../helpers/procs.js";

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
  /** Set when no answer came (refused, reset, timed out). */
  error?: string;
}

export interface Up {
  proc: Proc;
  /** Where the inputs go: the gateway, or the proxy with `--tls`. */
  front: string;
  gateway: string;
  tls: boolean;
  home: string;
}

/** `nodeway up --test-nodes` in a temp NODEWAY_HOME on ephemeral ports; killed at teardown. */
export async function startUp(t: Test, opts: { tls: boolean }): Promise<Up> {
  const home = mkdtempSync(join(tmpdir(), "nw-hostile-"));
  const args = ["up", "--port", "0", "--test-nodes=true"];
  if (opts.tls) args.push("--tls", "--https-port", "0", "--http-port", "0");
  const proc = runNodeway(args, { NODEWAY_HOME: home });
  t.teardown(async () => {
    // SIGTERM: `up` stops its nats-server child (a SIGKILL would leave that running after the test).
    const late = setTimeout(() => void proc.kill("SIGKILL"), 15_000);
    await proc.kill("SIGTERM");
    clearTimeout(late);
    rmSync(home, { recursive: true, force: true });
  });
  const m = await check(
    () => {
      if (proc.proc.exitCode !== null) return Promise.reject(new Error(`up exited: ${proc.stderr()}`));
      return /nodeway is up: (\S+) \(gateway (\S+),/.exec(proc.stdout());
    },
    40_000,
    { name: "nodeway up" },
  );
  return { proc, front: m[1]!, gateway: m[2]!, tls: opts.tls, home };
}

const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false });

/** One HTTP request with the path sent exactly as given (no normalisation, no re-encoding). */
export function call(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<Answer> {
  const u = new URL(base);
  const secure = u.protocol === "https:";
  const started = performance.now();
  return new Promise((resolve) => {
    const headers: Record<string, string | number> = { ...opts.headers };
    if (opts.body !== undefined) headers["content-length"] = Buffer.byteLength(opts.body);
    const req = (secure ? https : http).request({
      host: u.hostname === "localhost" ? "127.0.0.1" : u.hostname,
      port: u.port,
      method,
      path,
      headers: { host: u.host, ...headers },
      agent: secure ? httpsAgent : httpAgent,
      servername: secure ? u.hostname : undefined,
      rejectUnauthorized: false,
      timeout: opts.timeoutMs ?? 10_000,
    });
    const done = (a: Omit<Answer, "ms">) => resolve({ ...a, ms: performance.now() - started });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 10_000} ms`)));
    req.on("error", (err) => done({ status: 0, headers: {}, body: "", error: err.message }));
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (err) =>
        done({ status: res.statusCode ?? 0, headers: res.headers, body: "", error: err.message }),
      );
      res.on("end", () =>
        done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      );
    });
    req.end(opts.body);
  });
}

export const JSON_HEADERS = { "content-type": "application/json" };

/** The stable code of an error body: `code`, or OpenAI's `error.code` / `error.type` on /v1. */
export function codeOf(body: string): string | null {
  try {
    const j = JSON.parse(body) as { code?: unknown; error?: { code?: unknown; type?: unknown } };
    if (typeof j.code === "string" && j.code) return j.code;
    const e = j.error;
    if (e && typeof e === "object") {
      if (typeof e.code === "string" && e.code) return e.code;
      if (typeof e.type === "string" && e.type) return e.type;
    }
  } catch {
    /* not JSON */
  }
  return null;
}

const short = (s: string, n = 160) => JSON.stringify(s.length > n ? `${s.slice(0, n)}…` : s);

/**
 * The verdict on one answer: null when it is total (no 5xx, a 4xx is JSON with a code, and the status is one of
 * `expect` when given), else the failure line.
 */
export function judge(label: string, a: Answer, expect?: number | number[]): string | null {
  if (a.error) return `${label} → no answer (${a.error})`;
  const want = expect === undefined ? null : Array.isArray(expect) ? expect : [expect];
  if (a.status >= 500) return `${label} → ${a.status} ${short(a.body)}`;
  if (a.status >= 400 && !codeOf(a.body)) return `${label} → ${a.status} without a JSON code: ${short(a.body)}`;
  if (want && !want.includes(a.status)) return `${label} → ${a.status} (wanted ${want.join("/")}) ${short(a.body)}`;
  return null;
}

/** Counts inputs and health misses; `exits` counts up's exit and each restart of its agent. */
export class Hostile {
  tried = 0;
  misses = 0;
  readonly missed: string[] = [];
  constructor(readonly up: Up) {}

  /** One hostile input, then the health probe. */
  async input<T>(label: string, send: () => Promise<T>): Promise<T> {
    this.tried++;
    const r = await send();
    await this.probe(label);
    return r;
  }

  /** `/health` through the front must answer 200 within 1 s. */
  async probe(after: string): Promise<number> {
    const a = await call(this.up.front, "GET", "/health", { timeoutMs: 1_000 });
    if (a.error || a.status !== 200 || a.ms > 1_000) {
      this.misses++;
      // Which one missed: with the proxy in front, the gateway's own answer tells them apart.
      const direct = this.up.tls ? await call(this.up.gateway, "GET", "/health", { timeoutMs: 1_000 }) : null;
      const gw = direct ? ` (gateway direct: ${direct.error ?? direct.status})` : "";
      if (this.missed.length < 20)
        this.missed.push(
          `after ${after}: ${a.error ?? `${a.status} in ${Math.round(a.ms)} ms ${a.body.slice(0, 100)}`}${gw}`,
        );
    }
    return a.ms;
  }

  exits(): number {
    const upGone = this.up.proc.proc.exitCode !== null || this.up.proc.proc.signalCode !== null ? 1 : 0;
    return upGone + (this.up.proc.stderr().match(/the agent \(pid \d+\) exited/g)?.length ?? 0);
  }

  get(path: string, headers: Record<string, string> = {}): Promise<Answer> {
    return call(this.up.front, "GET", path, { headers });
  }

  send(
    method: string,
    path: string,
    body?: string | Buffer,
    headers: Record<string, string> = JSON_HEADERS,
    timeoutMs?: number,
  ): Promise<Answer> {
    return call(this.up.front, method, path, {
      headers,
      ...(body !== undefined ? { body } : {}),
      ...(timeoutMs ? { timeoutMs } : {}),
    });
  }
}

/** Bytes written on a raw TCP (or TLS) connection to the front; what came back until it closed or went quiet. */
export function rawExchange(
  up: Up,
  bytes: string | Buffer,
  quietMs = 1_500,
): Promise<{ text: string; closed: boolean }> {
  const u = new URL(up.front);
  return new Promise((resolve) => {
    const host = u.hostname === "localhost" ? "127.0.0.1" : u.hostname;
    const sock: net.Socket = up.tls
      ? tls.connect({ host, port: Number(u.port), servername: u.hostname, rejectUnauthorized: false })
      : net.connect({ host, port: Number(u.port) });
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => finish(false), quietMs);
    };
    sock.once(up.tls ? "secureConnect" : "connect", () => {
      sock.write(bytes, () => undefined);
      arm();
    });
    sock.on("data", (c: Buffer) => (chunks.push(c), arm()));
    sock.on("error", () => finish(true));
    sock.on("close", () => finish(true));
  });
}

/** The HTTP responses in a raw answer: status and body (by Content-Length), in order. */
export function responsesIn(text: string): { status: number; body: string }[] {
  const out: { status: number; body: string }[] = [];
  let rest = text;
  for (;;) {
    const m = /HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(rest);
    if (!m) return out;
    rest = rest.slice(m.index + m[0].length);
    const end = rest.indexOf("\r\n\r\n");
    const head = end >= 0 ? rest.slice(0, end) : rest;
    const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    const body = end >= 0 ? rest.slice(end + 4, end + 4 + len) : "";
    out.push({ status: Number(m[1]), body });
    rest = end >= 0 ? rest.slice(end + 4 + len) : "";
  }
}

/** p99 of a list of milliseconds. */
export function p99(ms: number[]): number {
  const s = [...ms].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)]!;
}
