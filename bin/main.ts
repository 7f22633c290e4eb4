/**
 * The `nodeway` command: argument parsing and process wiring only.
 *
 *   nodeway up [--tls] [--host H] [--port P] [--nats-port P]   embedded single machine: nats-server + gateway + agent
 *       --tls [--https-port P] [--http-port P]                 the proxy in front, self-signed for localhost (no HSTS)
 *   nodeway gateway [--host --port --nats <url> …]             the gateway alone
 *   nodeway agent [--nats <url> --name <n> --max-jobs N …]     one runner agent
 *   nodeway proxy --domain d --email e --upstream <url> …      the TLS proxy
 *   nodeway run <workflow.json> [--param k=v …] [--param k=@file …] [--save DIR] [--json]   run it, live; resumes
 *   nodeway jobs [--status S] [--workflow W] [--limit N] [--json]   jobs, newest first
 *   nodeway logs <job> [--follow] [--after SEQ] [--json]       a job's events; --follow: live to its end
 *   nodeway agents [--json]                                    the live agents
 *   nodeway nodes [--json]                                     the node types the live agents offer
 *   nodeway cancel <job> [--json]                              cancel a job
 *   nodeway chat [--model M] [--system S] [prompt …]           ask the fleet's models (/v1); no prompt: a conversation
 *   nodeway models [--json]                                    the models live agents offer
 *   nodeway token                                              a new random API token (for --api-tokens-file)
 *   nodeway nats-accounts --agents a,b --out accounts.conf     the NATS accounts of a fleet (one user per agent)
 * Commands that talk to a gateway take --gateway <url> (NODEWAY_GATEWAY_URL) and --token T (NODEWAY_API_TOKEN).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import type { RunningGateway } from "../gateway/index.js";
import type { RunningProxy } from "../proxy/index.js";
import type { Logger } from "../obs/index.js";
import {
  commandFlags,
  configFile,
  envName,
  kebab,
  nodewayHome,
  settingsFor,
  storeRoomBytes,
  upStoreLimits,
  type CommandFlags,
  type ParsedArgs,
} from "./settings.js";
import { ASSETS_DEFAULTS } from "../protocol/index.js";
import { apiToken, fail, flagOn, gatewayUrl, parseCommand, printJson, redactUrls } from "./commands/common.js";
import { cmdAgents, cmdCancel, cmdJobs, cmdLogs, cmdNodes } from "./commands/jobs.js";
import { cmdRun } from "./commands/run.js";
import { cmdNatsAccounts } from "./cmd-accounts.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/**
 * Flags that take no value, per command (`--tls` is a switch for `up` but takes a mode for `proxy`). Any of them
 * may still be given an explicit `true`/`false`.
 */
const BOOLEAN_FLAGS = {
  up: new Set(["tls", "no-examples", "allow-js-fallback", "access-log", "test-nodes"]),
  gateway: new Set(["allow-js-fallback", "access-log"]),
  agent: new Set(["test-nodes"]),
  proxy: new Set(["access-log"]),
} as const satisfies Record<string, ReadonlySet<string>>;
/** `up`'s own flags, beside the gateway's and the agent's settings. */
const UP_FLAGS = ["tls", "nats-port", "no-examples", "https-port", "http-port"];
/** The flags of the commands that talk to a gateway (they have no settings). */
const CLIENT_FLAGS = {
  chat: {
    switches: new Set(),
    values: new Set(["model", "system", "max-tokens", "gateway", "token"]),
    positionals: true,
  },
  models: { switches: new Set(["json"]), values: new Set(["gateway", "token"]), positionals: false },
  token: { switches: new Set(), values: new Set(), positionals: false },
} as const satisfies Record<string, CommandFlags>;
const LIST_KEYS = new Set([
  "apiTokens",
  "pools",
  "labels",
  "strategies",
  "allowedOrigins",
  "allowedHosts",
  "corsOrigins",
  "upstream",
  "domain",
  "trustedProxies",
  "onDemandAllow",
]);
const ALIASES = { nats: "natsUrl" };

