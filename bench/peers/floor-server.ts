/**
 * The floor / ceiling server for the peers: a bare uWS.js app that
 * - subscribes to core NATS `floor.ev.<job>` and `app.publish`es each message's bytes, untouched, to the uWS
 *   topic `j/<job>` (WS clients join with `/ws?job=<job>`; a text frame `{"start":{…}}` asks the floor
 *   publisher to start that job);
 * - or, with mode `js-raw` / `js-lib` (the JetStream floors of the fan-out benchmark), reads the same events from
 *   a stream instead: the publisher then sends them to `floorjs.ev.<job>` with a `Nats-Msg-Id`, as the agent does,
 *   and the stream `FLOORJS` stores them. `js-raw` reads a plain push consumer through a core subscription and
 *   takes the stream and consumer sequences from the reply subject, checking the latter for gaps (the least any
 *   resumable fan-out must do per event); `js-lib` reads the library's ordered consumer, called back, with the
 *   settings the gateway's hub used before it read a push consumer itself. Either publishes the bytes untouched, as the core floor;
 * - or, with mode `js-nw`, reads the real agent's events from our own NW_EVENTS stream as `js-raw` reads its stream
 *   (the same events, arriving as they arrive at the gateway), and publishes them untouched to `j/<job>`;
 * - answers `POST /run` by a core NATS request to `floor.dispatch` and returns the reply as one NDJSON line
 *   (the dispatch floor: HTTP + NATS request/reply, nothing else).
 * Usage: node … floor-server.ts <nats-url>; prints `floor listening <port>`.
 */
import { connect } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { uws } from "./uws.js";

const natsUrl = process.argv[2]!;
const MODES = ["core", "js-raw", "js-lib", "js-republish", "js-nw"] as const;
const mode = (process.argv[3] ?? "core") as (typeof MODES)[number];
if (!MODES.includes(mode)) throw new Error(`unknown floor mode ${mode}`);
const nc = await connect({ servers: natsUrl });
const app = uws.App();
const dec = new TextDecoder();
/** Where the publisher is told to send a job's events in this mode. */
const startExtra = (jobId: string) =>
  mode === "core"
    ? {}
    : { subject: mode === "js-republish" ? `floorjsr.src.${jobId}` : `floorjs.ev.${jobId}`, msg_id: true };

/**
 * Reads `stream` through the library's ordered consumer with the gateway's settings and publishes each message
 * untouched to `j/<job>`. The stream sequence is read per event: a fan-out that resumes must know it.
 */
async function consumeOrdered(stream: string, filter: string, jobOf: (subject: string) => string): Promise<void> {
  const consumer = await jetstream(nc).consumers.get(stream, {
    filter_subjects: filter,
    deliver_policy: DeliverPolicy.New,
  });
  await consumer.consume({
    max_messages: 2_000,
    expires: 2_000,
    callback: (m) => {
      if (m.seq > 0) app.publish(`j/${jobOf(m.subject)}`, m.data, true);
    },
  });
}

/**
 * Reads `stream` through a plain push consumer on a core subscription, taking the stream and consumer sequences
 * from the reply subject and checking the latter for gaps, and publishes each message untouched to `j/<job>`.
 */
async function consumeRaw(
  jsm: JetStreamManager,
  stream: string,
  filter: string,
  jobOf: (subject: string) => string,
): Promise<void> {
  const inbox = `_INBOX.floorjs${process.pid}`;
  let lastConsumerSeq = 0;
  nc.subscribe(inbox, {
    callback: (_err, m) => {
      // `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`.
      const r = m.reply ?? "";
      const dots: number[] = [];
      for (let at = r.length - 1; at >= 0 && dots.length < 4; at--) if (r.charCodeAt(at) === 46) dots.push(at);
      const consumerSeq = Number(r.slice(dots[2]! + 1, dots[1]));
      const streamSeq = Number(r.slice(dots[3]! + 1, dots[2]));
      if (lastConsumerSeq !== 0 && consumerSeq !== lastConsumerSeq + 1)
        process.stderr.write(`floor ${mode}: gap, consumer seq ${consumerSeq} after ${lastConsumerSeq}\n`);
      lastConsumerSeq = consumerSeq;
      if (streamSeq > 0) app.publish(`j/${jobOf(m.subject)}`, m.data, true);
    },
  });
  await jsm.consumers.add(stream, {
    deliver_subject: inbox,
    filter_subject: filter,
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.None,
  });
}

