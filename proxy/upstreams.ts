/**
 * The set of gateways and their health. Selection is round-robin over healthy upstreams. Health has two inputs:
 * active checks (`GET healthPath` every `healthIntervalMs`, 2xx within `healthTimeoutMs` = healthy) and passive
 * ejection (a failed connect while proxying marks the upstream down at once; only an active check brings it back).
 * A connection the upstream closed on one request is no such proof (uWS closes on a request it will not read): it
 * makes the upstream a suspect, checked at once. Upstreams start healthy so the first requests do not wait.
 */
import { request } from "node:http";
import { UpstreamClient } from "./upstream-http.js";
import type { UpstreamTarget } from "./config.js";
import type { ProxyEvent } from "./events.js";

/** One gateway and its state. Fields are read on the hot path, so they are plain properties. */
export interface Upstream {
  readonly target: UpstreamTarget;
  /** Keep-alive HTTP/1.1 connections to this upstream, shared by all proxied requests. */
  readonly client: UpstreamClient;
  healthy: boolean;
  /** In-flight proxied requests and tunnels; reported in snapshots. */
  active: number;
  lastError: string | null;
}

/** As reported by `RunningProxy.upstreams()`. */
export interface UpstreamHealth {
  readonly origin: string;
  readonly healthy: boolean;
  readonly active: number;
  readonly lastError: string | null;
}

export class UpstreamPool {
  readonly list: readonly Upstream[];
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly emit: (e: ProxyEvent) => void;
  private readonly path: string;
  private readonly timeoutMs: number;
  /** Upstreams a `suspect` check is under way for. */
  private readonly checking = new Set<Upstream>();

  constructor(
    targets: readonly UpstreamTarget[],
    opts: { path: string; timeoutMs: number; emit: (e: ProxyEvent) => void },
  ) {
    this.list = targets.map((target) => ({
      target,
      client: new UpstreamClient(target.hostname, target.port),
      healthy: true,
      active: 0,
      lastError: null,
    }));
    this.emit = opts.emit;
    this.path = opts.path;
    this.timeoutMs = opts.timeoutMs;
  }

  /** The next healthy upstream in round-robin order, or `null` when all are down. */
  pick(): Upstream | null {
    const list = this.list;
    const n = list.length;
    for (let i = 0; i < n; i++) {
      const u = list[this.next]!;
      this.next = this.next + 1 === n ? 0 : this.next + 1;
      if (u.healthy) return u;
    }
    return null;
  }

  /** Passive ejection: called on a connection error to `u` while proxying. */
  markDown(u: Upstream, reason: string): void {
    u.lastError = reason;
    if (!u.healthy) return;
    u.healthy = false;
    this.emit({ type: "upstream.down", origin: u.target.origin, reason });
  }

  /**
   * A connection to `u` closed under a request: an active check now, unless one is under way. A dead upstream
   * fails it and is ejected; one that closed on a request it would not take stays in.
   */
  suspect(u: Upstream): void {
    if (this.checking.has(u)) return;
    this.checking.add(u);
    void this.probe(u).finally(() => this.checking.delete(u));
  }

  /** Starts active checks: one round now, then every `intervalMs`. */
  start(intervalMs: number): void {
    const round = (): void => {
      for (const u of this.list) void this.probe(u);
    };
    round();
    this.timer = setInterval(round, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (const u of this.list) u.client.close();
  }

  /** Runs one active check of every upstream and resolves when all have answered or timed out. */
  async checkNow(): Promise<void> {
    await Promise.all(this.list.map((u) => this.probe(u)));
  }

  snapshot(): UpstreamHealth[] {
    return this.list.map((u) => ({
      origin: u.target.origin,
      healthy: u.healthy,
      active: u.active,
      lastError: u.lastError,
    }));
  }

  private probe(u: Upstream): Promise<void> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean, reason: string): void => {
        if (done) return;
        done = true;
        if (ok && !u.healthy) {
          u.healthy = true;
          u.lastError = null;
          this.emit({ type: "upstream.up", origin: u.target.origin });
        } else if (!ok) {
          this.markDown(u, reason);
        }
        resolve();
      };
      // A fresh connection per probe (agent: false): a probe must see a dead listener, not a pooled socket.
      const req = request(
        {
          host: u.target.hostname,
          port: u.target.port,
          path: this.path,
          method: "GET",
          agent: false,
          timeout: this.timeoutMs,
          headers: { "user-agent": "nodeway-proxy-health" },
        },
        (res) => {
          res.resume();
          const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300;
          finish(ok, `health check returned ${res.statusCode}`);
        },
      );
      req.on("timeout", () => {
        req.destroy();
        finish(false, `health check timed out after ${this.timeoutMs} ms`);
      });
      req.on("error", (err) =>
        finish(false, `health check failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`),
      );
      req.end();
    });
  }
}
