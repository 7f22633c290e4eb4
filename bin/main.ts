/**
 * The `nodeway` command: argument parsing and process wiring only (design §1).
 *
 *   nodeway up [--tls] [--host H] [--port P] [--nats-port P]   embedded single machine: nats-server + gateway + agent
 *   nodeway gateway [--host --port --nats <url> …]             the gateway alone
 *   nodeway agent [--nats <url> --name <n> --max-jobs N …]     one runner agent
 *   nodeway proxy --domain d --email e --upstream <url> …      the TLS proxy
 *   nodeway run <workflow.json> [--param k=v …] [--param k=@file …] [--save DIR] [--gateway <url>] [--token T]
 *   nodeway chat [--model M] [--system S] [prompt …]           ask the fleet's models (/v1); no prompt: a conversation
 *   nodeway models                                             the models live agents offer
 *   nodeway token                                              a new random API token (for --api-tokens-file)
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { basename, dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import type { RunningGateway } from "../gateway/index.js";
import type { RunningProxy } from "../proxy/index.js";
import { MEDIA_TYPES, extensionOf } from "../protocol/index.js";
import { nodewayHome, parseArgs, settingsFor, type ParsedArgs } from "./settings.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/**
 * Flags that take no value, per command (`--tls` is a switch for `up` but takes a mode for `proxy`). Any of them
 * may still be given an explicit `true`/`false`.
 */
const BOOLEAN_FLAGS: Readonly<Record<string, ReadonlySet<string>>> = {
  up: new Set(["tls", "no-examples", "allow-js-fallback", "access-log", "test-nodes", "help"]),
  gateway: new Set(["allow-js-fallback", "access-log", "help"]),
  agent: new Set(["test-nodes", "help"]),
  proxy: new Set(["access-log", "help"]),
  run: new Set(["quiet", "help"]),
};
const LIST_KEYS = new Set(["apiTokens", "pools", "labels", "strategies", "allowedOrigins", "allowedHosts", "corsOrigins", "upstream", "domain", "trustedProxies", "onDemandAllow"]);
const ALIASES = { nats: "natsUrl" };

function fail(message: string, code = 2): never {
  process.stderr.write(`nodeway: ${message}\n`);
  process.exit(code);
}

/** A boolean flag that is given and not given as `false`. */
function flagOn(args: ParsedArgs, name: string): boolean {
  const v = args.flags.get(name)?.at(-1);
  return v !== undefined && v !== "false";
}

/** Refuses flags no setting consumed and arguments the command does not take (rather than ignoring them). */
function checkAllFlagsUsed(args: ParsedArgs, consumed: Set<string>, extra: string[] = []): void {
  for (const f of args.flags.keys()) if (!consumed.has(f) && !extra.includes(f)) fail(`unknown flag --${f}`);
  if (args.positional.length > 0) fail(`unexpected argument "${args.positional[0]}" (flags take the form --name value)`);
}