/** The log of a long-running command (`up`, `gateway`): loaded with it, never by the gateway's clients. */
async function cliLogger(): Promise<Logger> {
  const { createLogger } = await import("../obs/index.js");
  return createLogger("cli");
}

/** SIGHUP re-reads the gateway's API tokens; a bad file is reported and the tokens in force stay. */
function reloadTokensOnHup(gw: () => RunningGateway | null, log: Logger): void {
  process.on("SIGHUP", () => {
    const g = gw();
    if (!g) return;
    try {
      g.reloadTokens();
    } catch (err) {
      log.warn(`API tokens not reloaded, the previous ones stay: ${(err as Error).message}`);
    }
  });
}

/** Resolves once `stop` is called by SIGINT or SIGTERM (the second signal exits at once). */
function onSignals(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const handler = (sig: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    void stop(sig).then(
      () => process.exit(0),
      (err: unknown) => fail(`stopping failed: ${(err as Error).message}`, 1),
    );
  };
  process.on("SIGINT", () => handler("SIGINT"));
  process.on("SIGTERM", () => handler("SIGTERM"));
}

/*
 * Each command loads the parts it runs and no others: a proxy process holding the agent's provider SDKs and the
 * gateway's modules had megabytes more heap for every major GC to mark (and took longer to start).
 */
const loadGateway = () => import("../gateway/index.js");
const loadAgent = () => import("../agent/index.js");
const loadProxy = () => import("../proxy/index.js");
/** Only the agent's setting names: `up` runs the agent as a child and needs no more of it. */
const loadAgentConfig = () => import("../agent/config.js");

async function cmdGateway(argv: readonly string[]): Promise<void> {
  const { startGateway, GATEWAY_OPTION_KEYS } = await loadGateway();
  const args = parseCommand(argv, commandFlags(GATEWAY_OPTION_KEYS, BOOLEAN_FLAGS.gateway, { aliases: ALIASES }));
  const opts = settingsFor("gateway", GATEWAY_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS });
  const gw = await startGateway(opts);
  process.stdout.write(`gateway listening on ${gw.url}\n`);
  reloadTokensOnHup(() => gw, await cliLogger());
  onSignals(() => gw.stop());
}

async function cmdAgent(argv: readonly string[]): Promise<void> {
  const { startAgent, AGENT_OPTION_KEYS } = await loadAgent();
  const args = parseCommand(argv, commandFlags(AGENT_OPTION_KEYS, BOOLEAN_FLAGS.agent, { aliases: ALIASES }));
  const opts = settingsFor("agent", AGENT_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS });
  const agent = await startAgent(opts);
  process.stdout.write(`agent ${agent.id} running\n`);
  // SIGTERM drains: finish or hand back running jobs within the grace period, then exit.
  onSignals(() => agent.stop({ graceful: true }));
  if (process.env.NODEWAY_STOP_WITH_PARENT === "1") stopWithParent(() => agent.stop({ graceful: true }));
}

/**
 * A supervised child (the agent of `nodeway up`) holds its parent's end of a pipe on stdin: when the parent dies,
 * however it died, the pipe closes and the child drains and exits instead of running on as an orphan.
 */
function stopWithParent(stop: () => Promise<void>): void {
  const leave = () =>
    void stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  process.stdin.once("end", leave);
  process.stdin.once("error", leave);
  process.stdin.resume();
}

async function cmdProxy(argv: readonly string[]): Promise<void> {
  const { startProxy, compileProxyConfig, PROXY_OPTION_KEYS } = await loadProxy();
  const args = parseCommand(argv, commandFlags(PROXY_OPTION_KEYS, BOOLEAN_FLAGS.proxy));
  const opts = settingsFor("proxy", PROXY_OPTION_KEYS, args, { listKeys: LIST_KEYS });
  const proxy = await startProxy(compileProxyConfig(opts as never));
  process.stdout.write(`proxy listening on https port ${proxy.httpsPort}, http port ${proxy.httpPort}\n`);
  onSignals(() => proxy.stop());
}

