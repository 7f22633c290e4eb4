/** routes/: the gateway's HTTP API, one module per resource, all behind the router's guard. */
import type { RouteContext } from "./context.js";
import { registerAgentRoutes } from "./agents.js";
import { registerAssetRoutes } from "./assets.js";
import { registerConsoleRoutes } from "./console.js";
import { registerHealthRoutes } from "./health.js";
import { registerJobRoutes } from "./jobs.js";
import { registerOpenAiRoutes } from "./openai.js";
import { registerRunRoutes } from "./runs.js";
import { registerThreadRoutes } from "./threads.js";
import { registerWorkflowRoutes } from "./workflows.js";

export type { RouteContext } from "./context.js";
export { Router } from "./router.js";
export { GatewayMetrics } from "./metrics.js";

/** Registers every route, then the fallbacks (other HEADs, CORS preflights, 404) that must come last. */
export function registerRoutes(ctx: RouteContext): void {
  registerHealthRoutes(ctx);
  registerWorkflowRoutes(ctx);
  registerRunRoutes(ctx);
  registerJobRoutes(ctx);
  registerAgentRoutes(ctx);
  registerAssetRoutes(ctx);
  registerOpenAiRoutes(ctx);
  registerThreadRoutes(ctx);
  registerConsoleRoutes(ctx);
  ctx.router.fallbacks();
}
