/**
 * One name per setting (design §2): `--max-jobs` ↔ `NODEWAY_MAX_JOBS` ↔ `maxJobs` in the config file.
 * Precedence: flags > environment > config file. Unknown flags and keys are errors, caught at start-up.
 */
import { readFileSync, existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envName = (key: string) => `NODEWAY_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
export const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string[]>;
}

/** `--k v`, `--k=v`, bare `--flag` (→ "true"); repeated flags collect. */
export function parseArgs(argv: string[], booleanFlags: ReadonlySet<string>): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    let name = a.slice(2);
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else if (booleanFlags.has(name)) {
      // `--access-log false` means what it says: an explicit true/false after a boolean flag is its value (it
      // used to become a stray argument, leaving the flag on).
      const next = argv[i + 1];
      if (next === "true" || next === "false") {
        value = next;
        i++;
      } else value = "true";
    } else {
      value = argv[++i];
      if (value === undefined) throw new Error(`--${name} needs a value`);
    }
    const list = flags.get(name) ?? [];
    list.push(value);
    flags.set(name, list);
  }
  return { positional, flags };
}

export function nodewayHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.NODEWAY_HOME ?? join(homedir(), ".nodeway");
}

/**
 * Builds the options object for one command from flags, env and the config file section.
 * `aliases` maps a short flag to its key (`--nats` → `natsUrl`); `listKeys` collect repeated flags.
 */
export function settingsFor(
  section: string,
  keys: ReadonlySet<string>,
  args: ParsedArgs,
  opts: { aliases?: Record<string, string>; listKeys?: ReadonlySet<string>; consumed?: Set<string>; env?: NodeJS.ProcessEnv } = {},
): Record<string, unknown> {
  const env = opts.env ?? process.env;
  const out: Record<string, unknown> = {};
  const file = env.NODEWAY_CONFIG ?? join(nodewayHome(env), "config.json");
  if (existsSync(file)) {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    const sec = parsed[section];
    if (sec !== undefined) {
      if (sec === null || typeof sec !== "object") throw new Error(`${file}: "${section}" must be an object`);
      for (const [k, v] of Object.entries(sec)) {
        if (!keys.has(k)) throw new Error(`${file}: unknown setting "${section}.${k}"`);
        out[k] = v;
      }
    }
  }
  for (const k of keys) {
    const v = env[envName(k)];
    if (v !== undefined && v !== "") out[k] = opts.listKeys?.has(k) ? v.split(",") : v;
  }
  for (const [flag, values] of args.flags) {
    const key = opts.aliases?.[flag] ?? camel(flag);
    if (!keys.has(key)) continue;
    opts.consumed?.add(flag);
    out[key] = opts.listKeys?.has(key) ? values.flatMap((v) => v.split(",")) : values[values.length - 1];
  }
  return out;
}
