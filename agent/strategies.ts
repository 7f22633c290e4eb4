/**
 * Execution strategies (design §7): where a job's graph runs. `inline` in the agent's own event loop; `threaded`
 * in a worker thread (a node that blocks its loop or exhausts its heap takes the thread, not the agent);
 * `subprocess` in a child process (its own memory and file descriptors; killed on cancel); `docker` in a container
 * with real limits (agent/docker.ts). The agent streams,
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
import { fork, type ChildProcess } from "node:child_process";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { ExecutionStrategy, type Graph } from "../protocol/index.js";
import { displayName, ENGINE_EVENT_TYPES, nodeContext, runGraph, UnknownNodeTypeError, type EngineEvent, type RunGraphOptions, type RunGraphResult } from "./engine/engine.js";
import { DEFAULT_NODE_LIMITS, type NodeDef, type NodeLimits, type NodeOutputs } from "./engine/types.js";
import type { DockerRunner } from "./docker.js";

/**
 * How long a stopped run may take to end by itself before its thread or process is killed: with the kill and the
 * terminal update, a stop ends any job within 2 s.
 */
export const STOP_GRACE_MS = 1_000;

/** At most this much of a message a runner sends is kept (in the job's error, the log). */
const RUNNER_TEXT_MAX = 4_096;

/** The run crashed outside the graph (its thread or process died): the job fails with this message. */
export class RunnerCrashedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunnerCrashedError";
  }
}

/** What a run needs is what `runGraph` takes; a thread or process uses its own copy of the built-in library. */
export type StrategyRun = RunGraphOptions;

/** A node the agent runs for a runner (`inAgent`), as the runner's engine needs to see it. */
export type HostNodeSpec = Pick<NodeDef, "type" | "aliases" | "title" | "description" | "properties" | "outputs" | "isDynamic">;

/** The node library a run has: the agent's own (names), the agent's host nodes, and the caps on what nodes build. */
export interface RunnerNodes {
  /** Every node type (and alias) the agent offers: a runner runs no other, whatever its own copy of the library has. */
  offered: string[];
  host: HostNodeSpec[];
  limits: NodeLimits;
}

/** What the parent sends to a thread or process running a graph. */
export type ToRunner =
  | { type: "run"; graph: Graph; params: Record<string, unknown>; nodes: RunnerNodes }
  | { type: "stop"; reason: string }
  /** The answer to a host call: the node's outputs, or its error's message. */
  | { type: "call_result"; call: number; ok: true; outputs: NodeOutputs }
  | { type: "call_result"; call: number; ok: false; message: string };
/** What it sends back. `result.reason` of a cancelled run is the parent's own (its signal's reason). */
export type FromRunner =
  /** Sent on taking the run, before any of the graph runs: past it, the runner's death is the run's. */
  | { type: "started" }
  | { type: "event"; event: EngineEvent }
  | { type: "done"; result: RunGraphResult }
  | { type: "thrown"; unknownNode: { nodeId: string; nodeType: string } | null; message: string }
  /** Run graph node `node_id` (an `inAgent` node) in the agent with `inputs`; `call` numbers it for its answer. */
  | { type: "call"; call: number; node_id: string; inputs: Record<string, unknown> }
  /** The runner's node stopped waiting (its graph failed elsewhere): the call's signal aborts. */
  | { type: "call_cancel"; call: number };

/** What a runner's library is, from the agent's (computed once per library). */
const runnerNodesOf = new WeakMap<ReadonlyMap<string, NodeDef>, Omit<RunnerNodes, "limits">>();
function runnerNodes(library: ReadonlyMap<string, NodeDef>, limits: NodeLimits): RunnerNodes {
  let known = runnerNodesOf.get(library);
  if (!known) {
    const host = new Set<NodeDef>();
    for (const d of library.values()) if (d.inAgent === true && d.kind === "process") host.add(d);
    known = {
      offered: [...library.keys()],
      host: [...host].map((d) => ({ type: d.type, aliases: d.aliases, title: d.title, description: d.description, properties: d.properties, outputs: d.outputs, isDynamic: d.isDynamic })),
    };
    runnerNodesOf.set(library, known);
  }
  return { ...known, limits };
}

