/** A real nats-server on an ephemeral port with a temp store. */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { tmpdir } from "node:os";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { join } from "node:path";

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function waitListening(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((res, rej) => {
    const attempt = () => {
      if (child.exitCode !== null) return rej(new Error(`nats-server exited with ${child.exitCode}`));
      const c = createConnection({ host: "127.0.0.1", port }, () => {
        c.destroy();
        res();
      });
      c.once("error", () => {
        c.destroy();
        if (Date.now() > deadline) rej(new Error("nats-server did not start"));
        else setTimeout(attempt, 25);
      });
    };
    attempt();
  });
}

export const natsServerVersion = (): string =>
  spawnSync("nats-server", ["--version"]).stdout?.toString().trim() ?? "unknown";

export interface NatsServerOptions {
  /** A nats-server config file (accounts, permissions, a cluster); port, store and JetStream still come from flags. */
  configFile?: string;
  /** An HTTP monitoring port (`/connz`, `/jsz`): cluster tests find who is connected where. */
  monitorPort?: number;
}

export class NatsServer {
  private proc: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    readonly storeDir: string,
    readonly configFile: string | null = null,
    readonly monitorPort: number | null = null,
  ) {}

  /** The server's process id (benchmarks read its CPU time from /proc). */
  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async start(opts: NatsServerOptions = {}): Promise<NatsServer> {
    return NatsServer.startOn(await freePort(), opts);
  }

  /** On a given port (for tests that start clients before the server). */
  static async startOn(port: number, opts: NatsServerOptions = {}): Promise<NatsServer> {
    const ns = NatsServer.prepare(port, opts);
    await ns.launch();
    return ns;
  }

  /** Not started yet: `launch()` it (cluster nodes start together, each waiting for its routes). */
  static prepare(port: number, opts: NatsServerOptions = {}): NatsServer {
    return new NatsServer(
      port,
      mkdtempSync(join(tmpdir(), "nw-nats-")),
      opts.configFile ?? null,
      opts.monitorPort ?? null,
    );
  }

  /** Whether the process runs (not killed, not stopped). */
  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async launch(): Promise<void> {
    const config = this.configFile ? ["-c", this.configFile] : [];
    const monitor = this.monitorPort ? ["-m", String(this.monitorPort)] : [];
    const args = [...config, ...monitor, "-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir];
    this.proc = spawn("nats-server", args, { stdio: "ignore" });
    await waitListening(this.port, this.proc, 15_000);
  }

  /** `kill -9`, as a crash would. */
  async kill9(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
  }

  /** SIGTERM, keeping the store (a rolling restart's stop); SIGKILL after 10 s. */
  async terminate(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (p.exitCode === null && p.signalCode === null) await this.kill9();
  }

  /** Start again on the same port and store. */
  async restart(): Promise<void> {
    await this.launch();
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (p.exitCode === null) p.kill("SIGKILL");
    }
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}

/** PEM files of a test CA and one certificate for 127.0.0.1 (server and client use), for routes and clients. */
export interface NatsTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface ClusterOptions {
  /** Servers. @default 3 */
  size?: number;
  /** TLS on the routes (mutual) and, with `clientTls`, on the client port. @default none */
  tls?: NatsTlsFiles;
  clientTls?: boolean;
  /** Extra config lines each server includes (accounts). */
  include?: string;
}

/** The config of one cluster node: routes to the others, authorized, with TLS when given. */
function clusterNodeConf(
  name: string,
  routePort: number,
  peers: number[],
  routePass: string,
  opts: ClusterOptions,
  logFile: string,
): string {
  const tls = opts.tls;
  const tlsBlock = (verify: boolean) =>
    tls
      ? `tls { cert_file: "${tls.certFile}", key_file: "${tls.keyFile}", ca_file: "${tls.caFile}", verify: ${verify}, timeout: 5 }`
      : "";
  return [
    `server_name: ${name}`,
    `log_file: "${logFile}"`,
    opts.clientTls ? tlsBlock(false) : "",
    "cluster {",
    "  name: nw-test",
    `  listen: 127.0.0.1:${routePort}`,
    `  authorization { user: route, password: "${routePass}", timeout: 2 }`,
    `  ${tlsBlock(true)}`,
    `  routes: [ ${peers.map((p) => `"nats-route://route:${routePass}@127.0.0.1:${p}"`).join(", ")} ]`,
    "}",
    opts.include ?? "",
  ].join("\n");
}

/** A JetStream cluster of real nats-servers on loopback (ephemeral ports, temp stores), routes authorized. */
export class NatsCluster {
  private constructor(
    readonly nodes: NatsServer[],
    /** Server names, in `nodes` order (`n1`, `n2`, …): what stream infos name as leader. */
    readonly names: string[],
    private readonly confDir: string,
    readonly clientTls: boolean,
    private readonly tls: NatsTlsFiles | null,
  ) {}

