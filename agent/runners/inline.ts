/** The `inline` strategy: a graph runs in the agent's own event loop. */
import { runGraph, type RunGraphResult } from "../engine/engine.js";
import type { StrategyRun } from "./channel.js";

export function runInline(run: StrategyRun): Promise<RunGraphResult> {
  return runGraph(run);
}
