/** The OpenAI-compatible API (`/v1`): errors answered in OpenAI's shape. */
import { MODEL_ID_GRAMMAR, type Reply, type Req } from "../http.js";
import { OpenAiApi } from "../openai.js";
import { readJson, type RouteContext } from "./context.js";

export function registerOpenAiRoutes(ctx: RouteContext): void {
  const { router, config, metrics } = ctx;
  const openai = new OpenAiApi(
    ctx.jobs,
    ctx.models,
    ctx.hub,
    (reply) => readJson(reply.res, reply, config.maxBodyBytes),
    config.wsMaxBackpressureBytes,
    () => metrics.eventsOutHttp++,
  );

  async function listModels(_req: Req, reply: Reply): Promise<void> {
    await openai.listModels(reply).catch((err: unknown) => openai.fail(reply, err));
  }
  async function getModel(req: Req, reply: Reply): Promise<void> {
    await openai.getModel(req.params[0]!, reply).catch((err: unknown) => openai.fail(reply, err));
  }
  async function completeChat(_req: Req, reply: Reply): Promise<void> {
    await openai.complete(reply).catch((err: unknown) => openai.fail(reply, err));
  }

  router.route("get", "/v1/models", listModels);
  router.route("get", "/v1/models/:id", getModel, { grammar: MODEL_ID_GRAMMAR });
  router.route("post", "/v1/chat/completions", completeChat);
}
