/**
 * The deployment's default models. NodeTool saves many model properties empty (`{"type": "language_model"}`) for
 * the user to pick; the gateway fills each from its setting before the job is dispatched, so the job goes to the
 * pool of the provider that will run it (protocol `poolOfGraph`). One setting per kind of model property:
 * `defaultModel` (language models), `defaultImageModel`, `defaultSpeechModel` (text to speech) and
 * `defaultTranscriptionModel` (speech recognition), each `provider:id`. With none set a property stays empty and
 * the node fails naming the setting.
 */
import {
  InvalidConfigError,
  isLlmProvider,
  LLM_PROVIDERS,
  type Graph,
  type GraphNode,
  type NodeCatalog,
} from "../protocol/index.js";

/** A model a setting names. */
export interface DefaultModelRef {
  provider: string;
  id: string;
}

/** Property type (NodeTool's) → the default that fills it; absent: none set. */
export type DefaultModels = Readonly<Partial<Record<ModelPropertyType, DefaultModelRef>>>;

/** The setting of each kind of model property. */
export const DEFAULT_MODEL_SETTINGS = {
  language_model: "defaultModel",
  image_model: "defaultImageModel",
  tts_model: "defaultSpeechModel",
  asr_model: "defaultTranscriptionModel",
} as const;
export type ModelPropertyType = keyof typeof DEFAULT_MODEL_SETTINGS;
type DefaultModelKey = (typeof DEFAULT_MODEL_SETTINGS)[ModelPropertyType];

export const DEFAULT_MODEL_KEYS: readonly DefaultModelKey[] = Object.values(DEFAULT_MODEL_SETTINGS);

const PROVIDER = /^[a-z][a-z0-9_-]{0,63}$/;

/** `provider:id` (the id may have colons of its own: `ollama:llama3.2:1b`); throws `InvalidConfigError`. */
export function parseDefaultModel(key: string, v: unknown, languageModel: boolean): DefaultModelRef {
  const text = typeof v === "string" ? v.trim() : "";
  const colon = text.indexOf(":");
  const provider = colon > 0 ? text.slice(0, colon) : "";
  const id = colon > 0 ? text.slice(colon + 1) : "";
  if (!PROVIDER.test(provider) || id === "" || id.length > 256)
    throw new InvalidConfigError(key, `must be provider:model, e.g. "openai:gpt-4o-mini"; got ${JSON.stringify(v)}`);
  if (languageModel && !isLlmProvider(provider))
    throw new InvalidConfigError(
      key,
      `names provider "${provider}"; language models come from ${LLM_PROVIDERS.join(", ")}`,
    );
  return { provider, id };
}

/** The default-model settings of gateway options, checked (each absent or empty one is not set). */
export function compileDefaultModels(opts: Partial<Record<DefaultModelKey, unknown>>): DefaultModels {
  const out: Partial<Record<ModelPropertyType, DefaultModelRef>> = {};
  for (const [type, key] of Object.entries(DEFAULT_MODEL_SETTINGS) as [ModelPropertyType, DefaultModelKey][]) {
    const v = opts[key];
    if (v === undefined || v === null || v === "") continue;
    out[type] = parseDefaultModel(key, v, type === "language_model");
  }
  return Object.freeze(out);
}

/** A model value left for the user to pick: none, or no provider (NodeTool's `"empty"`) and no id. */
export function isEmptyModelValue(v: unknown): boolean {
  if (v === undefined || v === null || v === "") return true;
  if (typeof v !== "object" || Array.isArray(v)) return false;
  const { provider, id } = v as { provider?: unknown; id?: unknown };
  return (provider === undefined || provider === null || provider === "" || provider === "empty") && !id;
}

function isModelType(t: string): t is ModelPropertyType {
  return Object.hasOwn(DEFAULT_MODEL_SETTINGS, t);
}

/** A node with its empty model properties filled; the same node when there is nothing to fill. */
function filledNode(n: GraphNode, catalog: NodeCatalog, defaults: DefaultModels): GraphNode {
  const meta = catalog.get(n.type);
  if (!meta) return n;
  let data: Record<string, unknown> | null = null;
  for (const p of meta.properties) {
    if (!isModelType(p.type)) continue;
    const model = defaults[p.type];
    const saved = n.data && Object.hasOwn(n.data, p.name) ? n.data[p.name] : undefined;
    if (!model || !isEmptyModelValue(saved)) continue;
    data ??= { ...(n.data ?? {}) };
    const keep = saved !== null && typeof saved === "object" ? (saved as Record<string, unknown>) : {};
    data[p.name] = { ...keep, type: p.type, provider: model.provider, id: model.id, name: model.id };
  }
  return data ? { ...n, data } : n;
}

/**
 * The graph with every empty model property of a known node filled from `defaults` (the property's type says which
 * default); the graph given is not changed. Call it before `poolOfGraph`, so the pool is the filled provider's. No
 * catalog (no live agent): nothing is known to fill.
 */
export function resolveDefaultModels(graph: Graph, defaults: DefaultModels, catalog: NodeCatalog | undefined): Graph {
  if (!catalog || Object.keys(defaults).length === 0) return graph;
  let changed = false;
  const nodes = graph.nodes.map((n) => {
    const filled = filledNode(n, catalog, defaults);
    if (filled !== n) changed = true;
    return filled;
  });
  return changed ? { ...graph, nodes } : graph;
}
