/**
 * The gateway's edge for agents' record, child-job and asset requests (`asRecordRequest`): whatever an agent sends
 * on its records subject is either one well-formed request or an error naming the fault, never a throw of
 * another kind nor a request with fields of the wrong type.
 */
import t from "tap";
import { asRecordRequest } from "../../protocol/index.js";

const base = { v: 1, job_id: "j1", proof: "p" };

t.test("record requests - well-formed child and asset requests pass", async (t) => {
  const graph = { nodes: [], edges: [] };
  for (const req of [
    { ...base, type: "child.submit", attempt: 1, node_id: "n", call: 1, graph },
    { ...base, type: "child.wait", child_id: "c", wait_ms: 0 },
    { ...base, type: "child.wait", child_id: "c", wait_ms: 8000, after_seq: 12 },
    { ...base, type: "child.cancel", child_id: "c" },
    { ...base, type: "asset.read", asset_id: "a", cursor: 0 },
    {
      ...base,
      type: "asset.seal",
      name: "n",
      nuid: "x",
      size: 0,
      chunks: 0,
      chunk_bytes: 131072,
      digest: "SHA-256=",
      content_type: "image/png",
      file_name: "f",
    },
  ]) {
    t.equal(asRecordRequest(req).type, req.type, req.type);
  }
});

t.test("record requests - malformed ones are refused naming the fault", async (t) => {
  const seal = {
    ...base,
    type: "asset.seal",
    name: "n",
    nuid: "x",
    size: 1,
    chunks: 1,
    chunk_bytes: 1,
    digest: "SHA-256=",
    content_type: "t",
    file_name: "f",
  };
  const bad: [string, unknown][] = [
    ["child.submit without a graph", { ...base, type: "child.submit", attempt: 1, node_id: "n", call: 1 }],
    [
      "child.submit with a text attempt",
      { ...base, type: "child.submit", attempt: "1", node_id: "n", call: 1, graph: {} },
    ],
    ["child.wait with a negative wait", { ...base, type: "child.wait", child_id: "c", wait_ms: -1 }],
    [
      "child.wait with a fractional after_seq",
      { ...base, type: "child.wait", child_id: "c", wait_ms: 1, after_seq: 1.5 },
    ],
    ["child.cancel without a child", { ...base, type: "child.cancel" }],
    ["asset.read with a negative cursor", { ...base, type: "asset.read", asset_id: "a", cursor: -3 }],
    ["asset.read with an object id", { ...base, type: "asset.read", asset_id: { $gt: "" }, cursor: 0 }],
    ["asset.seal with a fractional size", { ...seal, size: 1.5 }],
    ["asset.seal with a huge name", { ...seal, name: "x".repeat(2000) }],
    ["asset.seal with a numeric node id", { ...seal, node_id: 3 }],
    ["an unknown type", { ...base, type: "asset.delete" }],
    ["no proof", { v: 1, job_id: "j1", type: "child.cancel", child_id: "c" }],
    ["not an object", "child.cancel"],
  ];
  for (const [what, req] of bad) t.throws(() => asRecordRequest(req), Error, what);
});
