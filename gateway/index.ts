/** gateway/: the HTTP + WebSocket front of the system. Explicit list; nothing else is public. */
export { startGateway } from "./server.js";
export type { RunningGateway } from "./server.js";
export { compileGatewayConfig, GATEWAY_OPTION_KEYS } from "./config.js";
export type { GatewayOptions, GatewayConfig } from "./config.js";
export { isExpired, newToken } from "./auth.js";
