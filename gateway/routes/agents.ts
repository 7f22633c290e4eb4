/** The fleet: agents (listing, draining one) and the node types they offer. */
import { encodeMsgpack, subjects } from "../../protocol/index.js";
import { notFound } from "../errors.js";
import type { Reply, Req } from "../http.js";
import type { RouteContext } from "./context.js";

export function registerAgentRoutes(ctx: RouteContext): void {
  const { router, jobs } = ctx;

  async function listAgents(_req: Req, reply: Reply): Promise<void> {
    const agents = await jobs.agents();
    reply.json(200, {
      agents: agents.map((a) => ({
        id: a.id,
        name: a.name,
        version: a.version,
        state: a.state,
        pools: a.pools,
        labels: a.labels,
        capabilities: a.capabilities,
        running_jobs: a.running_jobs,
        heartbeat_at: a.heartbeat_at,
        started_at: a.started_at,
      })),
    });
  }

  async function drainAgent(req: Req, reply: Reply): Promise<void> {
    const id = req.params[0]!;
    const agents = await jobs.agents();
    if (!agents.some((a) => a.id === id)) throw notFound(`agent "${id}"`);
    ctx.nats.nc.publish(subjects.agentControl(id), encodeMsgpack({ type: "agent.drain", v: 1 }));
    reply.json(202, { id, state: "draining" });
  }

  /** Each node type once, by name. */
  async function nodeMetadata(_req: Req, reply: Reply): Promise<void> {
    const catalog = await jobs.nodeCatalog();
    const seen = new Set<string>();
    const list = [...catalog.values()].filter((m) => (seen.has(m.node_type) ? false : (seen.add(m.node_type), true)));
    reply.json(
      200,
      list.sort((a, b) => a.node_type.localeCompare(b.node_type)),
    );
  }

  router.route("get", "/api/agents", listAgents);
  router.route("post", "/api/agents/:id/drain", drainAgent);
  router.route("get", "/api/nodes/metadata", nodeMetadata);
}
