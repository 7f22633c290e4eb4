/**
 * What a node implementation sees. The engine owns scheduling, edges, events and cancellation; a node only
 * turns inputs into outputs (or a stream of outputs) and may report progress, tokens and logs.
 */
import type { AssetRef, NodeMetadata, PropertyMetadata } from "../../protocol/index.js";

/**
 * The job's asset store as nodes see it (NodeTool's `create_asset` / asset download): `put` stores bytes as an asset
 * of the running job and returns its reference; `get` reads an asset's bytes by `asset://<id>` or bare id.
 */
export interface NodeAssets {
  put(bytes: Uint8Array, opts: { name?: string; contentType?: string }): Promise<AssetRef>;
  get(ref: string): Promise<Uint8Array>;
}

export interface NodeContext {
  /** Aborted when the job is cancelled, times out, loses its lease, or another node fails. */
  readonly signal: AbortSignal;
  readonly nodeId: string;
  readonly nodeType: string;
  /** The graph node's `data` as saved (before edge values are merged in). */
  readonly data: Readonly<Record<string, unknown>>;
  /** The graph node's `dynamic_outputs` (NodeTool: output handle → its TypeMetadata), `{}` when none. */
  readonly dynamicOutputs: Readonly<Record<string, unknown>>;
  /** The run's `params` (input nodes read theirs by `name`). */
  readonly params: Readonly<Record<string, unknown>>;
  /** Emit one `chunk` event (a token, by default text). */
  chunk(
    content: string,
    opts?: {
      done?: boolean;
      contentType?: "text" | "audio" | "image" | "video" | "document";
      metadata?: Record<string, unknown>;
    },
  ): void;
  /** Emit a `node_progress` event. */
  progress(progress: number, total: number): void;
  /** Emit a `log_update` event. */
  log(content: string, severity?: "info" | "warning" | "error"): void;
  /** Emit a `preview_update` event. */
  preview(value: unknown): void;
  /** Resolves after `ms`, rejects with the abort reason as soon as `signal` aborts. */
  sleep(ms: number): Promise<void>;
  /** Caps on what the node may build (the agent's settings); nodes check them before building. */
  readonly limits: NodeLimits;
  /** The job's asset store; absent where the run has none (a node that needs it fails naming it). */
  readonly assets?: NodeAssets;
  /**
   * Tells clients a node saved a file (NodeTool's `save_update`): `name` as saved, `value` its asset reference,
   * `outputType` NodeTool's kind ("text", "json", "dataframe"…). The engine always gives it and `workspace`; only a
   * context built by hand (a unit test's) leaves them out.
   */
  saved?(name: string, value: AssetRef, outputType: string): void;
  /**
   * State the nodes of one run share, by key (NodeTool's per-job workspace: the sqlite nodes' databases). Lives as
   * long as the run: when it ends, each value with a `close()` is closed. A host call sees a fresh one.
   */
  readonly workspace?: Map<string, unknown>;
  /**
   * The nodes wired to this one by NodeTool's control edges (an agent's node tools): they do not run by themselves,
   * the node runs them when it chooses. Empty for a node that controls none.
   */
  readonly controlledNodes?: readonly ControlledNode[];
}

/** A node another node controls (a control edge): its metadata, and a way to run it once. */
export interface ControlledNode {
  nodeId: string;
  nodeType: string;
  title: string;
  description: string;
  properties: readonly PropertyMetadata[];
  /** Runs the node once on its saved inputs with `args` over them; resolves to its outputs (a stream's last values). */
  run(args: Record<string, unknown>): Promise<Record<string, unknown>>;
}

/**
 * Caps on the values one node builds, from the agent's settings of the same names (agent/config.ts). A node that
 * would exceed one fails with a `NodeError` naming the setting; none is a quota on the job as a whole.
 */
export interface NodeLimits {
  /** `nodeListMaxItems`: items in a list a node builds, and values one execution of a generator emits. */
  listMaxItems: number;
  /** `nodeStringMaxBytes`: UTF-8 bytes of a string a node builds. */
  stringMaxBytes: number;
  /** `nodeDictMaxKeys`: keys of a dictionary a node builds. */
  dictMaxKeys: number;
}

