/**
 * The far side of the `threaded`, `subprocess` and `docker` strategies (agent/strategies.ts): runs one graph with
 * the agent's built-in node library and streams its events back, then exits. The same file serves a worker
 * thread (`parentPort`), a child process (`process.send`) and a container (frames on the unix socket named by
 * `NODEWAY_RUNNER_SOCKET`, agent/runner-frames.ts).
 */
import { connect, type Socket } from "node:net";
import { parentPort, Worker } from "node:worker_threads";
import { runGraph, UnknownNodeTypeError } from "./engine/engine.js";
import { nodeCatalog } from "./nodes/index.js";
import { FrameReader, ROLE_CHANNEL, ROLE_LIFELINE, frame } from "./runner-frames.js";
import type { FromRunner, ToRunner } from "./strategies.js";

const SOCKET = parentPort ? undefined : process.env.NODEWAY_RUNNER_SOCKET;
const sock: Socket | null = SOCKET ? connect(SOCKET) : null;
const send: (m: FromRunner) => void = parentPort
  ? (m) => parentPort!.postMessage(m)
  : sock
    ? (m) => void sock.write(frame(m))
    : (m) => void process.send?.(m);
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
  // A container ends by itself once its last frame is out (the agent need not ask the engine to kill it).
  sock?.end(() => process.exit(0));
}

function onMessage(m: ToRunner): void {
  switch (m.type) {
    case "run":
      if (started) return;
      started = true;
      // Before any of the graph: a runner that dies after this is not given the run again elsewhere.
      send({ type: "started" });
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

/**
 * In a container the watchdog cannot watch a parent (there is none to see): it holds a connection of its own to
 * the agent's socket, which closes when the agent dies, and then kills this process (not pid 1: the container
 * has an init, so the signal is not ignored).
 */
const LIFELINE = `
const { workerData } = require("node:worker_threads");
const s = require("node:net").connect(workerData.socket, () => s.write(Buffer.from([workerData.role])));
const die = () => process.kill(process.pid, "SIGKILL");
s.on("close", die);
s.on("error", die);
`;

if (parentPort) parentPort.on("message", onMessage);
else if (sock) {
  sock.write(Buffer.from([ROLE_CHANNEL]));
  const reader = new FrameReader();
  sock.on("data", (chunk: Buffer) => {
    try {
      for (const m of reader.push(chunk)) onMessage(m as ToRunner);
    } catch (err) {
      process.stderr.write(`runner: bad frame from the agent: ${(err as Error).message}\n`);
      process.exit(1);
    }
  });
  // The agent went away (or is done with us): nothing can receive our events, so stop.
  sock.on("close", () => process.exit(0));
  sock.on("error", () => process.exit(1));
  new Worker(LIFELINE, { eval: true, workerData: { socket: SOCKET, role: ROLE_LIFELINE } }).unref();
} else {
  process.on("message", (m) => onMessage(m as ToRunner));
  // The agent went away: nothing can receive our events, so stop.
  process.on("disconnect", () => process.exit(0));
  new Worker(WATCHDOG, { eval: true, workerData: { agentPid: process.ppid } }).unref();
}
