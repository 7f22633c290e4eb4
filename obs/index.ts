/**
 * Observability shared by every role: structured logs (pino) and Prometheus metrics (prom-client).
 * Logs are JSON lines on stderr for a fleet's collectors; on a terminal (or NODEWAY_LOG_FORMAT=pretty) one
 * readable line each. Every line carries its component and whatever ids were bound (agent, job, attempt).
 */
import { pino, stdTimeFunctions } from "pino";
import { createRequire } from "node:module";
import type PinoPretty from "pino-pretty";
import { Registry, collectDefaultMetrics } from "prom-client";

import type { Logger } from "pino";
export type { Logger };
export { Counter, Gauge, Histogram, Registry } from "prom-client";

export type LogFormat = "json" | "pretty";

function logFormat(): LogFormat {
  const asked = process.env.NODEWAY_LOG_FORMAT;
  if (asked === "json" || asked === "pretty") return asked;
  return process.stderr.isTTY ? "pretty" : "json";
}

const LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

function logLevel(): string {
  const asked = process.env.NODEWAY_LOG_LEVEL ?? "info";
  return LEVELS.has(asked) ? asked : "info";
}

/** A logger for one component ("gateway", "agent", "proxy", "cli"), with ids bound to every line it writes. */
export function createLogger(component: string, bindings: Record<string, string | number> = {}): Logger {
  const options = {
    level: logLevel(),
    base: { component, ...bindings },
    timestamp: stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  // process.stderr is synchronous for files and pipes on Linux: a line logged just before exit is not lost.
  if (logFormat() === "pretty") {
    // Loaded only for a terminal: a fleet process writing JSON lines never pays for it.
    const pretty = createRequire(import.meta.url)("pino-pretty") as typeof PinoPretty;
    return pino(
      options,
      pretty({
        destination: process.stderr,
        sync: true,
        singleLine: true,
        colorize: process.stderr.isTTY,
        messageFormat: "[{component}] {msg}",
        ignore: "pid,hostname,component",
      }),
    );
  }
  return pino(options, process.stderr);
}

/** A metrics registry for one process role; process metrics (CPU, memory, event loop lag) included. */
export function createRegistry(role: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry, prefix: "nodeway_" });
  return registry;
}