/** Defaults no ordinary workflow meets: 1,000,000 items, 64 MiB, 100,000 keys. */
export const DEFAULT_NODE_LIMITS: Readonly<NodeLimits> = Object.freeze({
  listMaxItems: 1_000_000,
  stringMaxBytes: 64 * 1024 * 1024,
  dictMaxKeys: 100_000,
});

/** Input values by handle name: declared properties (defaults ⊕ `data` ⊕ edge values) plus dynamic handles. */
export type NodeInputs = Record<string, unknown>;
/** Output values by output handle name. Handles absent from the object send nothing. */
export type NodeOutputs = Record<string, unknown>;

/** One value on one output handle, from a generator node. */
export interface Emission {
  handle: string;
  value: unknown;
}

/** An item taken from a streaming-input node's inbox. */
export interface InboxItem {
  handle: string;
  value: unknown;
}

/** Base of every node definition: its metadata plus how the engine drives it. */
interface NodeDefBase {
  /** NodeTool type name, e.g. `nodetool.text.Concat`. */
  type: string;
  /** Other names accepted for the same node (old `nodetool.math.*`, legacy typed outputs). */
  aliases?: string[];
  title: string;
  description: string;
  /** Declared input properties with defaults. */
  properties: PropertyMetadata[];
  /** Output handles; most nodes have one named `output`. */
  outputs: { name: string; type: string }[];
  /** Accepts edges into undeclared handles; their values appear in `inputs` under the handle name. */
  isDynamic?: boolean;
  /** Pool the node needs (`gpu`, `docker`, `comfyui`); absent = runs anywhere. */
  pool?: string;
  /** The property holding the language model it calls, whose provider names its pool (`provider_property`). */
  providerProperty?: string;
  /**
   * The node uses a service the agent holds (its ComfyUI connection): it always runs in the agent, while the rest
   * of its graph runs where the job's strategy says; a runner calls it there (agent/strategies.ts, host calls).
   * Only `process` nodes may be `inAgent`, and they must wait on I/O, never compute: they share the agent's loop.
   */
  inAgent?: boolean;
}

/**
 * `process`: called once per input set (combine-latest under `on_any`, aligned tuples under `zip_all`);
 * nodes without incoming edges run exactly once.
 */
export interface ProcessNodeDef extends NodeDefBase {
  kind: "process";
  process(ctx: NodeContext, inputs: NodeInputs): Promise<NodeOutputs> | NodeOutputs;
}

/** `generator`: like process, but yields many values over time (each is sent along edges as it comes). */
export interface GeneratorNodeDef extends NodeDefBase {
  kind: "generator";
  generate(ctx: NodeContext, inputs: NodeInputs): AsyncIterable<Emission>;
}

/**
 * `streaming-input`: runs once and drains its own inbox until every upstream has ended (Collect, Output).
 * `inputs` holds the non-edge properties; `inbox` yields edge values in arrival order.
 */
export interface StreamingInputNodeDef extends NodeDefBase {
  kind: "streaming-input";
  consume(
    ctx: NodeContext,
    inputs: NodeInputs,
    inbox: AsyncIterable<InboxItem>,
  ): AsyncIterable<Emission> | Promise<NodeOutputs>;
}

/** `output`: the engine records every value reaching `value` under the node's `name` (NodeTool Output). */
export interface OutputNodeDef extends NodeDefBase {
  kind: "output";
}

/** `ignored`: editor-only (Comment, Group): removed from the graph before it runs. */
export interface IgnoredNodeDef extends NodeDefBase {
  kind: "ignored";
}

export type NodeDef = ProcessNodeDef | GeneratorNodeDef | StreamingInputNodeDef | OutputNodeDef | IgnoredNodeDef;

/** Metadata of a definition as listed by `GET /api/nodes/metadata`. */
export function metadataOf(def: NodeDef): NodeMetadata {
  const dot = def.type.lastIndexOf(".");
  return {
    node_type: def.type,
    title: def.title,
    description: def.description,
    namespace: dot > 0 ? def.type.slice(0, dot) : "",
    properties: def.properties,
    outputs: def.outputs,
    is_dynamic: def.isDynamic ?? false,
    is_streaming: def.kind === "generator" || def.kind === "streaming-input",
    ...(def.pool ? { pool: def.pool } : {}),
    ...(def.providerProperty ? { provider_property: def.providerProperty } : {}),
  };
}

/** Thrown by a node for a failure the user caused (bad value, missing input): reported as the node's error. */
export class NodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NodeError";
  }
}
