/** agent/: the runner agent. Explicit list; nothing else is public. */
export { startAgent, AGENT_VERSION } from "./agent.js";
export type { RunningAgent } from "./agent.js";
export { compileAgentConfig, AGENT_OPTION_KEYS } from "./config.js";
export type { AgentOptions, AgentConfig } from "./config.js";
export { runGraph, UnknownNodeTypeError } from "./engine/engine.js";
export type { EngineEvent, RunGraphOptions, RunGraphResult } from "./engine/engine.js";
export { metadataOf, NodeError } from "./engine/types.js";
export type { NodeDef, NodeContext } from "./engine/types.js";
export { parseNvidiaSmi } from "./capabilities.js";
