/** `/health` (GET and HEAD give the same status), `/metrics` and `/openapi.json`. */
import { encodeJson, STREAM_EVENTS, STREAM_JOBS } from "../../protocol/index.js";
import type { Reply, Req } from "../http.js";
import { openApiDocument } from "../openapi.js";
import type { RouteContext } from "./context.js";

interface Health {
  status: "ok" | "unavailable";
  nats: "connected" | "disconnected";
  streams: boolean;
  agents: number;
  uws: "native" | "fallback";
}

/** Ready when NATS is connected (not draining) and both streams answer. */
async function healthOf(ctx: RouteContext): Promise<Health> {
  const n = ctx.nats;
  const natsOk = n.connected() && !n.nc.isDraining();
  let streams = false;
  if (natsOk) {
    try {
      await Promise.all([n.jsm.streams.info(STREAM_JOBS), n.jsm.streams.info(STREAM_EVENTS)]);
      streams = true;
    } catch {
      streams = false;
    }
  }
  const agents = natsOk ? (await ctx.jobs.agents().catch(() => [])).length : 0;
  const ok = natsOk && streams;
  return {
    status: ok ? "ok" : "unavailable",
    nats: natsOk ? "connected" : "disconnected",
    streams,
    agents,
    uws: ctx.native ? "native" : "fallback",
  };
}

export function registerHealthRoutes(ctx: RouteContext): void {
  const { router } = ctx;

  async function getHealth(_req: Req, reply: Reply): Promise<void> {
    const h = await healthOf(ctx);
    reply.json(h.status === "ok" ? 200 : 503, h);
  }

  /** The status and length a GET would get, without its body. */
  async function headHealth(_req: Req, reply: Reply): Promise<void> {
    const h = await healthOf(ctx);
    reply.head(h.status === "ok" ? 200 : 503, Buffer.byteLength(encodeJson(h)), { "content-type": "application/json" });
  }

  async function getOpenApi(_req: Req, reply: Reply): Promise<void> {
    reply.send(200, openApiDocument(), "application/json");
  }

  async function getMetrics(_req: Req, reply: Reply): Promise<void> {
    const { text, contentType } = await ctx.metrics.scrape();
    reply.send(200, text, contentType);
  }

  router.route("get", "/health", getHealth, { open: true });
  router.route("get", "/openapi.json", getOpenApi, { open: true });
  router.route("get", "/metrics", getMetrics);
  router.head("/health", headHealth, { open: true });
}