/** SIGHUP re-reads the gateway's API tokens; a bad file is reported and the tokens in force stay. */
function reloadTokensOnHup(gw: () => RunningGateway | null): void {
  process.on("SIGHUP", () => {
    const g = gw();
    if (!g) return;
    try {
      g.reloadTokens();
    } catch (err) {
      process.stderr.write(`nodeway: API tokens not reloaded, the previous ones stay: ${(err as Error).message}\n`);
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

async function cmdGateway(args: ParsedArgs): Promise<void> {
  const { startGateway, GATEWAY_OPTION_KEYS } = await loadGateway();
  const consumed = new Set<string>();
  const opts = settingsFor("gateway", GATEWAY_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS, consumed });
  checkAllFlagsUsed(args, consumed);
  const gw = await startGateway(opts);
  process.stdout.write(`gateway listening on ${gw.url}\n`);
  reloadTokensOnHup(() => gw);
  onSignals(() => gw.stop());
}

async function cmdAgent(args: ParsedArgs): Promise<void> {
  const { startAgent, AGENT_OPTION_KEYS } = await loadAgent();
  const consumed = new Set<string>();
  const opts = settingsFor("agent", AGENT_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS, consumed });
  checkAllFlagsUsed(args, consumed);
  const agent = await startAgent(opts);
  process.stdout.write(`agent ${agent.id} running\n`);
  // SIGTERM drains: finish or hand back running jobs within the grace period, then exit.
  onSignals(() => agent.stop({ graceful: true }));
}

async function cmdProxy(args: ParsedArgs): Promise<void> {
  const { startProxy, compileProxyConfig, PROXY_OPTION_KEYS } = await loadProxy();
  const consumed = new Set<string>();
  const opts = settingsFor("proxy", PROXY_OPTION_KEYS, args, { listKeys: LIST_KEYS, consumed });
  checkAllFlagsUsed(args, consumed);
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
        if (Date.now() > deadline) rej(new Error(`nats-server did not listen on ${host}:${port} within ${timeoutMs} ms`));
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

/**
 * `up`'s agent as a child process (`nodeway agent`), so a graph that holds its thread or heap cannot stall the
 * gateway. Its lines are forwarded prefixed `[agent]`; one that dies after starting is restarted with a backoff.
 */
function superviseAgent(argv: string[]): AgentChild {
  const entry = join(ROOT, "bin", "nodeway.js");
  // The same V8 flags as this process (the entry's --no-memory-reducer), but no debugger port to fight over.
  const execArgv = process.execArgv.filter((a) => !a.startsWith("--inspect"));
  let child: ChildProcess | null = null;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | null = null;
  let backoffMs = 500;
  let resolveReady!: (id: string) => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<string>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  let started = false;
  const start = () => {
    const p = spawn(process.execPath, [...execArgv, entry, "agent", ...argv], { stdio: ["ignore", "pipe", "pipe"] });
    child = p;
    const startedAt = Date.now();
    let errTail = "";
    let id: string | null = null;
    createInterface({ input: p.stdout! }).on("line", (line) => {
      process.stdout.write(`[agent] ${line}\n`);
      const m = id === null ? /^agent (\S+) running/.exec(line) : null;
      if (!m) return;
      id = m[1]!;
      process.stderr.write(`nodeway: agent ${id} running in pid ${p.pid}\n`);
      if (!started) ((started = true), resolveReady(id));
    });
    createInterface({ input: p.stderr! }).on("line", (line) => {
      errTail = (errTail + line + "\n").slice(-4_000);
      process.stderr.write(`[agent] ${line}\n`);
    });
    p.once("exit", (code, signal) => {
      if (child === p) child = null;
      const how = signal ? `signal ${signal}` : `code ${code}`;
      // A first start that fails is up's failure (a bad setting, say): restarting would repeat it forever.
      if (!started) return rejectReady(new Error(`the agent exited (${how}) before it started: ${errTail.trim()}`));
      if (stopping) return;
      if (Date.now() - startedAt > 30_000) backoffMs = 500; // it ran a while: this is no crash loop
      process.stderr.write(`nodeway: the agent (pid ${p.pid}) exited (${how}); restarting it in ${backoffMs} ms\n`);
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

/** The flags given to `up` that are agent settings, as `--flag=value` for the agent child (repeats kept). */
function agentFlags(args: ParsedArgs, agentConsumed: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const [flag, values] of args.flags) {
    if (agentConsumed.has(flag) && flag !== "nats-url") for (const v of values) out.push(`--${flag}=${v}`);
  }
  return out;
}

/** `nodeway up`: nats-server (child), the gateway (in this process), one agent (child), optionally the proxy. */
async function cmdUp(args: ParsedArgs): Promise<void> {
  const [{ startGateway, isExpired, GATEWAY_OPTION_KEYS }, { AGENT_OPTION_KEYS }] = await Promise.all([loadGateway(), loadAgentConfig()]);
  const consumed = new Set<string>(["tls", "nats-port", "no-examples", "https-port", "http-port"]);
  const gwOpts = settingsFor("gateway", GATEWAY_OPTION_KEYS, args, { aliases: ALIASES, listKeys: LIST_KEYS, consumed });
  const agentConsumed = new Set<string>();
  // Read here to check the config file's agent section and the flags; the child reads env and file again itself.
  const agentOpts = settingsFor("agent", AGENT_OPTION_KEYS, args, { listKeys: LIST_KEYS, consumed: agentConsumed });
  const testNodes = agentOpts.testNodes === true || agentOpts.testNodes === "true" || agentOpts.testNodes === "1";
  for (const f of agentConsumed) consumed.add(f);
  checkAllFlagsUsed(args, consumed);
  if (spawnSync("nats-server", ["--version"]).error) {
    fail("nats-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install nats-server`, package nats-server) and run `nodeway up` again.", 3);
  }
  const home = nodewayHome();
  const store = join(home, "nats");
  mkdirSync(store, { recursive: true, mode: 0o700 });
  const natsHost = "127.0.0.1";
  const natsPort = args.flags.get("nats-port")?.at(-1) ? Number(args.flags.get("nats-port")!.at(-1)) : await freePort(natsHost);
  // nats-server logs to a file in the data dir; its banner would drown the lines a user needs.
  const nats = spawn("nats-server", ["-js", "-a", natsHost, "-p", String(natsPort), "-sd", store, "-l", join(home, "nats-server.log")], { stdio: "ignore" });
  const natsUrl = `nats://${natsHost}:${natsPort}`;
  let gw: RunningGateway | null = null;
  let agent: AgentChild | null = null;
  let proxy: RunningProxy | null = null;
  const stopAll = async () => {
    process.stderr.write("nodeway: stopping\n");
    await agent?.stop().catch(() => undefined);
    await proxy?.stop().catch(() => undefined);
    await gw?.stop().catch(() => undefined);
    if (nats.exitCode === null) {
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
    }
  };
  onSignals(stopAll);
  reloadTokensOnHup(() => gw);
  try {
    await waitForPort(natsHost, natsPort, 10_000, nats);
    gw = await startGateway({ ...gwOpts, natsUrl });
    // `--nats` last: it beats a `--nats-url` among the forwarded flags, as `up`'s own NATS must.
    agent = superviseAgent(["--name", "local", ...agentFlags(args, agentConsumed), "--nats", natsUrl]);
    const agentId = await agent.ready;
    if (!flagOn(args, "no-examples")) await seedExamples(gw.url, gw.config.apiTokens.find((t) => !isExpired(t))?.token, testNodes);
    let front = gw.url;
    if (flagOn(args, "tls")) {
      const { startProxy, compileProxyConfig, PROXY_OPTION_KEYS } = await loadProxy();
      const p = settingsFor("proxy", PROXY_OPTION_KEYS, args, { listKeys: LIST_KEYS });
      proxy = await startProxy(
        compileProxyConfig({
          tls: "self-signed",
          host: "127.0.0.1",
          httpsPort: (p.httpsPort as number | undefined) ?? 8443,
          httpPort: (p.httpPort as number | undefined) ?? 8080,
          domain: ["localhost"],
          upstream: [gw.url],
          certDir: join(home, "certs"),
        } as never),
      );
      front = `https://localhost:${proxy.httpsPort}`;
    }
    process.stdout.write(`nodeway is up: ${front} (gateway ${gw.url}, nats ${natsUrl}, agent ${agentId})\n`);
    const withToken = gw.config.apiTokens.length > 0 ? " (API tokens are on: set NODEWAY_API_TOKEN to one of them)" : "";
    process.stdout.write(`try: nodeway run ${join(ROOT, "examples", "hello-world.json")} --param name=you --gateway ${gw.url}${withToken}\n`);
  } catch (err) {
    await stopAll();
    fail((err as Error).message, 1);
  }
}

/** Saves every `examples/*.json` workflow, so a fresh `up` has something to run. */
async function seedExamples(gatewayUrl: string, token: string | undefined, testNodes: boolean): Promise<void> {
  const dir = join(ROOT, "examples");
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".json"))) {
    const text = readFileSync(join(dir, f), "utf8");
    // The demo nodes exist only on an agent started with --test-nodes: without it, say so once, not as a failure.
    if (!testNodes && text.includes('"nodeway.test.')) {
      process.stderr.write(`nodeway: example ${f} uses demo nodes: start with --test-nodes to have it\n`);
      continue;
    }
    const wf = JSON.parse(text) as Record<string, unknown>;
    const id = (wf.id as string | undefined) ?? basename(f, ".json");
    const headers: Record<string, string> = { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) };
    const r = await fetch(`${gatewayUrl}/api/workflows/${encodeURIComponent(id)}`, { method: "PUT", body: JSON.stringify(wf), headers });
    if (!r.ok) process.stderr.write(`nodeway: example ${f} was not saved: ${await r.text()}\n`);
  }
}

/** `nodeway run`: save the workflow, run it with streaming, show progress and tokens live, outputs at the end. */
async function cmdRun(args: ParsedArgs): Promise<void> {
  const file = args.positional[0];
  if (!file) fail("usage: nodeway run <workflow.json> [--param k=v …] [--param k=@file …] [--save DIR] [--gateway <url>] [--token T]");
  for (const f of args.flags.keys()) if (!["param", "gateway", "quiet", "timeout-s", "token", "save"].includes(f)) fail(`unknown flag --${f}`);
  const gateway = (args.flags.get("gateway")?.at(-1) ?? process.env.NODEWAY_GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  // NODEWAY_API_TOKEN keeps the token off the command line (where `ps` shows it).
  const token = args.flags.get("token")?.at(-1) ?? process.env.NODEWAY_API_TOKEN;
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const quiet = flagOn(args, "quiet");
  let wf: Record<string, unknown>;
  try {
    wf = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (err) {
    fail(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (!wf.graph && Array.isArray(wf.nodes)) wf = { name: basename(file, ".json"), graph: { nodes: wf.nodes, edges: wf.edges ?? [] } };
  const id = (typeof wf.id === "string" && wf.id) || basename(file, ".json").replace(/[^\w-]/g, "-");
  const call = async (url: string, init: RequestInit) => {
    try {
      return await fetch(url, init);
    } catch (err) {
      fail(`cannot reach the gateway at ${gateway}: ${(err as Error).message}`, 1);
    }
  };
  const params: Record<string, string> = {};
  for (const p of args.flags.get("param") ?? []) {
    const eq = p.indexOf("=");
    if (eq <= 0) fail(`--param needs k=v, got "${p}"`);
    const value = p.slice(eq + 1);
    // k=@file: the file becomes an asset, and the param its asset:// reference (an ImageInput's, say).
    params[p.slice(0, eq)] = value.startsWith("@") ? await uploadAsset(value.slice(1)) : value;
  }
  async function uploadAsset(path: string): Promise<string> {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      fail(`cannot read ${path}: ${(err as Error).message}`);
    }
    const type = MEDIA_TYPES[extname(path).slice(1).toLowerCase()] ?? "application/octet-stream";
    const up = await call(`${gateway}/api/assets?name=${encodeURIComponent(basename(path))}`, { method: "POST", body: new Uint8Array(bytes), headers: { "content-type": type, ...auth } });
    if (up.status !== 201) fail(`upload of ${path} refused: ${await errorText(up)}`, 1);
    const a = (await up.json()) as { id: string; uri: string };
    if (!quiet) process.stderr.write(`uploaded ${path} as ${a.uri}\n`);
    return a.uri;
  }
  const put = await call(`${gateway}/api/workflows/${encodeURIComponent(id)}`, { method: "PUT", body: JSON.stringify(wf), headers: { "content-type": "application/json", ...auth } });
  if (!put.ok) fail(`workflow rejected: ${await errorText(put)}`, 1);
  const timeout = args.flags.get("timeout-s")?.at(-1);
  const res = await call(`${gateway}/api/workflows/${encodeURIComponent(id)}/run?stream=true`, {
    method: "POST",
    body: JSON.stringify({ params, ...(timeout ? { timeout_s: Number(timeout) } : {}) }),
    headers: { "content-type": "application/json", accept: "application/x-ndjson", ...auth },
  });
  if (!res.ok || !res.body) fail(`run rejected: ${await errorText(res)}`, 1);
  const err = (s: string) => !quiet && process.stderr.write(s);
  let status = "unknown";
  let outputs: Record<string, unknown> = {};
  let error: unknown = null;
  let buf = "";
  let midLine = false;
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const ev = JSON.parse(line) as Record<string, unknown>;
      switch (ev.type) {
        case "job_update":
          status = String(ev.status);
          err(`${midLine ? "\n" : ""}[job ${String(ev.job_id)}] ${status}${ev.message ? `: ${String(ev.message)}` : ""}\n`);
          midLine = false;
          if (ev.result) outputs = ev.result as Record<string, unknown>;
          if (ev.error) error = ev.error;
          break;
        case "node_update":
          if (ev.status === "error") err(`${midLine ? "\n" : ""}  ✗ ${String(ev.node_name)} (${String(ev.node_type)}): ${String(ev.error)}\n`);
          else if (!midLine) err(`  ${ev.status === "running" ? "…" : "✓"} ${String(ev.node_name)}\n`);
          break;
        case "node_progress":
          if (!midLine) err(`  ${String(ev.node_id)}: ${String(ev.progress)}/${String(ev.total)}\n`);
          break;
        case "chunk":
          if (typeof ev.content === "string" && ev.content) {
            process.stdout.write(ev.content);
            midLine = true;
          }
          break;
        default:
          break;
      }
    }
  }
  if (midLine) process.stdout.write("\n");
  // Assets among the outputs: where to fetch them, and with --save, fetched.
  const saveDir = args.flags.get("save")?.at(-1);
  const refs: { asset_id: string; content_type: string; url?: string; saved?: string }[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (typeof o.asset_id === "string" && typeof o.uri === "string" && o.uri.startsWith("asset://")) refs.push(o as unknown as (typeof refs)[number]);
      else Object.values(o).forEach(walk);
    }
  };
  walk(outputs);
  for (const r of refs) {
    r.url = `${gateway}/api/assets/${r.asset_id}/content`;
    if (!saveDir) continue;
    const got = await call(r.url, { headers: auth });
    if (!got.ok) fail(`download of ${r.url} failed: ${await errorText(got)}`, 1);
    mkdirSync(saveDir, { recursive: true });
    r.saved = join(saveDir, `${r.asset_id}.${extensionOf(r.content_type)}`);
    writeFileSync(r.saved, Buffer.from(await got.arrayBuffer()));
  }
  process.stdout.write(JSON.stringify({ status, outputs, ...(error ? { error } : {}) }, null, 2) + "\n");
  process.exit(status === "completed" ? 0 : 1);
}

/** The gateway's error body as one line: `CODE: message`. */
async function errorText(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const e = JSON.parse(text) as { code?: string; message?: string };
    if (e.message) return `${e.code ?? res.status}: ${e.message}`;
  } catch {
    /* not JSON: show it as it is */
  }
  return `${res.status} ${text}`;
}

/**
 * `nodeway chat`: talk to the fleet's models through its OpenAI-compatible `/v1` (with the `openai` SDK, as any
 * client would). With a prompt: one answer, streamed. Without one: on a terminal, a conversation (each turn sends
 * what came before); from a pipe, stdin is the prompt. `--model` picks the model (`GET /v1/models`; with none
 * given, the fleet's only model, else the list to choose from).
 */
async function cmdChat(args: ParsedArgs): Promise<void> {
  for (const f of args.flags.keys()) if (!["model", "system", "max-tokens", "gateway", "token"].includes(f)) fail(`unknown flag --${f}`);
  const gateway = (args.flags.get("gateway")?.at(-1) ?? process.env.NODEWAY_GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  const token = args.flags.get("token")?.at(-1) ?? process.env.NODEWAY_API_TOKEN;
  const maxTokensFlag = args.flags.get("max-tokens")?.at(-1);
  const maxTokens = maxTokensFlag === undefined ? undefined : Number(maxTokensFlag);
  if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens >= 1)) fail(`--max-tokens must be a positive integer, got "${maxTokensFlag}"`);
  const { default: OpenAI } = await import("openai");
  const client = new OpenAI({ apiKey: token ?? "none", baseURL: `${gateway}/v1`, maxRetries: 0 });
  const said = (err: unknown) => {
    const e = err as { status?: number; message?: string; cause?: { code?: string } };
    if (e.status === undefined && e.cause) return `cannot reach the gateway at ${gateway}: ${e.cause.code ?? e.message}`;
    return e.message ?? String(err);
  };
  let model = args.flags.get("model")?.at(-1);
  if (!model) {
    const ids: string[] = [];
    try {
      for await (const m of client.models.list()) ids.push(m.id);
    } catch (err) {
      fail(said(err), 1);
    }
    if (ids.length !== 1) fail(ids.length === 0 ? "no live agent offers a model (give an agent OPENAI_API_KEY, ANTHROPIC_API_KEY or OLLAMA_HOST)" : `choose one with --model: ${ids.join(", ")}`);
    model = ids[0]!;
  }
  const system = args.flags.get("system")?.at(-1);
  const history: { role: "user" | "assistant"; content: string }[] = [];
  const ask = async (prompt: string): Promise<void> => {
    history.push({ role: "user", content: prompt });
    let reply = "";
    try {
      const stream = await client.chat.completions.create({
        model: model!,
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
    await ask(line).catch((err: Error) => process.stderr.write(`nodeway: ${err.message}\n`));
  }
  rl.close();
}

/** `nodeway models`: what the fleet's live agents offer (`GET /v1/models`). */
async function cmdModels(args: ParsedArgs): Promise<void> {
  for (const f of args.flags.keys()) if (!["gateway", "token"].includes(f)) fail(`unknown flag --${f}`);
  if (args.positional.length > 0) fail(`unexpected argument "${args.positional[0]}"`);
  const gateway = (args.flags.get("gateway")?.at(-1) ?? process.env.NODEWAY_GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  const token = args.flags.get("token")?.at(-1) ?? process.env.NODEWAY_API_TOKEN;
  const { default: OpenAI } = await import("openai");
  const client = new OpenAI({ apiKey: token ?? "none", baseURL: `${gateway}/v1`, maxRetries: 0 });
  try {
    for await (const m of client.models.list()) process.stdout.write(`${m.id}\t${m.owned_by}\n`);
  } catch (err) {
    const e = err as { status?: number; message?: string; cause?: { code?: string } };
    fail(e.status === undefined && e.cause ? `cannot reach the gateway at ${gateway}: ${e.cause.code ?? e.message}` : (e.message ?? String(err)), 1);
  }
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  let args: ParsedArgs;
  try {
    args = parseArgs(rest, BOOLEAN_FLAGS[cmd ?? ""] ?? new Set());
  } catch (err) {
    fail((err as Error).message);
  }
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
      case "chat":
        return await cmdChat(args);
      case "models":
        return await cmdModels(args);
      case "token":
        process.stdout.write(`${(await loadGateway()).newToken()}\n`);
        return;
      default:
        process.stdout.write(readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 12).map((l) => l.replace(/^ \*\s?/, "")).join("\n") + "\n");
        process.exit(cmd === undefined || cmd === "help" || cmd === "--help" ? 0 : 2);
    }
  } catch (err) {
    fail((err as Error).message, 1);
  }
}

void main();
