/**
 * A client that stops reading an NDJSON event stream is closed once the gateway holds more than its backlog limit
 * for it (memory stays bounded), and loses nothing: it resumes from the last seq it parsed and gets the rest.
 */
import t from "tap";
import { connect } from "node:net";
import { api, readStream, type Msg } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test(
  "stream backpressure - a stalled NDJSON reader is closed at the backlog limit, then resumes with no gap",
  async (t) => {
    const s = await startStack(t, { agents: 1, gateway: { wsMaxBackpressureBytes: 64 * 1024 } });
    // Loopback buffers absorb ~4 MB (~20k events) before uWS holds anything: the job must outlast that by seconds.
    const count = 50_000;
    await api(s.url, "PUT", "/api/workflows/flood", {
      graph: {
        nodes: [
          { id: "tok", type: "nodeway.test.Tokens", data: { count, rate: 8_000 } },
          { id: "out", type: "nodetool.output.Output", data: { name: "text" } },
        ],
        edges: [{ id: "e1", source: "tok", sourceHandle: "output", target: "out", targetHandle: "value" }],
      },
    });
    const run = await api(s.url, "POST", "/api/workflows/flood/run", { params: {} });
    const jobId = String(run.body.job_id);

    // A raw client that sends its request and then does not read.
    const { port } = new URL(s.url);
    const sock = connect({ host: "127.0.0.1", port: Number(port) });
    sock.pause();
    let closed = false;
    sock.on("close", () => (closed = true));
    sock.on("error", () => (closed = true));
    sock.write(
      `GET /api/jobs/${jobId}/events?after=0 HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-ndjson\r\n\r\n`,
    );
    t.teardown(() => sock.destroy());
    // A paused socket cannot see the close: let the job finish while the client does not read, then read.
    await check(
      async () => ((await api(s.url, "GET", `/api/jobs/${jobId}`)).body.status === "completed" ? true : null),
      120_000,
      { name: "the job completes" },
    );
    const rec = await api(s.url, "GET", `/api/jobs/${jobId}`);
    t.equal(rec.body.status, "completed", "the job itself carried on to the end");
    const chunks: Buffer[] = [];
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.resume();
    await check(() => (closed ? true : null), 10_000, { name: "the stream was closed by the gateway" });
    t.pass("the gateway had closed the stream of the client that stopped reading");
    const got: Msg[] = [];
    for (const line of Buffer.concat(chunks).toString("utf8").split("\r\n")) {
      if (!line.startsWith("{")) continue;
      for (const l of line.split("\n")) {
        try {
          got.push(JSON.parse(l) as Msg);
        } catch {
          /* a line cut by the close */
        }
      }
    }
    const last = got.filter((e) => typeof e.seq === "number").at(-1)?.seq ?? 0;
    t.ok(last < count, `it had read ${got.length} events before the close, not the whole job`);
    t.notOk(
      got.some((e) => e.type === "job_update" && e.status === "completed"),
      "and no terminal event",
    );

    const rest = await readStream(`${s.url}/api/jobs/${jobId}/events?after=${last}`);
    const seqs = [
      ...got.filter((e) => typeof e.seq === "number").map((e) => Number(e.seq)),
      ...rest.events.map((e) => Number(e.seq)),
    ];
    const all = (await readStream(`${s.url}/api/jobs/${jobId}/events?after=0`)).events.map((e) => Number(e.seq));
    t.same(seqs, all, "what it read before the close plus the resume is the job's whole history, in order, once");
    t.match(rest.events.at(-1), { type: "job_update", status: "completed" }, "ending with the terminal event");
  },
);
