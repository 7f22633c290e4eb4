/**
 * The proxy's Prometheus metrics on one prom-client registry (`RunningProxy.metrics`). The proxy serves no
 * `/metrics` itself: it has no admin listener, and its HTTPS port forwards everything to the gateways, so the
 * process that starts it serves the registry where it sees fit. Upstream health is read at scrape time.
 */
import { Counter, createRegistry, Gauge, Histogram, type Registry } from "../obs/index.js";
import type { Upstream } from "./upstreams.js";

/** The HTTP status of an answer as its class ("2xx"), or "aborted" when the client left before it ended. */
export function statusClass(status: number | null): string {
  return status === null ? "aborted" : `${Math.floor(status / 100)}xx`;
}

/** Label values of the duration histogram, one child per upstream and class (looked up, not built, per request). */
type DurationChild = ReturnType<Histogram<"upstream" | "status_class">["labels"]>;

export class ProxyMetrics {
  readonly registry: Registry;
  private readonly requestSeconds: Histogram<"upstream" | "status_class">;
  private readonly refused: Counter<"status">;
  private readonly connectionsRefused: Counter<"reason">;
  private readonly children = new Map<string, DurationChild>();

  /** `registry`: one that holds no other proxy's metrics (the names would clash); a new "proxy" one by default. */
  constructor(upstreams: readonly Upstream[], registry: Registry = createRegistry("proxy")) {
    this.registry = registry;
    const registers = [registry];
    this.requestSeconds = new Histogram({
      name: "nodeway_proxy_request_duration_seconds",
      help: "Time from a proxied request's head to the end of its response, by upstream and status class.",
      labelNames: ["upstream", "status_class"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.refused = new Counter({
      name: "nodeway_proxy_requests_refused_total",
      help: "Requests answered by the proxy itself, without reaching an upstream (400, 421, 503 …), by status.",
      labelNames: ["status"],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: "nodeway_proxy_connections_refused_total",
      help: "Connections closed at accept by the proxy, by reason (per_ip: the client address was at maxConnectionsPerIp).",
      labelNames: ["reason"],
      registers,
    });
    upstreamGauges(upstreams, registers);
  }

  /** A connection closed at accept. */
  connectionRefused(reason: "per_ip"): void {
    this.connectionsRefused.labels(reason).inc();
  }

  /** A proxied request ended: `status` null when the client left before its response did. */
  requestDone(upstream: string, status: number | null, seconds: number): void {
    const cls = statusClass(status);
    const key = `${upstream} ${cls}`;
    let child = this.children.get(key);
    if (child === undefined) {
      child = this.requestSeconds.labels(upstream, cls);
      this.children.set(key, child);
    }
    child.observe(seconds);
  }

  /** A request refused before it was routed. */
  requestRefused(status: number): void {
    this.refused.labels(String(status)).inc();
  }
}

/** Health and load of each upstream, as the router sees them at scrape time. */
function upstreamGauges(upstreams: readonly Upstream[], registers: Registry[]): void {
  new Gauge({
    name: "nodeway_proxy_upstream_healthy",
    help: "1 when the upstream is taking requests, 0 while it is ejected.",
    labelNames: ["upstream"],
    registers,
    collect() {
      for (const u of upstreams) this.labels(u.target.origin).set(u.healthy ? 1 : 0);
    },
  });
  new Gauge({
    name: "nodeway_proxy_upstream_active",
    help: "Proxied requests and WebSocket tunnels in flight to the upstream.",
    labelNames: ["upstream"],
    registers,
    collect() {
      for (const u of upstreams) this.labels(u.target.origin).set(u.active);
    },
  });
}
