/** The `subprocess` strategy: a graph runs in a child process of its own, killed on stop. */
import { fork, type ChildProcess } from "node:child_process";
import type { Channel } from "./channel.js";
import { runnerTempDir } from "./runs-dir.js";
import { CHILD, CHILD_EXEC_ARGV, firstOnly, noop, startedAtEnv, type LocalLimits } from "./local.js";

export function processChannel(limits: LocalLimits): Channel {
  const execArgv =
    limits.memoryMb > 0 ? [...CHILD_EXEC_ARGV, `--max-old-space-size=${limits.memoryMb}`] : CHILD_EXEC_ARGV;
  // `advanced` serialization carries bytes outputs (Uint8Array) and Maps as they are.
  // A gpu-pool run's GPUs are the only ones CUDA shows it (the others' runs have theirs: agent/gpus.ts).
  // Its own temp dir: what it leaves there when it is killed goes with it.
  const temp = runnerTempDir();
  const gpus = limits.gpus.length > 0 ? { CUDA_VISIBLE_DEVICES: limits.gpus.join(",") } : {};
  const env = startedAtEnv({ ...process.env, ...gpus, TMPDIR: temp.dir });
  const p: ChildProcess = fork(CHILD, [], {
    serialization: "advanced",
    execArgv,
    env,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  p.on("error", noop); // as for a thread: a run's onGone reports it
  p.once("exit", temp.remove);
  p.once("error", temp.remove);
  return {
    what: "subprocess",
    alive: () => p.exitCode === null && p.signalCode === null && p.connected,
    hold: (on) => {
      if (on) {
        p.ref();
        p.channel?.ref();
      } else {
        p.unref();
        p.channel?.unref();
      }
    },
    send: (m) => {
      if (p.connected) p.send(m);
    },
    onMessage: (fn) => void p.on("message", fn as (m: unknown) => void),
    onGone: (fn) => {
      const once = firstOnly(fn);
      p.once("error", (err) => once(`error: ${err.message}`));
      p.once("exit", (code, signal) => once(signal ? `signal ${signal}` : `exit code ${code}`));
    },
    kill: () => void p.kill("SIGKILL"),
  };
}
