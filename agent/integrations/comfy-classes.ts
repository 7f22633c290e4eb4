/**
 * ComfyUI's own node classes as graph nodes, as NodeTool names them: `comfy.<category>.<Class>` (e.g.
 * `comfy.loaders.CheckpointLoaderSimple`, `comfy.sampling.KSampler`). An agent beside a ComfyUI reads the classes
 * that ComfyUI has (`GET /object_info`) and offers each one: inputs as properties, outputs as handles named as
 * NodeTool names them (ComfyUI's output name in lower case: `model`, `clip`, `vae`, `latent`, `image`).
 *
 * Such nodes do not run one by one: latents, models and conditionings live in ComfyUI's memory. Before a graph runs,
 * each connected group of them is compiled into one ComfyUI prompt, run by one `lib.comfy.RunWorkflow` node:
 * - an edge between two of them becomes ComfyUI's link `[node, output index]`;
 * - a value from another node goes in on the handle `<node>:<input>` (media uploaded to ComfyUI's input folder);
 *   an image into an `IMAGE` input comes through a `LoadImage` added for it;
 * - an `IMAGE` output another node takes comes back through a `SaveImage` added for it; an output node of the group
 *   (`SaveImage`) gives its own files. Nothing else can leave ComfyUI, so any other edge out is refused by name.
 */
import {
  FORBIDDEN_KEYS,
  isControlEdge,
  validateGraph,
  type Graph,
  type GraphEdge,
  type GraphNode,
} from "../../protocol/index.js";
import type { NodeMetadata, PropertyMetadata } from "../../protocol/index.js";
import { NodeError } from "../engine/types.js";
import { isEmptyMedia } from "../nodes/media-util.js";

export interface ComfyInput {
  name: string;
  /** ComfyUI's type: `INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO`, or a link type (`MODEL`, `IMAGE`, …). */
  type: string;
  required: boolean;
  default?: unknown;
  min?: number;
  max?: number;
  /** A COMBO's choices. */
  values?: string[];
}

/** One class as `/object_info` describes it. */
export interface ComfyClass {
  name: string;
  title: string;
  description: string;
  category: string;
  inputs: ComfyInput[];
  /** Outputs in ComfyUI's order (a link's index), each with its handle name and ComfyUI type. */
  outputs: { name: string; type: string }[];
  /** Writes files (`SaveImage`): ComfyUI reports them, and a prompt needs at least one. */
  outputNode: boolean;
}

export type ComfyClasses = ReadonlyMap<string, ComfyClass>;

/** Bounds on what a ComfyUI's `/object_info` may add to the catalog. */
const MAX_CLASSES = 5_000;
const MAX_INPUTS = 200;
const MAX_VALUES_LISTED = 100;
/** The catalog's room for ComfyUI's classes: a NATS message holds the whole catalog (1 MB by default). */
export const COMFY_CATALOG_MAX_BYTES = 700_000;

const SCALARS: Readonly<Record<string, string>> = { INT: "int", FLOAT: "float", STRING: "str", BOOLEAN: "bool" };

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
const safeKey = (k: string) => k.length > 0 && k.length <= 200 && !FORBIDDEN_KEYS.has(k);

/** ComfyUI's `/object_info` answer as classes; entries it cannot read are left out. */
export function parseObjectInfo(raw: unknown): Map<string, ComfyClass> {
  const out = new Map<string, ComfyClass>();
  if (!isRecord(raw)) return out;
  for (const [name, info] of Object.entries(raw)) {
    if (out.size >= MAX_CLASSES) break;
    if (!safeKey(name) || !isRecord(info)) continue;
    const c = classOf(name, info);
    if (c) out.set(name, c);
  }
  return out;
}

function classOf(name: string, info: Record<string, unknown>): ComfyClass | null {
  const input = isRecord(info.input) ? info.input : {};
  const inputs: ComfyInput[] = [];
  for (const [group, required] of [
    ["required", true],
    ["optional", false],
  ] as const) {
    const specs = isRecord(input[group]) ? input[group] : {};
    for (const [inputName, spec] of Object.entries(specs)) {
      if (inputs.length >= MAX_INPUTS || !safeKey(inputName)) continue;
      const i = inputOf(inputName, spec, required);
      if (i) inputs.push(i);
    }
  }
  const types = Array.isArray(info.output) ? info.output : [];
  const names = Array.isArray(info.output_name) ? info.output_name : types;
  const seen = new Set<string>();
  const outputs = types.map((t, i) => {
    const type = Array.isArray(t) ? "COMBO" : String(t);
    let handle = String(names[i] ?? type).toLowerCase();
    if (seen.has(handle)) handle = `${handle}_${i}`;
    seen.add(handle);
    return { name: handle, type };
  });
  const text = (v: unknown, max: number) => (typeof v === "string" ? v.slice(0, max) : "");
  return {
    name,
    title: text(info.display_name, 200) || name,
    description: text(info.description, 300),
    category: text(info.category, 200),
    inputs,
    outputs,
    outputNode: info.output_node === true,
  };
}

