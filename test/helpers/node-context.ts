/**
 * A node run in-process, without an engine: the context a node gets (no-op emitters, default limits) and a run
 * that fills in the node's declared defaults as the engine does.
 */
import {
  DEFAULT_NODE_LIMITS,
  type GeneratorNodeDef,
  type NodeContext,
  type ProcessNodeDef,
} from "../../agent/engine/types.js";

/** The context a node of `type` runs with; `extra` replaces any field (assets, limits, signal). */
export function nodeContext(type: string, extra: Record<string, unknown> = {}): NodeContext {
  return {
    signal: new AbortController().signal,
    nodeId: "n",
    nodeType: type,
    data: {},
    dynamicOutputs: {},
    params: {},
    limits: DEFAULT_NODE_LIMITS,
    chunk() {},
    progress() {},
    log() {},
    preview() {},
    sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
    ...extra,
  } as unknown as NodeContext;
}

/** The node's declared property defaults, as the engine gives them. */
export const defaultsOf = (def: ProcessNodeDef | GeneratorNodeDef): Record<string, unknown> =>
  Object.fromEntries(def.properties.map((p) => [p.name, p.default]));

/** Runs a process node with its defaults under `inputs`. */
export const runProcess = (
  def: ProcessNodeDef,
  inputs: Record<string, unknown>,
  ctx: NodeContext = nodeContext(def.type),
): Promise<Record<string, unknown>> => Promise.resolve(def.process(ctx, { ...defaultsOf(def), ...inputs }));

/** The message a promise rejects with, or "(no error)"; `named` puts the error's class before it. */
export const errorOf = (p: Promise<unknown>, named = false): Promise<string> =>
  p.then(
    () => "(no error)",
    (e: Error) => (named ? `${e.constructor.name}: ${e.message}` : e.message),
  );
