/**
 * A JSON client never receives a serialized Node Buffer (`{"type":"Buffer","data":[…]}`): small binary outputs,
 * which stay inline, reach it as `data:` URIs in events and in the job's record, nested in the outputs' lists,
 * whichever strategy ran the graph, live and when a client resumes (replayed from the gateway's cache).
 */
import t from "tap";
import { api, WsClient } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import { runOver, terminal } from "../helpers/strategy-jobs.js";

const graph = {
  nodes: [
    { id: "b", type: "nodeway.test.Bytes", data: { size: 64, seed: 3, png: true } },
    { id: "out", type: "nodetool.output.Output", data: { name: "image" } },
  ],
  edges: [{ id: "e", source: "b", sourceHandle: "output", target: "out", targetHandle: "value" }],
};

t.test("json - small binary outputs reach JSON clients as data: URIs, never as serialized Buffers", async (t) => {
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", "inline,subprocess,threaded"] });
  const ws = await WsClient.open(s.url, "json");
  t.teardown(() => ws.close());
  for (const strategy of ["inline", "subprocess", "threaded"]) {
    const { jobId, events } = await runOver(ws, graph, strategy, 60_000);
    const end = terminal(events);
    t.equal(end.status, "completed", `${strategy}: completed`);
    t.match(
      (end.result as { image: unknown[] }).image,
      [/^data:application\/octet-stream;base64,iVBORw0KGgo/],
      `${strategy}: the result's list holds a data: URI`,
    );
    const output = events.find((e) => e.type === "output_update" && e.node_id === "out");
    t.match(
      output?.value,
      /^data:application\/octet-stream;base64,iVBORw0KGgo/,
      `${strategy}: the output_update's value is a data: URI`,
    );
    t.notMatch(JSON.stringify(events), /"type":"Buffer"/, `${strategy}: no event holds a serialized Buffer`);
    const rec = await api(s.url, "GET", `/api/jobs/${jobId}`);
    t.notMatch(JSON.stringify(rec.body), /"type":"Buffer"/, `${strategy}: nor does the job's record`);
    // A resume replays from the gateway's cache, whose bytes the decoder turns into Buffers.
    const late = await WsClient.open(s.url, "json");
    late.send({ command: "reconnect_job", data: { job_id: jobId, last_seq: 0 } });
    const replayed = await late.waitTerminal(jobId, 20_000);
    const again = late.events(jobId);
    await late.close();
    t.match(
      (replayed.result as { image: unknown[] }).image,
      [/^data:application\/octet-stream;base64,iVBORw0KGgo/],
      `${strategy}: replayed, a data: URI`,
    );
    t.match(
      again.find((e) => e.type === "output_update" && e.node_id === "out")?.value,
      /^data:/,
      `${strategy}: replayed output_update too`,
    );
    t.notMatch(JSON.stringify(again), /"type":"Buffer"/, `${strategy}: no replayed event holds a serialized Buffer`);
  }
});

// Fails until gateway/http.ts answers JSON through encodeJson (its `json()` uses JSON.stringify, which writes a
// Buffer as {"type":"Buffer",…} and a Uint8Array as {"0":…}); that file is not this change's to edit.
t.test("json - a run with ?wait=true answers its binary outputs as data: URIs", async (t) => {
  const s = await startStack(t, { agents: 1 });
  const saved = await api(s.url, "POST", "/api/workflows", { name: "bytes", graph });
  const id = String(saved.body.id);
  const r = await api(s.url, "POST", `/api/workflows/${id}/run?wait=true`, { params: {} });
  t.equal(r.body.status, "completed");
  t.match(
    (r.body.outputs as { image: unknown[] }).image,
    [/^data:application\/octet-stream;base64,iVBORw0KGgo/],
    "the output is a data: URI",
  );
  t.notMatch(JSON.stringify(r.body), /"type":"Buffer"/, "not a serialized Buffer");
});