/** One input spec: `[type]`, `[type, options]`, `[[choices…], options]` or `["COMBO", {options: […]}]`. */
function inputOf(name: string, spec: unknown, required: boolean): ComfyInput | null {
  if (!Array.isArray(spec) || spec.length === 0) return null;
  const [kind, opts0] = spec as [unknown, unknown];
  const opts = isRecord(opts0) ? opts0 : {};
  const choices = Array.isArray(kind) ? kind : kind === "COMBO" && Array.isArray(opts.options) ? opts.options : null;
  const i: ComfyInput = { name, type: choices ? "COMBO" : String(kind), required };
  if (choices) i.values = choices.map(String);
  if (opts.default !== undefined && (typeof opts.default !== "object" || opts.default === null))
    i.default = opts.default;
  else if (choices && choices.length > 0) i.default = String(choices[0]);
  if (typeof opts.min === "number") i.min = opts.min;
  if (typeof opts.max === "number") i.max = opts.max;
  return i;
}

/** The node type a class is offered as: its category's path under `comfy.` (spaces as `_`), then its name. */
export function nodeTypeOf(c: ComfyClass): string {
  const path = c.category
    .split("/")
    .map((s) => s.trim().replace(/[\s.]+/g, "_"))
    .filter(Boolean);
  return ["comfy", ...path, c.name].join(".");
}

/** The class a `comfy.` node type names: by its offered name or by its class name under any namespace. */
export function classOfType(type: string, classes: ComfyClasses, offered: ReadonlyMap<string, ComfyClass>) {
  const own = offered.get(type);
  if (own) return own;
  for (let dot = type.indexOf("."); dot >= 0; dot = type.indexOf(".", dot + 1)) {
    const c = classes.get(type.slice(dot + 1));
    if (c) return c;
  }
  return undefined;
}

/** A ComfyUI link type as a catalog type: NodeTool's `image` for an IMAGE, `comfy.<type>` for the others. */
const linkType = (t: string) => (t === "IMAGE" ? "image" : `comfy.${t.toLowerCase()}`);

function propertyOf(i: ComfyInput): PropertyMetadata {
  const type = i.values ? "enum" : (SCALARS[i.type] ?? linkType(i.type));
  return {
    name: i.name,
    type,
    ...(i.default !== undefined ? { default: i.default } : {}),
    ...(i.required ? { required: true } : {}),
    ...(i.min !== undefined ? { min: i.min } : {}),
    ...(i.max !== undefined ? { max: i.max } : {}),
    ...(i.values ? { values: i.values.slice(0, MAX_VALUES_LISTED) } : {}),
  };
}

/** The catalog entry of a class: pool `comfyui`, the class named so NodeTool's other namespaces for it resolve. */
export function classMetadata(c: ComfyClass): NodeMetadata {
  const type = nodeTypeOf(c);
  const outputs = c.outputs.map((o) => ({ name: o.name, type: linkType(o.type) }));
  // A save node has no outputs in ComfyUI; its files leave on `image`.
  if (outputs.length === 0 && c.outputNode) outputs.push({ name: "image", type: "image" });
  return {
    node_type: type,
    title: c.title,
    description: c.description,
    namespace: type.slice(0, type.length - c.name.length - 1),
    properties: c.inputs.map(propertyOf),
    outputs,
    is_dynamic: false,
    is_streaming: false,
    pool: "comfyui",
    comfy_class: c.name,
  };
}

/**
 * The classes' catalog entries that fit in `maxBytes` of JSON, skipping a type the agent's library already has;
 * `left` counts those that did not fit.
 */
export function classesCatalog(
  classes: ComfyClasses,
  taken: (type: string) => boolean,
  maxBytes = COMFY_CATALOG_MAX_BYTES,
): { entries: NodeMetadata[]; offered: Map<string, ComfyClass>; left: number } {
  const entries: NodeMetadata[] = [];
  const offered = new Map<string, ComfyClass>();
  let bytes = 0;
  let left = 0;
  for (const c of classes.values()) {
    const m = classMetadata(c);
    if (taken(m.node_type) || offered.has(m.node_type)) continue;
    const size = JSON.stringify(m).length + 1;
    if (bytes + size > maxBytes) {
      left++;
      continue;
    }
    bytes += size;
    entries.push(m);
    offered.set(m.node_type, c);
  }
  return { entries, offered, left };
}

type Prompt = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

/** One compiled group: its prompt, what its node takes as data, and the graph's edges in and out rewritten. */
interface Group {
  id: string;
  prompt: Prompt;
  data: Record<string, unknown>;
  /** The SaveImage added for an output other nodes take, by `<prompt id>/<output index>`. */
  saves: Map<string, string>;
}

