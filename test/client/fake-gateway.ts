/**
 * A scripted gateway on loopback for the client's failure paths: `/ws` (JSON frames; the subprotocol the client
 * offers first is taken) and REST, each answered by what the test sets. Nothing is answered unless told, pings
 * included.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { WebSocketServer, type WebSocket } from "ws";

export type Command = { command: string; request_id?: string; data?: Record<string, unknown> };

/** One accepted `/ws` connection. */
export class FakeConn {
  readonly commands: Command[] = [];
  constructor(
    readonly n: number,
    readonly ws: WebSocket,
  ) {}

  /** Sends a message as JSON, or raw bytes as they are. */
  send(m: object | Uint8Array): void {
    this.ws.send(m instanceof Uint8Array ? m : JSON.stringify(m));
  }
}

export class FakeGateway {
  readonly conns: FakeConn[] = [];
  /** When each connection was accepted (`performance.now()`). */
  readonly openedAt: number[] = [];
  onOpen: (c: FakeConn) => void = () => undefined;
  onCommand: (cmd: Command, c: FakeConn) => void = () => undefined;
  onHttp: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => void res.writeHead(404).end();

  private constructor(
    private readonly server: Server,
    private readonly wss: WebSocketServer,
  ) {}

  static async start(): Promise<FakeGateway> {
    const server = createServer();
    const wss = new WebSocketServer({ server, handleProtocols: (p) => [...p][0] ?? false });
    const g = new FakeGateway(server, wss);
    server.on("request", (req, res) => g.onHttp(req, res));
    wss.on("connection", (ws) => {
      const c = new FakeConn(g.conns.length + 1, ws);
      g.conns.push(c);
      g.openedAt.push(performance.now());
      ws.on("message", (data) => {
        const cmd = JSON.parse(String(data)) as Command;
        c.commands.push(cmd);
        g.onCommand(cmd, c);
      });
      g.onOpen(c);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return g;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Every command of every connection, in order. */
  commands(name?: string): Command[] {
    return this.conns.flatMap((c) => c.commands).filter((m) => name === undefined || m.command === name);
  }

  async stop(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** The gateway's answer to `ping`. */
export function pong(cmd: Command, c: FakeConn): void {
  c.send({ type: "pong", ts: Date.now(), ...(cmd.request_id ? { request_id: cmd.request_id } : {}) });
}
