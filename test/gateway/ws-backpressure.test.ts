/**
 * A WebSocket client that stops reading while its job streams fast is closed once the gateway holds more than
 * `wsMaxBackpressureBytes` for it (the gateway's memory stays bounded), other clients of the same job stream on
 * undisturbed, and the stalled one loses nothing: resumed from the last seq it got, it gets every later event.
 */
import t from "tap";
import type { Socket } from "node:net";
import { api, WsClient } from "../helpers/clients.js";
import { check } from "../helpers/check.js";
import { startStack } from "../helpers/stack.js";

t.test(
  "ws backpressure - a stalled socket is closed at the limit, others stream on, the resume has no gap",
  async (t) => {
    const s = await startStack(t, { agents: 1, gateway: { wsMaxBackpressureBytes: 64 * 1024 } });
    // Loopback buffers take a few MB before the gateway holds anything: the job must outlast that by seconds.
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
    const stalled = await WsClient.open(s.url, "json");
    t.teardown(() => stalled.terminate());
    const r = await stalled.request("run_job", { workflow_id: "flood", params: {} });
    const jobId = String((r.result as { job_id: string }).job_id);
    await check(() => stalled.events(jobId).length > 10 || null, 20_000, { name: "the stream started" });
    // The client stops reading: its TCP socket is paused, as a frozen or overloaded reader's is.
    (stalled.ws as unknown as { _socket: Socket })._socket.pause();

    const watcher = await WsClient.open(s.url, "msgpack");
    t.teardown(() => watcher.close());
    watcher.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
    const end = await watcher.waitTerminal(jobId, 60_000);
    t.equal(end.status, "completed", "the job completes");
    const seqs = watcher.events(jobId).map((e) => Number(e.seq));
    t.same(
      seqs,
      Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i),
      `another client got every event in order (${seqs.length}) while the stalled one held the limit`,
    );

    (stalled.ws as unknown as { _socket: Socket })._socket.resume();
    await check(() => stalled.closeCode !== null || null, 20_000, { name: "the stalled socket found closed" });
    const got = stalled.events(jobId);
    t.ok(got.length < seqs.length, `the stalled socket was closed before the end (${got.length} events)`);
    const last = Number(got.at(-1)?.seq ?? 0);
    const again = await WsClient.open(s.url, "json");
    t.teardown(() => again.close());
    again.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: last } });
    await again.waitTerminal(jobId, 30_000);
    const rest = again.events(jobId).map((e) => Number(e.seq));
    t.same(
      [...got.map((e) => Number(e.seq)), ...rest],
      seqs,
      "what it got and what its resume brought are every event once, in order",
    );
  },
);
