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
 * Cancel: the run is told to stop (its nodes see their signal abort) and given `STOP_GRACE_MS` to end; then the
 * thread is terminated or the process (or container) killed (SIGKILL), and the run ends `cancelled` all the same.
 */
import { fork, type ChildProcess } from "node:child_process";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { ExecutionStrategy, type Graph } from "../protocol/index.js";
import { ENGINE_EVENT_TYPES, runGraph, UnknownNodeTypeError, type EngineEvent, type RunGraphOptions, type RunGraphResult } from "./engine/engine.js";
import type { DockerRunner } from "./docker.js";

/** How long a stopped run may take to end by itself before its thread or process is killed. */
export const STOP_GRACE_MS = 2_000;

/** The run crashed outside the graph (its thread or process died): the job fails with this message. */
export class RunnerCrashedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunnerCrashedError";
  }
}

/** What a run needs is what `runGraph` takes; a thread or process uses its own copy of the built-in library. */
export type StrategyRun = RunGraphOptions;

/** What the parent sends to a thread or process running a graph. */
export type ToRunner = { type: "run"; graph: Graph; params: Record<string, unknown> } | { type: "stop"; reason: string };
/** What it sends back. `result.reason` of a cancelled run is the parent's own (its signal's reason). */
export type FromRunner =
  /** Sent on taking the run, before any of the graph runs: past it, the runner's death is the run's. */
  | { type: "started" }
  | { type: "event"; event: EngineEvent }
  | { type: "done"; result: RunGraphResult }
  | { type: "thrown"; unknownNode: { nodeId: string; nodeType: string } | null; message: string };

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
      return runRemote(run, spare ?? fresh(), limits.memoryMb, spare ? fresh : null);
    }
    case "docker":
      // The config refuses to offer docker unless the agent prepared it; this is for a caller that did not.
      if (!limits.docker) return Promise.reject(new RunnerCrashedError('the "docker" strategy was not prepared on this agent'));
      return runRemote(run, limits.docker.channel(limits.label, limits.gpus), limits.docker.memoryMb);
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
}

/** A new thread or process for one run, with the run's limits. */
function freshChannel(strategy: "threaded" | "subprocess", limits: Pick<RunLimits, "memoryMb" | "gpus">): Channel {
  return strategy === "threaded" ? threadChannel(limits) : processChannel(limits);
}

/**
 * Runners started ahead of their runs, `count` per strategy. A thread or process spends ~75–85 ms loading the
 * runner's modules before a graph can start (bench/strategies.ts), and its start as much again: a spare has done
 * both when its job arrives. Each is still used once — a run takes a spare, and the next spare is started
 * behind it — so nothing of one job's run is left for the next, which is the isolation these strategies promise.
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
    setImmediate(() => this.refill(strategy));
    spare?.hold(true);
    return spare ?? null;
  }

  /** The agent is stopping: spares are killed (a process's watchdog would also end it once the agent is gone). */
  close(): void {
    this.closed = true;
    for (const list of this.ready.values()) for (const c of list.splice(0)) c.kill();
  }

  private refill(strategy: "threaded" | "subprocess"): void {
    const list = this.ready.get(strategy)!;
    if (this.closed || list.length >= this.count) return;
    const spare = freshChannel(strategy, { memoryMb: this.memoryMb, gpus: [] });
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
  return {
    what: "worker thread",
    alive: () => !gone,
    hold: (on) => void (on ? w.ref() : w.unref()),
    send: (m) => w.postMessage(m),
    onMessage: (fn) => void w.on("message", fn),
    onGone: (fn) => {
      const once = firstOnly(fn);
      w.once("error", (err) => once(`error: ${err.message}`));
      w.once("exit", (code) => once(`exit code ${code}`));
    },
    kill: () => void w.terminate(),
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
    default:
      return "a message that is none of started, event, done, thrown";
  }
}

/**
 * `memoryMb` is the run's memory limit, for the message when it dies (0: none set). `retry` gives a fresh runner
 * for a spare that dies before it has said anything (before `started`: it never began the graph).
 */
function runRemote(run: StrategyRun, ch: Channel, memoryMb: number, retry: (() => Channel) | null = null): Promise<RunGraphResult> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let heard = false;
    let killTimer: NodeJS.Timeout | null = null;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (killTimer) clearTimeout(killTimer);
      run.signal.removeEventListener("abort", onAbort);
      fn();
      ch.kill(); // a finished run's thread or process has nothing left to do
    };
    const cancelled = (): RunGraphResult => ({ status: "cancelled", outputs: {}, reason: run.signal.reason });
    const onAbort = () => {
      ch.send({ type: "stop", reason: String((run.signal.reason as { message?: string })?.message ?? run.signal.reason) });
      killTimer = setTimeout(() => settle(() => resolve(cancelled())), STOP_GRACE_MS);
    };
    ch.onMessage((m) => {
      heard = true;
      const problem = runnerMessageProblem(m);
      if (problem !== null) {
        // Stopped at once: nothing more it sends is published, and its job fails saying what it sent.
        return settle(() => reject(new RunnerCrashedError(`the ${ch.what} running the graph sent ${problem}; it was stopped`)));
      }
      switch (m.type) {
        case "started":
          return;
        case "event":
          if (!settled) run.emit(m.event);
          return;
        case "done":
          settle(() => resolve(m.result.status === "cancelled" ? { ...m.result, reason: run.signal.reason } : m.result));
          return;
        case "thrown":
          settle(() => reject(m.unknownNode ? new UnknownNodeTypeError(m.unknownNode.nodeId, m.unknownNode.nodeType) : new Error(m.message)));
          return;
      }
    });
    ch.onGone((how) => {
      if (run.signal.aborted) return settle(() => resolve(cancelled()));
      if (!heard && retry !== null) return settle(() => resolve(runRemote(run, retry(), memoryMb)));
      // A process at its heap limit aborts (SIGABRT); a worker says so in its error.
      const limit = memoryMb > 0 ? `; its memory limit is ${memoryMb} MiB (jobMemoryMb)` : "";
      settle(() => reject(new RunnerCrashedError(`the ${ch.what} running the graph ended before it finished (${how})${limit}`)));
    });
    if (run.signal.aborted) onAbort();
    else run.signal.addEventListener("abort", onAbort, { once: true });
    ch.send({ type: "run", graph: run.graph, params: run.params });
  });
}
