/**
 * Graph checks shared by the gateway (on save and on submit, to answer 400 before anything is queued) and the
 * agent (before it runs). Pure functions over graph JSON and node metadata.
 */
import { ErrorCode, GraphError } from "./errors.js";
import type { Graph, GraphEdge, GraphNode, NodeMetadata } from "./graph.js";
import { isControlEdge } from "./graph.js";
import { mediaRefOf } from "./assets.js";
import { COMFY_PROVIDER, isLlmProvider, languageModelOf } from "./chat.js";

/** Node type (and every alias) → metadata. */
export type NodeCatalog = ReadonlyMap<string, NodeMetadata>;

export const INPUT_NODE_PREFIX = "nodetool.input.";

/** Keys that reach an object's prototype when merged or assigned: refused anywhere in user-supplied data. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);

/**
 * Throws `GraphError` (PROTO_ERR_FORBIDDEN_KEY) naming where the first own key of `value`, at any depth, is one of
 * `FORBIDDEN_KEYS`: `JSON.parse` makes `"__proto__"` an own property, which a later spread or assignment turns
 * into a prototype. Iterative over own enumerable keys (no depth overflows the stack); each object is seen once.
 */
export function checkForbiddenKeys(value: unknown, what: string): void {
  if (value === null || typeof value !== "object") return;
  interface At {
    v: object;
    key: string;
    up: At | null;
  }
  const seen = new Set<object>();
  const stack: At[] = [{ v: value, key: what, up: null }];
  while (stack.length > 0) {
    const at = stack.pop()!;
    if (seen.has(at.v) || ArrayBuffer.isView(at.v)) continue;
    seen.add(at.v);
    // A list has no keys to check: walked by index, its plain items cost nothing (Object.keys made a string for
    // each of a 4-million-number param's items and held the gateway 2 s).
    if (Array.isArray(at.v)) {
      for (let i = 0; i < at.v.length; i++) {
        const c: unknown = at.v[i];
        if (c !== null && typeof c === "object") stack.push({ v: c, key: String(i), up: at });
      }
      continue;
    }
    for (const k of Object.keys(at.v)) {
      if (FORBIDDEN_KEYS.has(k)) {
        // The path is made only here, from the last few steps: a deep input costs no string per level.
        const steps: string[] = [];
        let a: At | null = at;
        for (; a && steps.length < 6; a = a.up) steps.unshift(a.key);
        const path = `${a ? "…." : ""}${steps.join(".")}`;
        const message = `${path} has the forbidden key ${JSON.stringify(k)}`;
        throw new GraphError(ErrorCode.PROTO_ERR_FORBIDDEN_KEY, message, k);
      }
      const c = (at.v as Record<string, unknown>)[k];
      if (c !== null && typeof c === "object") stack.push({ v: c, key: k, up: at });
    }
  }
}

/** Editor-only node types, removed before a run. */
const IGNORED_TYPES = new Set([
  "nodetool.workflows.base_node.Comment",
  "nodetool.workflows.base_node.Group",
  "nodetool.workflows.base_node.GroupNode",
  "nodetool.comment.Comment",
  "Comment",
  "Group",
]);

export interface PreparedGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/**
 * The graph as it runs: editor-only nodes removed, bypassed nodes routed around (each edge leaving a
 * bypassed node is fed by the source of the edge entering its first connected handle), edges whose ends
 * are missing dropped.
 */
export function prepareGraph(graph: Graph): PreparedGraph {
  let nodes = graph.nodes.filter((n) => !IGNORED_TYPES.has(n.type));
  let edges = graph.edges.slice();
  const bypassed = new Set(nodes.filter((n) => ownProp(n.ui_properties, "bypassed") === true).map((n) => n.id));
  if (bypassed.size > 0) {
    // Resolve chains of bypassed nodes by repeating until no edge touches one.
    for (let guard = 0; guard <= bypassed.size; guard++) {
      const next: GraphEdge[] = [];
      let changed = false;
      for (const e of edges) {
        if (bypassed.has(e.source)) {
          changed = true;
          const feed = edges.find((x) => x.target === e.source);
          if (feed)
            next.push({ ...e, id: `${e.id ?? ""}~bypass`, source: feed.source, sourceHandle: feed.sourceHandle });
        } else if (!bypassed.has(e.target)) {
          next.push(e);
        }
      }
      edges = next;
      if (!changed) break;
    }
    nodes = nodes.filter((n) => !bypassed.has(n.id));
  }
  const ids = new Set(nodes.map((n) => n.id));
  edges = edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  return { nodes, edges };
}

