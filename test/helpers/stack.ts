/** A whole stack for a test: nats-server, an in-process gateway on port 0, and agent processes. */
import { startGateway, type RunningGateway } from "../../gateway/index.js";
import type { GatewayOptions } from "../../gateway/index.js";
import { NatsServer } from "./nats-server.js";
import { startAgentProc, type AgentProc } from "./procs.js";

export interface Stack {
  ns: NatsServer;
  gw: RunningGateway;
  agents: AgentProc[];
  url: string;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function startStack(
  t: Teardown,
  opts: { agents?: number; agentArgs?: string[]; agentEnv?: NodeJS.ProcessEnv; gateway?: GatewayOptions } = {},
): Promise<Stack> {
  const ns = await NatsServer.start();
  t.teardown(() => ns.stop());
  const gw = await startGateway({ natsUrl: ns.url, port: 0, ...opts.gateway });
  t.teardown(() => gw.stop());
  const agents: AgentProc[] = [];
  for (let i = 0; i < (opts.agents ?? 1); i++) {
    const a = await startAgentProc(ns.url, ["--name", `agent${i}`, ...(opts.agentArgs ?? [])], opts.agentEnv);
    t.teardown(() => a.kill("SIGKILL"));
    agents.push(a);
  }
  return { ns, gw, agents, url: gw.url };
}
