/**
 * The `/ws` connection: opens with the subprotocol of its format (and `bearer.<token>`), reconnects with backoff
 * after any drop it did not ask for, answers commands by `request_id`, and hands every other message on.
 */
import type { ClientCommand, CommandResponse, ServerMessage } from "../protocol/client.js";
import { decodeFrame, encodeCommand, FrameError, type WireFormat } from "./codec.js";
import { ClientErrorCode, NodewayError } from "./errors.js";

/** What the client uses of a WebSocket: the browser's, or the `ws` package's in Node. */
export interface WsLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WsLike;

export type ConnState = "connecting" | "open" | "closed";

export interface SocketOptions {
  url: string;
  token?: string;
  format: WireFormat;
  WebSocket?: WebSocketCtor;
  reconnect: { initialMs: number; maxMs: number };
  /** The largest frame the gateway takes (its `wsMaxPayloadBytes`): a larger command is refused before it is sent. */
  maxFrameBytes: number;
  onState(s: ConnState): void;
  /** Every message that is not a command's answer. */
  onMessage(m: ServerMessage): void;
  /** After each (re)open, before anything waiting for the socket runs. */
  onOpen(): void;
  /** The socket closed for good (`close()` or a refusal): `err` says why. */
  onEnd(err: NodewayError): void;
}

/** The browser's WebSocket when there is one, else the `ws` package (a specifier bundlers leave alone). */
async function defaultCtor(): Promise<WebSocketCtor> {
  const g = globalThis as { WebSocket?: WebSocketCtor };
  if (g.WebSocket) return g.WebSocket;
  const name = "ws";
  const mod = (await import(/* @vite-ignore */ name)) as { default: WebSocketCtor };
  return mod.default;
}

interface Pending {
  command: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class Socket {
  state: ConnState = "closed";
  private ws: WsLike | null = null;
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private failures = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** `connect()` was called and `close()` was not: drops are reconnected. */
  private wanted = false;
  private waiters: { resolve(): void; reject(e: Error): void }[] = [];

  constructor(private readonly o: SocketOptions) {}

  private wsUrl(): string {
    return `${this.o.url.replace(/^http/, "ws").replace(/\/$/, "")}/ws`;
  }

  private protocols(): string[] {
    const p = [this.o.format === "msgpack" ? "nodeway.msgpack" : "nodeway.json"];
    if (this.o.token) p.push(`bearer.${this.o.token}`);
    return p;
  }

  private setState(s: ConnState): void {
    if (this.state === s) return;
    this.state = s;
    this.o.onState(s);
  }

  /** Opens the socket; rejects when the first attempt fails (later drops reconnect by themselves). */
  async connect(): Promise<void> {
    if (this.state === "open") return;
    if (this.wanted) return this.ready();
    this.wanted = true;
    try {
      await this.open();
    } catch (err) {
      this.wanted = false;
      this.setState("closed");
      for (const w of this.waiters.splice(0)) w.reject(err as Error);
      throw err;
    }
  }

  /** Resolves when the socket is open (connecting first if nobody has); rejects if it closes for good. */
  ready(): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    if (!this.wanted) return this.connect();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private async open(): Promise<void> {
    this.setState("connecting");
    const Ctor = this.o.WebSocket ?? (await defaultCtor());
    const ws = new Ctor(this.wsUrl(), this.protocols());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      let detail = "";
      ws.onerror = (ev) => (detail = (ev as { message?: string }).message ?? detail);
      ws.onmessage = (ev) => {
        if (this.ws === ws) this.onFrame(ev.data);
      };
      ws.onopen = () => resolve();
      ws.onclose = (ev) => {
        if (this.ws === ws) this.ws = null;
        const why = detail || `closed with ${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`;
        reject(new NodewayError(ClientErrorCode.unreachable, `cannot open ${this.wsUrl()}: ${why}`));
      };
    });
    ws.onclose = (ev) => this.onClosed(ws, ev.code, ev.reason);
    this.failures = 0;
    this.setState("open");
    this.o.onOpen();
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  private onClosed(ws: WsLike, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.dropPending(` (closed with ${code}${reason ? `: ${reason}` : ""})`);
    if (!this.wanted) return;
    if (code === 1008) {
      this.end(new NodewayError(ClientErrorCode.refused, `the gateway closed the connection: ${reason || code}`));
      return;
    }
    this.setState("connecting");
    this.schedule();
  }

