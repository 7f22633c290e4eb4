/**
 * The graph engine (NodeTool semantics): one actor per node, every ready node runs concurrently,
 * generator nodes stream values along edges as they come, and the run ends when every node is done, one
 * fails, or the signal aborts. Events leave through `emit`; the caller stamps job id, attempt and time.
 */
import {
  GRAPH_EVENT_TYPES,
  prepareGraph,
  isControlEdge,
  type Graph,
  type GraphEdge,
  type GraphEvent,
  type AssetRef,
  type GraphNode,
} from "../../protocol/index.js";
import {
  DEFAULT_NODE_LIMITS,
  type Emission,
  type InboxItem,
  type ControlledNode,
  type NodeContext,
  type NodeDef,
  type NodeInputs,
  type NodeAssets,
  type NodeLimits,
  type NodeOutputs,
} from "./types.js";
import { capList, capValue } from "./limits.js";

/** An event as the engine emits it, before the runner's publisher stamps its envelope (protocol `GraphEvent`). */
export type EngineEvent = GraphEvent;

/** What a graph may emit: a runner that sends any other type is broken or hostile (agent/runners/strategies.ts). */
export const ENGINE_EVENT_TYPES: ReadonlySet<string> = GRAPH_EVENT_TYPES;

export interface RunGraphOptions {
  graph: Graph;
  params: Record<string, unknown>;
  /** Node type (and alias) → definition. */
  library: ReadonlyMap<string, NodeDef>;
  signal: AbortSignal;
  emit: (event: EngineEvent) => void;
  /** Caps on what each node builds (the agent's settings). @default DEFAULT_NODE_LIMITS */
  limits?: NodeLimits;
  /** The job's asset store, for nodes that save or read files (`NodeContext.assets`); absent: such nodes fail. */
  assets?: NodeAssets;
  /** Nodes that run elsewhere (another pool's agent, as child jobs); absent: every node runs here. */
  remote?: RemoteNodes;
}

/** Graph nodes the engine does not run itself: each execution of one is handed to `run`. */
export interface RemoteNodes {
  nodeIds: ReadonlySet<string>;
  /** Runs the node once on `inputs`; resolves to every value of each output handle, in order. */
  run(ctx: NodeContext, inputs: NodeInputs): Promise<Record<string, unknown[]>>;
}

/**
 * How the engine runs a remote node: its own definition's shape when this side has one (a generator stays one,
 * sending each value the remote run produced), else a dynamic node (the graph was checked where it was accepted).
 */
function remoteDef(node: GraphNode, local: NodeDef | undefined, remote: RemoteNodes): NodeDef {
  const base = local ?? {
    type: node.type,
    title: node.type.slice(node.type.lastIndexOf(".") + 1),
    description: "",
    properties: [],
    outputs: [],
    isDynamic: true,
  };
  if (local?.kind === "generator") {
    return {
      ...base,
      kind: "generator",
      async *generate(ctx, inputs) {
        const out = await remote.run(ctx, inputs);
        for (const [handle, values] of Object.entries(out)) for (const value of values) yield { handle, value };
      },
    };
  }
  return {
    ...base,
    kind: "process",
    process: async (ctx, inputs) => {
      const out = await remote.run(ctx, inputs);
      return Object.fromEntries(Object.entries(out).flatMap(([h, vs]) => (vs.length ? [[h, vs[vs.length - 1]]] : [])));
    },
  };
}

/** What a run gives every node's context beyond its own: the job's assets and the run's shared workspace. */
export interface RunShared {
  assets?: NodeAssets;
  workspace: Map<string, unknown>;
}

export interface NodeFailure {
  node_id: string;
  node_type: string;
  message: string;
}

export type RunGraphResult =
  | { status: "completed"; outputs: Record<string, unknown[]> }
  | { status: "failed"; outputs: Record<string, unknown[]>; error: NodeFailure }
  | { status: "cancelled"; outputs: Record<string, unknown[]>; reason: unknown };

/** Node types resolved before a run; throws naming the first node nobody here can run. */
export class UnknownNodeTypeError extends Error {
  constructor(
    readonly nodeId: string,
    readonly nodeType: string,
  ) {
    super(`unknown node type "${nodeType}" at node "${nodeId}"`);
    this.name = "UnknownNodeTypeError";
  }
}

