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
  /** Backoff between attempts; `maxProtocolErrors` connections in a row ended by unreadable frames end the socket. */
  reconnect: { initialMs: number; maxMs: number; maxProtocolErrors: number };
  /** The largest frame the gateway takes (its `wsMaxPayloadBytes`): a larger command is refused before it is sent. */
  maxFrameBytes: number;
  /** How long a command waits for its answer (the wait for the socket included), and an open for its upgrade. */
  requestTimeoutMs: number;
  /** Silence after which a `ping` is sent, and then after which the connection is dead (0: no heartbeat). */
  heartbeatMs: number;
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

/** A connection up this long that still delivers readable frames has proven stable: backoff starts over. */
const STABLE_MS = 5_000;

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
  /** Failed attempts since the last stable connection: the backoff's exponent. */
  private failures = 0;
  /** Connections in a row ended by an unreadable frame, since the last stable one. */
  private protocolErrors = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private beat: ReturnType<typeof setInterval> | null = null;
  private openedAt = 0;
  /** When the last readable frame came, and when the `ping` still unanswered went (0: none). */
  private heardAt = 0;
  private pingAt = 0;
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
    this.failures = this.protocolErrors = 0; // a fresh start, after a failed one or a give-up
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
      const fail = (why: string) => {
        clearTimeout(deadline);
        if (this.ws === ws) this.ws = null;
        reject(new NodewayError(ClientErrorCode.unreachable, `cannot open ${this.wsUrl()}: ${why}`));
      };
      // An upgrade nobody answers (a dead path, a stalled proxy) would otherwise wait for the OS, minutes.
      const deadline = setTimeout(() => {
        fail(`no answer within ${this.o.requestTimeoutMs} ms (requestTimeoutMs)`);
        closeQuietly(ws, 1000, "");
      }, this.o.requestTimeoutMs);
      ws.onerror = (ev) => (detail = (ev as { message?: string }).message ?? detail);
      ws.onmessage = (ev) => {
        if (this.ws === ws) this.onFrame(ev.data);
      };
      ws.onopen = () => {
        if (this.ws !== ws) return; // given up on (deadline, close()): its close settles this
        clearTimeout(deadline);
        this.opened(ws);
        resolve();
      };
      ws.onclose = (ev) => fail(detail || `closed with ${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`);
    });
  }

  /** Run in `onopen` itself, not after an await: the first frame may come before a continuation would run. */
  private opened(ws: WsLike): void {
    ws.onclose = (ev) => this.onClosed(ws, ev.code, ev.reason);
    // Not `failures = 0`: a gateway that opens and then fails (unreadable frames, silence) still backs off.
    this.openedAt = this.heardAt = Date.now();
    this.pingAt = 0;
    this.startHeartbeat(ws);
    this.setState("open");
    this.o.onOpen();
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  /** Checks the connection four times per `heartbeatMs`, so a dead one is noticed within 2.5 × `heartbeatMs`. */
  private startHeartbeat(ws: WsLike): void {
    const ms = this.o.heartbeatMs;
    if (!(ms > 0)) return;
    const beat = setInterval(() => (this.ws === ws ? this.checkAlive(ws) : clearInterval(beat)), ms / 4);
    this.beat = beat;
  }

  private stopHeartbeat(): void {
    if (this.beat) clearInterval(this.beat);
    this.beat = null;
  }

  /**
   * After `heartbeatMs` without a frame, a `ping` (the gateway answers `pong`); no frame at all within `heartbeatMs`
   * of it is a dead connection (a relay that dropped it, a dead TCP path): it is restarted and every job resumed.
   */
  private checkAlive(ws: WsLike): void {
    const now = Date.now();
    const ms = this.o.heartbeatMs;
    if (this.pingAt === 0) {
      if (now - this.heardAt < ms) return;
      this.pingAt = now;
      try {
        ws.send(encodeCommand({ command: "ping" }, this.o.format));
      } catch {
        /* closing: its close reconnects */
      }
    } else if (now - this.pingAt >= ms) {
      this.restart("no answer to ping", `no frame for ${now - this.heardAt} ms, not even an answer to ping`);
    }
  }

  private onClosed(ws: WsLike, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.stopHeartbeat();
    this.dropPending(` (closed with ${code}${reason ? `: ${reason}` : ""})`);
    if (!this.wanted) return;
    if (code === 1008) {
      this.end(new NodewayError(ClientErrorCode.refused, `the gateway closed the connection: ${reason || code}`));
      return;
    }
    this.setState("connecting");
    this.schedule();
  }

  /** The next attempt after exponential backoff with jitter; `failures` start over once a connection is stable. */
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

  /** Closes the current socket without waiting for its close (its events are ignored from now on). */
  private detach(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    this.stopHeartbeat();
    if (ws) closeQuietly(ws, code, reason);
  }

  /** Drops this socket and reconnects; `why` is told to the commands it fails. `reason`: the close frame's. */
  private restart(reason: string, why: string): void {
    this.detach(4000, reason);
    this.dropPending(` (${why})`);
    this.setState("connecting");
    this.schedule();
  }

  /** An unreadable frame: a lost frame would be a gap, so start again from each job's last seq, or give up. */
  private onUnreadable(err: FrameError): void {
    // The backoff applies (`failures` was not reset by the open): a gateway sending garbage is not hammered.
    if (++this.protocolErrors < this.o.reconnect.maxProtocolErrors) {
      this.restart("unreadable frame", `unreadable frame: ${err.message}`);
      return;
    }
    const n = this.protocolErrors;
    this.detach(4000, "unreadable frame");
    this.dropPending(` (unreadable frame: ${err.message})`);
    this.end(
      new NodewayError(
        ClientErrorCode.protocol,
        `unreadable frames on ${n} connections in a row (maxProtocolErrors), the last: ${err.message}; not reconnecting`,
      ),
    );
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
    this.detach(1000, "");
    this.dropPending();
    this.end(new NodewayError(ClientErrorCode.closed, "the client was closed"));
  }

  /** Sends a command, unanswered, once the socket is open; `CLIENT_ERR_TIMEOUT` if it is not within the deadline. */
  async sendWhenOpen(cmd: ClientCommand): Promise<void> {
    await this.readyBy(Date.now() + this.o.requestTimeoutMs, cmd.command);
    this.send(cmd);
  }

  /** Sends a command without waiting for an answer; false when the socket is not open (it is resent on open). */
  send(cmd: ClientCommand): boolean {
    if (this.state !== "open" || !this.ws) return false;
    this.ws.send(encodeCommand(cmd, this.o.format));
    return true;
  }

  /**
   * Sends a command and resolves with its `rpc_response` result (rejects with its error). Past `requestTimeoutMs`
   * from the call, the wait for the socket included, it rejects with `CLIENT_ERR_TIMEOUT`.
   */
  async request<T>(cmd: ClientCommand): Promise<T> {
    const ms = this.o.requestTimeoutMs;
    const deadline = Date.now() + ms;
    await this.readyBy(deadline, cmd.command);
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
      const timer = setTimeout(() => {
        this.pending.delete(request_id);
        reject(
          new NodewayError(
            ClientErrorCode.timeout,
            `"${cmd.command}" was not answered within ${ms} ms (requestTimeoutMs): whether it took effect is unknown`,
          ),
        );
      }, deadline - Date.now());
      this.pending.set(request_id, {
        command: cmd.command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      if (this.state === "open" && this.ws) this.ws.send(frame);
    });
  }

  /** `ready()`, or `CLIENT_ERR_TIMEOUT` when the socket is not open by `deadline` (the command is not sent then). */
  private readyBy(deadline: number, command: string): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new NodewayError(
              ClientErrorCode.timeout,
              `"${command}" was not sent: the connection did not open within ${this.o.requestTimeoutMs} ms (requestTimeoutMs)`,
            ),
          ),
        deadline - Date.now(),
      );
    });
    return Promise.race([this.ready(), late]).finally(() => clearTimeout(timer));
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
      this.onUnreadable(err);
      return;
    }
    this.heard();
    if (m.type === "rpc_response" || (m.type === "error" && !("job_id" in m))) {
      if (this.answer(m as CommandResponse)) return;
    }
    this.o.onMessage(m);
  }

  /** A readable frame: the connection is alive, and once up for `STABLE_MS` it has proven stable. */
  private heard(): void {
    const now = Date.now();
    this.heardAt = now;
    this.pingAt = 0;
    if (now - this.openedAt >= STABLE_MS) this.failures = this.protocolErrors = 0;
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

/** Closes `ws` if it is not closing already (a reason of at most 123 bytes, as the protocol allows). */
function closeQuietly(ws: WsLike, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    /* already closing */
  }
}