  /** The next attempt after exponential backoff with jitter, reset by a successful open. */
  private schedule(): void {
    const { initialMs, maxMs } = this.o.reconnect;
    const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures, 20));
    const delayMs = ceiling / 2 + Math.random() * (ceiling / 2);
    this.failures++;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.wanted) return;
      this.open().catch(() => this.wanted && this.schedule());
    }, delayMs);
  }

  /** Drops this socket (without waiting for its close) and reconnects. */
  private restart(): void {
    const ws = this.ws;
    this.ws = null;
    try {
      ws?.close(4000, "unreadable frame");
    } catch {
      /* already closing */
    }
    this.dropPending();
    this.setState("connecting");
    this.schedule();
  }

  /** Fails every unanswered command; `why` tells how the connection ended, where known. */
  private dropPending(why = ""): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(
        new NodewayError(
          ClientErrorCode.disconnected,
          `the connection dropped before "${p.command}" was answered${why}`,
        ),
      );
    }
  }

  private end(err: NodewayError): void {
    this.wanted = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.setState("closed");
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.o.onEnd(err);
  }

  close(): void {
    const ws = this.ws;
    this.ws = null;
    this.dropPending();
    this.end(new NodewayError(ClientErrorCode.closed, "the client was closed"));
    try {
      ws?.close(1000);
    } catch {
      /* already closing */
    }
  }

  /** Sends a command without waiting for an answer; false when the socket is not open (it is resent on open). */
  send(cmd: ClientCommand): boolean {
    if (this.state !== "open" || !this.ws) return false;
    this.ws.send(encodeCommand(cmd, this.o.format));
    return true;
  }

  /** Sends a command and resolves with its `rpc_response` result (rejects with its error). */
  async request<T>(cmd: ClientCommand): Promise<T> {
    await this.ready();
    const request_id = `r${this.nextId++}`;
    const frame = encodeCommand({ ...cmd, request_id } as ClientCommand, this.o.format);
    const bytes = typeof frame === "string" ? new TextEncoder().encode(frame).byteLength : frame.byteLength;
    // The gateway would close the socket on it (1009), failing every other command in flight with it.
    if (bytes > this.o.maxFrameBytes)
      throw new NodewayError(
        ClientErrorCode.tooLarge,
        `"${cmd.command}" is ${bytes} bytes; the gateway takes frames up to ${this.o.maxFrameBytes} (maxFrameBytes): upload large inputs as assets and pass their asset:// ids`,
      );
    return new Promise<T>((resolve, reject) => {
      this.pending.set(request_id, { command: cmd.command, resolve: resolve as (v: unknown) => void, reject });
      if (this.state === "open" && this.ws) this.ws.send(frame);
    });
  }

  /** A fresh request id, for a command answered by something else than an `rpc_response` (its error only). */
  requestId(): string {
    return `r${this.nextId++}`;
  }

  private onFrame(data: unknown): void {
    let m: ServerMessage;
    try {
      m = decodeFrame(data);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.restart(); // a frame lost would be a gap: start again from the last seq of each job
      return;
    }
    if (m.type === "rpc_response" || (m.type === "error" && !("job_id" in m))) {
      if (this.answer(m as CommandResponse)) return;
    }
    this.o.onMessage(m);
  }

  /** Settles the command `m` answers; false when none is waiting (the caller handles it). */
  private answer(m: CommandResponse | { request_id?: string; code?: string; message?: string }): boolean {
    const p = m.request_id === undefined ? undefined : this.pending.get(m.request_id);
    if (!p) return false;
    this.pending.delete(m.request_id!);
    if ("type" in m && m.type === "rpc_response") {
      if (m.error) p.reject(NodewayError.of(m.error));
      else p.resolve(m.result);
    } else p.reject(NodewayError.of(m as { code?: string; message?: string }));
    return true;
  }
}
