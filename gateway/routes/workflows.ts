/** Saved workflows: `/api/workflows` and `/api/workflows/:id`. */
import type { HttpResponse } from "uWebSockets.js";
import { checkSchema, WorkflowBodySchema } from "../../protocol/index.js";
import type { Reply, Req } from "../http.js";
import { limitParam, readJson, type RouteContext } from "./context.js";

export function registerWorkflowRoutes(ctx: RouteContext): void {
  const { router, jobs, workflows } = ctx;

  async function workflowBody(res: HttpResponse, reply: Reply): Promise<Record<string, unknown>> {
    const b = await readJson(res, reply, ctx.config.maxBodyBytes);
    checkSchema(WorkflowBodySchema, b, "workflow");
    return b;
  }

  async function listWorkflows(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await workflows.list(limitParam(req.query), req.query.get("cursor") ?? undefined));
  }

  async function createWorkflow(_req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const b = await workflowBody(res, reply);
    reply.json(200, await jobs.withCatalog((catalog) => workflows.save(b, catalog)));
  }

  async function getWorkflow(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await workflows.get(req.params[0]!));
  }

  async function putWorkflow(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const b = await workflowBody(res, reply);
    reply.json(200, await jobs.withCatalog((catalog) => workflows.save(b, catalog, req.params[0]!)));
  }

  async function deleteWorkflow(req: Req, reply: Reply): Promise<void> {
    await workflows.delete(req.params[0]!);
    reply.json(200, { deleted: req.params[0] });
  }

  router.collection("get", "/api/workflows", listWorkflows);
  router.collection("post", "/api/workflows", createWorkflow);
  router.route("get", "/api/workflows/:id", getWorkflow);
  router.route("put", "/api/workflows/:id", putWorkflow);
  router.route("del", "/api/workflows/:id", deleteWorkflow);
}
