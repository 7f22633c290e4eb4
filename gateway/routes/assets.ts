/** Assets: uploads, listing, metadata, content (GET and HEAD) and removal. */
import type { HttpResponse } from "uWebSockets.js";
import type { Reply, Req } from "../http.js";
import { limitParam, type RouteContext } from "./context.js";

export function registerAssetRoutes(ctx: RouteContext): void {
  const { router, assets } = ctx;

  async function uploadAsset(req: Req, reply: Reply, res: HttpResponse): Promise<void> {
    return assets.upload(req, reply, res);
  }
  async function listAssets(req: Req, reply: Reply): Promise<void> {
    return assets.list(req, reply, limitParam(req.query));
  }
  async function describeAsset(req: Req, reply: Reply): Promise<void> {
    return assets.describe(req.params[0]!, reply);
  }
  async function downloadAsset(req: Req, reply: Reply): Promise<void> {
    return assets.download(req.params[0]!, req, reply);
  }
  async function headAsset(req: Req, reply: Reply): Promise<void> {
    return assets.head(req.params[0]!, req, reply);
  }
  async function removeAsset(req: Req, reply: Reply): Promise<void> {
    return assets.remove(req.params[0]!, reply);
  }

  router.collection("post", "/api/assets", uploadAsset);
  router.collection("get", "/api/assets", listAssets);
  router.route("get", "/api/assets/:id", describeAsset);
  router.route("get", "/api/assets/:id/content", downloadAsset);
  router.route("del", "/api/assets/:id", removeAsset);
  router.head("/api/assets/:id/content", headAsset);
}