const isMediaValue = (v: unknown) =>
  v instanceof Uint8Array ||
  (isRecord(v) && typeof v.type === "string" && ["image", "audio", "video"].includes(v.type) && !isEmptyMedia(v));

/**
 * `graph` with each connected group of ComfyUI class nodes replaced by one `lib.comfy.RunWorkflow` node running
 * them as one prompt (see the file's comment). `isLibraryType` says which `comfy.` types are the agent's own nodes;
 * `classes` is null on an agent without a ComfyUI, where a graph with such nodes fails naming the setting.
 */
export function compileComfyGroups(
  graph: Graph,
  isLibraryType: (type: string) => boolean,
  comfy: { classes: ComfyClasses; offered: ReadonlyMap<string, ComfyClass> } | null,
): Graph {
  const members = new Map<string, ComfyClass>();
  for (const n of graph.nodes) {
    if (!n.type.startsWith("comfy.") || isLibraryType(n.type)) continue;
    if (!comfy)
      throw new NodeError(
        `node ${n.id} (${n.type}) is a ComfyUI node: it runs only on an agent beside a ComfyUI (--comfyui-url), in pool comfyui`,
      );
    const c = classOfType(n.type, comfy.classes, comfy.offered);
    if (!c) throw new NodeError(`node ${n.id} (${n.type}): the ComfyUI beside this agent has no such node class`);
    members.set(n.id, c);
  }
  if (members.size === 0) return graph;
  const groups = groupsOf(graph, members);
  const taken = new Set(graph.nodes.map((n) => n.id));
  const promptIds = promptIdsOf([...members.keys()], taken);
  const groupOf = new Map<string, Group>();
  groups.forEach((ids, k) => {
    let id = groups.length === 1 ? "comfyui" : `comfyui-${k + 1}`;
    while (taken.has(id)) id = `${id}_`;
    taken.add(id);
    const g: Group = { id, prompt: {}, data: { workflow: {}, timeout: 86_400 }, saves: new Map() };
    for (const m of ids) groupOf.set(m, g);
  });
  const edges: GraphEdge[] = [];
  const byTarget = new Map<string, GraphEdge>();
  for (const e of graph.edges) if (!isControlEdge(e)) byTarget.set(`${e.target}\u0000${e.targetHandle}`, e);
  const node = new Map(graph.nodes.map((n) => [n.id, n]));
  for (const [id, c] of members) {
    const g = groupOf.get(id)!;
    g.prompt[promptIds.get(id)!] = {
      class_type: c.name,
      inputs: inputsOf(node.get(id)!, c, g, promptIds, (h) => byTarget.get(`${id}\u0000${h}`), edges, members),
    };
  }
  for (const e of graph.edges) {
    const from = groupOf.get(e.source);
    const to = groupOf.get(e.target);
    if (isControlEdge(e)) {
      if (from !== to || !from) edges.push({ ...e, source: from?.id ?? e.source, target: to?.id ?? e.target });
    } else if (from && !to) edges.push(edgeOut(e, members.get(e.source)!, from, promptIds.get(e.source)!));
    else if (!from && !to) edges.push(e);
  }
  const rest = graph.nodes.filter((n) => !members.has(n.id));
  const made = [...new Set(groupOf.values())].map(
    (g): GraphNode => ({ id: g.id, type: "lib.comfy.RunWorkflow", data: { ...g.data, workflow: g.prompt } }),
  );
  const compiled = { ...graph, nodes: [...rest, ...made], edges };
  try {
    validateGraph(compiled);
  } catch (err) {
    throw new NodeError(
      `the graph's ComfyUI nodes run as one ComfyUI prompt per connected group, and a group's output comes back into it through other nodes: ${(err as Error).message}`,
    );
  }
  return compiled;
}

/** Connected groups of ComfyUI nodes (linked by data edges between them), in graph order. */
function groupsOf(graph: Graph, members: ReadonlyMap<string, ComfyClass>): string[][] {
  const parent = new Map([...members.keys()].map((k) => [k, k]));
  const root = (k: string): string => {
    while (parent.get(k) !== k) k = parent.get(k)!;
    return k;
  };
  for (const e of graph.edges) {
    if (!isControlEdge(e) && members.has(e.source) && members.has(e.target)) parent.set(root(e.source), root(e.target));
  }
  const groups = new Map<string, string[]>();
  for (const k of members.keys()) {
    const r = root(k);
    groups.set(r, [...(groups.get(r) ?? []), k]);
  }
  return [...groups.values()];
}

