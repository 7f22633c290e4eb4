// Hostile HTTP inputs straight at the gateway of `nodeway up`: path params, JSON bodies, cross-site requests.
import t from "tap";
import { crossSite, hostileFile, jsonBodies, pathParams } from "./suites.js";

hostileFile(t, { tls: false, name: "HTTP at the gateway" }, [
  async function pathParameters(st, h) {
    await pathParams(st, h, 12);
  },
  async function jsonBodiesOfEveryRoute(st, h) {
    await jsonBodies(st, h, 25);
  },
  crossSite,
]);
