/**
 * The proxy's front door: TLS termination with ACME, self-signed or operator certificates, and
 * HTTP + WebSocket routing to one or more gateways with health checks. `proxy/` imports nothing from other Nodeway
 * folders but `obs/` (log and metrics).
 *
 * @example
 * const config = compileProxyConfig({ domain: ["example.com"], email: "ops@example.com", upstream:
 * ["http://127.0.0.1:8000"] });
 * const proxy = await startProxy(config);
 * // …
 * await proxy.stop();
 */
export {
  compileProxyConfig,
  DEV_TLS_OPTIONS,
  LETS_ENCRYPT_DIRECTORY_URL,
  PROXY_OPTION_KEYS,
  TlsMode,
} from "./config.js";
export type { ProxyConfig, ProxyOptions, UpstreamTarget } from "./config.js";
export { startProxy } from "./server.js";
export type { RunningProxy } from "./server.js";
export type { ProxyEvent, ProxyHooks } from "./events.js";
export type { CertificateInfo } from "./cert-manager.js";
export type { UpstreamHealth } from "./upstreams.js";
export {
  AcmeError,
  CertificateError,
  InvalidConfigError,
  ProxyError,
  ProxyErrorCode,
  StoreLockedError,
} from "./errors.js";
