/** A real nats-server on an ephemeral port with a temp store (aesthetics §8 principle 13). */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { tmpdir } from "node:os";
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

export const natsServerVersion = (): string => spawnSync("nats-server", ["--version"]).stdout?.toString().trim() ?? "unknown";

export class NatsServer {
  private proc: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    readonly storeDir: string,
    /** A nats-server config file (accounts, permissions); port, store and JetStream still come from flags. */
    readonly configFile: string | null = null,
  ) {}

  /** The server's process id (benchmarks read its CPU time from /proc). */
  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async start(opts: { configFile?: string } = {}): Promise<NatsServer> {
    return NatsServer.startOn(await freePort(), opts);
  }

  /** On a given port (for tests that start clients before the server). */
  static async startOn(port: number, opts: { configFile?: string } = {}): Promise<NatsServer> {
    const ns = new NatsServer(port, mkdtempSync(join(tmpdir(), "nw-nats-")), opts.configFile ?? null);
    await ns.launch();
    return ns;
  }

  private async launch(): Promise<void> {
    const config = this.configFile ? ["-c", this.configFile] : [];
    this.proc = spawn("nats-server", [...config, "-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir], { stdio: "ignore" });
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
