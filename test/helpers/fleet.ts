/**
 * A whole Nodeway fleet on one machine, each role its own process: a 3-server NATS cluster on loopback (routes
 * authorized, with TLS), gateways behind the TLS proxy, and agents — the multi-host shape with every host on
 * 127.0.0.1 and ephemeral ports. The cluster tests use it; run directly (deploy/fleet-up.sh) it starts one and
 * prints where everything listens until Ctrl-C.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { check } from "./check.js";
import { NatsCluster, freePort, type NatsTlsFiles } from "./nats-server.js";
import { runNodeway, startAgentProc, startGatewayProc, type AgentProc, type Proc } from "./procs.js";
import { createTestCa } from "./tls-tools.js";

export interface FleetOptions {
  servers?: number;
  gateways?: number;
  agents?: number;
  /** TLS on the NATS client port too (routes always have it); gateways and agents then trust the fleet's CA. */
  clientTls?: boolean;
  gatewayArgs?: string[];
  agentArgs?: string[];
}

export type GatewayProc = Proc & { url: string };
export type ProxyProc = Proc & { httpsPort: number };

/** Writes a test CA and one certificate for 127.0.0.1 (server and client use) into `dir`. */
function writeTls(dir: string): NatsTlsFiles {
  const ca = createTestCa("Nodeway fleet CA");
  const leaf = ca.issue(["127.0.0.1", "localhost"], { clientAuth: true });
  const files = { caFile: join(dir, "ca.pem"), certFile: join(dir, "nats.pem"), keyFile: join(dir, "nats-key.pem") };
  writeFileSync(files.caFile, ca.certPem);
  writeFileSync(files.certFile, leaf.certPem);
  writeFileSync(files.keyFile, leaf.keyPem, { mode: 0o600 });
  return files;
}

/** A gateway's start on a cluster: its first one creates every stream and bucket with three replicas. */
const GATEWAY_START_MS = 90_000;

async function killHard(p: Proc): Promise<void> {
  if (p.proc.exitCode === null && p.proc.signalCode === null) await p.kill("SIGKILL");
}

export class Fleet {
  readonly gateways: GatewayProc[] = [];
  readonly agents: AgentProc[] = [];
  proxy: ProxyProc | null = null;
  private readonly gatewayPorts: number[] = [];
  private constructor(
    readonly nats: NatsCluster,
    readonly dir: string,
    readonly tls: NatsTlsFiles,
    private readonly opts: FleetOptions,
  ) {}

  static async start(opts: FleetOptions = {}): Promise<Fleet> {
    const dir = mkdtempSync(join(tmpdir(), "nw-fleet-"));
    const tls = writeTls(dir);
    const nats = await NatsCluster.start({ size: opts.servers ?? 3, tls, clientTls: opts.clientTls ?? false }).catch(
      (err: unknown) => {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      },
    );
    const fleet = new Fleet(nats, dir, tls, opts);
    try {
      for (let i = 0; i < (opts.gateways ?? 2); i++) fleet.gatewayPorts.push(await freePort());
      // The first gateway makes the streams and buckets (three replicas each: slow on a loaded machine), the
      // others then find them.
      await fleet.startGateway(0);
      await Promise.all(fleet.gatewayPorts.slice(1).map((_, i) => fleet.startGateway(i + 1)));
      await fleet.startProxy();
      await Promise.all(Array.from({ length: opts.agents ?? 3 }, (_, i) => fleet.startAgent(i)));
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  /** Where clients go: the proxy's HTTPS origin (a self-signed certificate). */
  get front(): string {
    return `https://127.0.0.1:${this.proxy!.httpsPort}`;
  }

  /** The CA gateways and agents trust when the client port has TLS (all servers' URLs go in `--nats`). */
  private natsTlsArgs(): string[] {
    return this.nats.clientTls ? ["--nats-tls-ca-file", this.tls.caFile] : [];
  }

  /** An isolated NODEWAY_HOME so no config file of the machine leaks in. */
  private home(name: string): NodeJS.ProcessEnv {
    const home = join(this.dir, `home-${name}`);
    mkdirSync(home, { recursive: true });
    return { NODEWAY_HOME: home };
  }

  /** Starts (or starts again, on its port) gateway i. */
  async startGateway(i: number): Promise<GatewayProc> {
    const args = [...this.natsTlsArgs(), "--port", String(this.gatewayPorts[i]), ...(this.opts.gatewayArgs ?? [])];
    const g = await startGatewayProc(this.nats.url, args, this.home(`gw${i}`), GATEWAY_START_MS);
    this.gateways[i] = g;
    return g;
  }

  /** Starts (or starts again) agent i, named `agent<i>`. */
  async startAgent(i: number): Promise<AgentProc> {
    const args = [...this.natsTlsArgs(), "--name", `agent${i}`, ...(this.opts.agentArgs ?? [])];
    const a = await startAgentProc(this.nats.url, args, this.home(`agent${i}`));
    this.agents[i] = a;
    return a;
  }

  private async startProxy(): Promise<void> {
    const upstream = this.gatewayPorts.map((p) => `http://127.0.0.1:${p}`).join(",");
    const p = runNodeway(
      [
        "proxy",
        "--tls",
        "self-signed",
        "--host",
        "127.0.0.1",
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--upstream",
        upstream,
        "--cert-dir",
        join(this.dir, "proxy-certs"),
        "--health-interval-ms",
        "200",
      ],
      this.home("proxy"),
    );
    try {
      const port = await check(
        () => {
          if (p.proc.exitCode !== null) throw new Error(`proxy exited: ${p.stderr().slice(-1_000)}`);
          return /proxy listening on https port (\d+)/.exec(p.stdout())?.[1] ?? null;
        },
        30_000,
        { name: "proxy started" },
      );
      this.proxy = Object.assign(p, { httpsPort: Number(port) });
    } catch (err) {
      await killHard(p);
      throw err;
    }
  }

  /** Kills everything (SIGKILL: nothing of a fleet outlives its test) and removes its files. */
  async stop(): Promise<void> {
    // Arrays may have holes when a start-up failed part way.
    const procs: (Proc | null | undefined)[] = [...this.agents, ...this.gateways, this.proxy];
    await Promise.all(procs.filter((p) => p != null).map((p) => killHard(p)));
    await this.nats.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** `deploy/fleet-up.sh`: a fleet with TLS on every NATS link, until SIGINT or SIGTERM. */
async function main(): Promise<void> {
  const fleet = await Fleet.start({ clientTls: true, agentArgs: ["--test-nodes", "false"] });
  const out = (l: string) => process.stdout.write(`${l}\n`);
  out(`nats-servers (TLS, CA ${fleet.tls.caFile}): ${fleet.nats.url}`);
  out(`gateways: ${fleet.gateways.map((g) => g.url).join(" ")}`);
  out(`agents: ${fleet.agents.map((a) => a.id).join(" ")}`);
  out(`proxy (self-signed): ${fleet.front}`);
  out("Ctrl-C stops the fleet");
  const stop = () => void fleet.stop().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`fleet: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
