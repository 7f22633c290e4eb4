/**
 * One run on a runner's channel (thread, process or container): the run is sent, what comes back is checked and
 * published, host calls are answered, and a stop is enforced (`STOP_GRACE_MS`, then the runner is killed).
 */
import {
  displayName,
  ENGINE_EVENT_TYPES,
  nodeContext,
  UnknownNodeTypeError,
  type EngineEvent,
  type RunGraphResult,
} from "../engine/engine.js";
import { ASSETS_DEFAULTS, assertNever } from "../../protocol/index.js";
import { DEFAULT_NODE_LIMITS, type NodeDef, type NodeLimits } from "../engine/types.js";
import {
  ASSET_CALLS_AT_ONCE,
  ASSET_PIECE_BYTES,
  type Channel,
  type FromRunner,
  type RunnerNodes,
  type StrategyRun,
  type ToRunner,
} from "./channel.js";

/**
 * How long a stopped run may take to end by itself before its thread or process is killed: with the kill and the
 * terminal update, a stop ends any job within 2 s.
 */
export const STOP_GRACE_MS = 1_000;

/** At most this much of a message a runner sends is kept (in the job's error, the log). */
const RUNNER_TEXT_MAX = 4_096;

/** The run crashed outside the graph (its thread or process died): the job fails with this message. */
export class RunnerCrashedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunnerCrashedError";
  }
}

/** What a runner's library is, from the agent's (computed once per library). */
const runnerNodesOf = new WeakMap<ReadonlyMap<string, NodeDef>, Omit<RunnerNodes, "limits">>();
function runnerNodes(library: ReadonlyMap<string, NodeDef>, limits: NodeLimits): RunnerNodes {
  let known = runnerNodesOf.get(library);
  if (!known) {
    const host = new Set<NodeDef>();
    for (const d of library.values()) if (d.inAgent === true && d.kind === "process") host.add(d);
    known = {
      offered: [...library.keys()],
      host: [...host].map((d) => ({
        type: d.type,
        aliases: d.aliases,
        title: d.title,
        description: d.description,
        properties: d.properties,
        outputs: d.outputs,
        isDynamic: d.isDynamic,
      })),
    };
    runnerNodesOf.set(library, known);
  }
  return { ...known, limits };
}

/**
 * Whether a runner may take another run after this one: only a thread whose run ended by itself (never stopped,
 * no host call left open). Processes and containers are single-use: they are the strategies that separate jobs.
 */
const REUSABLE = new WeakSet<Channel>();

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
const isStr = (x: unknown): x is string => typeof x === "string";

/**
 * What is wrong with a message from a runner, or null. A thread or process runs the agent's own code, but a
 * container may run anything: its events are published as the job's, so it may send only what a graph emits
 * (never a job-level event such as a `job_update` saying the job completed, nor one without the node it is
 * about), and its result only in the shape the agent records.
 */
export function runnerMessageProblem(m: unknown): string | null {
  if (!isObj(m)) return "a message that is not an object";
  switch (m.type) {
    case "event": {
      const e = m.event;
      if (!isObj(e) || !isStr(e.type)) return "an event that is not an object with a type";
      if (!ENGINE_EVENT_TYPES.has(e.type)) return `a "${e.type.slice(0, 40)}" event, which a graph does not emit`;
      if (e.type === "edge_update" ? !isStr(e.edge_id) : !isStr(e.node_id))
        return `a "${e.type}" event without the ${e.type === "edge_update" ? "edge" : "node"} it is about`;
      return null;
    }
    case "done": {
      const r = m.result;
      if (!isObj(r) || !isObj(r.outputs) || !Object.values(r.outputs).every(Array.isArray))
        return "a result without outputs (name → list of values)";
      if (r.status === "completed" || r.status === "cancelled") return null;
      if (
        r.status === "failed" &&
        isObj(r.error) &&
        isStr(r.error.node_id) &&
        isStr(r.error.node_type) &&
        isStr(r.error.message)
      )
        return null;
      return "a result that is none of completed, cancelled, failed (with the failing node)";
    }
    case "started":
      return null;
    case "thrown": {
      const u = m.unknownNode;
      if (!isStr(m.message) || !(u === null || (isObj(u) && isStr(u.nodeId) && isStr(u.nodeType))))
        return "an error without its message";
      return null;
    }
    case "call":
      if (!Number.isSafeInteger(m.call) || !isStr(m.node_id) || !isObj(m.inputs))
        return "a call without its number, node and inputs";
      return null;
    case "call_cancel":
      return Number.isSafeInteger(m.call) ? null : "a call_cancel without its number";
    case "asset_put":
      if (!Number.isSafeInteger(m.call) || !(m.bytes instanceof Uint8Array))
        return "an asset_put without its number and bytes";
      if ((m.name !== undefined && !isStr(m.name)) || (m.contentType !== undefined && !isStr(m.contentType)))
        return "an asset_put whose name or content type is not text";
      return null;
    case "asset_get":
      return Number.isSafeInteger(m.call) && isStr(m.ref) ? null : "an asset_get without its number and reference";
    case "asset_piece":
      if (!Number.isSafeInteger(m.call) || !(m.bytes instanceof Uint8Array) || m.bytes.byteLength > ASSET_PIECE_BYTES)
        return `an asset_piece without its number, or of more than ${ASSET_PIECE_BYTES} bytes`;
      return null;
    case "asset_more":
      return Number.isSafeInteger(m.call) ? null : "an asset_more without its number";
    default:
      return "a message that is none of started, event, done, thrown, call, call_cancel, asset_put, asset_piece, asset_get, asset_more";
  }
}