/** Node ids as the prompt's: the graph's own where `<id>:<input>` and `<id>.<input>` can carry them, else `nN`. */
function promptIdsOf(ids: string[], taken: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  let n = 0;
  for (const id of ids) {
    let p = id;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id) || FORBIDDEN_KEYS.has(id)) {
      do p = `n${++n}`;
      while (taken.has(p));
      taken.add(p);
    }
    out.set(id, p);
  }
  return out;
}

/** A helper node's prompt id, unique in the group's prompt. */
function helperId(g: Group, base: string): string {
  let id = base;
  while (Object.hasOwn(g.prompt, id)) id = `${id}_`;
  return id;
}

/** A node's ComfyUI inputs: links inside the group, handles for values from outside, saved values, defaults. */
function inputsOf(
  n: GraphNode,
  c: ComfyClass,
  g: Group,
  promptIds: ReadonlyMap<string, string>,
  edgeInto: (handle: string) => GraphEdge | undefined,
  edges: GraphEdge[],
  members: ReadonlyMap<string, ComfyClass>,
): Record<string, unknown> {
  const pid = promptIds.get(n.id)!;
  const label = `node ${n.id} (${c.name})`;
  const data = isRecord(n.data) ? n.data : {};
  const inputs: Record<string, unknown> = {};
  /** A LoadImage of its own for an image that comes from outside ComfyUI into an IMAGE input. */
  const loadImage = (name: string) => {
    const h = helperId(g, `${pid}-${name}`);
    g.prompt[h] = { class_type: "LoadImage", inputs: { image: "" } };
    inputs[name] = [h, 0];
    return `${h}:image`;
  };
  for (const i of c.inputs) {
    const e = edgeInto(i.name);
    const linked = !(i.type in SCALARS) && i.type !== "COMBO";
    if (e && members.has(e.source)) {
      inputs[i.name] = [promptIds.get(e.source)!, outputIndex(members.get(e.source)!, e.sourceHandle ?? "", e.source)];
    } else if (e) {
      if (linked && i.type !== "IMAGE")
        throw new NodeError(
          `${label}: input "${i.name}" takes a ComfyUI ${i.type}, which only a ComfyUI node can give (it comes from node ${e.source})`,
        );
      edges.push({ ...e, target: g.id, targetHandle: i.type === "IMAGE" ? loadImage(i.name) : `${pid}:${i.name}` });
    } else if (Object.hasOwn(data, i.name) && isMediaValue(data[i.name])) {
      g.data[i.type === "IMAGE" ? loadImage(i.name) : `${pid}:${i.name}`] = data[i.name];
    } else if (!linked && Object.hasOwn(data, i.name) && data[i.name] !== null && typeof data[i.name] !== "object") {
      inputs[i.name] = data[i.name];
    } else if (!linked && i.default !== undefined) {
      inputs[i.name] = i.default;
    } else if (i.required) {
      throw new NodeError(`${label}: input "${i.name}" (${i.type}) is required and not connected`);
    }
  }
  return inputs;
}

/** The index of the output a handle names: its handle name, ComfyUI's name or type in any case, or its index. */
function outputIndex(c: ComfyClass, handle: string, nodeId: string): number {
  const h = handle.toLowerCase();
  let i = c.outputs.findIndex((o) => o.name === h);
  if (i < 0) i = c.outputs.findIndex((o) => o.type.toLowerCase() === h);
  if (i < 0 && /^\d+$/.test(h) && Number(h) < c.outputs.length) i = Number(h);
  if (i < 0)
    throw new NodeError(
      `node ${nodeId} (${c.name}) has no output "${handle}" (it has ${c.outputs.map((o) => o.name).join(", ") || "none"})`,
    );
  return i;
}

/** An edge from a ComfyUI node to another node: a saved file of the group's node, or an image saved for it. */
function edgeOut(e: GraphEdge, c: ComfyClass, g: Group, pid: string): GraphEdge {
  const handle = e.sourceHandle ?? "";
  if (c.outputNode && c.outputs.length === 0) {
    const kind = /audio/i.test(handle) ? "audio" : /video|gif/i.test(handle) ? "video" : "image";
    return { ...e, source: g.id, sourceHandle: `${pid}:${kind}` };
  }
  const i = outputIndex(c, handle, e.source);
  const type = c.outputs[i]!.type;
  if (type !== "IMAGE")
    throw new NodeError(
      `node ${e.source} (${c.name}): output "${handle}" is a ComfyUI ${type}; only images come back from ComfyUI, so only a ComfyUI node can take it (node ${e.target} does not run in ComfyUI)`,
    );
  let h = g.saves.get(`${pid}/${i}`);
  if (!h) {
    h = helperId(g, `${pid}-out-${i}`);
    g.prompt[h] = { class_type: "SaveImage", inputs: { filename_prefix: "nodeway", images: [pid, i] } };
    g.saves.set(`${pid}/${i}`, h);
  }
  return { ...e, source: g.id, sourceHandle: `${h}:image` };
}
