/** The `threaded` strategy: a graph runs in a worker thread, with the agent's heap limit for runs. */
import { Worker } from "node:worker_threads";
import type { Channel, FromRunner } from "./channel.js";
import { runnerTempDir } from "./runs-dir.js";
import { CHILD, CHILD_EXEC_ARGV, firstOnly, noop, startedAtEnv, type LocalLimits } from "./local.js";

export function threadChannel(limits: Pick<LocalLimits, "memoryMb">): Channel {
  // Its own temp dir (a thread has its own copy of the environment): what it leaves there when it is terminated
  // goes with it.
  const temp = runnerTempDir();
  const w = new Worker(CHILD, {
    execArgv: CHILD_EXEC_ARGV,
    env: startedAtEnv({ ...process.env, TMPDIR: temp.dir }),
    stdout: false,
    stderr: false,
    ...(limits.memoryMb > 0 ? { resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb } } : {}),
  });
  // Until a run listens (a spare waits for one), an error must not be an unhandled 'error' event in the agent.
  let gone = false;
  w.on("error", noop);
  w.once("exit", () => {
    gone = true;
    temp.remove();
  });
  // One listener of each kind for the thread's life: a thread kept for another run hands them to that run.
  let onMsg: ((m: FromRunner) => void) | null = null;
  let goneFns: ((how: string) => void)[] = [];
  const died = firstOnly((how) => {
    for (const fn of goneFns.splice(0)) fn(how);
  });
  w.on("message", (m: FromRunner) => onMsg?.(m));
  w.once("error", (err) => died(`error: ${err.message}`));
  w.once("exit", (code) => died(`exit code ${code}`));
  return {
    what: "worker thread",
    alive: () => !gone,
    hold: (on) => void (on ? w.ref() : w.unref()),
    send: (m) => w.postMessage(m),
    onMessage: (fn) => void (onMsg = fn),
    onGone: (fn) => void goneFns.push(fn),
    kill: () => void w.terminate(),
    reset: () => {
      onMsg = null;
      goneFns = [];
    },
  };
}
