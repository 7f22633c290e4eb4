/**
 * The same gateway shape written with `ws`: one NATS subscription, each event decoded, given its seq and
 * encoded once, then a loop over the job's sockets calling `ws.send`. WS clients join with `/ws?job=<job>`.
 * Usage: node … ws-gateway.ts <nats-url>; prints `ws listening <port>`.
 */
import { createServer } from "node:http";
import { connect } from "@nats-io/transport-node";
import { WebSocketServer, type WebSocket } from "ws";
import { decodeMsgpack, encodeMsgpack } from "../../protocol/index.js";

const nc = await connect({ servers: process.argv[2]! });
const byJob = new Map<string, Set<WebSocket>>();
let seq = 0;
nc.subscribe("floor.ev.*", {
  callback: (_err, m) => {
    const set = byJob.get(m.subject.slice(9));
    const ev = decodeMsgpack(m.data) as Record<string, unknown>;
    ev.seq = ++seq;
    const bytes = encodeMsgpack(ev);
    if (set) for (const ws of set) ws.send(bytes, { binary: true });
  },
});
const server = createServer((_req, res) => res.end("ok"));
const wss = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false, maxPayload: 1 << 20 });
wss.on("connection", (ws, req) => {
  const job = new URL(req.url ?? "/", "http://x").searchParams.get("job") ?? "";
  let set = byJob.get(job);
  if (!set) byJob.set(job, (set = new Set()));
  set.add(ws);
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString()) as { start?: unknown; stop?: unknown };
    if (m.start) nc.publish("floor.start", JSON.stringify(m.start));
    if (m.stop) nc.publish("floor.stop", JSON.stringify(m.stop));
  });
  ws.on("close", () => set.delete(ws));
  ws.on("error", () => undefined);
});
server.listen(0, "127.0.0.1", () =>
  process.stdout.write(`ws listening ${(server.address() as { port: number }).port}\n`),
);
