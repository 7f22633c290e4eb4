/**
 * The upstream behind the proxies: a bare uWS.js app answering `GET /` with ~300 bytes of JSON and, on `/ws`,
 * broadcasting `{"ts": <timeOrigin + now()>}` text frames to every socket `--hz` times a second.
 * Prints `upstream listening <port>`.
 */
import { uws } from "./uws.js";

const hz = Number(process.argv[2] ?? 20);
const body = JSON.stringify({ id: "01JDQ7ZK3M8X4V5N6P7Q8R9S0T", workflow_id: "hello-world", status: "completed", attempt: 1, agent_id: "agent-1", created_at: new Date(0).toISOString(), started_at: new Date(0).toISOString(), finished_at: new Date(0).toISOString(), outputs: { greeting: ["Hello, bench!"] }, error: null, pad: "x".repeat(40) });
const app = uws.App();
app.get("/*", (res) => {
  res.cork(() => {
    res.writeHeader("content-type", "application/json").end(body);
  });
});
app.ws("/ws", {
  idleTimeout: 120,
  maxBackpressure: 4 << 20,
  open: (ws) => {
    ws.subscribe("t");
  },
});
setInterval(() => app.publish("t", `{"ts":${performance.timeOrigin + performance.now()}}`, false), 1000 / hz);
app.listen("127.0.0.1", 0, (s) => {
  if (!s) throw new Error("cannot listen");
  process.stdout.write(`upstream listening ${uws.us_socket_local_port(s)}\n`);
});