function freePort(host: string): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function waitForPort(host: string, port: number, timeoutMs: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((res, rej) => {
    const attempt = () => {
      if (child.exitCode !== null) return rej(new Error(`nats-server exited with code ${child.exitCode}`));
      const c = createConnection({ host, port }, () => {
        c.destroy();
        res();
      });
      c.once("error", () => {
        c.destroy();
        if (Date.now() > deadline)
          rej(new Error(`nats-server did not listen on ${host}:${port} within ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

interface AgentChild {
  /** The first start's agent id; rejects if that start fails (with what the agent wrote). */
  ready: Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`; no restart after this. */
  stop(graceMs?: number): Promise<void>;
}

/** The log format of this process (obs/), which `up`'s agent child is given: its stderr is a pipe, not ours. */
function logFormat(): "json" | "pretty" {
  const asked = process.env.NODEWAY_LOG_FORMAT;
  if (asked === "json" || asked === "pretty") return asked;
  return process.stderr.isTTY ? "pretty" : "json";
}

/** A log line of the agent (JSON, or pretty with its time first): forwarded as it is, it names its component. */
const LOG_LINE = /^(\{"level":|\[\d\d:\d\d:\d\d\.\d{3}\] )/;

/**
 * `up`'s agent as a child process (`nodeway agent`), so a graph that holds its thread or heap cannot stall the
 * gateway. Its output lines are forwarded prefixed `[agent]` (its log lines as they are); one that dies after
 * starting is restarted with a backoff.
 */
function superviseAgent(argv: string[], log: Logger): AgentChild {
  const entry = join(ROOT, "bin", "nodeway.js");
  // The same V8 flags as this process (the entry's --no-memory-reducer --max-semi-space-size=4), but no debugger port to fight over.
  const execArgv = process.execArgv.filter((a) => !a.startsWith("--inspect"));
  const env = { ...process.env, NODEWAY_LOG_FORMAT: logFormat(), NODEWAY_STOP_WITH_PARENT: "1" };
  let child: ChildProcess | null = null;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | null = null;
  let backoffMs = 500;
  let resolveReady!: (id: string) => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<string>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  let started = false;
  const start = () => {
    const p = spawn(process.execPath, [...execArgv, entry, "agent", ...argv], { stdio: ["pipe", "pipe", "pipe"], env });
    child = p;
    const startedAt = Date.now();
    const output = forwardAgentOutput(p, (id) => {
      log.info({ pid: p.pid }, `agent ${id} running in pid ${p.pid}`);
      if (!started) (started = true), resolveReady(id);
    });
    p.once("exit", (code, signal) => {
      if (child === p) child = null;
      const how = signal ? `signal ${signal}` : `code ${code}`;
      // A first start that fails is up's failure (a bad setting, say): restarting would repeat it forever.
      if (!started)
        return rejectReady(new Error(`the agent exited (${how}) before it started: ${output.errTail().trim()}`));
      if (stopping) return;
      if (Date.now() - startedAt > 30_000) backoffMs = 500; // it ran a while: this is no crash loop
      log.warn({ pid: p.pid }, `the agent (pid ${p.pid}) exited (${how}); restarting it in ${backoffMs} ms`);
      restartTimer = setTimeout(() => {
        restartTimer = null;
        if (!stopping) start();
      }, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 10_000);
    });
  };
  start();
  // A second Ctrl-C exits at once: the agent must not outlive `up` then either.
  process.once("exit", () => child?.kill("SIGKILL"));
  return {
    ready,
    async stop(graceMs = 5_000) {
      stopping = true;
      if (restartTimer) clearTimeout(restartTimer);
      const p = child;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise<void>((r) => p.once("exit", () => r()));
      p.kill("SIGTERM");
      const t = setTimeout(() => p.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Forwards an agent child's stdout and stderr; `running` is called with its id once it says it runs. */
function forwardAgentOutput(p: ChildProcess, running: (id: string) => void): { errTail: () => string } {
  let errTail = "";
  let id: string | null = null;
  createInterface({ input: p.stdout! }).on("line", (line) => {
    process.stdout.write(`[agent] ${line}\n`);
    const m = id === null ? /^agent (\S+) running/.exec(line) : null;
    if (!m) return;
    id = m[1]!;
    running(id);
  });
  createInterface({ input: p.stderr! }).on("line", (line) => {
    errTail = `${errTail}${line}\n`.slice(-4_000);
    process.stderr.write(LOG_LINE.test(line) ? `${line}\n` : `[agent] ${line}\n`);
  });
  return { errTail: () => errTail };
}

/** The flags given to `up` that are agent settings, as `--flag=value` for the agent child (repeats kept). */
function agentFlags(args: ParsedArgs, agentConsumed: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const [flag, values] of args.flags) {
    if (agentConsumed.has(flag) && flag !== "nats-url") for (const v of values) out.push(`--${flag}=${v}`);
  }
  return out;
}

/** `up`'s nats-server (a child, with JetStream and its store under the Nodeway home). */
interface NatsChild {
  url: string;
  /** Resolves once it accepts connections; rejects if it exits first or takes over 10 s. */
  listening(): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/**
 * A nats-server left running on this home's store by an `up` that was killed (SIGKILL leaves its child behind, and
 * the store's lock with it): stopped, SIGTERM then SIGKILL after 5 s. Only a process that is a nats-server on this
 * store is touched.
 */
/** The pid of the live `nodeway up` that started nats-server `pid` (its parent, still a node process), or null. */
function liveOwner(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (!Number.isInteger(ppid) || ppid <= 1) return null; // orphaned: its up is gone
    const cmd = readFileSync(`/proc/${ppid}/cmdline`, "utf8").split("\0");
    return cmd.some((a) => /(^|\/)node(js)?$/.test(a)) && cmd.includes("up") ? ppid : null;
  } catch {
    return null;
  }
}

async function stopStaleNats(pidFile: string, store: string, log: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, "utf8").trim());
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (!Number.isInteger(pid) || !cmd[0]?.endsWith("nats-server") || !cmd.includes(store)) return;
  } catch {
    return; // no pid file, or no such process
  }
  const owner = liveOwner(pid);
  if (owner !== null)
    throw new Error(
      `another nodeway up (pid ${owner}) runs on ${store}: stop it first, or give this one its own home (NODEWAY_HOME)`,
    );
  log.warn(`stopping nats-server ${pid}, left running on ${store} by an earlier nodeway up`);
  const gone = () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 50 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!gone()) process.kill(pid, "SIGKILL");
}

async function startNats(home: string, portFlag: string | undefined, log: Logger): Promise<NatsChild> {
  const store = join(home, "nats");
  mkdirSync(store, { recursive: true, mode: 0o700 });
  const pidFile = join(home, "nats-server.pid");
  await stopStaleNats(pidFile, store, log);
  const host = "127.0.0.1";
  const port = portFlag ? Number(portFlag) : await freePort(host);
  // nats-server logs to a file in the data dir; its banner would drown the lines a user needs.
  const nats = spawn(
    "nats-server",
    ["-js", "-a", host, "-p", String(port), "-sd", store, "-l", join(home, "nats-server.log"), "-P", pidFile],
    { stdio: "ignore" },
  );
  const stop = async (): Promise<void> => {
    if (nats.exitCode !== null) return;
    nats.kill("SIGTERM");
    await new Promise<void>((r) => {
      const t = setTimeout(() => {
        nats.kill("SIGKILL");
        r();
      }, 5_000);
      nats.once("exit", () => {
        clearTimeout(t);
        r();
      });
    });
  };
  return { url: `nats://${host}:${port}`, listening: () => waitForPort(host, port, 10_000, nats), stop };
}

/**
 * Proxy settings that `up --tls`'s front sets itself (its upstream is this gateway) or never uses (ACME): given for
 * it, in the config file's `proxy` section or the environment, they are refused rather than ignored.
 */
const DEV_FRONT_REFUSED = new Set([
  "upstream",
  "email",
  "acmeDirectoryUrl",
  "acmeCaBundleFile",
  "onDemandAllow",
  "onDemandAsk",
  "onDemandMaxNames",
  "acmeOrdersPerMinute",
  "acmeRetryMinMs",
  "acmeRetryMaxMs",
]);

/** `up --tls`'s front, checked before anything starts; `start` puts it before the gateway once that listens. */
interface DevFront {
  start(gatewayUrl: string): Promise<{ proxy: RunningProxy; url: string }>;
}

/**
 * `up --tls`: the proxy in front of the gateway, `DEV_TLS_OPTIONS` (self-signed for localhost, no HSTS) under the
 * user's proxy settings: the config file's `proxy` section, then the proxy's NODEWAY_* variables and
 * `--https-port`/`--http-port`. A setting the gateway has too (host, maxBodyBytes, accessLog) is the gateway's as
 * a flag or variable of `up`, and the front's only in the `proxy` section.
 */
async function devFront(args: ParsedArgs, home: string, gatewayKeys: ReadonlySet<string>): Promise<DevFront> {
  const { startProxy, compileProxyConfig, DEV_TLS_OPTIONS, PROXY_OPTION_KEYS } = await loadProxy();
  const env = { ...process.env };
  for (const k of gatewayKeys) delete env[envName(k)];
  const ports = new Map([...args.flags].filter(([f]) => f === "https-port" || f === "http-port"));
  const given = settingsFor("proxy", PROXY_OPTION_KEYS, { positional: [], flags: ports }, { env, listKeys: LIST_KEYS });
  const where = (k: string) =>
    ports.has(kebab(k))
      ? `--${kebab(k)}`
      : env[envName(k)]
        ? envName(k)
        : `"proxy.${k}" in config file ${configFile(env)}`;
  for (const k of Object.keys(given)) {
    if (DEV_FRONT_REFUSED.has(k))
      throw new Error(`${where(k)}: not for nodeway up --tls, whose front is self-signed and before this gateway`);
  }
  if (given.tls === "acme")
    throw new Error(`${where("tls")}: nodeway up --tls serves a self-signed certificate (or "files"), not "acme"`);
  const options = { ...DEV_TLS_OPTIONS, certDir: join(home, "certs"), ...given };
  const compile = (gatewayUrl: string) => {
    try {
      return compileProxyConfig({ ...options, upstream: [gatewayUrl] } as never);
    } catch (err) {
      const key = (err as { key?: string }).key;
      throw new Error(`${key && key in given ? where(key) : "nodeway up --tls"}: ${(err as Error).message}`);
    }
  };
  compile("http://127.0.0.1:8000"); // checked now, before nats-server, the gateway and the agent start
  return {
    async start(gatewayUrl) {
      const config = compile(gatewayUrl);
      const proxy = await startProxy(config);
      const name = config.domain.find((d) => !d.startsWith("*.")) ?? "localhost";
      return { proxy, url: `https://${name.includes(":") ? `[${name}]` : name}:${proxy.httpsPort}` };
    },
  };
}

/**
 * `up`'s asset store and events limits that the user left unset, made to fit the disk under its NATS store
 * (`upStoreLimits`); said in the log when they are less than the defaults.
 */
function storeLimitsForDisk(gwOpts: Record<string, unknown>, store: string, log: Logger): Record<string, number> {
  const room = storeRoomBytes(store);
  if (room === null) return {};
  const fit = upStoreLimits(room);
  const out: Record<string, number> = {};
  for (const key of ["assetsMaxBytes", "eventsMaxBytes"] as const) if (gwOpts[key] === undefined) out[key] = fit[key];
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (fit.assetsMaxBytes < ASSETS_DEFAULTS.storeMaxBytes && Object.keys(out).length > 0)
    log.info(
      `${gib(room)} of disk for ${store}: the asset store keeps up to ${gib(fit.assetsMaxBytes)} and events up to ` +
        `${gib(fit.eventsMaxBytes)} where not set (assetsMaxBytes, eventsMaxBytes)`,
    );
  return out;
}

/** `nodeway up`: nats-server (child), the gateway (in this process), one agent (child), optionally the proxy. */
async function cmdUp(argv: readonly string[]): Promise<void> {
  const [{ startGateway, isExpired, GATEWAY_OPTION_KEYS }, { AGENT_OPTION_KEYS }] = await Promise.all([
    loadGateway(),
    loadAgentConfig(),
  ]);
  const flags = commandFlags([...GATEWAY_OPTION_KEYS, ...AGENT_OPTION_KEYS], BOOLEAN_FLAGS.up, {
    aliases: ALIASES,
    extra: UP_FLAGS,
  });
  const args = parseCommand(argv, flags);
  const gwOpts = settingsFor("gateway", GATEWAY_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS });
  const agentConsumed = new Set<string>();
  // Read here to check the config file's agent section and the flags; the child reads env and file again itself.
  const agentOpts = settingsFor("agent", AGENT_OPTION_KEYS, args, { listKeys: LIST_KEYS, consumed: agentConsumed });
  const testNodes = agentOpts.testNodes === true || agentOpts.testNodes === "true" || agentOpts.testNodes === "1";
  if (!flagOn(args, "tls") && (args.flags.has("https-port") || args.flags.has("http-port")))
    fail("--https-port and --http-port are the ports of nodeway up --tls: give --tls too");
  const home = nodewayHome();
  const tlsFront = flagOn(args, "tls") ? await devFront(args, home, GATEWAY_OPTION_KEYS) : null;
  if (spawnSync("nats-server", ["--version"]).error) {
    fail(
      "nats-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install nats-server`, package nats-server) and run `nodeway up` again.",
      3,
    );
  }
  const log = await cliLogger();
  const nats = await startNats(home, args.flags.get("nats-port")?.at(-1), log);
  let gw: RunningGateway | null = null;
  let agent: AgentChild | null = null;
  let proxy: RunningProxy | null = null;
  const stopAll = async () => {
    log.info("stopping");
    await agent?.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await gw?.stop().catch(() => undefined);
    await nats.stop();
  };
  onSignals(stopAll);
  reloadTokensOnHup(() => gw, log);
  try {
    await nats.listening();
    gw = await startGateway({ ...gwOpts, ...storeLimitsForDisk(gwOpts, join(home, "nats"), log), natsUrl: nats.url });
    // `--nats` last: it beats a `--nats-url` among the forwarded flags, as `up`'s own NATS must.
    agent = superviseAgent(["--name", "local", ...agentFlags(args, agentConsumed), "--nats", nats.url], log);
    const agentId = await agent.ready;
    const token = gw.config.apiTokens.find((t) => !isExpired(t))?.token;
    if (!flagOn(args, "no-examples")) await seedExamples(gw.url, token, testNodes, log);
    const started = tlsFront ? await tlsFront.start(gw.url) : null;
    proxy = started?.proxy ?? null;
    const front = started?.url ?? gw.url;
    process.stdout.write(`nodeway is up: ${front} (gateway ${gw.url}, nats ${nats.url}, agent ${agentId})\n`);
    const withToken =
      gw.config.apiTokens.length > 0 ? " (API tokens are on: set NODEWAY_API_TOKEN to one of them)" : "";
    process.stdout.write(
      `try: nodeway run ${join(ROOT, "examples", "hello-world.json")} --param name=you --gateway ${gw.url}${withToken}\n`,
    );
  } catch (err) {
    await stopAll();
    fail((err as Error).message, 1);
  }
}

/** Saves every `examples/*.json` workflow, so a fresh `up` has something to run. */
async function seedExamples(
  gatewayUrl: string,
  token: string | undefined,
  testNodes: boolean,
  log: Logger,
): Promise<void> {
  const dir = join(ROOT, "examples");
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".json"))) {
    const text = readFileSync(join(dir, f), "utf8");
    // The demo nodes exist only on an agent started with --test-nodes: without it, say so once, not as a failure.
    if (!testNodes && text.includes('"nodeway.test.')) {
      log.info(`example ${f} uses demo nodes: start with --test-nodes to have it`);
      continue;
    }
    const wf = JSON.parse(text) as Record<string, unknown>;
    const id = (wf.id as string | undefined) ?? basename(f, ".json");
    const headers: Record<string, string> = {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    };
    const r = await fetch(`${gatewayUrl}/api/workflows/${encodeURIComponent(id)}`, {
      method: "PUT",
      body: JSON.stringify(wf),
      headers,
    });
    if (!r.ok) log.warn(`example ${f} was not saved: ${await r.text()}`);
  }
}

/**
 * `nodeway chat`: talk to the fleet's models through its OpenAI-compatible `/v1` (with the `openai` SDK, as any
 * client would). With a prompt: one answer, streamed. Without one: on a terminal, a conversation (each turn sends
 * what came before); from a pipe, stdin is the prompt. `--model` picks the model (`GET /v1/models`; with none
 * given, the fleet's only model, else the list to choose from).
 */
async function cmdChat(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, CLIENT_FLAGS.chat);
  const gateway = gatewayUrl(args);
  const token = apiToken(args);
  const maxTokensFlag = args.flags.get("max-tokens")?.at(-1);
  const maxTokens = maxTokensFlag === undefined ? undefined : Number(maxTokensFlag);
  if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens >= 1))
    fail(`--max-tokens must be a positive integer, got "${maxTokensFlag}"`);
  const { default: OpenAI } = await import("openai");
  const client = new OpenAI({ apiKey: token ?? "none", baseURL: `${gateway}/v1`, maxRetries: 0 });
  const said = (err: unknown) => saidByGateway(err, gateway);
  const model = args.flags.get("model")?.at(-1) ?? (await onlyModel(client, said));
  const system = args.flags.get("system")?.at(-1);
  const history: { role: "user" | "assistant"; content: string }[] = [];
  const ask = async (prompt: string): Promise<void> => {
    history.push({ role: "user", content: prompt });
    let reply = "";
    try {
      const stream = await client.chat.completions.create({
        model,
        messages: [...(system ? [{ role: "system" as const, content: system }] : []), ...history],
        stream: true,
        ...(maxTokens !== undefined ? { max_completion_tokens: maxTokens } : {}),
      });
      for await (const c of stream) {
        const piece = c.choices[0]?.delta?.content ?? "";
        reply += piece;
        process.stdout.write(piece);
      }
      process.stdout.write("\n");
      history.push({ role: "assistant", content: reply });
    } catch (err) {
      if (reply) process.stdout.write("\n");
      history.pop();
      throw new Error(said(err));
    }
  };
  const prompt = args.positional.join(" ");
  if (prompt) return ask(prompt).catch((err: Error) => fail(err.message, 1));
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString().trim();
    if (!text) fail("nothing to ask: give a prompt, or pipe one in");
    return ask(text).catch((err: Error) => fail(err.message, 1));
  }
  await converse(model, ask);
}

