/**
 * The upstream behind the proxies: a bare uWS.js app answering `GET /` with ~300 bytes of JSON and, on `/ws`,
 * sending `{"ts": <timeOrigin + now()>}` text frames `--hz` times a second to every socket.
 *
 * - `/ws` (streams): each socket has its own phase in the period, like independent token streams (
 *   "N concurrent WS streams × 20 msgs/s"); a 1 ms tick sends to the sockets whose phase has come round.
 * - `/ws?burst=1`: every socket gets its frame in the same tick (`app.publish` to one topic), so the latency
 *   measured is the time to relay a whole burst of N frames, not what one message pays.
 * Prints `upstream listening <port>`.
 */
import type { WebSocket } from "uWebSockets.js";
import { uws } from "./uws.js";

const hz = Number(process.argv[2] ?? 20);
const PERIOD_MS = 1000 / hz;
const body = JSON.stringify({
  id: "01JDQ7ZK3M8X4V5N6P7Q8R9S0T",
  workflow_id: "hello-world",
  status: "completed",
  attempt: 1,
  agent_id: "agent-1",
  created_at: new Date(0).toISOString(),
  started_at: new Date(0).toISOString(),
  finished_at: new Date(0).toISOString(),
  outputs: { greeting: ["Hello, bench!"] },
  error: null,
  pad: "x".repeat(40),
});
const app = uws.App();
app.get("/*", (res) => {
  res.cork(() => {
    res.writeHeader("content-type", "application/json").end(body);
  });
});

interface Stream {
  burst: boolean;
  /** Phase in [0, PERIOD_MS): when in each period this socket's frame is due. */
  phaseMs: number;
}
/** Streams in phase order; a new socket takes the next phase slot (golden-ratio spread keeps them even). */
const streams: WebSocket<Stream>[] = [];
let nextPhase = 0;
app.ws<Stream>("/ws", {
  idleTimeout: 120,
  maxBackpressure: 4 << 20,
  upgrade: (res, req, ctx) => {
    const burst = new URLSearchParams(req.getQuery() ?? "").get("burst") === "1";
    nextPhase = (nextPhase + 0.618033988749895) % 1;
    res.upgrade<Stream>(
      { burst, phaseMs: nextPhase * PERIOD_MS },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      ctx,
    );
  },
  open: (ws) => {
    if (ws.getUserData().burst) ws.subscribe("t");
    else {
      streams.push(ws);
      startTicks();
    }
  },
  close: (ws) => {
    const i = streams.indexOf(ws);
    if (i >= 0) streams.splice(i, 1);
    if (streams.length === 0) stopTicks();
  },
});

const frame = () => `{"ts":${performance.timeOrigin + performance.now()}}`;
setInterval(() => app.publish("t", frame(), false), PERIOD_MS);

// Streams: every tick sends to the sockets whose phase lies in (last tick, now] of the period. The tick only runs
// while there are streams, so the HTTP measurements do not share core 1 with a timer firing every millisecond.
let ticker: NodeJS.Timeout | null = null;
let lastMs = 0;
function startTicks(): void {
  if (ticker) return;
  lastMs = performance.now();
  ticker = setInterval(() => {
    const nowMs = performance.now();
    const from = lastMs % PERIOD_MS;
    const span = Math.min(nowMs - lastMs, PERIOD_MS);
    lastMs = nowMs;
    for (const ws of streams) {
      const d = (ws.getUserData().phaseMs - from + PERIOD_MS) % PERIOD_MS;
      if (d > 0 && d <= span) ws.send(frame(), false);
    }
  }, 1);
}
function stopTicks(): void {
  if (ticker) clearInterval(ticker);
  ticker = null;
}

app.listen("127.0.0.1", 0, (s) => {
  if (!s) throw new Error("cannot listen");
  process.stdout.write(`upstream listening ${uws.us_socket_local_port(s)}\n`);
});
