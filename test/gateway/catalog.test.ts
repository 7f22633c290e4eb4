/**
 * The gateway validates node types against the catalogs of live agents, which it caches. A type offered by an agent
 * that registered after the cache was read must not be refused, and a type nobody offers still must be.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { KV_AGENTS, KV_NODES } from "../../protocol/index.js";
import { api } from "../helpers/clients.js";
import { startStack } from "../helpers/stack.js";

const graphOf = (type: string) => ({ graph: { nodes: [{ id: "n", type, data: {} }], edges: [] } });

t.test(
  "catalog - a node type of an agent that registered after the gateway read its catalog is accepted at once",
  async (t) => {
    const s = await startStack(t, { agents: 1 });
    const before = await api(s.url, "GET", "/api/nodes/metadata"); // the gateway now holds a fresh catalog
    t.equal(before.status, 200);
    t.notOk((before.body as unknown as { node_type: string }[]).some((m) => m.node_type === "acme.vision.Segment"));

    // A second agent appears, registered the way agents register: its catalog in nw_nodes, itself in nw_agents.
    const nc = await connect({ servers: s.ns.url });
    t.teardown(() => nc.close());
    const kvm = new Kvm(nc);
    const meta = {
      node_type: "acme.vision.Segment",
      title: "Segment",
      description: "",
      namespace: "acme.vision",
      properties: [],
      outputs: [{ name: "output", type: "any" }],
      is_dynamic: false,
      is_streaming: false,
    };
    await (await kvm.open(KV_NODES)).put("catalog-acme", JSON.stringify([meta]));
    const at = new Date().toISOString();
    const reg = {
      type: "agent.registration",
      v: 1,
      id: "acme1",
      name: "acme",
      version: "0.1.0",
      labels: [],
      pools: ["cpu"],
      capabilities: { gpus: [], docker: false, providers: [], max_jobs: 1, strategies: ["inline"], node_types: 1 },
      state: "idle",
      running_jobs: [],
      node_catalog: "catalog-acme",
      started_at: at,
      heartbeat_at: at,
    };
    await (await kvm.open(KV_AGENTS)).put("acme1", JSON.stringify(reg));

    const saved = await api(s.url, "PUT", "/api/workflows/seg", graphOf("acme.vision.Segment"));
    t.equal(saved.status, 200, "accepted without waiting for the cached catalog to age");
    const unknown = await api(s.url, "PUT", "/api/workflows/nope", graphOf("acme.vision.Nothing"));
    t.equal(unknown.status, 400, "a type nobody offers is still refused");
    t.match(unknown.body, { code: "GRAPH_ERR_UNKNOWN_NODE_TYPE" });
  },
);