/** At most `RUNNER_TEXT_MAX` characters of what a runner said. */
const clip = (text: string): string =>
  text.length > RUNNER_TEXT_MAX ? `${text.slice(0, RUNNER_TEXT_MAX)}… (cut)` : text;

/**
 * `memoryMb` is the run's memory limit, for the message when it dies (0: none set). `retry` gives a fresh runner
 * for a spare that dies before it has said anything (before `started`: it never began the graph).
 *
 * Nothing a runner sends can throw into the agent: a message of the wrong shape, or one whose handling throws
 * (an event the agent cannot publish, say), stops the runner and fails the run with `RunnerCrashedError`.
 */
export function runOnChannel(
  run: StrategyRun,
  ch: Channel,
  memoryMb: number,
  retry: (() => Channel) | null = null,
  recycle: ((ch: Channel) => boolean) | null = null,
): Promise<RunGraphResult> {
  REUSABLE.delete(ch); // earned again by this run's own clean end
  return new Promise((resolve, reject) =>
    new ChannelRun(run, ch, { memoryMb, retry, recycle }, resolve, reject).start(),
  );
}

/** What `runOnChannel` does when a runner dies or ends cleanly. */
interface ChannelRunOptions {
  memoryMb: number;
  retry: (() => Channel) | null;
  recycle: ((ch: Channel) => boolean) | null;
}

/** One run on one channel: it settles once (resolved or rejected), and then its runner is killed or recycled. */
class ChannelRun {
  private settled = false;
  private heard = false;
  private killTimer: NodeJS.Timeout | null = null;
  /** Host calls in progress, by number: their signals. */
  private readonly calls = new Map<number, AbortController>();
  /** Nodes with a host call in progress: a node runs one invocation at a time, so one call each. */
  private readonly callingNodes = new Set<string>();
  /** Asset calls not yet answered in full: at most `ASSET_CALLS_AT_ONCE`. */
  private assetCalls = 0;
  /** Puts whose pieces are coming, by call: the pieces so far and their bytes. */
  private readonly puts = new Map<number, { pieces: Uint8Array[]; bytes: number }>();
  /** Gets whose answer goes on, by call: the asset's bytes and how far they were sent. */
  private readonly gets = new Map<number, { bytes: Uint8Array; at: number }>();

