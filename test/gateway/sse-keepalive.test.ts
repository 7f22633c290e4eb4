/**
 * A job that is quiet for a while (a model loading, a long tool call) keeps its SSE stream alive: a comment line
 * (`: keep-alive`, which SSE readers skip) comes every `sseKeepAliveMs` while no event does, so a proxy's read
 * timeout (nginx's 60 s) does not cut the stream. NDJSON has no such line and gets none.
 */
import t from "tap";
import { api } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

/** The whole body of a streamed GET, as the client received it. */
async function bodyOf(url: string, accept: string): Promise<string> {
  const res = await fetch(url, { headers: { accept } });
  return await res.text();
}

t.test("sse keep-alive - a quiet job's SSE stream gets comment lines; NDJSON gets only events", async (t) => {
  const s = await startStack(t, { agents: 1, gateway: { sseKeepAliveMs: 300 } });
  await api(s.url, "PUT", "/api/workflows/quiet", {
    graph: { nodes: [{ id: "s", type: "nodeway.test.Sleep", data: { seconds: 2 } }], edges: [] },
  });
  const run = await api(s.url, "POST", "/api/workflows/quiet/run", { params: {} });
  const events = `${s.url}/api/jobs/${String(run.body.job_id)}/events?after=0`;
  const [sse, ndjson] = await Promise.all([
    bodyOf(events, "text/event-stream"),
    bodyOf(events, "application/x-ndjson"),
  ]);
  const comments = sse.split("\n\n").filter((block) => block === ": keep-alive");
  t.ok(comments.length >= 3, `${comments.length} keep-alive comments during the 2 s sleep`);
  const frames = sse.split("\n\n").filter((block) => block !== "" && block !== ": keep-alive");
  t.ok(
    frames.every((f) => /^id: \d+\nevent: \w+\ndata: \{.*\}$/s.test(f)),
    "every other block is a whole event",
  );
  t.match(frames.at(-1), /event: job_update\ndata: \{.*"status":"completed"/s, "ending with the job's end");
  const lines = ndjson.split("\n").filter((l) => l !== "");
  t.ok(lines.length >= 3, `${lines.length} NDJSON lines`);
  t.ok(
    lines.every((l) => typeof JSON.parse(l) === "object"),
    "every NDJSON line is an event: no keep-alive",
  );
});
