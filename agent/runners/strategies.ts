/**
 * Execution strategies: where a job's graph runs. `inline` in the agent's own event loop; `threaded`
 * in a worker thread (a node that blocks its loop or exhausts its heap takes the thread, not the agent);
 * `subprocess` in a child process (its own memory and file descriptors; killed on cancel); `docker` in a container
 * with real limits (docker.ts). The agent streams,
 * publishes and fences what the graph emits exactly as for `inline`: only where the engine runs changes.
 *
 * A job asks for a strategy and the agent's policy caps it (`pickStrategy` in protocol/jobs.ts, which the gateway
 * applies at submit too): never less isolation than asked for; such a job fails `JOB_ERR_STRATEGY_UNAVAILABLE`.
 *
 * Stop (cancel, timeout, lost lease, drain: all abort the run's signal): the run is told to stop (its nodes see
 * their signal abort) and given `STOP_GRACE_MS` to end; then the thread is terminated or the process (or container)
 * killed (SIGKILL), and the run ends `cancelled` all the same. Whatever its nodes do, it is over within 2 s.
 *
 * Host calls: a node the agent itself must run (`inAgent`: it uses the agent's ComfyUI connection) is called by the
 * runner over the channel (`call` → `call_result`) while the rest of the graph stays where it runs.
 */
import { assertNever, type ExecutionStrategy } from "../../protocol/index.js";
import type { RunGraphResult } from "../engine/engine.js";
import type { Channel, StrategyRun } from "./channel.js";
import type { DockerRunner } from "./docker.js";
import { runInline } from "./inline.js";
import type { LocalLimits } from "./local.js";
import { RunnerCrashedError, runOnChannel } from "./run-on-channel.js";
import { freshChannel, type RunnerSpares } from "./spares.js";

/** Limits of a run in a thread, process or container, and the agent's containers and spare runners. */
export interface RunLimits extends LocalLimits {
  // memoryMb: a thread's or process's heap; a container's memory is the docker runner's.
  /** The agent's docker runs, when it offers `docker` (prepared at start-up). */
  docker: DockerRunner | null;
  /**
   * GPU device ids the run is given: a container's device request, a process's `CUDA_VISIBLE_DEVICES`. None: no
   * device request, and a process sees what the agent sees; threads always do.
   */
  gpus: readonly string[];
  /** Names the run (the job id) where it shows: a container's labels. */
  label: string;
  /** Threads and processes started ahead of their runs, when the agent keeps them (`warmRunners`). */
  spares: RunnerSpares | null;
}

/** Runs the graph with `strategy`. Rejects like `runGraph` (`UnknownNodeTypeError`) or with `RunnerCrashedError`. */
export function runWithStrategy(
  strategy: ExecutionStrategy,
  run: StrategyRun,
  limits: RunLimits,
): Promise<RunGraphResult> {
  switch (strategy) {
    case "inline":
      return runInline(run);
    case "threaded":
    case "subprocess": {
      const spare = limits.spares?.take(strategy, limits) ?? null;
      const fresh = () => freshChannel(strategy, limits);
      // A spare can die in the instant before it is taken (its exit not yet seen): its run then starts again on a
      // fresh runner, once. A runner that has said anything (it says `started` before the graph's first step) is
      // the run's own, and its death is the run's: no graph runs twice.
      const recycle =
        strategy === "threaded" && limits.spares ? (ch: Channel) => limits.spares!.offer(strategy, ch) : null;
      return runOnChannel(run, spare ?? fresh(), limits.memoryMb, spare ? fresh : null, recycle);
    }
    case "docker":
      // The config refuses to offer docker unless the agent prepared it; this is for a caller that did not.
      if (!limits.docker)
        return Promise.reject(new RunnerCrashedError('the "docker" strategy was not prepared on this agent'));
      return runOnChannel(run, limits.docker.channel(limits.label, limits.gpus), limits.docker.memoryMb);
    default:
      return assertNever(strategy, "execution strategy");
  }
}