/**
 * The catalog entry of a node type: its own, else, for a `comfy.` type, the ComfyUI class it ends with (NodeTool
 * files some classes under namespaces of its own, e.g. `comfy.sampling.samplers.KSamplerSelect`).
 */
export function catalogEntry(catalog: NodeCatalog, type: string): NodeMetadata | undefined {
  const own = catalog.get(type);
  if (own || !type.startsWith("comfy.")) return own;
  for (const m of catalog.values()) if (m.comfy_class && type.endsWith(`.${m.comfy_class}`)) return m;
  return undefined;
}

/** `o[k]` when `o` is an object that has `k` as its own property: never a value inherited from a prototype. */
function ownProp(o: unknown, k: string): unknown {
  return o !== null && typeof o === "object" && Object.hasOwn(o, k) ? (o as Record<string, unknown>)[k] : undefined;
}

function nodeLabel(n: GraphNode): string {
  return `node "${n.id}" (${n.type})`;
}

/** Nodes that only show what reaches them in the editor: an edge into one from nowhere shows nothing, harms nothing. */
const PREVIEW_TYPES = new Set(["nodetool.workflows.base_node.Preview"]);

/**
 * An edge's handles against the catalog: its target must be an input of a node that is not dynamic, its source
 * an output the node declares or one of its `dynamic_outputs` (an edge from an output no node has carried nothing,
 * and the job completed without the value). Edges into a Preview and control edges are left alone.
 */
function checkHandles(e: GraphEdge, ref: string, byId: Map<string, GraphNode>, catalog: NodeCatalog): void {
  if (isControlEdge(e)) return;
  const target = byId.get(e.target)!;
  const meta = catalogEntry(catalog, target.type);
  if (meta && !meta.is_dynamic && !meta.properties.some((p) => p.name === e.targetHandle)) {
    const why = `edge "${ref}" targets unknown input "${e.targetHandle}" of ${nodeLabel(target)}`;
    throw new GraphError(ErrorCode.GRAPH_ERR_DANGLING_EDGE, why, ref);
  }
  const source = byId.get(e.source)!;
  const from = catalogEntry(catalog, source.type);
  if (!from || from.is_dynamic || PREVIEW_TYPES.has(target.type) || from.outputs.some((o) => o.name === e.sourceHandle))
    return;
  const dynamic = source.dynamic_outputs;
  if (dynamic !== null && typeof dynamic === "object" && Object.hasOwn(dynamic, e.sourceHandle)) return;
  const outputs = from.outputs.map((o) => `"${o.name}"`).join(", ") || "none";
  const why = `edge "${ref}" comes from unknown output "${e.sourceHandle}" of ${nodeLabel(source)} (its outputs: ${outputs})`;
  throw new GraphError(ErrorCode.GRAPH_ERR_DANGLING_EDGE, why, ref);
}

/**
 * Structural checks for a saved workflow: duplicate node ids, edges to missing nodes, unknown node types
 * (when a catalog is given), undeclared target handles on non-dynamic nodes, and cycles. Throws `GraphError`
 * naming the offending node or edge.
 */
