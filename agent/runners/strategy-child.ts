/**
 * The far side of the `threaded`, `subprocess` and `docker` strategies (strategies.ts): runs one graph with
 * the agent's built-in node library and streams its events back, then exits. The same file serves a worker
 * thread (`parentPort`), a child process (`process.send`) and a container (frames on the unix socket named by
 * `NODEWAY_RUNNER_SOCKET`, frames.ts). It runs only the node types the agent offers, and calls the
 * agent for those the agent must run itself (host calls, run-on-channel.ts).
 */
import { connect, type Socket } from "node:net";
import { parentPort, Worker } from "node:worker_threads";
import { assertNever } from "../../protocol/index.js";
import { runGraph, UnknownNodeTypeError, type RemoteNodes } from "../engine/engine.js";
import {
  NodeError,
  type NodeAssets,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type NodeOutputs,
} from "../engine/types.js";
import { nodeCatalog, nodeLibrary } from "../nodes/index.js";
import {
  ASSET_CALLS_AT_ONCE,
  ASSET_PIECE_BYTES,
  type FromRunner,
  type HostNodeSpec,
  type RunnerNodes,
  type ToRunner,
} from "./channel.js";
import { FrameReader, ROLE_CHANNEL, ROLE_LIFELINE, frame } from "./frames.js";

const SOCKET = parentPort ? undefined : process.env.NODEWAY_RUNNER_SOCKET;
const sock: Socket | null = SOCKET ? connect(SOCKET) : null;
const send: (m: FromRunner) => void = parentPort
  ? (m) => parentPort!.postMessage(m)
  : sock
    ? (m) => void sock.write(frame(m))
    : (m) => void process.send?.(m);
/** The current run's signal; a thread runs its runs one after another, each with a fresh one. */
let controller = new AbortController();
let started = false;

/** Host calls waiting for their answer, by number. */
const pending = new Map<number, { resolve: (o: NodeOutputs) => void; reject: (e: Error) => void }>();
let lastCall = 0;

/** Asset calls waiting for their answer, by number (their numbers are the host calls'). */
const assetCalls = new Map<
  number,
  { resolve: (m: AssetAnswer) => void; reject: (e: Error) => void; pieces: Uint8Array[] }
>();
type AssetAnswer = Extract<ToRunner, { type: "asset_result"; ok: true }>;

/** Nodes' asset calls past `ASSET_CALLS_AT_ONCE`, waiting for one in flight to be answered. */
let assetSlots = ASSET_CALLS_AT_ONCE;
let assetQueue: (() => void)[] = [];

async function assetCall(
  m: DistributiveOmit<Extract<FromRunner, { type: "asset_put" | "asset_get" }>, "call">,
): Promise<AssetAnswer> {
  if (assetSlots > 0) assetSlots--;
  else await new Promise<void>((go) => assetQueue.push(go));
  try {
    return await new Promise((resolve, reject) => {
      const call = ++lastCall;
      assetCalls.set(call, { resolve, reject, pieces: [] });
      if (m.type === "asset_get") return send({ ...m, call });
      // A put's bytes go ahead in pieces; its asset_put carries the last one.
      let at = 0;
      for (; m.bytes.byteLength - at > ASSET_PIECE_BYTES; at += ASSET_PIECE_BYTES)
        send({ type: "asset_piece", call, bytes: m.bytes.slice(at, at + ASSET_PIECE_BYTES) });
      send({ ...m, call, bytes: at === 0 ? m.bytes : m.bytes.slice(at) });
    });
  } finally {
    // The slot passes to the next waiting call, or is free again.
    const next = assetQueue.shift();
    if (next) next();
    else assetSlots++;
  }
}
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** An asset call's answer, or a piece of a get's: pieces are held and the next asked for until the last came. */
function assetAnswered(m: Extract<ToRunner, { type: "asset_result" }>): void {
  const a = assetCalls.get(m.call);
  if (!a) return;
  if (!m.ok) {
    assetCalls.delete(m.call);
    return a.reject(new NodeError(m.message));
  }
  if (m.more) {
    if (m.bytes) a.pieces.push(m.bytes);
    return void send({ type: "asset_more", call: m.call });
  }
  assetCalls.delete(m.call);
  if (a.pieces.length === 0) return a.resolve(m);
  const pieces = m.bytes ? [...a.pieces, m.bytes] : a.pieces;
  a.resolve({ ...m, bytes: Buffer.concat(pieces) });
}