/** A client error as one line; one with no HTTP status and a cause never reached the gateway. */
function saidByGateway(err: unknown, gateway: string): string {
  const e = err as { status?: number; message?: string; cause?: { code?: string } };
  if (e.status === undefined && e.cause) return `cannot reach the gateway at ${gateway}: ${e.cause.code ?? e.message}`;
  return e.message ?? String(err);
}

/** The fleet's model when it offers exactly one; otherwise the command ends saying what to choose from. */
async function onlyModel(
  client: { models: { list(): AsyncIterable<{ id: string }> } },
  said: (err: unknown) => string,
): Promise<string> {
  const ids: string[] = [];
  try {
    for await (const m of client.models.list()) ids.push(m.id);
  } catch (err) {
    fail(said(err), 1);
  }
  if (ids.length !== 1)
    fail(
      ids.length === 0
        ? "no live agent offers a model (give an agent OPENAI_API_KEY, ANTHROPIC_API_KEY or OLLAMA_HOST)"
        : `choose one with --model: ${ids.join(", ")}`,
    );
  return ids[0]!;
}

/** A conversation on the terminal, one prompt a line, until Ctrl-D; a failed turn is said and the next one asked. */
async function converse(model: string, ask: (prompt: string) => Promise<void>): Promise<void> {
  const { createInterface } = await import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  process.stdout.write(`chatting with ${model} (Ctrl-D to end)\n`);
  for (;;) {
    let line: string;
    try {
      line = (await rl.question("> ")).trim();
    } catch {
      break; // Ctrl-D
    }
    if (!line) continue;
    await ask(line).catch((err: Error) => process.stderr.write(`nodeway: ${redactUrls(err.message)}\n`));
  }
  rl.close();
}

