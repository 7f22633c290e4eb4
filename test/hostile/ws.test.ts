// Hostile WebSocket frames, raw-socket HTTP garbage and hostile graphs straight at the gateway of `nodeway up`.
import t from "tap";
import { hostileFile, hostileGraphs, rawProtocol, wsCommands, wsFollows, wsOversize } from "./suites.js";

hostileFile(t, { tls: false, name: "WebSocket, raw sockets and graphs at the gateway" }, [
  async function webSocketCommands(st, h) {
    await wsCommands(st, h, 60);
  },
  async function thousandsOfFollowsOnOneSocket(st, h) {
    await wsFollows(st, h, 2_000);
  },
  rawProtocol,
  hostileGraphs,
  // Last: through the proxy, an oversize frame has left the only upstream marked down.
  wsOversize,
]);
