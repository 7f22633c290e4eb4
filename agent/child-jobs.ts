/**
 * Nodes this agent cannot run, sent to an agent that can, as child jobs. A graph runs whole on the agent that
 * pulled it; a node in it whose pool (its type's, or the provider of the model it calls) this agent does not have
 * is run by asking a gateway for a child job of one node (`child.submit` on the records subject), waiting for its
 * record (`child.wait`), and passing its outputs on along the graph as if the node had run here.
 *
 * Contract (docs/architecture.md, "Child jobs"): the child is an ordinary job of the pool, with its own events,
 * attempts and timeout (the parent's); the parent's node fails when the child does. Cancelling the parent, its
 * timeout, a lost lease or another node's failure cancel the child. A child is keyed by parent, attempt, node and
 * call: the same attempt asking again finds it, the next attempt runs its own.
 */
import {
  CHILD_WAIT_MAX_MS,
  ErrorCode,
  decodeMsgpack,
  isTerminal,
  parseJson,
  poolOfNode,
  type Graph,
  type GraphNode,
  type JobRecord,
} from "../protocol/index.js";
import { RecordRefusedError, type RecordClient } from "../nats/index.js";
import type { RemoteNodes } from "./engine/engine.js";
import { NodeError, type NodeContext, type NodeDef, type NodeInputs } from "./engine/types.js";
import type { JobAssets } from "./assets.js";

/** How long one `child.wait` is held at the gateway; the request allows it this much more to answer. */
const WAIT_MS = 8_000;
const WAIT_SLACK_MS = 4_000;
/** Pause between tries while the gateways cannot be reached (the wait goes on until the run stops). */
const RETRY_MS = 500;

/**
 * Ids of the nodes of `graph` this agent sends elsewhere: process and generator nodes it has whose pool is not one
 * it can run (`runsPool`). Input, output and streaming nodes always run with their graph.
 */
export function remoteNodeIds(
  graph: Graph,
  library: ReadonlyMap<string, NodeDef>,
  runsPool: (pool: string) => boolean,
): Set<string> {
  const ids = new Set<string>();
  for (const n of graph.nodes) {
    const def = library.get(n.type);
    if (!def || (def.kind !== "process" && def.kind !== "generator")) continue;
    const pool = poolOfNode(n, { pool: def.pool, provider_property: def.providerProperty });
    if (pool !== null && !runsPool(pool)) ids.add(n.id);
  }
  return ids;
}

export interface ChildJobDeps {
  records: RecordClient;
  jobId: string;
  /** The dispatch's claim secret: with the lease, what makes the gateway take this agent's word for the job. */
  proof: string;
  attempt: number;
  graph: Graph;
  library: ReadonlyMap<string, NodeDef>;
  /** Stores the inputs' bytes as assets (a child's graph travels as MessagePack, its inputs as references). */
  assets: JobAssets;
  /** Resolves once this attempt holds the job (a child may only be asked for by the holder). */
  claimed: Promise<void>;
}

/** The graph of one node run: the node with its inputs as its data, and an output per handle, named as the handle. */
export function childGraph(node: GraphNode, inputs: NodeInputs, handles: readonly string[]): Graph {
  const { id, type } = node;
  const nodes: GraphNode[] = [{ id, type, data: inputs }];
  const edges = handles.map((h, i) => {
    nodes.push({ id: `out-${i}`, type: "nodetool.output.Output", data: { name: h } });
    return { id: `e-${i}`, source: id, sourceHandle: h, target: `out-${i}`, targetHandle: "value" };
  });
  return { nodes, edges };
}

export class ChildJobs implements RemoteNodes {
  private readonly calls = new Map<string, number>();

  constructor(
    readonly nodeIds: ReadonlySet<string>,
    private readonly d: ChildJobDeps,
  ) {}

  /** Runs the node once as a child job; resolves to every value of each output handle. */
  async run(ctx: NodeContext, inputs: NodeInputs): Promise<Record<string, unknown[]>> {
    const node = this.d.graph.nodes.find((n) => n.id === ctx.nodeId);
    if (!node) throw new NodeError(`node ${ctx.nodeId} is not in this job's graph`);
    await unlessAborted(this.d.claimed, ctx.signal);
    const call = (this.calls.get(node.id) ?? 0) + 1;
    this.calls.set(node.id, call);
    const data = (await this.d.assets.offload(inputs, node.id)) as NodeInputs;
    let child: JobRecord;
    try {
      child = await this.submit(node, data, call);
    } catch (err) {
      // Nobody takes that pool: the node runs here, where it fails naming what it lacks (or runs, if it can).
      if (err instanceof RecordRefusedError && err.code === ErrorCode.GW_ERR_NO_AGENT) return this.runHere(ctx, inputs);
      throw new NodeError(`could not send the node to its pool: ${(err as Error).message}`);
    }
    ctx.log(`runs in pool ${child.pool} as job ${child.id}`);
    const cancel = () => void this.ask({ type: "child.cancel", child_id: child.id }, 5_000).catch(() => undefined);
    ctx.signal.addEventListener("abort", cancel, { once: true });
    try {
      return outputsOf(await this.finished(child, ctx));
    } finally {
      ctx.signal.removeEventListener("abort", cancel);
    }
  }