  /** Starts one; a port taken by another process in the meantime gets one more try on fresh ports. */
  static async start(opts: ClusterOptions = {}): Promise<NatsCluster> {
    return NatsCluster.tryStart(opts).catch(() => NatsCluster.tryStart(opts));
  }

  private static async tryStart(opts: ClusterOptions): Promise<NatsCluster> {
    const size = opts.size ?? 3;
    const confDir = mkdtempSync(join(tmpdir(), "nw-nats-cluster-"));
    const ports: number[] = [];
    for (let i = 0; i < size * 3; i++) ports.push(await freePort());
    const routePorts = ports.slice(size, size * 2);
    const routePass = randomBytes(12).toString("hex");
    const names = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    const nodes = names.map((name, i) => {
      const file = join(confDir, `${name}.conf`);
      const conf = clusterNodeConf(
        name,
        routePorts[i]!,
        routePorts.filter((_, j) => j !== i),
        routePass,
        opts,
        join(confDir, `${name}.log`),
      );
      writeFileSync(file, conf);
      return NatsServer.prepare(ports[i]!, { configFile: file, monitorPort: ports[size * 2 + i]! });
    });
    const cluster = new NatsCluster(nodes, names, confDir, opts.clientTls ?? false, opts.tls ?? null);
    try {
      await Promise.all(nodes.map((n) => n.launch()));
      await cluster.waitReady(30_000);
    } catch (err) {
      const logs = names.map((n) => `${n}: ${tail(join(confDir, `${n}.log`))}`).join("\n");
      await cluster.stop();
      throw new Error(`${(err as Error).message}\n${logs}`);
    }
    return cluster;
  }

  /** Every server's client URL, comma-joined (the `--nats` of a gateway or agent). */
  get url(): string {
    return this.nodes.map((n) => this.urlOf(n)).join(",");
  }

  urlOf(node: NatsServer): string {
    return this.clientTls ? `tls://127.0.0.1:${node.port}` : node.url;
  }

  /** A running server's URL (for a checker that takes one). */
  liveUrl(): string {
    const n = this.nodes.find((x) => x.running);
    if (!n) throw new Error("no nats-server of the cluster runs");
    return this.urlOf(n);
  }

  byName(name: string): NatsServer {
    const i = this.names.indexOf(name);
    if (i < 0) throw new Error(`no server named ${name}`);
    return this.nodes[i]!;
  }

  /** Waits until every running server answers JetStream requests (a meta leader is elected). */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const n of this.nodes.filter((x) => x.running)) {
      for (;;) {
        const ok = await jszReady(n.monitorPort!);
        if (ok) break;
        if (Date.now() > deadline)
          throw new Error(`nats-server on ${n.port} has no JetStream meta leader after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** The server leading a stream (its Raft group's leader). */
  async leaderOf(stream: string): Promise<NatsServer> {
    const name = await this.withJsm(async (jsm) => (await jsm.streams.info(stream)).cluster?.leader);
    if (!name) throw new Error(`stream ${stream} has no leader`);
    return this.byName(name);
  }

  /**
   * Waits until every server runs and answers, and each stream has a leader and every replica current: the
   * cluster is whole again after a fault, before the next one.
   */
  async waitHealed(streams: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.waitReady(timeoutMs);
    for (const s of streams) {
      for (;;) {
        const ok = await this.withJsm(async (jsm) => {
          const c = (await jsm.streams.info(s)).cluster;
          return Boolean(c?.leader) && (c?.replicas ?? []).every((r) => r.current && !r.offline);
        }).catch(() => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`stream ${s} not whole again within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private async withJsm<T>(fn: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
    const live = this.nodes.filter((n) => n.running).map((n) => this.urlOf(n));
    const tls = this.clientTls && this.tls ? { tls: { caFile: this.tls.caFile } } : {};
    const nc = await connect({ servers: live, timeout: 5_000, ...tls });
    try {
      return await fn(await jetstreamManager(nc, { timeout: 5_000 }));
    } finally {
      await nc.close();
    }
  }

  /** Client connections of one server whose name starts with `prefix` (`/connz`). */
  async connections(node: NatsServer, prefix: string): Promise<number> {
    const r = await fetch(`http://127.0.0.1:${node.monitorPort}/connz?limit=1024`);
    const body = (await r.json()) as { connections?: { name?: string }[] };
    return (body.connections ?? []).filter((c) => (c.name ?? "").startsWith(prefix)).length;
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    rmSync(this.confDir, { recursive: true, force: true });
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, "utf8").slice(-600);
  } catch {
    return "(no log)";
  }
}

/** The server's `/jsz` names a meta leader (it serves JetStream requests). */
async function jszReady(monitorPort: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${monitorPort}/jsz`);
    const body = (await r.json()) as { meta_cluster?: { leader?: string } };
    return Boolean(body.meta_cluster?.leader);
  } catch {
    return false;
  }
}