/** Limits of a run in a thread, process or container, and the agent's containers and spare runners. */
export interface RunLimits {
  /** Heap limit in MiB of a thread or process; 0 = V8's default. (A container's memory is the docker runner's.) */
  memoryMb: number;
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
export function runWithStrategy(strategy: ExecutionStrategy, run: StrategyRun, limits: RunLimits): Promise<RunGraphResult> {
  switch (strategy) {
    case "inline":
      return runGraph(run);
    case "threaded":
    case "subprocess": {
      const spare = limits.spares?.take(strategy, limits) ?? null;
      const fresh = () => freshChannel(strategy, limits);
      // A spare can die in the instant before it is taken (its exit not yet seen): its run then starts again on a
      // fresh runner, once. A runner that has said anything (it says `started` before the graph's first step) is
      // the run's own, and its death is the run's: no graph runs twice.
      const recycle = strategy === "threaded" && limits.spares ? (ch: Channel) => limits.spares!.offer(strategy, ch) : null;
      return runOnChannel(run, spare ?? fresh(), limits.memoryMb, spare ? fresh : null, recycle);
    }
    case "docker":
      // The config refuses to offer docker unless the agent prepared it; this is for a caller that did not.
      if (!limits.docker) return Promise.reject(new RunnerCrashedError('the "docker" strategy was not prepared on this agent'));
      return runOnChannel(run, limits.docker.channel(limits.label, limits.gpus), limits.docker.memoryMb);
  }
}

/**
 * The runner script beside this file. Run from the TypeScript sources (an agent started in-process by a test),
 * it is the `.ts` file, and the thread or process needs this process's flags (the loader) to read it; compiled,
 * it starts with plain node: the agent's own flags (an inspector, say) are not the run's business.
 */
const FROM_SOURCE = import.meta.url.endsWith(".ts");
const CHILD = fileURLToPath(new URL(FROM_SOURCE ? "./strategy-child.ts" : "./strategy-child.js", import.meta.url));
const CHILD_EXEC_ARGV = FROM_SOURCE ? process.execArgv : [];

/** One running thread, process or container, seen the same way. */
export interface Channel {
  what: string;
  send(m: ToRunner): void;
  onMessage(fn: (m: FromRunner) => void): void;
  /** Called once when it is gone, with how it went ("exit code 1", "SIGKILL"…). */
  onGone(fn: (how: string) => void): void;
  kill(): void;
  /** Not yet gone: a spare that died while it waited must not be given a run (its exit was before `onGone`). */
  alive(): boolean;
  /** Whether it keeps the agent's event loop alive: a spare waiting for a run does not. */
  hold(on: boolean): void;
  /** Forgets the listeners of its last run (a thread kept for the next run); absent where runners are single-use. */
  reset?(): void;
}

/**
 * Whether a runner may take another run after this one: only a thread whose run ended by itself (never stopped,
 * no host call left open). Processes and containers are single-use: they are the strategies that separate jobs.
 */
const REUSABLE = new WeakSet<Channel>();

/** A new thread or process for one run, with the run's limits. */
function freshChannel(strategy: "threaded" | "subprocess", limits: Pick<RunLimits, "memoryMb" | "gpus">): Channel {
  return strategy === "threaded" ? threadChannel(limits) : processChannel(limits);
}

/**
 * Runners started ahead of their runs, `count` per strategy. A thread or process spends ~75–85 ms loading the
 * runner's modules before a graph can start (bench/strategies.ts), and its start as much again: a spare has done
 * both when its job arrives. A process is used once (nothing of one job's run is left for the next: the isolation
 * `subprocess` promises); a thread whose run ended by itself takes the next run (`offer`), so the default strategy
 * costs no thread start per job, and a thread that was stopped is terminated.
 * A run with GPUs of its own gets a fresh process (its CUDA_VISIBLE_DEVICES is set at start). Spares have the
 * agent's memory limit, as every run does.
 */
export class RunnerSpares {
  private readonly ready = new Map<"threaded" | "subprocess", Channel[]>();
  private closed = false;

