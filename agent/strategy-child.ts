/**
 * The far side of the `threaded` and `subprocess` strategies (agent/strategies.ts): runs one graph with the
 * agent's built-in node library and streams its events back, then exits. The same file serves a worker thread
 * (`parentPort`) and a child process (`process.send`).
 */
import { parentPort, Worker } from "node:worker_threads";
import { runGraph, UnknownNodeTypeError } from "./engine/engine.js";
import { nodeCatalog } from "./nodes/index.js";
import type { FromRunner, ToRunner } from "./strategies.js";

const send: (m: FromRunner) => void = parentPort ? (m) => parentPort!.postMessage(m) : (m) => void process.send?.(m);
const controller = new AbortController();
let started = false;

async function run(m: Extract<ToRunner, { type: "run" }>): Promise<void> {
  try {
    const result = await runGraph({ graph: m.graph, params: m.params, library: nodeCatalog(), signal: controller.signal, emit: (event) => send({ type: "event", event }) });
    // The reason is the parent's to give; a class instance would not cross anyway.
    send({ type: "done", result: result.status === "cancelled" ? { ...result, reason: null } : result });
  } catch (err) {
    const unknownNode = err instanceof UnknownNodeTypeError ? { nodeId: err.nodeId, nodeType: err.nodeType } : null;
    send({ type: "thrown", unknownNode, message: (err as Error)?.message ?? String(err) });
  }
}

function onMessage(m: ToRunner): void {
  switch (m.type) {
    case "run":
      if (started) return;
      started = true;
      void run(m);
      return;
    case "stop":
      controller.abort(new Error(m.reason));
      return;
  }
}

/**
 * A child process must not outlive its agent: killed (SIGKILL, the OOM killer), the agent runs no clean-up, and a
 * node that holds this process's loop (a long computation) would never see the IPC channel close. A watchdog
 * thread, whose loop no node can hold, kills this process once it has been reparented.
 */
const WATCHDOG = `
const { workerData } = require("node:worker_threads");
// Reparented (to init or a subreaper) once the agent is gone; a pid alone could be reused.
setInterval(() => { if (process.ppid !== workerData.agentPid) process.kill(process.pid, "SIGKILL"); }, 250);
`;

if (parentPort) parentPort.on("message", onMessage);
else {
  process.on("message", (m) => onMessage(m as ToRunner));
  // The agent went away: nothing can receive our events, so stop.
  process.on("disconnect", () => process.exit(0));
  new Worker(WATCHDOG, { eval: true, workerData: { agentPid: process.ppid } }).unref();
}
