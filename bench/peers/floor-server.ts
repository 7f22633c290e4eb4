/**
 * The floor / ceiling server for the peers: a bare uWS.js app that
 * - subscribes to core NATS `floor.ev.<job>` and `app.publish`es each message's bytes, untouched, to the uWS
 *   topic `j/<job>` (WS clients join with `/ws?job=<job>`; a text frame `{"start":{…}}` asks the floor
 *   publisher to start that job);
 * - answers `POST /run` by a core NATS request to `floor.dispatch` and returns the reply as one NDJSON line
 *   (the dispatch floor: HTTP + NATS request/reply, nothing else).
 * Usage: node … floor-server.ts <nats-url>; prints `floor listening <port>`.
 */
import { connect } from "@nats-io/transport-node";
import { uws } from "./uws.js";

const natsUrl = process.argv[2]!;
const nc = await connect({ servers: natsUrl });
const app = uws.App();
const dec = new TextDecoder();

nc.subscribe("floor.ev.*", {
  callback: (_err, m) => {
    app.publish(`j/${m.subject.slice(9)}`, m.data, true);
  },
});

app.ws<{ job: string }>("/ws", {
  maxPayloadLength: 1 << 20,
  maxBackpressure: 4 << 20,
  closeOnBackpressureLimit: 1,
  idleTimeout: 120,
  upgrade: (res, req, ctx) => {
    const job = new URLSearchParams(req.getQuery() ?? "").get("job") ?? "";
    res.upgrade({ job }, req.getHeader("sec-websocket-key"), req.getHeader("sec-websocket-protocol"), req.getHeader("sec-websocket-extensions"), ctx);
  },
  open: (ws) => {
    ws.subscribe(`j/${ws.getUserData().job}`);
  },
  message: (_ws, msg) => {
    const m = JSON.parse(dec.decode(msg)) as { start?: unknown; stop?: unknown };
    if (m.start) nc.publish("floor.start", JSON.stringify(m.start));
    if (m.stop) nc.publish("floor.stop", JSON.stringify(m.stop));
  },
});

app.post("/run", (res) => {
  let aborted = false;
  res.onAborted(() => (aborted = true));
  const chunks: Buffer[] = [];
  res.onData((ab, last) => {
    chunks.push(Buffer.from(ab.slice(0)));
    if (!last) return;
    nc.request("floor.dispatch", Buffer.concat(chunks), { timeout: 5_000 }).then(
      (reply) => {
        if (aborted) return;
        res.cork(() => {
          res.writeStatus("200 OK").writeHeader("content-type", "application/x-ndjson").end(dec.decode(reply.data) + "\n");
        });
      },
      (err: Error) => {
        if (aborted) return;
        res.cork(() => res.writeStatus("503 Service Unavailable").end(err.message));
      },
    );
  });
});

app.get("/health", (res) => {
  res.end("ok");
});

app.listen("127.0.0.1", 0, (s) => {
  if (!s) throw new Error("cannot listen");
  process.stdout.write(`floor listening ${uws.us_socket_local_port(s)}\n`);
});

// A clean exit on SIGINT lets `--cpu-prof` write its profile (bench/profile.ts fanout-floor).
process.on("SIGINT", () => process.exit(0));
