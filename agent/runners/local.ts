/** What the `threaded` and `subprocess` runners share: the runner script they start, and their limits. */
import { fileURLToPath } from "node:url";

/** The limits a thread or process is started with. */
export interface LocalLimits {
  /** Heap limit in MiB of a thread or process; 0 = V8's default. */
  memoryMb: number;
  /**
   * GPU device ids the run is given: a process's `CUDA_VISIBLE_DEVICES`. None: a process sees what the agent sees;
   * threads always do.
   */
  gpus: readonly string[];
}

/**
 * The runner script beside this file. Run from the TypeScript sources (an agent started in-process by a test),
 * it is the `.ts` file, and the thread or process needs this process's flags (the loader) to read it; compiled,
 * it starts with plain node: the agent's own flags (an inspector, say) are not the run's business.
 */
const FROM_SOURCE = import.meta.url.endsWith(".ts");
export const CHILD = fileURLToPath(
  new URL(FROM_SOURCE ? "./strategy-child.ts" : "./strategy-child.js", import.meta.url),
);
export const CHILD_EXEC_ARGV = FROM_SOURCE ? process.execArgv : [];

export const noop = (): void => undefined;

/** `fn` for its first call only: an `error` and the `exit` after it are one death. */
export function firstOnly(fn: (how: string) => void): (how: string) => void {
  let done = false;
  return (how) => {
    if (!done) (done = true), fn(how);
  };
}

/** When the agent started a runner (epoch ms), in its environment: what a run's `Whereabouts` reports. */
export const startedAtEnv = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({
  ...env,
  NODEWAY_RUNNER_STARTED_AT: String(Date.now()),
});
