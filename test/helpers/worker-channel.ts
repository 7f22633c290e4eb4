/**
 * A runner channel to a real worker thread that plays a broken or hostile runner: when the agent sends the run
 * message, the thread evaluates `onRun` (a statement of plain JavaScript with `parentPort` in scope), then idles.
 * The channel has the shape `runOnChannel` reads, so the agent handles the thread's messages as it would a runner's.
 */
import { Worker } from "node:worker_threads";
import { check } from "./check.js";

export function workerChannel(onRun: string) {
  const w = new Worker(
    `const { parentPort } = require("node:worker_threads");
     parentPort.once("message", (run) => { ${onRun}; setInterval(() => {}, 1000); });`,
    { eval: true },
  );
  let exited = false;
  w.once("exit", () => (exited = true));
  return {
    ch: {
      what: "worker thread",
      alive: () => !exited,
      hold: () => undefined,
      send: (m: unknown) => w.postMessage(m),
      onMessage: (fn: (m: never) => void) => void w.on("message", (m) => fn(m as never)),
      onGone: (fn: (how: string) => void) => void w.once("exit", (code) => fn(`exit code ${code}`)),
      kill: () => void w.terminate(),
    },
    /** Resolves once the thread has stopped (the agent stops a runner it refuses); fails past 5 s. */
    exitedSoon: () => check(() => (exited ? true : null), 5_000, { name: "runner thread stopped" }),
  };
}
