/**
 * One name per setting: `--max-jobs` ↔ `NODEWAY_MAX_JOBS` ↔ `maxJobs` in the config file.
 * Precedence: flags > environment > config file. Unknown flags and keys are errors, caught at start-up.
 */
import { readFileSync, existsSync, readdirSync, statfsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseArgs as parseArgv, type ParseArgsConfig } from "node:util";
import { ASSETS_DEFAULTS, EVENTS_DEFAULTS, assertNever, withoutBom } from "../protocol/index.js";

export const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envName = (key: string) => `NODEWAY_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
export const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string[]>;
}

/** The flags one command takes. */
export interface CommandFlags {
  /** Flags that take no value; `--x true`, `--x false` and `--x=false` give one explicitly. */
  switches: ReadonlySet<string>;
  /** Flags that take a value (`--k v` or `--k=v`). */
  values: ReadonlySet<string>;
  /** Whether the command takes arguments that are not flags (a file, a prompt). */
  positionals: boolean;
}

/** A command line the command does not take: the CLI exits 2 with its message. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The flags of a command built from its settings: `maxJobs` → `--max-jobs`, each alias (`--nats`), and `extra`.
 * Those in `switches` take no value.
 */
export function commandFlags(
  keys: Iterable<string>,
  switches: ReadonlySet<string>,
  opts: { aliases?: Record<string, string>; extra?: readonly string[]; positionals?: boolean } = {},
): CommandFlags {
  const all = [...[...keys].map(kebab), ...Object.keys(opts.aliases ?? {}), ...(opts.extra ?? [])];
  return { switches, values: new Set(all.filter((f) => !switches.has(f))), positionals: opts.positionals ?? false };
}

/**
 * `--k v`, `--k=v`, bare `--flag` (→ "true", or the `true`/`false` after it); repeated flags collect, in order.
 * Strict: a flag the command does not take, a value missing, or an argument where none is taken throws
 * `UsageError`. After `--` every argument is positional; single-dash ones (`-5`) are too, as they always were.
 */
export function parseArgs(argv: readonly string[], spec: CommandFlags): ParsedArgs {
  const options: Record<string, { type: "string" | "boolean"; multiple: true }> = {};
  for (const f of spec.switches) options[f] = { type: "boolean", multiple: true };
  for (const f of spec.values) options[f] = { type: "string", multiple: true };
  // Unknown flags and misplaced values are checked on the tokens below, so each error is said in the CLI's words.
  const config: ParseArgsConfig = { args: [...argv], options, strict: false, allowPositionals: true, tokens: true };
  const tokens: ArgToken[] = parseArgv(config).tokens ?? [];
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  const shortArgs = new Set<number>();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    switch (t.kind) {
      case "positional":
        positional.push(t.value);
        break;
      case "option-terminator":
        break;
      case "option": {
        if (!t.rawName.startsWith("--")) {
          // `-abc` is three tokens of one argument: it is kept once, as it was given.
          if (shortArgs.has(t.index)) break;
          shortArgs.add(t.index);
          positional.push(argv[t.index]!);
          break;
        }
        const value = flagValue(t, tokens[i + 1], spec);
        if (value.tookNext) i++;
        flags.set(t.name, [...(flags.get(t.name) ?? []), value.value]);
        break;
      }
      default:
        assertNever(t, "argument");
    }
  }
  if (!spec.positionals && positional.length > 0) {
    throw new UsageError(`unexpected argument "${positional[0]}" (flags take the form --name value)`);
  }
  return { positional, flags };
}

type ArgToken = NonNullable<ReturnType<typeof parseArgv>["tokens"]>[number];
type OptionToken = Extract<ArgToken, { kind: "option" }>;

/** The value of one flag: its inline value, the argument after it, or for a switch "true" (or an explicit one). */
function flagValue(
  t: OptionToken,
  next: ArgToken | undefined,
  spec: CommandFlags,
): { value: string; tookNext: boolean } {
  if (spec.switches.has(t.name)) {
    if (t.value !== undefined) return { value: t.value, tookNext: false };
    // `--access-log false` means what it says: the flag is off (not on, with a stray `false`).
    const explicit =
      next?.kind === "positional" && next.index === t.index + 1 && (next.value === "true" || next.value === "false");
    return explicit ? { value: next.value, tookNext: true } : { value: "true", tookNext: false };
  }
  if (!spec.values.has(t.name)) throw new UsageError(`unknown flag --${t.name}`);
  if (t.value === undefined) throw new UsageError(`--${t.name} needs a value`);
  return { value: t.value, tookNext: false };
}

export function nodewayHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.NODEWAY_HOME ?? join(homedir(), ".nodeway");
}

/** The sections a config file may hold, one per long-running command. */
export const CONFIG_SECTIONS: ReadonlySet<string> = new Set(["gateway", "agent", "proxy"]);

/** The config file: NODEWAY_CONFIG, else `config.json` in the Nodeway home. */
export function configFile(env: NodeJS.ProcessEnv = process.env): string {
  return env.NODEWAY_CONFIG ?? join(nodewayHome(env), "config.json");
}

/** What a JSON value is, in an error message. */
export const jsonKind = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "a list" : `a ${typeof v}`);

/**
 * The config file's sections; none when it does not exist. A file that cannot be read, is not JSON, is not an
 * object of known sections, or has a section that is not an object throws, naming the file and what is wrong.
 */
export function readConfigFile(file: string): Record<string, Record<string, unknown>> {
  if (!existsSync(file)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(withoutBom(readFileSync(file, "utf8")));
  } catch (err) {
    const why = (err as Error).message;
    throw new Error(
      err instanceof SyntaxError
        ? `config file ${file}: not valid JSON (${why})`
        : `cannot read config file ${file}: ${why}`,
    );
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
    throw new Error(
      `config file ${file}: must hold a JSON object of sections (gateway, agent, proxy), got ${jsonKind(parsed)}`,
    );
  for (const [name, sec] of Object.entries(parsed)) {
    if (!CONFIG_SECTIONS.has(name))
      throw new Error(`config file ${file}: unknown section "${name}" (the sections are gateway, agent, proxy)`);
    if (sec === null || typeof sec !== "object" || Array.isArray(sec))
      throw new Error(`config file ${file}: "${name}" must be an object of settings, got ${jsonKind(sec)}`);
  }
  return parsed as Record<string, Record<string, unknown>>;
}

/**
 * Builds the options object for one command from flags, env and the config file section.
 * `aliases` maps a short flag to its key (`--nats` → `natsUrl`); `listKeys` collect repeated flags.
 */
export function settingsFor(
  section: string,
  keys: ReadonlySet<string>,
  args: ParsedArgs,
  opts: {
    aliases?: Record<string, string>;
    listKeys?: ReadonlySet<string>;
    consumed?: Set<string>;
    env?: NodeJS.ProcessEnv;
  } = {},
): Record<string, unknown> {
  const env = opts.env ?? process.env;
  const out: Record<string, unknown> = {};
  const file = configFile(env);
  for (const [k, v] of Object.entries(readConfigFile(file)[section] ?? {})) {
    if (!keys.has(k)) throw new Error(`config file ${file}: unknown setting "${section}.${k}"`);
    out[k] = v;
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

const MIB = 1024 * 1024;

/**
 * The byte limits `nodeway up` gives the asset store and the events stream when the user set none: the defaults,
 * or less where the disk has less room. nats-server reserves each limit out of 75% of the disk free when it
 * started (16 GiB and 4 GiB need 27 GiB free), so here the two take at most 60% of `roomBytes`, 4 parts to 1.
 */
export function upStoreLimits(roomBytes: number): { assetsMaxBytes: number; eventsMaxBytes: number } {
  const share = (part: number, most: number) =>
    Math.max(MIB, Math.min(most, Math.floor((roomBytes * 0.6 * part) / MIB) * MIB));
  return {
    assetsMaxBytes: share(0.8, ASSETS_DEFAULTS.storeMaxBytes),
    eventsMaxBytes: share(0.2, EVENTS_DEFAULTS.maxBytes),
  };
}

/**
 * The room NATS has for `up`'s store in `dir`: the disk's free bytes plus what the store holds already (its own
 * streams reserve that part, so a store that filled up does not shrink its own limits); null where unknown.
 */
export function storeRoomBytes(dir: string): number | null {
  try {
    const fs = statfsSync(dir);
    let held = 0;
    for (const e of readdirSync(dir, { recursive: true, withFileTypes: true }))
      if (e.isFile()) held += statSync(join(e.parentPath ?? e.path, e.name)).size;
    return fs.bavail * fs.bsize + held;
  } catch {
    return null;
  }
}