  private async submit(node: GraphNode, data: NodeInputs, call: number): Promise<JobRecord> {
    const def = this.d.library.get(node.type);
    const used = this.d.graph.edges.filter((e) => e.source === node.id).map((e) => e.sourceHandle);
    const handles = [...new Set([...(def?.outputs.map((o) => o.name) ?? []), ...used])];
    const graph = childGraph(node, data, handles);
    const req = { type: "child.submit", attempt: this.d.attempt, node_id: node.id, call, graph } as const;
    return this.ask(req, 10_000);
  }

  /**
   * Waits for the child's end, asking again through NATS outages until the run stops; its node's tokens, progress,
   * logs and previews come along and are the node's own here.
   */
  private async finished(child: JobRecord, ctx: NodeContext): Promise<JobRecord> {
    let rec = child;
    let afterSeq = 0;
    while (!isTerminal(rec.status)) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      try {
        const wait_ms = Math.min(WAIT_MS, CHILD_WAIT_MAX_MS);
        const reply = await this.d.records.ask(
          {
            type: "child.wait",
            v: 1,
            job_id: this.d.jobId,
            proof: this.d.proof,
            child_id: rec.id,
            wait_ms,
            after_seq: afterSeq,
          },
          WAIT_MS + WAIT_SLACK_MS,
        );
        rec = parseJson(reply.record_json ?? "null") as JobRecord;
        for (const bytes of reply.events ?? []) passOn(ctx, decodeMsgpack(bytes));
        afterSeq = reply.last_seq ?? afterSeq;
      } catch (err) {
        if (err instanceof RecordRefusedError && err.code !== ErrorCode.GW_ERR_UNAVAILABLE)
          throw new NodeError(err.message);
        await unlessAborted(new Promise(() => undefined), ctx.signal, RETRY_MS);
      }
    }
    if (rec.status === "completed") return rec;
    throw new NodeError(
      `its ${rec.pool} job ${rec.id} ended ${rec.status}${rec.error ? `: ${rec.error.message}` : ""}`,
    );
  }

  private async ask(
    body:
      | { type: "child.submit"; attempt: number; node_id: string; call: number; graph: Graph }
      | { type: "child.cancel"; child_id: string },
    timeoutMs: number,
  ): Promise<JobRecord> {
    const reply = await this.d.records.ask({ ...body, v: 1, job_id: this.d.jobId, proof: this.d.proof }, timeoutMs);
    return parseJson(reply.record_json ?? "null") as JobRecord;
  }

  /** The node as this agent has it, run here: every value it produced, by handle. */
  private async runHere(ctx: NodeContext, inputs: NodeInputs): Promise<Record<string, unknown[]>> {
    const def = this.d.library.get(ctx.nodeType);
    if (def?.kind === "process") {
      const out = (await def.process(ctx, inputs)) ?? {};
      return Object.fromEntries(Object.entries(out).map(([h, v]) => [h, [v]]));
    }
    if (def?.kind !== "generator") throw new NodeError(`no agent runs ${ctx.nodeType}`);
    const all: Record<string, unknown[]> = {};
    for await (const { handle, value } of def.generate(ctx, inputs)) (all[handle] ??= []).push(value);
    return all;
  }
}

/** One of the child node's events, as this node's own (a token, progress, a log line, a preview). */
function passOn(ctx: NodeContext, e: unknown): void {
  const ev = e as Record<string, unknown> | null;
  if (!ev || typeof ev !== "object" || ev.node_id !== ctx.nodeId) return;
  switch (ev.type) {
    case "chunk": {
      const contentType = ev.content_type as "text" | "audio" | "image" | "video" | "document" | undefined;
      const metadata = ev.content_metadata as Record<string, unknown> | undefined;
      ctx.chunk(String(ev.content ?? ""), {
        done: ev.done === true,
        ...(contentType ? { contentType } : {}),
        ...(metadata ? { metadata } : {}),
      });
      return;
    }
    case "node_progress":
      return ctx.progress(Number(ev.progress), Number(ev.total));
    case "log_update":
      return ctx.log(String(ev.content ?? ""), ev.severity as "info" | "warning" | "error" | undefined);
    case "preview_update":
      return ctx.preview(ev.value);
  }
}

/** A finished child's outputs: each output node is named as the handle it collected. */
function outputsOf(rec: JobRecord): Record<string, unknown[]> {
  return rec.outputs ?? {};
}

/** Resolves when `p` does or after `ms` (never, when null); rejects with the signal's reason once it aborts. */
function unlessAborted(p: Promise<unknown>, signal: AbortSignal, ms: number | null = null): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      if (timer) clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = ms === null ? null : setTimeout(done, ms);
    function done() {
      if (timer) clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve();
    }
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(done, done);
  });
}