  constructor(
    kinds: readonly ("threaded" | "subprocess")[],
    private readonly count: number,
    private readonly memoryMb: number,
    /** Threads back from runs kept idle at most (the agent's `warmRunners + maxJobs`): a burst reuses them all. */
    private readonly keepMax: number = count + 1,
  ) {
    for (const k of kinds) {
      this.ready.set(k, []);
      for (let i = 0; i < count; i++) this.refill(k);
    }
  }

  /** A live spare for a run (its place taken by a new one), or null: the run starts a fresh runner. */
  take(strategy: "threaded" | "subprocess", limits: Pick<RunLimits, "memoryMb" | "gpus">): Channel | null {
    const list = this.ready.get(strategy);
    if (!list || limits.gpus.length > 0 || limits.memoryMb !== this.memoryMb) return null;
    let spare: Channel | undefined;
    while ((spare = list.shift()) !== undefined && !spare.alive());
    // Started after this run's own turn: its module load then competes with the run's start as little as can be.
    // While others wait (threads back from runs), none is started.
    if (list.length === 0) setImmediate(() => this.refill(strategy));
    spare?.hold(true);
    return spare ?? null;
  }

  /** A thread back from a clean run waits for the next one, up to `keepMax` idle; true when kept. */
  offer(strategy: "threaded" | "subprocess", ch: Channel): boolean {
    const list = this.ready.get(strategy);
    if (this.closed || !list || list.length >= this.keepMax || !ch.alive() || !ch.reset) return false;
    ch.reset();
    this.wait(strategy, list, ch);
    return true;
  }

  /** The agent is stopping: spares are killed (a process's watchdog would also end it once the agent is gone). */
  close(): void {
    this.closed = true;
    for (const list of this.ready.values()) for (const c of list.splice(0)) c.kill();
  }

  private refill(strategy: "threaded" | "subprocess"): void {
    const list = this.ready.get(strategy)!;
    if (this.closed || list.length >= this.count) return;
    this.wait(strategy, list, freshChannel(strategy, { memoryMb: this.memoryMb, gpus: [] }));
  }

  private wait(strategy: "threaded" | "subprocess", list: Channel[], spare: Channel): void {
    spare.hold(false);
    list.push(spare);
    // One that dies while it waits (killed, out of memory) is replaced, a second later: a runner that cannot start
    // at all must not become a loop of starts.
    spare.onGone(() => {
      const i = list.indexOf(spare);
      if (i < 0) return; // taken: its run sees how it went
      list.splice(i, 1);
      setTimeout(() => this.refill(strategy), 1_000).unref();
    });
  }
}

const noop = (): void => undefined;

/** `fn` for its first call only: an `error` and the `exit` after it are one death. */
function firstOnly(fn: (how: string) => void): (how: string) => void {
  let done = false;
  return (how) => {
    if (!done) (done = true), fn(how);
  };
}

/** When the agent started a runner (epoch ms), in its environment: what a run's `Whereabouts` reports. */
const startedAtEnv = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...env, NODEWAY_RUNNER_STARTED_AT: String(Date.now()) });

function threadChannel(limits: Pick<RunLimits, "memoryMb">): Channel {
  const w = new Worker(CHILD, {
    execArgv: CHILD_EXEC_ARGV,
    env: startedAtEnv(process.env),
    stdout: false,
    stderr: false,
    ...(limits.memoryMb > 0 ? { resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb } } : {}),
  });
  // Until a run listens (a spare waits for one), an error must not be an unhandled 'error' event in the agent.
  let gone = false;
  w.on("error", noop);
  w.once("exit", () => (gone = true));
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

