/**
 * The channel between the agent and a runner (a thread, a process or a container): the messages both ways and the
 * runner handle every strategy gives. Its own module so that the strategies and the docker runner share it.
 */
import type { AssetRef, Graph } from "../../protocol/index.js";
import type { EngineEvent, RunGraphOptions, RunGraphResult } from "../engine/engine.js";
import type { NodeDef, NodeLimits, NodeOutputs } from "../engine/types.js";

/** What a run needs is what `runGraph` takes; a thread or process uses its own copy of the built-in library. */
export type StrategyRun = RunGraphOptions;

/** A node the agent runs for a runner (`inAgent`), as the runner's engine needs to see it. */
export type HostNodeSpec = Pick<
  NodeDef,
  "type" | "aliases" | "title" | "description" | "properties" | "outputs" | "isDynamic"
>;

/** The node library a run has: the agent's own (names), the agent's host nodes, and the caps on what nodes build. */
export interface RunnerNodes {
  /** Every node type (and alias) the agent offers: a runner runs no other, whatever its own copy of the library has. */
  offered: string[];
  host: HostNodeSpec[];
  limits: NodeLimits;
}

/**
 * Asset calls (`asset_put`, `asset_get`) a runner may have unanswered at once: each holds an asset's bytes in the
 * agent. The agent's runner queues its nodes' further calls; a runner that sends more is stopped.
 */
export const ASSET_CALLS_AT_ONCE = 8;

/**
 * Asset bytes travel in pieces of at most this many (a container's frames hold 16 MiB): a put as `asset_piece`s
 * before its `asset_put`, a get's answer one piece per `asset_more` the runner sends, so the agent never has more
 * than a piece per call unread by a run.
 */
export const ASSET_PIECE_BYTES = 8 * 1024 * 1024;

/** What the parent sends to a thread or process running a graph. */
export type ToRunner =
  /** `assets`: the run has the job's asset store, which the runner reaches by `asset_put` / `asset_get`. */
  /** `remote`: ids of the graph's nodes that run elsewhere; the runner calls the agent for each (`call`). */
  | {
      type: "run";
      graph: Graph;
      params: Record<string, unknown>;
      nodes: RunnerNodes;
      assets?: boolean;
      remote?: string[];
    }
  | { type: "stop"; reason: string }
  /** The answer to a host call: the node's outputs, or its error's message. */
  | { type: "call_result"; call: number; ok: true; outputs: NodeOutputs }
  | { type: "call_result"; call: number; ok: false; message: string }
  /**
   * The answer to an asset call: the stored asset's reference (put) or its bytes (get), or the error's message.
   * `more`: a get's bytes go on; the runner asks for the next piece with `asset_more`.
   */
  | { type: "asset_result"; call: number; ok: true; ref?: AssetRef; bytes?: Uint8Array; more?: boolean }
  | { type: "asset_result"; call: number; ok: false; message: string };
/** What it sends back. `result.reason` of a cancelled run is the parent's own (its signal's reason). */
export type FromRunner =
  /** Sent on taking the run, before any of the graph runs: past it, the runner's death is the run's. */
  | { type: "started" }
  | { type: "event"; event: EngineEvent }
  | { type: "done"; result: RunGraphResult }
  | { type: "thrown"; unknownNode: { nodeId: string; nodeType: string } | null; message: string }
  /**
   * Run graph node `node_id` (an `inAgent` or remote node) in the agent with `inputs`; `call` numbers it for its
   * answer. A remote node's answer holds every value of each output handle (a list per handle).
   */
  | { type: "call"; call: number; node_id: string; inputs: Record<string, unknown> }
  /** The runner's node stopped waiting (its graph failed elsewhere): the call's signal aborts. */
  | { type: "call_cancel"; call: number }
  /** Store `bytes` as the job's asset (`NodeContext.assets.put`); answered by `asset_result`. */
  | { type: "asset_put"; call: number; bytes: Uint8Array; name?: string; contentType?: string }
  /** The bytes of asset_put `call` so far (it ends with its `asset_put`, whose bytes are the last piece). */
  | { type: "asset_piece"; call: number; bytes: Uint8Array }
  /** The next piece of asset_get `call`'s answer (its last `asset_result` said `more`). */
  | { type: "asset_more"; call: number }
  /** Read an asset's bytes (`NodeContext.assets.get`); answered by `asset_result`. */
  | { type: "asset_get"; call: number; ref: string };

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