/** `nodeway models`: what the fleet's live agents offer (`GET /v1/models`). */
async function cmdModels(argv: readonly string[]): Promise<void> {
  const args = parseCommand(argv, CLIENT_FLAGS.models);
  const gateway = gatewayUrl(args);
  const token = apiToken(args);
  const { default: OpenAI } = await import("openai");
  const client = new OpenAI({ apiKey: token ?? "none", baseURL: `${gateway}/v1`, maxRetries: 0 });
  const json = flagOn(args, "json");
  try {
    const models: { id: string; owned_by: string }[] = [];
    for await (const m of client.models.list()) models.push({ id: m.id, owned_by: m.owned_by });
    if (json) printJson(models);
    else for (const m of models) process.stdout.write(`${m.id}\t${m.owned_by}\n`);
  } catch (err) {
    fail(saidByGateway(err, gateway), 1);
  }
}

/** The commands, from this file's opening comment. */
function usage(): string {
  const lines = readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n");
  const end = lines.indexOf(" */");
  return `${lines
    .slice(1, end)
    .map((l) => l.replace(/^ \*\s?/, ""))
    .join("\n")}\n`;
}

async function main(): Promise<void> {
  const [cmd, ...args] = process.argv.slice(2);
  try {
    switch (cmd) {
      case "up":
        return await cmdUp(args);
      case "gateway":
        return await cmdGateway(args);
      case "agent":
        return await cmdAgent(args);
      case "proxy":
        return await cmdProxy(args);
      case "run":
        return await cmdRun(args);
      case "jobs":
        return await cmdJobs(args);
      case "logs":
        return await cmdLogs(args);
      case "agents":
        return await cmdAgents(args);
      case "nodes":
        return await cmdNodes(args);
      case "cancel":
        return await cmdCancel(args);
      case "nats-accounts":
        return await cmdNatsAccounts(args);
      case "chat":
        return await cmdChat(args);
      case "models":
        return await cmdModels(args);
      case "token":
        parseCommand(args, CLIENT_FLAGS.token);
        process.stdout.write(`${(await loadGateway()).newToken()}\n`);
        return;
      default:
        process.stdout.write(usage());
        process.exit(cmd === undefined || cmd === "help" || cmd === "--help" ? 0 : 2);
    }
  } catch (err) {
    fail((err as Error).message, 1);
  }
}

void main();
