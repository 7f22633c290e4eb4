/**
 * agent/runners/: where a job's graph runs (the execution strategies). Explicit list; nothing else is public.
 * The docker runner is imported by path where it is used (`./runners/docker.js`): dockerode loads only on an
 * agent that offers `docker`.
 */
export { runWithStrategy } from "./strategies.js";
export type { RunLimits } from "./strategies.js";
export { RunnerSpares } from "./spares.js";
export { removeStaleRunsDirs } from "./runs-dir.js";
export { RunnerCrashedError, STOP_GRACE_MS, runOnChannel, runnerMessageProblem } from "./run-on-channel.js";
export { ASSET_CALLS_AT_ONCE } from "./channel.js";
export type { Channel, FromRunner, HostNodeSpec, RunnerNodes, StrategyRun, ToRunner } from "./channel.js";
export { FrameReader, ROLE_CHANNEL, ROLE_LIFELINE, frame } from "./frames.js";
export type { DockerRunner, DockerSettings } from "./docker.js";