  constructor(
    private readonly run: StrategyRun,
    private readonly ch: Channel,
    private readonly opts: ChannelRunOptions,
    private readonly resolve: (r: RunGraphResult | Promise<RunGraphResult>) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  start(): void {
    this.ch.onMessage((m) => {
      try {
        this.onMessage(m);
      } catch (err) {
        // A message that passed the checks and still could not be handled: the run's, never the agent's, failure.
        this.crashed(
          `sent a message the agent could not handle (${clip(err instanceof Error ? err.message : String(err))})`,
        );
      }
    });
    this.ch.onGone((how) => this.onGone(how));
    if (this.run.signal.aborted) this.onAbort();
    else this.run.signal.addEventListener("abort", this.onAbort, { once: true });
    const { run } = this;
    this.ch.send({
      type: "run",
      graph: run.graph,
      params: run.params,
      nodes: runnerNodes(run.library, run.limits ?? DEFAULT_NODE_LIMITS),
      assets: run.assets !== undefined,
      ...(run.remote ? { remote: [...run.remote.nodeIds] } : {}),
    });
  }

  private settle(fn: () => void): void {
    if (this.settled) return;
    this.settled = true;
    if (this.killTimer) clearTimeout(this.killTimer);
    this.run.signal.removeEventListener("abort", this.onAbort);
    for (const c of this.calls.values()) c.abort(new Error("the run ended"));
    this.calls.clear();
    fn();
    // A finished run's thread or process has nothing left to do, unless a clean thread can take the next run.
    if (!(REUSABLE.has(this.ch) && !this.run.signal.aborted && this.opts.recycle?.(this.ch))) this.ch.kill();
  }

  private crashed(what: string): void {
    this.settle(() =>
      this.reject(new RunnerCrashedError(`the ${this.ch.what} running the graph ${what}; it was stopped`)),
    );
  }

  private cancelled(): RunGraphResult {
    return { status: "cancelled", outputs: {}, reason: this.run.signal.reason };
  }

  private readonly onAbort = (): void => {
    const reason = this.run.signal.reason as { message?: string } | undefined;
    this.ch.send({ type: "stop", reason: String(reason?.message ?? reason) });
    this.killTimer = setTimeout(() => this.settle(() => this.resolve(this.cancelled())), STOP_GRACE_MS);
  };

  private readonly emit = (e: EngineEvent): void => {
    if (!this.settled) this.run.emit(e);
  };

  /** Runs an `inAgent` or remote node of the run's graph for the runner, and answers. */
  private async hostCall(m: Extract<FromRunner, { type: "call" }>): Promise<void> {
    const { run, calls } = this;
    const node = run.graph.nodes.find((n) => n.id === m.node_id);
    const def = node ? run.library.get(node.type) : undefined;
    const remote = run.remote?.nodeIds.has(m.node_id) ? run.remote : null;
    const hosted = def?.kind === "process" && def.inAgent === true ? def : null;
    if (!node || !(remote || hosted) || calls.has(m.call)) {
      return this.crashed(
        `asked the agent to run node ${JSON.stringify(m.node_id.slice(0, 80))}, which is not one of its graph's nodes the agent runs`,
      );
    }
    // Each call is a child job or a ComfyUI run: a runner may not start them faster than its graph runs nodes.
    if (this.callingNodes.has(node.id)) {
      return this.crashed(
        `asked the agent to run node ${JSON.stringify(m.node_id.slice(0, 80))} again before its last call was answered`,
      );
    }
    this.callingNodes.add(node.id);
    const ac = new AbortController();
    calls.set(m.call, ac);
    const ctx = nodeContext(
      node,
      def ? displayName(node, def) : node.type,
      run.params,
      this.emit,
      ac.signal,
      run.limits ?? DEFAULT_NODE_LIMITS,
      // The job's assets, for a node that reads an input image (an ImageToImage on ComfyUI uploads it).
      { workspace: new Map(), ...(run.assets ? { assets: run.assets } : {}) },
    );
    let answer: ToRunner;
    try {
      const outputs = remote ? await remote.run(ctx, m.inputs) : await hosted!.process(ctx, m.inputs);
      answer = { type: "call_result", call: m.call, ok: true, outputs: outputs ?? {} };
    } catch (err) {
      answer = {
        type: "call_result",
        call: m.call,
        ok: false,
        message: err instanceof Error ? err.message : String(err),
      };
    }
    this.callingNodes.delete(node.id);
    if (calls.delete(m.call) && !this.settled) this.ch.send(answer);
  }

  /** Counts a new asset call (one whose pieces came first is counted already); false when it was one too many. */
  private openAssetCall(call: number): boolean {
    if (this.puts.has(call)) return true;
    if (this.assetCalls >= ASSET_CALLS_AT_ONCE) {
      this.crashed(`sent more than ${ASSET_CALLS_AT_ONCE} asset calls at once`);
      return false;
    }
    this.assetCalls++;
    return true;
  }

  /**
   * A piece of a put's bytes, held until its `asset_put`. Past the largest asset the store takes, pieces are only
   * counted (the put is answered with that limit); past a job's whole budget the runner is stopped.
   */
  private assetPiece(m: Extract<FromRunner, { type: "asset_piece" }>): void {
    if (this.gets.has(m.call)) return this.crashed(`sent a piece of asset call ${m.call}, which is a get`);
    let put = this.puts.get(m.call);
    if (!put) {
      if (!this.openAssetCall(m.call)) return;
      this.puts.set(m.call, (put = { pieces: [], bytes: 0 }));
    }
    put.bytes += m.bytes.byteLength;
    if (put.bytes > ASSETS_DEFAULTS.jobMaxBytes)
      return this.crashed(`sent an asset of more than ${ASSETS_DEFAULTS.jobMaxBytes} bytes, a job's whole budget`);
    if (put.bytes > ASSETS_DEFAULTS.maxUploadBytes) put.pieces.length = 0;
    else put.pieces.push(m.bytes);
  }

  private async assetCall(m: Extract<FromRunner, { type: "asset_put" | "asset_get" }>): Promise<void> {
    const assets = this.run.assets;
    let answer: ToRunner;
    let more = false;
    try {
      if (!assets) throw new Error("this run has no asset store");
      if (m.type === "asset_put") {
        const ref = await assets.put(this.putBytes(m), {
          ...(m.name !== undefined ? { name: m.name.slice(0, 1024) } : {}),
          ...(m.contentType !== undefined ? { contentType: m.contentType.slice(0, 255) } : {}),
        });
        answer = { type: "asset_result", call: m.call, ok: true, ref };
      } else {
        const bytes = await assets.get(m.ref);
        this.gets.set(m.call, { bytes, at: 0 });
        ({ answer, more } = this.nextPiece(m.call)!);
      }
    } catch (err) {
      this.puts.delete(m.call);
      answer = {
        type: "asset_result",
        call: m.call,
        ok: false,
        message: err instanceof Error ? err.message : String(err),
      };
    }
    if (!more) this.assetCalls--;
    if (!this.settled) this.ch.send(answer);
  }

  /** A put's whole bytes: its pieces and the last one its `asset_put` carries. */
  private putBytes(m: Extract<FromRunner, { type: "asset_put" }>): Uint8Array {
    const put = this.puts.get(m.call);
    if (!put) return m.bytes;
    this.puts.delete(m.call);
    const bytes = put.bytes + m.bytes.byteLength;
    if (bytes > ASSETS_DEFAULTS.maxUploadBytes)
      throw new Error(`an asset of ${bytes} bytes is over the ${ASSETS_DEFAULTS.maxUploadBytes}-byte asset limit`);
    return Buffer.concat([...put.pieces, m.bytes], bytes);
  }

  /**
   * The next piece of a get's answer (a copy: a view would carry the whole asset to a thread), and whether more is
   * left; null when the call has nothing left to send.
   */
  private nextPiece(call: number): { answer: ToRunner; more: boolean } | null {
    const get = this.gets.get(call);
    if (!get) return null;
    const whole = get.at === 0 && get.bytes.byteLength <= ASSET_PIECE_BYTES;
    const bytes = whole ? get.bytes : get.bytes.slice(get.at, get.at + ASSET_PIECE_BYTES);
    get.at += bytes.byteLength;
    const more = get.at < get.bytes.byteLength;
    if (!more) this.gets.delete(call);
    return { answer: { type: "asset_result", call, ok: true, bytes, ...(more ? { more } : {}) }, more };
  }

  /** `asset_more`: the runner read a piece and asks for the next. */
  private sendMore(call: number): void {
    const next = this.nextPiece(call);
    if (!next) return this.crashed(`asked for more of asset call ${call}, which has no more`);
    if (!next.more) this.assetCalls--;
    if (!this.settled) this.ch.send(next.answer);
  }

  private onMessage(m: FromRunner): void {
    this.heard = true;
    if (this.settled) return;
    const problem = runnerMessageProblem(m);
    // Stopped at once: nothing more it sends is published, and its job fails saying what it sent.
    if (problem !== null) return this.crashed(`sent ${problem}`);
    const { run } = this;
    switch (m.type) {
      case "started":
        return;
      case "event":
        return run.emit(m.event);
      case "done": {
        const r = m.result;
        if (!run.signal.aborted && this.calls.size === 0) REUSABLE.add(this.ch);
        if (r.status === "failed") r.error = { ...r.error, message: clip(r.error.message) };
        return this.settle(() => this.resolve(r.status === "cancelled" ? { ...r, reason: run.signal.reason } : r));
      }
      case "thrown": {
        const u = m.unknownNode;
        const err = u
          ? new UnknownNodeTypeError(u.nodeId.slice(0, 200), u.nodeType.slice(0, 200))
          : new Error(clip(m.message));
        return this.settle(() => this.reject(err));
      }
      case "call":
        return void this.hostCall(m).catch((err: unknown) =>
          this.crashed(`had a host call fail: ${(err as Error)?.message ?? String(err)}`),
        );
      case "call_cancel":
        return void this.calls.get(m.call)?.abort(new Error("the runner stopped waiting"));
      case "asset_put":
      case "asset_get":
        if (!this.openAssetCall(m.call)) return;
        return void this.assetCall(m);
      case "asset_piece":
        return this.assetPiece(m);
      case "asset_more":
        return this.sendMore(m.call);
      default:
        return assertNever(m, "runner message");
    }
  }

  private onGone(how: string): void {
    const { run, ch, opts } = this;
    if (run.signal.aborted) return this.settle(() => this.resolve(this.cancelled()));
    const retry = opts.retry;
    if (!this.heard && retry !== null)
      return this.settle(() => this.resolve(runOnChannel(run, retry(), opts.memoryMb)));
    // A process at its heap limit aborts (SIGABRT); a worker says so in its error.
    const limit = opts.memoryMb > 0 ? `; its memory limit is ${opts.memoryMb} MiB (jobMemoryMb)` : "";
    this.settle(() =>
      this.reject(
        new RunnerCrashedError(`the ${ch.what} running the graph ended before it finished (${clip(how)})${limit}`),
      ),
    );
  }
}
