/** Chat threads and their messages (`/api/threads`, `/api/messages`). */
import type { HttpResponse } from "uWebSockets.js";
import { badRequest } from "../errors.js";
import type { Reply, Req } from "../http.js";
import { flagParam, limitParam, readJson, type RouteContext } from "./context.js";

export function registerThreadRoutes(ctx: RouteContext): void {
  const { router, threads } = ctx;
  const body = (res: HttpResponse, reply: Reply) => readJson(res, reply, ctx.config.maxBodyBytes);

  async function listThreads(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await threads.list(limitParam(req.query), req.query.get("cursor") ?? undefined));
  }
  async function createThread(_req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    reply.json(200, await threads.create(await body(res, reply)));
  }
  async function getThread(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await threads.get(req.params[0]!));
  }
  async function updateThread(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    const b = await body(res, reply);
    reply.json(200, await threads.update(req.params[0]!, b));
  }
  async function deleteThread(req: Req, reply: Reply): Promise<void> {
    await threads.delete(req.params[0]!);
    reply.json(200, { deleted: req.params[0] });
  }

  async function listMessages(req: Req, reply: Reply): Promise<void> {
    const threadId = req.query.get("thread_id");
    if (!threadId) throw badRequest(`"thread_id" is required`);
    const cursor = req.query.get("cursor");
    const reverse = flagParam(req.query, "reverse");
    const page = { limit: limitParam(req.query), ...(cursor ? { cursor } : {}), reverse };
    reply.json(200, await threads.messages(threadId, page));
  }
  async function addMessage(_req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    reply.json(200, await threads.addMessage(await body(res, reply)));
  }
  async function getMessage(req: Req, reply: Reply): Promise<void> {
    reply.json(200, await threads.message(req.params[0]!));
  }

  router.collection("get", "/api/threads", listThreads);
  router.collection("post", "/api/threads", createThread);
  router.route("get", "/api/threads/:id", getThread);
  router.route("put", "/api/threads/:id", updateThread);
  router.route("del", "/api/threads/:id", deleteThread);
  router.collection("get", "/api/messages", listMessages);
  router.collection("post", "/api/messages", addMessage);
  router.route("get", "/api/messages/:id", getMessage);
}