export function validateGraph(graph: unknown, catalog?: NodeCatalog): Graph {
  if (graph === null || typeof graph !== "object")
    throw new GraphError(ErrorCode.PROTO_ERR_SHAPE, "graph must be an object {nodes, edges}");
  checkForbiddenKeys(graph, "graph");
  const g = graph as Partial<Graph>;
  if (!Array.isArray(g.nodes) || !Array.isArray(g.edges))
    throw new GraphError(ErrorCode.PROTO_ERR_SHAPE, 'graph needs "nodes" and "edges" arrays');
  const byId = new Map<string, GraphNode>();
  for (const n of g.nodes) {
    if (n === null || typeof n !== "object" || typeof n.id !== "string" || typeof n.type !== "string") {
      throw new GraphError(ErrorCode.PROTO_ERR_SHAPE, 'every node needs a string "id" and "type"');
    }
    if (byId.has(n.id)) throw new GraphError(ErrorCode.GRAPH_ERR_DUPLICATE_NODE, `duplicate node id "${n.id}"`, n.id);
    byId.set(n.id, n);
    if (catalog && !IGNORED_TYPES.has(n.type) && !catalogEntry(catalog, n.type)) {
      throw new GraphError(
        ErrorCode.GRAPH_ERR_UNKNOWN_NODE_TYPE,
        `unknown node type "${n.type}" at node "${n.id}"`,
        n.id,
      );
    }
  }
  for (const e of g.edges) {
    if (e === null || typeof e !== "object" || typeof e.source !== "string" || typeof e.target !== "string") {
      throw new GraphError(ErrorCode.PROTO_ERR_SHAPE, 'every edge needs string "source" and "target"');
    }
    const ref = e.id ?? `${e.source}->${e.target}`;
    if (!byId.has(e.source))
      throw new GraphError(
        ErrorCode.GRAPH_ERR_DANGLING_EDGE,
        `edge "${ref}" comes from missing node "${e.source}"`,
        ref,
      );
    if (!byId.has(e.target))
      throw new GraphError(ErrorCode.GRAPH_ERR_DANGLING_EDGE, `edge "${ref}" goes to missing node "${e.target}"`, ref);
    if (typeof e.targetHandle !== "string" || typeof e.sourceHandle !== "string") {
      throw new GraphError(ErrorCode.PROTO_ERR_SHAPE, `edge "${ref}" needs "sourceHandle" and "targetHandle"`, ref);
    }
    if (catalog) checkHandles(e as GraphEdge, ref, byId, catalog);
  }
  // Cycle check (Kahn): data edges must form a DAG.
  const indeg = new Map<string, number>();
  const out = new Map<string, string[]>();
  for (const id of byId.keys()) {
    indeg.set(id, 0);
    out.set(id, []);
  }
  for (const e of g.edges) {
    if (isControlEdge(e)) continue;
    indeg.set(e.target, indeg.get(e.target)! + 1);
    out.get(e.source)!.push(e.target);
  }
  const queue = [...indeg].filter(([, d]) => d === 0).map(([id]) => id);
  let seen = 0;
  while (queue.length > 0) {
    const id = queue.pop()!;
    seen++;
    for (const t of out.get(id)!) {
      const d = indeg.get(t)! - 1;
      indeg.set(t, d);
      if (d === 0) queue.push(t);
    }
  }
  if (seen < byId.size) {
    const inCycle = [...indeg].filter(([, d]) => d > 0).map(([id]) => id);
    throw new GraphError(
      ErrorCode.GRAPH_ERR_CYCLE,
      `graph has a cycle through nodes ${inCycle.map((i) => `"${i}"`).join(", ")}`,
      inCycle[0],
    );
  }
  return g as Graph;
}

/** `value` as JSON in a message, cut at 120 characters; a long list by its first items and its length. */
function shown(value: unknown): string {
  const long = Array.isArray(value) && value.length > 20;
  const text = long
    ? `${JSON.stringify(value.slice(0, 20)).slice(0, -1)},… (${value.length} items)]`
    : (JSON.stringify(value) ?? String(value));
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

function coerce(value: unknown, type: string, name: string): unknown {
  const bad = () =>
    new GraphError(ErrorCode.GRAPH_ERR_PARAM_TYPE, `param "${name}" must be ${type}, got ${shown(value)}`, name);
  switch (type) {
    case "int": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isInteger(n)) throw bad();
      return n;
    }
    case "float": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n)) throw bad();
      return n;
    }
    case "bool":
      if (value === "true") return true;
      if (value === "false") return false;
      if (typeof value !== "boolean") throw bad();
      return value;
    case "str":
    case "enum":
      if (typeof value !== "string") throw bad();
      return value;
    case "image":
    case "audio":
    case "video":
    case "document": {
      const ref = mediaRefOf(value, type);
      if (!ref) {
        throw new GraphError(
          ErrorCode.GRAPH_ERR_PARAM_TYPE,
          `param "${name}" must be ${/^[aeiou]/.test(type) ? "an" : "a"} ${type} reference: an asset://<id>, http(s):// or data: URI, or {"uri": …} (upload the file to /api/assets first), got ${shown(value)}`,
          name,
        );
      }
      return ref;
    }
    default:
      if (type.startsWith("list")) {
        if (typeof value === "string") {
          // `--param k=a,b` on the command line, or a JSON array in a string.
          if (value.startsWith("[")) {
            try {
              const parsed: unknown = JSON.parse(value);
              if (Array.isArray(parsed)) return parsed;
            } catch {
              /* fall through to the comma form */
            }
          }
          return value === "" ? [] : value.split(",");
        }
        if (!Array.isArray(value)) throw bad();
        return value;
      }
      return value;
  }
}

