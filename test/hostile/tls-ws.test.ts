// The hostile WebSocket, raw-socket and graph inputs of ws.test.ts through the TLS proxy of `nodeway up --tls`.
import t from "tap";
import { hostileFile, hostileGraphs, rawProtocol, wsCommands, wsFollows, wsOversize } from "./suites.js";

hostileFile(t, { tls: true, name: "WebSocket, raw sockets and graphs through the TLS proxy" }, [
  async function webSocketCommands(st, h) {
    await wsCommands(st, h, 30);
  },
  async function thousandsOfFollowsOnOneSocket(st, h) {
    await wsFollows(st, h, 1_500);
  },
  rawProtocol,
  hostileGraphs,
  // Last: through the proxy, an oversize frame has left the only upstream marked down.
  wsOversize,
]);