function processChannel(limits: Pick<RunLimits, "memoryMb" | "gpus">): Channel {
  const execArgv = limits.memoryMb > 0 ? [...CHILD_EXEC_ARGV, `--max-old-space-size=${limits.memoryMb}`] : CHILD_EXEC_ARGV;
  // `advanced` serialization carries bytes outputs (Uint8Array) and Maps as they are.
  // A gpu-pool run's GPUs are the only ones CUDA shows it (the others' runs have theirs: agent/gpus.ts).
  const env = startedAtEnv(limits.gpus.length > 0 ? { ...process.env, CUDA_VISIBLE_DEVICES: limits.gpus.join(",") } : process.env);
  const p: ChildProcess = fork(CHILD, [], { serialization: "advanced", execArgv, env, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  p.on("error", noop); // as for a thread: a run's onGone reports it
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

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
const isStr = (x: unknown): x is string => typeof x === "string";

/**
 * What is wrong with a message from a runner, or null. A thread or process runs the agent's own code, but a
 * container may run anything: its events are published as the job's, so it may send only what a graph emits
 * (never a job-level event such as a `job_update` saying the job completed, nor one without the node it is
 * about), and its result only in the shape the agent records.
 */
export function runnerMessageProblem(m: unknown): string | null {
  if (!isObj(m)) return "a message that is not an object";
  switch (m.type) {
    case "event": {
      const e = m.event;
      if (!isObj(e) || !isStr(e.type)) return "an event that is not an object with a type";
      if (!ENGINE_EVENT_TYPES.has(e.type)) return `a "${e.type.slice(0, 40)}" event, which a graph does not emit`;
      if (e.type === "edge_update" ? !isStr(e.edge_id) : !isStr(e.node_id)) return `a "${e.type}" event without the ${e.type === "edge_update" ? "edge" : "node"} it is about`;
      return null;
    }
    case "done": {
      const r = m.result;
      if (!isObj(r) || !isObj(r.outputs) || !Object.values(r.outputs).every(Array.isArray)) return "a result without outputs (name → list of values)";
      if (r.status === "completed" || r.status === "cancelled") return null;
      if (r.status === "failed" && isObj(r.error) && isStr(r.error.node_id) && isStr(r.error.node_type) && isStr(r.error.message)) return null;
      return "a result that is none of completed, cancelled, failed (with the failing node)";
    }
    case "started":
      return null;
    case "thrown": {
      const u = m.unknownNode;
      if (!isStr(m.message) || !(u === null || (isObj(u) && isStr(u.nodeId) && isStr(u.nodeType)))) return "an error without its message";
      return null;
    }
    case "call":
      if (!Number.isSafeInteger(m.call) || !isStr(m.node_id) || !isObj(m.inputs)) return "a call without its number, node and inputs";
      return null;
    case "call_cancel":
      return Number.isSafeInteger(m.call) ? null : "a call_cancel without its number";
    default:
      return "a message that is none of started, event, done, thrown, call, call_cancel";
  }
}

/** At most `RUNNER_TEXT_MAX` characters of what a runner said. */
const clip = (text: string): string => (text.length > RUNNER_TEXT_MAX ? `${text.slice(0, RUNNER_TEXT_MAX)}… (cut)` : text);

/**
 * `memoryMb` is the run's memory limit, for the message when it dies (0: none set). `retry` gives a fresh runner
 * for a spare that dies before it has said anything (before `started`: it never began the graph).
 *
 * Nothing a runner sends can throw into the agent: a message of the wrong shape, or one whose handling throws
 * (an event the agent cannot publish, say), stops the runner and fails the run with `RunnerCrashedError`.
 */
export function runOnChannel(
  run: StrategyRun,
  ch: Channel,
  memoryMb: number,
  retry: (() => Channel) | null = null,
  recycle: ((ch: Channel) => boolean) | null = null,
): Promise<RunGraphResult> {
  REUSABLE.delete(ch); // earned again by this run's own clean end
  return new Promise((resolve, reject) => {
    let settled = false;
    let heard = false;
    let killTimer: NodeJS.Timeout | null = null;
    /** Host calls in progress, by number: their signals. */
    const calls = new Map<number, AbortController>();
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (killTimer) clearTimeout(killTimer);
      run.signal.removeEventListener("abort", onAbort);
      for (const c of calls.values()) c.abort(new Error("the run ended"));
      calls.clear();
      fn();
      // A finished run's thread or process has nothing left to do, unless a clean thread can take the next run.
      if (!(REUSABLE.has(ch) && !run.signal.aborted && recycle?.(ch))) ch.kill();
    };
    const crashed = (what: string) => settle(() => reject(new RunnerCrashedError(`the ${ch.what} running the graph ${what}; it was stopped`)));
    const cancelled = (): RunGraphResult => ({ status: "cancelled", outputs: {}, reason: run.signal.reason });
    const onAbort = () => {
      ch.send({ type: "stop", reason: String((run.signal.reason as { message?: string })?.message ?? run.signal.reason) });
      killTimer = setTimeout(() => settle(() => resolve(cancelled())), STOP_GRACE_MS);
    };
    const emit = (e: EngineEvent) => {
      if (!settled) run.emit(e);
    };
    /** Runs an `inAgent` node of the run's graph for the runner, and answers. */
    const hostCall = async (m: Extract<FromRunner, { type: "call" }>): Promise<void> => {
      const node = run.graph.nodes.find((n) => n.id === m.node_id);
      const def = node ? run.library.get(node.type) : undefined;
      if (!node || !def || def.kind !== "process" || def.inAgent !== true || calls.has(m.call)) {
        return crashed(`asked the agent to run node ${JSON.stringify(m.node_id.slice(0, 80))}, which is not one of its graph's nodes the agent runs`);
      }
      const ac = new AbortController();
      calls.set(m.call, ac);
      const ctx = nodeContext(node, displayName(node, def), run.params, emit, ac.signal, run.limits ?? DEFAULT_NODE_LIMITS);
      let answer: ToRunner;
      try {
        answer = { type: "call_result", call: m.call, ok: true, outputs: (await def.process(ctx, m.inputs)) ?? {} };
      } catch (err) {
        answer = { type: "call_result", call: m.call, ok: false, message: err instanceof Error ? err.message : String(err) };
      }
      if (calls.delete(m.call) && !settled) ch.send(answer);
    };
    const onMessage = (m: FromRunner) => {
      heard = true;
      if (settled) return;
      const problem = runnerMessageProblem(m);
      // Stopped at once: nothing more it sends is published, and its job fails saying what it sent.
      if (problem !== null) return crashed(`sent ${problem}`);
      switch (m.type) {
        case "started":
          return;
        case "event":
          return run.emit(m.event);
        case "done": {
          const r = m.result;
          if (!run.signal.aborted && calls.size === 0) REUSABLE.add(ch);
          if (r.status === "failed") r.error = { ...r.error, message: clip(r.error.message) };
          return settle(() => resolve(r.status === "cancelled" ? { ...r, reason: run.signal.reason } : r));
        }
        case "thrown":
          return settle(() => reject(m.unknownNode ? new UnknownNodeTypeError(m.unknownNode.nodeId.slice(0, 200), m.unknownNode.nodeType.slice(0, 200)) : new Error(clip(m.message))));
        case "call":
          return void hostCall(m).catch((err: unknown) => crashed(`had a host call fail: ${(err as Error)?.message ?? String(err)}`));
        case "call_cancel":
          return void calls.get(m.call)?.abort(new Error("the runner stopped waiting"));
      }
    };
    ch.onMessage((m) => {
      try {
        onMessage(m);
      } catch (err) {
        // A message that passed the checks and still could not be handled: the run's, never the agent's, failure.
        crashed(`sent a message the agent could not handle (${clip(err instanceof Error ? err.message : String(err))})`);
      }
    });
    ch.onGone((how) => {
      if (run.signal.aborted) return settle(() => resolve(cancelled()));
      if (!heard && retry !== null) return settle(() => resolve(runOnChannel(run, retry(), memoryMb)));
      // A process at its heap limit aborts (SIGABRT); a worker says so in its error.
      const limit = memoryMb > 0 ? `; its memory limit is ${memoryMb} MiB (jobMemoryMb)` : "";
      settle(() => reject(new RunnerCrashedError(`the ${ch.what} running the graph ended before it finished (${clip(how)})${limit}`)));
    });
    if (run.signal.aborted) onAbort();
    else run.signal.addEventListener("abort", onAbort, { once: true });
    ch.send({ type: "run", graph: run.graph, params: run.params, nodes: runnerNodes(run.library, run.limits ?? DEFAULT_NODE_LIMITS) });
  });
}
