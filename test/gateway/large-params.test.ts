/**
 * A request whose params hold a list of millions of small numbers (8 MB of JSON, under the body limit) is refused
 * without holding the gateway: the forbidden-key walk made a string per list item (8 such requests at once kept
 * /health waiting 9 s and the gateway at 1.7 GB), and the refusal echoed the whole 8 MB value, twice.
 */
import t from "tap";
import { api } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

t.test(
  "large params - millions of list items are refused quickly, in a short message, /health answering",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    await api(s.url, "PUT", "/api/workflows/hello", {
      graph: {
        nodes: [
          { id: "in", type: "nodetool.input.StringInput", data: { name: "name", value: "" } },
          { id: "out", type: "nodetool.output.Output", data: { name: "greeting" } },
        ],
        edges: [{ id: "e", source: "in", sourceHandle: "output", target: "out", targetHandle: "value" }],
      },
    });
    const body = `{"params":{"name":[${"0,".repeat(4_000_000)}0]}}`;
    let slowestHealthMs = 0;
    let polling = true;
    const poll = (async () => {
      while (polling) {
        const t0 = Date.now();
        await fetch(`${s.url}/health`);
        slowestHealthMs = Math.max(slowestHealthMs, Date.now() - t0);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        fetch(`${s.url}/api/workflows/hello/run`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        }).then(async (r) => ({ status: r.status, text: await r.text() })),
      ),
    );
    polling = false;
    await poll;
    t.same([...new Set(answers.map((a) => a.status))], [400], "each is refused 400");
    const answer = JSON.parse(answers[0]!.text) as { code: string; message: string };
    t.equal(answer.code, "GRAPH_ERR_PARAM_TYPE");
    t.match(
      answer.message,
      /^param "name" must be str, got \[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,… \(4000001 items\)\]$/,
    );
    t.ok(answers[0]!.text.length < 1_000, `the answer is ${answers[0]!.text.length} bytes, not the value echoed`);
    t.comment(`/health took at most ${slowestHealthMs} ms meanwhile`);
    t.ok(slowestHealthMs < 5_000, `/health answered meanwhile (at most ${slowestHealthMs} ms)`);
  },
);

t.test("large params - a job too large for one NATS message is refused 413 while no agent is live", async (t) => {
  const s = await startStack(t, { agents: 0 });
  await api(s.url, "PUT", "/api/workflows/hello", {
    graph: {
      nodes: [
        { id: "in", type: "nodetool.input.StringInput", data: { name: "name", value: "" } },
        { id: "out", type: "nodetool.output.Output", data: { name: "greeting" } },
      ],
      edges: [{ id: "e", source: "in", sourceHandle: "output", target: "out", targetHandle: "value" }],
    },
  });
  for (const items of [600_000, 4_000_000]) {
    const res = await api(s.url, "POST", "/api/workflows/hello/run", { params: { name: Array(items).fill(0) } });
    t.equal(res.status, 413, `${items} items: 413 (${JSON.stringify(res.body).slice(0, 200)})`);
    t.match(res.body, { code: "GW_ERR_BODY_TOO_LARGE" });
  }
});
