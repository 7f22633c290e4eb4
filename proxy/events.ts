import type { Registry } from "../obs/index.js";

/**
 * Operational events the proxy reports through `ProxyHooks.onEvent` (default: one line each in the proxy's log). They
 * are
 * data with stable `type` strings so the CLI or a log shipper can alert on them (`cert.renew_failed` is the alert
 * asked for by reliability S11).
 */
export type ProxyEvent =
  | { type: "proxy.listening"; httpsPort: number; httpPort: number }
  | {
      type: "cert.installed";
      name: string;
      serialNumber: string;
      notAfter: string;
      source: "acme" | "store" | "self-signed" | "files";
    }
  | {
      type: "cert.renew_failed";
      name: string;
      code: string;
      message: string;
      failures: number;
      retryInMs: number;
      /** True when an older certificate for the name is still being served. */
      stillServing: boolean;
    }
  | { type: "cert.rejected"; name: string; message: string }
  | { type: "upstream.down"; origin: string; reason: string }
  | { type: "upstream.up"; origin: string }
  | { type: "proxy.error"; where: string; message: string };

/** Injection points for `startProxy`: things that are functions, so they cannot come from a config file. */
export interface ProxyHooks {
  /** Receives each operational event. @default one line per event through `createLogger("proxy")` (stderr) */
  onEvent?: (event: ProxyEvent) => void;
  /** Receives each access-log line (without trailing newline). @default buffered writes to stdout */
  accessLog?: (line: string) => void;
  /** Wall clock in ms, injected by tests of renewal timing. @default Date.now */
  now?: () => number;
  /**
   * Where the proxy registers its metrics (one proxy per registry: the names would clash).
   * @default a registry of its own, `createRegistry("proxy")`
   */
  metrics?: Registry;
}
