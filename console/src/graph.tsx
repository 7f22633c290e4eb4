/**
 * A workflow's graph drawn as NodeTool draws it (React Flow, read-only): nodes at their saved positions (else
 * laid out in columns by depth), a header with the node's title and namespace, its set properties, and during a
 * run its state (running, done, error) and progress bar. Loaded on demand: the first page does not pay for it.
 */
import { Background, Controls, Handle, type Node, type NodeProps, Position, ReactFlow } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { createContext, memo, useContext, useMemo } from "react";
import type { GraphEdge, GraphNode, Json } from "./api";
import type { NodeRun } from "./run-state";

type NwData = { title: string; namespace: string; props: [string, string][] };

/**
 * Node states reach the nodes through context, not the node objects: React Flow measures a node object once, and
 * replacing them on every frame of a run would keep them unmeasured (hidden) while it streams.
 */
const RunCtx = createContext<{ runs: Record<string, NodeRun> | undefined; version: number }>({
  runs: undefined,
  version: 0,
});

const short = (v: unknown): string => {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s === undefined ? "" : s.length > 40 ? `${s.slice(0, 39)}…` : s;
};

const NwNode = memo(function NwNode({ id, data }: NodeProps<Node<NwData>>) {
  const run = useContext(RunCtx).runs?.[id];
  const pct = run?.total ? Math.min(100, (100 * (run.progress ?? 0)) / run.total) : null;
  return (
    <div className={`nw-node ${run ? `n-${run.status}` : ""}`} data-status={run?.status ?? ""}>
      <Handle type="target" position={Position.Left} />
      <div className="nw-head">
        <b>{data.title}</b>
        <small>{data.namespace}</small>
      </div>
      {data.props.map(([k, v]) => (
        <div className="nw-prop" key={k}>
          <span>{k}</span>
          <span>{v}</span>
        </div>
      ))}
      {pct !== null && (
        <div className="bar">
          <i style={{ width: `${pct}%` }} />
        </div>
      )}
      {run?.error && <div className="nw-err">{run.error}</div>}
      <Handle type="source" position={Position.Right} />
    </div>
  );
});

const nodeTypes = { nw: NwNode };

/**
 * Columns by longest path from a source, rows in graph order: a readable layout for graphs saved without one.
 * Kahn's order, O(nodes + edges): a 10,000-node graph lays out at once. Nodes on a cycle (the gateway refuses
 * them, the page does not rely on it) and edges to unknown nodes are left in column 0.
 */
function layout(nodes: GraphNode[], edges: GraphEdge[]): Map<string, { x: number; y: number }> {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  const indegree = new Map(nodes.map((n) => [n.id, 0]));
  const next = new Map<string, string[]>();
  for (const e of edges) {
    if (!depth.has(e.source) || !depth.has(e.target)) continue;
    indegree.set(e.target, indegree.get(e.target)! + 1);
    const out = next.get(e.source);
    if (out) out.push(e.target);
    else next.set(e.source, [e.target]);
  }
  const ready = nodes.filter((n) => indegree.get(n.id) === 0).map((n) => n.id);
  for (let i = 0; i < ready.length; i++) {
    const from = ready[i]!;
    for (const to of next.get(from) ?? []) {
      depth.set(to, Math.max(depth.get(to)!, depth.get(from)! + 1));
      indegree.set(to, indegree.get(to)! - 1);
      if (indegree.get(to) === 0) ready.push(to);
    }
  }
  const rows = new Map<number, number>();
  const out = new Map<string, { x: number; y: number }>();
  for (const n of nodes) {
    const d = depth.get(n.id) ?? 0;
    const r = rows.get(d) ?? 0;
    rows.set(d, r + 1);
    out.set(n.id, { x: d * 260, y: r * 160 });
  }
  return out;
}

function positionOf(n: GraphNode): { x: number; y: number } | null {
  const p = (n.ui_properties as Json | undefined)?.position as { x?: unknown; y?: unknown } | undefined;
  return p && typeof p.x === "number" && typeof p.y === "number" ? { x: p.x, y: p.y } : null;
}

function toFlowNode(n: GraphNode, at: { x: number; y: number }): Node<NwData> {
  const parts = n.type.split(".");
  const props = Object.entries(n.data ?? {})
    .filter(([, v]) => v !== null && v !== "" && typeof v !== "object")
    .slice(0, 4)
    .map(([k, v]) => [short(k), short(v)] as [string, string]);
  return {
    id: n.id,
    type: "nw",
    position: at,
    data: { title: parts.at(-1) ?? n.type, namespace: parts.slice(0, -1).join("."), props },
  };
}

/**
 * The most nodes drawn: React Flow mounts every node to measure it, and 5,000 took 7 s and 190 MB. A larger graph
 * is drawn in part (its first nodes in graph order and the edges between them), and the page says so.
 */
export const DRAW_MAX = 500;

/** The part of a graph that is drawn: its first `DRAW_MAX` nodes and the edges among them. */
function drawnPart(nodes: GraphNode[], edges: GraphEdge[]): { nodes: GraphNode[]; edges: GraphEdge[] } {
  if (nodes.length <= DRAW_MAX) return { nodes, edges };
  const part = nodes.slice(0, DRAW_MAX);
  const ids = new Set(part.map((n) => n.id));
  return { nodes: part, edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)) };
}

export default function Graph(props: {
  nodes: GraphNode[];
  edges: GraphEdge[];
  runs?: Record<string, NodeRun>;
  version?: number;
}) {
  const { runs, version } = props;
  const auto = useMemo(() => layout(props.nodes, props.edges), [props.nodes, props.edges]);
  const { nodes, edges } = useMemo(() => drawnPart(props.nodes, props.edges), [props.nodes, props.edges]);
  const flowNodes = useMemo(() => nodes.map((n) => toFlowNode(n, positionOf(n) ?? auto.get(n.id)!)), [nodes, auto]);
  const run = useMemo(() => ({ runs, version: version ?? 0 }), [runs, version]);
  // Edges change only when a source starts or stops running: not on every frame of a stream.
  const animatedKey = edges.map((e) => (runs?.[e.source]?.status === "running" ? "1" : "0")).join("");
  const flowEdges = useMemo(
    () =>
      edges.map((e, i) => ({
        id: e.id ?? `e${i}`,
        source: e.source,
        target: e.target,
        animated: animatedKey[i] === "1",
      })),
    [edges, animatedKey],
  );
  return (
    <div className="graph">
      {nodes.length < props.nodes.length && (
        <p className="graph-note muted" data-testid="graph-part">
          {nodes.length.toLocaleString("en")} of {props.nodes.length.toLocaleString("en")} nodes drawn
        </p>
      )}
      <RunCtx.Provider value={run}>
        <ReactFlow
          nodes={flowNodes}
          edges={flowEdges}
          nodeTypes={nodeTypes}
          nodesDraggable={false}
          nodesConnectable={false}
          elementsSelectable={false}
          fitView
          fitViewOptions={{ maxZoom: 1 }}
          proOptions={{ hideAttribution: true }}
          colorMode="dark"
        >
          <Background />
          <Controls showInteractive={false} />
        </ReactFlow>
      </RunCtx.Provider>
    </div>
  );
}