if (mode === "core") {
  nc.subscribe("floor.ev.*", {
    callback: (_err, m) => {
      app.publish(`j/${m.subject.slice(9)}`, m.data, true);
    },
  });
} else if (mode === "js-republish") {
  // The stream republishes each event it stored to core `floorjsr.ev.<job>`, with `Nats-Sequence` and
  // `Nats-Last-Sequence` (the previous one of that job) among its headers, read here from the raw header bytes:
  // the library would build a header map per message. A gap in a job (a core message lost) shows as a
  // `Nats-Last-Sequence` that is not the job's last seen sequence.
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: "FLOORJSR",
    subjects: ["floorjsr.src.>"],
    duplicate_window: 120_000_000_000,
    republish: { src: "floorjsr.src.>", dest: "floorjsr.ev.>" },
  });
  const lastOfJob = new Map<string, number>();
  const SEQ = Buffer.from("\r\nNats-Sequence: ");
  const LAST = Buffer.from("\r\nNats-Last-Sequence: ");
  const numberAfter = (hdr: Buffer, key: Buffer): number => {
    const at = hdr.indexOf(key);
    if (at < 0) return -1;
    let n = 0;
    for (let i = at + key.length; i < hdr.length; i++) {
      const c = hdr[i]!;
      if (c < 48 || c > 57) break;
      n = n * 10 + c - 48;
    }
    return n;
  };
  nc.subscribe("floorjsr.ev.*", {
    callback: (_err, m) => {
      const raw = m as unknown as { _rdata: Uint8Array; _msg: { hdr: number } };
      const hdr = Buffer.from(raw._rdata.buffer, raw._rdata.byteOffset, raw._msg.hdr);
      const seq = numberAfter(hdr, SEQ);
      const last = numberAfter(hdr, LAST);
      const job = m.subject.slice(12);
      const seen = lastOfJob.get(job);
      if (seen !== undefined && last !== seen)
        process.stderr.write(`floor ${mode}: gap in ${job}, ${last} after ${seen}\n`);
      lastOfJob.set(job, seq);
      if (seq > 0) app.publish(`j/${job}`, m.data, true);
    },
  });
} else if (mode === "js-nw") {
  // The agent's own events as our gateway reads them: NW_EVENTS (made by the gateway), `nw.events.<job>.<source>`,
  // through the least a resumable fan-out does per event (the gateway's hub reads a push consumer the same way).
  const jobOf = (subject: string) => subject.slice(10, subject.lastIndexOf("."));
  await consumeRaw(await jetstreamManager(nc), "NW_EVENTS", "nw.events.>", jobOf);
} else {
  const jsm = await jetstreamManager(nc);
  await jsm.streams
    .add({ name: "FLOORJS", subjects: ["floorjs.ev.>"], duplicate_window: 120_000_000_000 })
    .catch(async (err: Error) => {
      if (!/already in use/.test(err.message)) throw err;
    });
  if (mode === "js-raw") {
    await consumeRaw(jsm, "FLOORJS", "floorjs.ev.>", (subject) => subject.slice(11));
  } else {
    await consumeOrdered("FLOORJS", "floorjs.ev.>", (subject) => subject.slice(11));
  }
}

app.ws<{ job: string }>("/ws", {
  maxPayloadLength: 1 << 20,
  maxBackpressure: 4 << 20,
  closeOnBackpressureLimit: 1,
  idleTimeout: 120,
  upgrade: (res, req, ctx) => {
    const job = new URLSearchParams(req.getQuery() ?? "").get("job") ?? "";
    res.upgrade(
      { job },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      ctx,
    );
  },
  open: (ws) => {
    // A socket opened without a job watches nothing (the idle sockets of the scale benchmark).
    const job = ws.getUserData().job;
    if (job) ws.subscribe(`j/${job}`);
  },
  message: (ws, msg) => {
    const m = JSON.parse(dec.decode(msg)) as { start?: unknown; stop?: unknown; watch?: string };
    if (typeof m.watch === "string") ws.subscribe(`j/${m.watch}`);
    if (m.start)
      nc.publish(
        "floor.start",
        JSON.stringify({ ...(m.start as { job_id: string }), ...startExtra((m.start as { job_id: string }).job_id) }),
      );
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
          res
            .writeStatus("200 OK")
            .writeHeader("content-type", "application/x-ndjson")
            .end(dec.decode(reply.data) + "\n");
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