/**
 * Checks run params against the graph's input nodes: every param names an input node, has the input's
 * type (strings from a command line are coerced), and every input without a default value is given.
 * Returns the coerced params. Throws `GraphError` naming the param.
 */
export function validateParams(
  graph: Graph,
  params: Record<string, unknown>,
  catalog?: NodeCatalog,
): Record<string, unknown> {
  checkForbiddenKeys(params, "params");
  const inputs = new Map<string, GraphNode>();
  for (const n of graph.nodes) {
    if (!n.type.startsWith(INPUT_NODE_PREFIX)) continue;
    const name = ownProp(n.data, "name");
    if (typeof name === "string" && name !== "") inputs.set(name, n);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    const node = inputs.get(k);
    if (!node) {
      const known = [...inputs.keys()];
      throw new GraphError(
        ErrorCode.GRAPH_ERR_UNKNOWN_PARAM,
        `unknown param "${k}"; the workflow's inputs are ${known.length ? known.map((x) => `"${x}"`).join(", ") : "(none)"}`,
        k,
      );
    }
    const type = (catalog && catalogEntry(catalog, node.type))?.properties.find((p) => p.name === "value")?.type;
    out[k] = type ? coerce(v, type, k) : v;
  }
  for (const [name, node] of inputs) {
    if (Object.hasOwn(out, name)) continue;
    const value = ownProp(node.data, "value");
    if (value === undefined || value === null) {
      throw new GraphError(
        ErrorCode.GRAPH_ERR_MISSING_PARAM,
        `missing required param "${name}" (input node "${node.id}", ${node.type})`,
        name,
      );
    }
  }
  return out;
}

/**
 * The pool one node needs, from its catalog entry: its type's pool (a ComfyUI node, a GPU node), or the pool of the
 * provider of the model it calls (a ComfyUI image model's is `comfyui`); null when it runs anywhere.
 */
export function poolOfNode(
  node: Pick<GraphNode, "data">,
  meta: Pick<NodeMetadata, "pool" | "provider_property"> | undefined,
): string | null {
  if (meta?.pool) return meta.pool;
  if (!meta?.provider_property) return null;
  const provider = languageModelOf(ownProp(node.data, meta.provider_property))?.provider;
  return isLlmProvider(provider) || provider === COMFY_PROVIDER ? provider : null;
}

/**
 * The pool a graph needs: an explicit one wins, then the pool a node names, preferring what is hardest to move (a
 * node type's own pool, then a ComfyUI model, then a language model's provider: an agent running the graph sends
 * the nodes of other pools to them as child jobs, and a provider call is the cheapest to send), else `cpu`.
 */
export function poolOfGraph(graph: Graph, catalog?: NodeCatalog, explicit?: string): string {
  if (explicit) return explicit;
  let best: string | null = null;
  let bestRank = 0;
  for (const n of catalog ? graph.nodes : []) {
    const meta = catalogEntry(catalog!, n.type);
    const pool = poolOfNode(n, meta);
    if (pool === null) continue;
    const rank = meta?.pool ? 3 : pool === COMFY_PROVIDER ? 2 : 1;
    if (rank > bestRank) [best, bestRank] = [pool, rank];
  }
  return best ?? "cpu";
}
