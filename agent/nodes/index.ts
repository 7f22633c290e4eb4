/**
 * The node library: every node type this agent can run, by NodeTool type name. The agent registers
 * `NODE_LIBRARY`'s metadata in its catalog and runs graphs against `nodeCatalog()`.
 */
import type { NodeDef } from "../engine/types.js";
import { findFfmpeg } from "../capabilities.js";
import { AUDIO_NODES } from "./audio.js";
import { IMAGE_NODES } from "./image.js";
import { PILLOW_NODES } from "./pillow.js";
import { videoNodesFor } from "./video.js";
import { AGENT_NODES } from "./agents.js";
import { BOOLEAN_NODES } from "./boolean.js";
import { CONSTANT_NODES } from "./constant.js";
import { CONTROL_NODES } from "./control.js";
import { DICTIONARY_NODES } from "./dictionary.js";
import { INPUT_OUTPUT_NODES } from "./input-output.js";
import { LIST_NODES } from "./list.js";
import { LLM_NODES } from "./llm.js";
import { MATH_NODES } from "./math.js";
import { TEST_NODES } from "./test-nodes.js";
import { TEXT_NODES } from "./text.js";
import { GENERATOR_NODES } from "./generators.js";
import { SAVE_NODES } from "./save.js";
import { DATA_NODES } from "./data.js";
import { SQLITE_NODES } from "./sqlite.js";
import { HTTP_NODES } from "./http.js";
import { SEARCH_NODES } from "./search.js";
import { STUB_NODES } from "./stubs.js";

/**
 * Every production node definition, each once (aliases are in `aliases`, not repeated here). The test and
 * benchmark nodes (`nodeway.test.*`: a spinning one, a heap-filling one) are not among them: an agent offers them
 * only when started with `testNodes` (`nodeLibrary`).
 */
export const NODE_LIBRARY: readonly NodeDef[] = Object.freeze([
  ...INPUT_OUTPUT_NODES,
  ...CONSTANT_NODES,
  ...TEXT_NODES,
  ...MATH_NODES,
  ...BOOLEAN_NODES,
  ...LIST_NODES,
  ...CONTROL_NODES,
  ...DICTIONARY_NODES,
  ...LLM_NODES,
  ...AGENT_NODES,
  ...IMAGE_NODES,
  ...PILLOW_NODES,
  ...AUDIO_NODES,
  ...videoNodesFor({ ffmpeg: findFfmpeg() !== null }),
  ...GENERATOR_NODES,
  ...SAVE_NODES,
  ...DATA_NODES,
  ...SQLITE_NODES,
  ...HTTP_NODES,
  ...SEARCH_NODES,
  ...STUB_NODES,
]);

/** The node library an agent offers: the production one, with `nodeway.test.*` when `testNodes` is set. */
export function nodeLibrary(testNodes: boolean): readonly NodeDef[] {
  return testNodes ? [...NODE_LIBRARY, ...TEST_NODES] : NODE_LIBRARY;
}

/**
 * Node type and every alias → definition. Throws if two definitions claim the same name, since the later one
 * would silently shadow the earlier.
 */
export function nodeCatalog(library: readonly NodeDef[] = NODE_LIBRARY): Map<string, NodeDef> {
  const catalog = new Map<string, NodeDef>();
  for (const def of library) {
    for (const name of [def.type, ...(def.aliases ?? [])]) {
      const seen = catalog.get(name);
      if (seen) throw new Error(`node type "${name}" is defined twice (${seen.type} and ${def.type})`);
      catalog.set(name, def);
    }
  }
  return catalog;
}