/** The job's asset store, reached through the agent. */
const channelAssets: NodeAssets = {
  put: async (bytes, opts) => {
    const r = await assetCall({ type: "asset_put", bytes, ...opts });
    if (!r.ref) throw new NodeError("the agent stored no asset");
    return r.ref;
  },
  get: async (ref) => {
    const r = await assetCall({ type: "asset_get", ref });
    if (!r.bytes) throw new NodeError(`the agent sent no bytes for ${ref}`);
    return r.bytes;
  },
};

/** Sends a node's inputs to the agent, which runs it, and waits for its outputs (a host call). */
function callAgent(ctx: NodeContext, inputs: NodeInputs): Promise<NodeOutputs> {
  return new Promise<NodeOutputs>((resolve, reject) => {
    if (ctx.signal.aborted) return reject(ctx.signal.reason);
    const call = ++lastCall;
    const onAbort = () => {
      pending.delete(call);
      send({ type: "call_cancel", call });
      reject(ctx.signal.reason);
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    const done = () => ctx.signal.removeEventListener("abort", onAbort);
    pending.set(call, { resolve: (o) => (done(), resolve(o)), reject: (e) => (done(), reject(e)) });
    send({ type: "call", call, node_id: ctx.nodeId, inputs });
  });
}

/** A node the agent runs: calling it is a host call. */
function hostNode(spec: HostNodeSpec): NodeDef {
  return { ...spec, kind: "process", process: callAgent };
}

/** The agent's library as this runner can run it: its own definitions of what the agent offers, host nodes as calls. */
function libraryOf(nodes: RunnerNodes): Map<string, NodeDef> {
  const own = nodeCatalog(nodeLibrary(true));
  const library = new Map<string, NodeDef>();
  for (const name of nodes.offered) {
    const def = own.get(name);
    if (def) library.set(name, def);
  }
  for (const spec of nodes.host) {
    const def = hostNode(spec);
    for (const name of [spec.type, ...(spec.aliases ?? [])]) library.set(name, def);
  }
  return library;
}

async function run(m: Extract<ToRunner, { type: "run" }>): Promise<void> {
  try {
    const library = libraryOf(m.nodes);
    const result = await runGraph({
      graph: m.graph,
      params: m.params,
      library,
      limits: m.nodes.limits,
      ...(m.assets ? { assets: channelAssets } : {}),
      ...(m.remote?.length ? { remote: { nodeIds: new Set(m.remote), run: callAgent as RemoteNodes["run"] } } : {}),
      signal: controller.signal,
      emit: (event) => send({ type: "event", event }),
    });
    // The reason is the parent's to give; a class instance would not cross anyway.
    send({ type: "done", result: result.status === "cancelled" ? { ...result, reason: null } : result });
  } catch (err) {
    const unknownNode = err instanceof UnknownNodeTypeError ? { nodeId: err.nodeId, nodeType: err.nodeType } : null;
    send({ type: "thrown", unknownNode, message: (err as Error)?.message ?? String(err) });
  }
  // A container ends by itself once its last frame is out (the agent need not ask the engine to kill it).
  sock?.end(() => process.exit(0));
  // A thread may be given the next run (spares.ts `offer`); a process is killed by its agent.
  if (parentPort) {
    controller = new AbortController();
    pending.clear();
    assetCalls.clear();
    assetSlots = ASSET_CALLS_AT_ONCE;
    assetQueue = [];
    started = false;
  }
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
    case "call_result": {
      const p = pending.get(m.call);
      pending.delete(m.call);
      if (m.ok) p?.resolve(m.outputs);
      else p?.reject(new NodeError(m.message));
      return;
    }
    case "asset_result":
      return assetAnswered(m);
    default:
      assertNever(m, "agent message");
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