/** An async queue a streaming-input node drains; ends when every upstream edge has ended. */
class Inbox implements AsyncIterable<InboxItem> {
  private items: InboxItem[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  constructor(private readonly signal: AbortSignal) {
    // One listener for the inbox's life wakes whoever waits when the run is aborted. A listener added per wait
    // (and left there until the run ended) piled up one per item of a long stream.
    signal.addEventListener("abort", () => this.wake(), { once: true });
  }
  push(item: InboxItem): void {
    this.items.push(item);
    this.wake();
  }
  end(): void {
    this.ended = true;
    this.wake();
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<InboxItem> {
    for (;;) {
      if (this.signal.aborted) throw this.signal.reason;
      const item = this.items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** The name a node's events carry: its saved `name`, else its type's title. */
export function displayName(node: GraphNode, def: NodeDef): string {
  const name = node.data?.name;
  return typeof name === "string" && name !== "" ? name : def.title;
}

/**
 * What a node sees of its run: its events leave through `emit` under its id and `name`. Also how the agent runs a
 * node a runner calls it for (agent/strategies.ts, host calls).
 */
export function nodeContext(
  node: GraphNode,
  name: string,
  params: Record<string, unknown>,
  emit: (e: EngineEvent) => void,
  signal: AbortSignal,
  limits: NodeLimits,
  shared: RunShared = { workspace: new Map() },
): NodeContext {
  const id = node.id;
  return {
    ...(shared.assets ? { assets: shared.assets } : {}),
    workspace: shared.workspace,
    saved: (fileName, value, outputType) => emit(saveEvent(id, fileName, value, outputType)),
    signal,
    nodeId: id,
    nodeType: node.type,
    data: node.data ?? {},
    dynamicOutputs: (node.dynamic_outputs as Record<string, unknown> | null | undefined) ?? {},
    params,
    chunk: (content, opts) => {
      const ev: EngineEvent = {
        type: "chunk",
        node_id: id,
        content_type: opts?.contentType ?? "text",
        content,
        done: opts?.done ?? false,
      };
      // Only a reply's last chunk has metadata: the token path builds no object for it.
      if (opts?.metadata) ev.content_metadata = opts.metadata;
      emit(ev);
    },
    progress: (progress, total) => emit({ type: "node_progress", node_id: id, progress, total }),
    log: (content, severity = "info") => emit({ type: "log_update", node_id: id, node_name: name, content, severity }),
    preview: (value) => emit({ type: "preview_update", node_id: id, value }),
    sleep: (ms) => abortableSleep(ms, signal),
    limits,
  };
}

/** NodeTool's `save_update` for a saved file. */
function saveEvent(nodeId: string, fileName: string, value: AssetRef, outputType: string): EngineEvent {
  return { type: "save_update", node_id: nodeId, name: fileName, value, output_type: outputType };
}

/** One node of a run: its inbox state, its serialized executions, its outgoing edges. */
class Actor {
  readonly handles: Set<string>;
  private openEdges: number;
  private latest = new Map<string, unknown>();
  private queues = new Map<string, unknown[]>();
  private chain: Promise<void> = Promise.resolve();
  private started = false;
  private inbox: Inbox | null = null;
  readonly ctx: NodeContext;
  readonly name: string;
  finished = false;

  constructor(
    private readonly run: GraphRun,
    readonly node: GraphNode,
    readonly def: NodeDef,
    readonly incoming: GraphEdge[],
    readonly outgoing: GraphEdge[],
  ) {
    this.handles = new Set(incoming.map((e) => e.targetHandle));
    this.openEdges = incoming.length;
    this.name = displayName(node, def);
    this.ctx = nodeContext(node, this.name, run.params, run.emit, run.signal, run.limits, run.shared);
  }

  /** Declared defaults, then saved `data`, minus properties fed by an edge (NodeTool drops those). */
  staticInputs(): NodeInputs {
    const inputs: NodeInputs = {};
    for (const p of this.def.properties) if (p.default !== undefined) inputs[p.name] = structuredClone(p.default);
    const data = this.node.data ?? {};
    for (const k of Object.keys(data)) if (!this.handles.has(k)) inputs[k] = data[k];
    // Values typed into dynamic inputs (FormatText variables, MakeDictionary entries) are saved here by NodeTool.
    const dyn = this.node.dynamic_properties;
    if (dyn) for (const k of Object.keys(dyn)) if (!this.handles.has(k)) inputs[k] = dyn[k];
    return inputs;
  }

  start(): void {
    const def = this.def;
    if (def.kind === "streaming-input") {
      this.inbox = new Inbox(this.run.signal);
      if (this.openEdges === 0) this.inbox.end();
      const inbox = this.inbox;
      this.enqueue(() => this.execute(() => def.consume(this.ctx, this.staticInputs(), inbox)));
      this.enqueue(async () => this.finish());
      return;
    }
    if (def.kind === "output") {
      if (this.openEdges === 0) {
        const v = this.node.data?.value;
        if (v !== undefined) this.run.recordOutput(this, v);
        this.finish();
      }
      return;
    }
    if (this.openEdges === 0) {
      this.enqueue(() => this.fire(this.staticInputs()));
      this.enqueue(async () => this.finish());
    }
  }

  /** A value arrived on one of this node's input handles. */
  receive(handle: string, value: unknown): void {
    if (this.run.signal.aborted) return;
    const def = this.def;
    if (def.kind === "output") {
      this.run.recordOutput(this, value);
      return;
    }
    if (this.inbox) {
      this.inbox.push({ handle, value });
      return;
    }
    if (this.node.sync_mode === "zip_all") {
      let q = this.queues.get(handle);
      if (!q) this.queues.set(handle, (q = []));
      q.push(value);
      while ([...this.handles].every((h) => (this.queues.get(h)?.length ?? 0) > 0)) {
        const inputs = this.staticInputs();
        for (const h of this.handles) inputs[h] = this.queues.get(h)!.shift();
        this.enqueue(() => this.fire(inputs));
      }
      return;
    }
    // on_any: combine-latest; fire once every connected handle has a value, then on every new value.
    this.latest.set(handle, value);
    if (this.latest.size === this.handles.size) {
      const inputs = this.staticInputs();
      for (const [h, v] of this.latest) inputs[h] = v;
      this.enqueue(() => this.fire(inputs));
    }
  }

  /** One upstream edge ended. */
  endEdge(): void {
    this.openEdges--;
    if (this.openEdges > 0) return;
    if (this.inbox) {
      this.inbox.end();
      return;
    }
    this.enqueue(async () => this.finish());
  }

  private enqueue(task: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (this.run.signal.aborted) return;
      try {
        await task();
      } catch (err) {
        this.run.fail(this, err);
      }
    });
  }

  private markRunning(): void {
    if (this.started) return;
    this.started = true;
    this.run.emit({
      type: "node_update",
      node_id: this.node.id,
      node_name: this.name,
      node_type: this.node.type,
      status: "running",
    });
  }

  private async fire(inputs: NodeInputs): Promise<void> {
    const def = this.def;
    if (def.kind === "process") await this.execute(() => def.process(this.ctx, inputs));
    else if (def.kind === "generator") await this.execute(() => def.generate(this.ctx, inputs));
  }

  private async execute(body: () => Promise<NodeOutputs> | NodeOutputs | AsyncIterable<Emission>): Promise<void> {
    this.markRunning();
    const result = body();
    const limits = this.run.limits;
    if (result !== null && typeof result === "object" && Symbol.asyncIterator in result) {
      let n = 0;
      for await (const { handle, value } of result as AsyncIterable<Emission>) {
        if (this.run.signal.aborted) throw this.run.signal.reason;
        // A generator's stream is a list told one item at a time: it has the same cap.
        capList(limits, ++n, "the stream of values this node emits");
        capValue(limits, value, `the value on "${handle}"`);
        this.run.send(this, handle, value);
      }
      return;
    }
    const outputs = await (result as Promise<NodeOutputs> | NodeOutputs);
    if (this.run.signal.aborted) throw this.run.signal.reason;
    if (outputs) for (const k of Object.keys(outputs)) capValue(limits, outputs[k], `the output "${k}"`);
    if (outputs) for (const k of Object.keys(outputs)) this.run.send(this, k, outputs[k]);
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.started || this.def.kind === "output") {
      this.run.emit({
        type: "node_update",
        node_id: this.node.id,
        node_name: this.name,
        node_type: this.node.type,
        status: "completed",
      });
    }
    this.run.nodeDone(this);
  }
}

class GraphRun {
  readonly actors = new Map<string, Actor>();
  readonly outputs: Record<string, unknown[]> = {};
  private readonly edgeCounters = new Map<GraphEdge, number>();
  private remaining = 0;
  private readonly controller = new AbortController();
  readonly signal: AbortSignal;
  private failure: NodeFailure | null = null;
  private settle!: (r: RunGraphResult) => void;
  readonly done: Promise<RunGraphResult>;

  constructor(
    readonly params: Record<string, unknown>,
    readonly emit: (e: EngineEvent) => void,
    outer: AbortSignal,
    readonly limits: NodeLimits,
    readonly shared: RunShared,
  ) {
    this.signal = this.controller.signal;
    this.done = new Promise((resolve) => (this.settle = resolve));
    const onOuterAbort = () => {
      this.controller.abort(outer.reason);
      this.settle({ status: "cancelled", outputs: this.outputs, reason: outer.reason });
    };
    if (outer.aborted) queueMicrotask(onOuterAbort);
    else outer.addEventListener("abort", onOuterAbort, { once: true });
    void this.done.then(() => outer.removeEventListener("abort", onOuterAbort));
  }

  build(graph: Graph, library: ReadonlyMap<string, NodeDef>, remote?: RemoteNodes): void {
    const g = prepareGraph(graph);
    const incoming = new Map<string, GraphEdge[]>();
    const outgoing = new Map<string, GraphEdge[]>();
    for (const n of g.nodes) {
      incoming.set(n.id, []);
      outgoing.set(n.id, []);
    }
    // A control edge makes its target a tool of its source (NodeTool's agent node tools): the target does not run
    // by itself, its controller runs it when it chooses (`ctx.controlledNodes`). A node controlling itself means
    // nothing and is ignored.
    const controls = new Map<string, string[]>();
    for (const e of g.edges) {
      if (isControlEdge(e)) {
        const list = controls.get(e.source) ?? [];
        if (e.source !== e.target && !list.includes(e.target)) controls.set(e.source, [...list, e.target]);
        continue;
      }
      incoming.get(e.target)!.push(e);
      outgoing.get(e.source)!.push(e);
    }
    const controlled = new Set([...controls.values()].flat());
    const defs = new Map<string, NodeDef>();
    for (const n of g.nodes) {
      const def = remote?.nodeIds.has(n.id) ? remoteDef(n, library.get(n.type), remote) : library.get(n.type);
      if (!def) throw new UnknownNodeTypeError(n.id, n.type);
      defs.set(n.id, def);
      if (def.kind === "ignored" || controlled.has(n.id)) continue;
      this.actors.set(n.id, new Actor(this, n, def, incoming.get(n.id)!, outgoing.get(n.id)!));
    }
    const byId = new Map(g.nodes.map((n) => [n.id, n]));
    for (const [source, targets] of controls) {
      const actor = this.actors.get(source);
      if (!actor) continue;
      const nodes = targets.flatMap((id) => {
        const def = defs.get(id)!;
        return def.kind === "ignored" ? [] : [this.controlledNode(byId.get(id)!, def)];
      });
      Object.assign(actor.ctx, { controlledNodes: nodes });
    }
    // Edges from ignored nodes carry nothing: drop them so their targets do not wait forever.
    for (const a of this.actors.values()) {
      const live = a.incoming.filter((e) => this.actors.has(e.source));
      if (live.length !== a.incoming.length) {
        this.actors.set(
          a.node.id,
          new Actor(
            this,
            a.node,
            a.def,
            live,
            a.outgoing.filter((e) => this.actors.has(e.target)),
          ),
        );
      }
    }
    this.remaining = this.actors.size;
  }

  /** A node under a control edge, run once per call by its controller, with its own node events. */
  private controlledNode(node: GraphNode, def: NodeDef): ControlledNode {
    const name = displayName(node, def);
    const ctx = nodeContext(node, name, this.params, this.emit, this.signal, this.limits, this.shared);
    const update = { type: "node_update", node_id: node.id, node_name: name, node_type: node.type } as const;
    return {
      nodeId: node.id,
      nodeType: node.type,
      title: name,
      description: def.description,
      properties: def.properties,
      run: async (args) => {
        if (def.kind !== "process" && def.kind !== "generator")
          throw new Error(`${node.type} cannot be run as a tool (it is an input, output or streaming node)`);
        const inputs: NodeInputs = {};
        for (const p of def.properties) if (p.default !== undefined) inputs[p.name] = structuredClone(p.default);
        Object.assign(inputs, node.data ?? {}, node.dynamic_properties ?? {}, args);
        this.emit({ ...update, status: "running" });
        try {
          const outputs =
            def.kind === "process" ? await def.process(ctx, inputs) : await lastValues(def.generate(ctx, inputs));
          for (const k of Object.keys(outputs ?? {})) capValue(this.limits, outputs[k], `the output "${k}"`);
          this.emit({ ...update, status: "completed" });
          return outputs ?? {};
        } catch (err) {
          // The failure goes back to the controller (a model may try again); clients see this call end in error.
          this.emit({ ...update, status: "error", error: err instanceof Error ? err.message : String(err) });
          throw err;
        }
      },
    };
  }

  start(): void {
    if (this.remaining === 0) {
      this.settle({ status: "completed", outputs: this.outputs });
      return;
    }
    for (const a of this.actors.values()) a.start();
  }

  send(from: Actor, handle: string, value: unknown): void {
    for (const e of from.outgoing) {
      if (e.sourceHandle !== handle) continue;
      const n = (this.edgeCounters.get(e) ?? 0) + 1;
      this.edgeCounters.set(e, n);
      // One `active` per edge, not one per value: a token stream would otherwise double the event count.
      if (n === 1)
        this.emit({ type: "edge_update", edge_id: e.id ?? `${e.source}-${e.target}`, status: "active", counter: n });
      this.actors.get(e.target)?.receive(e.targetHandle, value);
    }
  }

  recordOutput(actor: Actor, value: unknown): void {
    const name = actor.name;
    (this.outputs[name] ??= []).push(value);
    this.emit({
      type: "output_update",
      node_id: actor.node.id,
      node_name: name,
      output_name: "output",
      value,
      output_type: outputTypeOf(value),
    });
  }

  nodeDone(actor: Actor): void {
    for (const e of actor.outgoing) {
      const n = this.edgeCounters.get(e) ?? 0;
      if (n > 0)
        this.emit({ type: "edge_update", edge_id: e.id ?? `${e.source}-${e.target}`, status: "completed", counter: n });
      this.actors.get(e.target)?.endEdge();
    }
    this.remaining--;
    if (this.remaining === 0 && !this.signal.aborted) this.settle({ status: "completed", outputs: this.outputs });
  }

  fail(actor: Actor, err: unknown): void {
    if (this.signal.aborted) return; // the first failure or the cancel wins; later errors are its echoes
    const message = err instanceof Error ? err.message : String(err);
    this.failure = { node_id: actor.node.id, node_type: actor.node.type, message };
    this.emit({
      type: "node_update",
      node_id: actor.node.id,
      node_name: actor.name,
      node_type: actor.node.type,
      status: "error",
      error: message,
    });
    this.controller.abort(err);
    this.settle({ status: "failed", outputs: this.outputs, error: this.failure });
  }
}

/** A generator's stream as one result: the last value on each handle. */
async function lastValues(stream: AsyncIterable<Emission>): Promise<NodeOutputs> {
  const out: NodeOutputs = {};
  for await (const { handle, value } of stream) out[handle] = value;
  return out;
}

function outputTypeOf(value: unknown): string {
  if (value === null || value === undefined) return "none";
  if (typeof value === "string") return "str";
  if (typeof value === "number") return Number.isInteger(value) ? "int" : "float";
  if (typeof value === "boolean") return "bool";
  if (Array.isArray(value)) return "list";
  if (value instanceof Uint8Array) return "bytes";
  const t = (value as { type?: unknown }).type;
  return typeof t === "string" ? t : "dict";
}

/** Closes every workspace value that can be closed (`close()`), and forgets them all. */
function closeWorkspace(workspace: Map<string, unknown>): void {
  for (const v of workspace.values()) {
    try {
      (v as { close?: () => void } | null)?.close?.();
    } catch {
      // a value that fails to close is dropped all the same
    }
  }
  workspace.clear();
}

/**
 * Runs a graph to its end. Never throws for a node's failure (that is a `failed` result naming the node);
 * throws `UnknownNodeTypeError` before starting when a node type is not in `library`.
 */
export function runGraph(opts: RunGraphOptions): Promise<RunGraphResult> {
  const shared: RunShared = { workspace: new Map(), ...(opts.assets ? { assets: opts.assets } : {}) };
  const run = new GraphRun(opts.params, opts.emit, opts.signal, opts.limits ?? DEFAULT_NODE_LIMITS, shared);
  run.build(opts.graph, opts.library, opts.remote);
  run.start();
  // What the nodes kept in the workspace (the sqlite nodes' databases) is let go with the run.
  void run.done.then(() => closeWorkspace(shared.workspace));
  return run.done;
}
