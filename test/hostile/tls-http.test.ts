// The hostile HTTP inputs of http.test.ts through the TLS proxy of `nodeway up --tls`.
import t from "tap";
import { crossSite, hostileFile, jsonBodies, pathParams } from "./suites.js";

hostileFile(t, { tls: true, name: "HTTP through the TLS proxy" }, [
  async function pathParameters(st, h) {
    await pathParams(st, h, 6);
  },
  async function jsonBodiesOfEveryRoute(st, h) {
    await jsonBodies(st, h, 10);
  },
  crossSite,
]);
