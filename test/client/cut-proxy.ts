/**
 * A TCP proxy on loopback that a test can cut: `cut()` destroys every connection through it and stops listening
 * (clients see a dropped connection and cannot reconnect), `restore()` listens again on the same port.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export class CutProxy {
  private server: Server | null = null;
  private readonly conns = new Set<Socket>();
  /** Each connection's gateway side and client side, for `mute`. */
  private readonly pairs = new Map<Socket, Socket>();
  port = 0;
  cuts = 0;

  private constructor(private readonly target: { host: string; port: number }) {}

  static async start(targetUrl: string): Promise<CutProxy> {
    const u = new URL(targetUrl);
    const p = new CutProxy({ host: u.hostname, port: Number(u.port) });
    await p.restore();
    return p;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  restore(): Promise<void> {
    const server = createServer((client) => this.pipe(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => {
        this.port = (server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  private pipe(client: Socket): void {
    const upstream = createConnection(this.target);
    this.conns.add(client).add(upstream);
    this.pairs.set(upstream, client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.conns.delete(client);
      this.conns.delete(upstream);
      this.pairs.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** From now on, what the gateway sends on open connections is dropped (a client's frames still reach it). */
  mute(): void {
    for (const [upstream, client] of this.pairs) {
      upstream.unpipe(client);
      upstream.on("data", () => undefined);
    }
  }

  /** Drops every connection and stops listening. */
  async cut(): Promise<void> {
    this.cuts++;
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    this.pairs.clear();
    await closed;
  }

  async stop(): Promise<void> {
    await this.cut();
  }
}
