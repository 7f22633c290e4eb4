/** A job's events as an HTTP stream: NDJSON lines, or SSE frames when the client accepts `text/event-stream`. */
import type { Delivery } from "../event-hub.js";
import { follow, type Following } from "../follow.js";
import type { Reply, Req } from "../http.js";
import type { RouteContext } from "./context.js";

/** Whether the client asked for SSE rather than NDJSON. */
export function wantsSse(req: Req): boolean {
  return (req.headers["accept"] ?? "").includes("text/event-stream");
}

/** One event as the stream's encoding writes it. */
export function eventText(d: Delivery, sse: boolean): string {
  return sse ? `id: ${d.seq}\nevent: ${d.type}\ndata: ${d.json()}\n\n` : d.json() + "\n";
}

/** Starts the stream's response with its content type. */
export function startEventStream(ctx: RouteContext, reply: Reply, sse: boolean): void {
  // NDJSON has no comment line a reader would skip: only SSE gets keep-alives.
  const keepAliveMs = sse ? ctx.config.sseKeepAliveMs : 0;
  reply.startStream(sse ? "text/event-stream" : "application/x-ndjson", ctx.config.wsMaxBackpressureBytes, keepAliveMs);
}

export interface StreamJobOptions {
  replay: boolean;
  /** The response starts only when the function given here is called (or with the first event). */
  opened?: (open: () => void) => void;
}

/**
 * Streams a job's events from `after`, ending after the terminal event. With `opened`, a run whose submit fails
 * can still answer with an error status.
 */
export async function streamJob(
  ctx: RouteContext,
  reply: Reply,
  req: Req,
  jobId: string,
  after: number,
  opts: StreamJobOptions,
): Promise<Following> {
  const sse = wantsSse(req);
  let open = false;
  const start = () => {
    if (open) return;
    open = true;
    startEventStream(ctx, reply, sse);
  };
  if (opts.opened) opts.opened(start);
  else start();
  const sink = {
    send(d: Delivery) {
      start();
      ctx.metrics.eventsOutHttp++;
      reply.write(eventText(d, sse));
    },
    end() {
      start();
      reply.end();
    },
  };
  const f = await follow(ctx.hub, jobId, after, sink, { replay: opts.replay });
  reply.onAbort(() => f.stop());
  return f;
}
