/** What route modules are given: the gateway's parts, the router to register on, and small request helpers. */
import type { HttpResponse } from "uWebSockets.js";
import type { AssetsApi } from "../assets.js";
import type { GatewayConfig } from "../config.js";
import { badRequest } from "../errors.js";
import type { EventHub } from "../event-hub.js";
import { jsonBody, readBody, type Reply, type Req } from "../http.js";
import type { JobManager } from "../jobs.js";
import type { ModelDirectory } from "../models.js";
import type { NatsParts } from "../nats.js";
import type { ThreadStore } from "../threads.js";
import type { WorkflowStore } from "../workflows.js";
import type { WsHub } from "../ws.js";
import type { GatewayMetrics } from "./metrics.js";
import type { Router } from "./router.js";

/** A route's handler; it is called in the request's first tick, so it may still ask for the body. */
export type Handler = (req: Req, reply: Reply, res: HttpResponse) => Promise<void>;

export interface RouteContext {
  readonly config: Readonly<GatewayConfig>;
  readonly router: Router;
  readonly nats: NatsParts;
  readonly jobs: JobManager;
  readonly workflows: WorkflowStore;
  readonly hub: EventHub;
  readonly wsHub: WsHub;
  readonly threads: ThreadStore;
  readonly models: ModelDirectory;
  readonly assets: AssetsApi;
  readonly metrics: GatewayMetrics;
  /** Whether uWebSockets.js is its native build (reported by `/health`). */
  readonly native: boolean;
}

/** The request's JSON object body (`{}` when empty), within `maxBytes`. Asked for in the handler's first tick. */
export async function readJson(res: HttpResponse, reply: Reply, maxBytes: number): Promise<Record<string, unknown>> {
  return jsonBody(await readBody(res, reply, maxBytes), maxBytes, reply.requestContentType);
}

/** Largest `limit` a listing accepts. */
const LIST_LIMIT_MAX = 1000;
const LIST_LIMIT_DEFAULT = 100;

/**
 * An integer query parameter in `[min, max]` written in decimal digits, `dflt` when absent; 400 otherwise
 * (`Number` would also take `1e3`, `0x10` and spaces).
 */
export function intParam(q: URLSearchParams, k: string, dflt: number, max: number, min = 0): number {
  const v = q.get(k);
  if (v === null || v === "") return dflt;
  const x = /^\d{1,15}$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(x) || x < min || x > max) throw badRequest(`"${k}" must be an integer in [${min}, ${max}]`);
  return x;
}

/** A listing's `limit` (100 unless given, 1 to 1000: a page of nothing would have no cursor to go on from). */
export function limitParam(q: URLSearchParams): number {
  return intParam(q, "limit", LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, 1);
}

/** A `true`/`1` query flag (`?stream=true`, `?wait=1`). */
export function flagParam(q: URLSearchParams, k: string): boolean {
  const v = q.get(k);
  return v === "true" || v === "1";
}
