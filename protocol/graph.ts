/** NodeTool's graph JSON. Extra fields on nodes and edges are kept and ignored. */
export interface GraphNode {
  id: string;
  type: string;
  data?: Record<string, unknown>;
  ui_properties?: { bypassed?: boolean; [k: string]: unknown };
  dynamic_properties?: Record<string, unknown>;
  sync_mode?: "on_any" | "zip_all";
  parent_id?: string | null;
  [k: string]: unknown;
}

export interface GraphEdge {
  id?: string;
  source: string;
  sourceHandle: string;
  target: string;
  targetHandle: string;
  edge_type?: "data" | "control";
  [k: string]: unknown;
}

/** NodeTool's control edges (an agent steering a node) carry no data: checks and the engine skip them. */
export const CONTROL_HANDLE = "__control__";

export function isControlEdge(e: Pick<GraphEdge, "edge_type" | "targetHandle">): boolean {
  return e.edge_type === "control" || e.targetHandle === CONTROL_HANDLE;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** A stored workflow (NodeTool's row, the fields Nodeway uses). */
export interface Workflow {
  id: string;
  name: string;
  description?: string;
  tags?: string[];
  graph: Graph;
  settings?: Record<string, unknown>;
  created_at: string;
  updated_at: string;
}

/** Metadata of one node type, as listed by `GET /api/nodes/metadata`. */
export interface NodeMetadata {
  node_type: string;
  title: string;
  description: string;
  namespace: string;
  properties: PropertyMetadata[];
  outputs: { name: string; type: string }[];
  /** Accepts edges into handles it does not declare (FormatText, Template, MakeDictionary). */
  is_dynamic: boolean;
  /** Emits values over time (generator node). */
  is_streaming: boolean;
  /** Needs a pool other than `cpu` to run. */
  pool?: string;
  /**
   * The property holding the language model the node calls (the LLM nodes' `model`): its provider names the
   * node's pool, whose agents hold that provider's key.
   */
  provider_property?: string;
  /**
   * The ComfyUI class the node type runs as (`KSampler`): NodeTool files a class under namespaces of its own, and
   * any `comfy.<…>.<class>` type names the same node.
   */
  comfy_class?: string;
}

export interface PropertyMetadata {
  name: string;
  type: string;
  default?: unknown;
  required?: boolean;
  description?: string;
  min?: number;
  max?: number;
  values?: unknown[];
}
