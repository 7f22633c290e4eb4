/**
 * Large files cross between a run and its agent whole: a node's 40 MiB output is stored from a thread, a process and
 * a container (whose frames stopped at 16 MiB), and a run reads a 27 MB asset (`asset_get`, in 8 MiB pieces).
 */
import t from "tap";
import Docker from "dockerode";
import { WsClient, type Msg } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";
import { runOver, terminal } from "../helpers/strategy-jobs.js";
import sharp from "sharp";
import { testByte } from "../../agent/nodes/test-nodes.js";

const SIZE = 40 * 1024 * 1024 + 123;

const graph = {
  nodes: [
    { id: "b", type: "nodeway.test.Bytes", data: { size: SIZE, seed: 7 } },
    { id: "out", type: "nodetool.output.Output", data: { name: "blob" } },
  ],
  edges: [{ id: "e1", source: "b", sourceHandle: "output", target: "out", targetHandle: "value" }],
};

const dockerUp = await new Docker()
  .ping()
  .then(() => true)
  .catch(() => false);

t.test("runner big assets - a 40 MiB output is stored whole from every strategy", async (t) => {
  const strategies = ["threaded", "subprocess", ...(dockerUp ? ["docker"] : [])];
  if (!dockerUp) t.comment("no Docker engine answers: the docker strategy is not tried");
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", `inline,${strategies.join(",")}`] });
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  for (const strategy of strategies) {
    const { events } = await runOver(ws, graph, strategy, 120_000);
    const end = terminal(events) as Msg;
    t.equal(end.status, "completed", `${strategy}: completed (${JSON.stringify(end.error ?? null).slice(0, 300)})`);
    const blob = (end.result as Record<string, unknown[]> | undefined)?.blob?.[0] as { uri?: string } | undefined;
    const id = String(blob?.uri ?? "").replace(/^asset:\/\//, "");
    const res = await fetch(`${s.url}/api/assets/${id}/content`);
    const got = new Uint8Array(await res.arrayBuffer());
    t.equal(got.length, SIZE, `${strategy}: the asset holds all ${SIZE} bytes`);
    let same = got.length === SIZE;
    for (let i = 0; same && i < SIZE; i += 4099) same = got[i] === testByte(i, 7);
    t.ok(same, `${strategy}: and they are the node's`);
  }
});

t.test("runner big assets - a run reads a 27 MB image asset whole", async (t) => {
  const strategies = ["threaded", "subprocess", ...(dockerUp ? ["docker"] : [])];
  const s = await startStack(t, { agents: 1, agentArgs: ["--strategies", `inline,${strategies.join(",")}`] });
  const png = await sharp({
    create: {
      width: 3000,
      height: 3000,
      channels: 3,
      background: "#808080",
      noise: { type: "gaussian", mean: 128, sigma: 40 },
    },
  })
    .png({ compressionLevel: 0 })
    .toBuffer();
  t.ok(png.length > 3 * 8 * 1024 * 1024, `the image is ${png.length} bytes: more than three pieces`);
  const up = await fetch(`${s.url}/api/assets`, {
    method: "POST",
    headers: { "content-type": "image/png" },
    body: new Uint8Array(png),
  });
  const asset = (await up.json()) as { id?: string };
  t.equal(up.status, 201, "uploaded");
  const meta = {
    nodes: [
      { id: "m", type: "nodetool.image.GetMetadata", data: { image: { type: "image", uri: `asset://${asset.id}` } } },
      { id: "out", type: "nodetool.output.Output", data: { name: "width" } },
    ],
    edges: [{ id: "e1", source: "m", sourceHandle: "width", target: "out", targetHandle: "value" }],
  };
  const ws = await WsClient.open(s.url, "msgpack");
  t.teardown(() => ws.close());
  for (const strategy of strategies) {
    const end = terminal((await runOver(ws, meta, strategy, 120_000)).events) as Msg;
    t.equal(end.status, "completed", `${strategy}: completed (${JSON.stringify(end.error ?? null).slice(0, 300)})`);
    t.same((end.result as Record<string, unknown[]> | undefined)?.width, [3000], `${strategy}: read it whole`);
  }
});
