/**
 * Nodes for tests and benchmarks (`nodeway.test.*`): a paced token stream standing in for an LLM, a sleep and
 * a failure, which honour cancellation through `ctx.sleep` and `ctx.signal`; and for the execution strategies,
 * a node that says where it runs and one that holds its thread without looking at its signal.
 */
import { unlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { threadId } from "node:worker_threads";
import { NodeError, type GeneratorNodeDef, type NodeDef } from "../engine/types.js";
import { asInt, asNumber, asText, prop, yieldToEventLoop } from "./util.js";

/**
 * Emits `count` tokens "tok0 ", "tok1 ", … as `chunk` events at `rate` tokens per second, then the joined text
 * on `output`. Token i is due at start + (i + 1) / rate, so the pace does not drift with timer lateness.
 */
export const tokens: GeneratorNodeDef = {
  kind: "generator",
  type: "nodeway.test.Tokens",
  title: "Tokens",
  description:
    "Streams count tokens (tok0, tok1, …) as chunk events at rate tokens per second, then outputs the joined text.",
  properties: [
    prop("count", "int", 10, { min: 0, description: "Number of tokens to emit." }),
    prop("rate", "float", 100, { min: 0, description: "Tokens per second; 0 emits as fast as possible." }),
  ],
  outputs: [
    { name: "chunk", type: "str" },
    { name: "output", type: "str" },
  ],
  async *generate(ctx, inputs) {
    const count = asInt(inputs.count, "count");
    const rate = asNumber(inputs.rate, "rate");
    if (count < 0) throw new NodeError(`count must be ≥ 0, got ${count}`);
    if (rate < 0) throw new NodeError(`rate must be ≥ 0, got ${rate}`);
    const intervalMs = rate > 0 ? 1000 / rate : 0;
    const start = performance.now();
    const parts: string[] = [];
    for (let i = 0; i < count; i++) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const waitMs = start + (i + 1) * intervalMs - performance.now();
      // Sub-millisecond waits are below timer resolution: skip them and let the schedule catch up later.
      if (waitMs >= 1) await ctx.sleep(waitMs);
      else if (i % 256 === 255) await yieldToEventLoop(); // unpaced: still let cancellation and I/O in
      const token = `tok${i} `;
      parts.push(token);
      ctx.chunk(token);
      yield { handle: "chunk", value: token };
    }
    ctx.chunk("", { done: true });
    yield { handle: "output", value: parts.join("") };
  },
};

/** Waits `seconds` (cancellable), then outputs `seconds`. */
export const sleep: NodeDef = {
  kind: "process",
  type: "nodeway.test.Sleep",
  title: "Sleep",
  description: "Waits the given number of seconds, then outputs it.",
  properties: [prop("seconds", "float", 1, { min: 0, description: "How long to wait." })],
  outputs: [{ name: "output", type: "float" }],
  process: async (ctx, inputs) => {
    const seconds = asNumber(inputs.seconds, "seconds");
    if (seconds < 0) throw new NodeError(`seconds must be ≥ 0, got ${seconds}`);
    if (seconds > 0) await ctx.sleep(seconds * 1000);
    return { output: seconds };
  },
};

/** Always fails with `message`. */
export const fail: NodeDef = {
  kind: "process",
  type: "nodeway.test.Fail",
  title: "Fail",
  description: "Fails the run with the given message.",
  properties: [prop("message", "str", "failed on purpose", { description: "The error message." })],
  outputs: [{ name: "output", type: "any" }],
  process: (_ctx, inputs) => {
    throw new NodeError(asText(inputs.message));
  },
};

/** Whether a TCP connection to `host:port` opens within 2 s. */
function reaches(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 2_000 });
    const done = (ok: boolean) => (s.destroy(), resolve(ok));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.once("timeout", () => done(false));
  });
}

/** Whether this run may create a file in `dir`. */
function canWrite(dir: string): boolean {
  const path = join(dir, `.nodeway-probe-${process.pid}-${threadId}`);
  try {
    writeFileSync(path, "");
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where the graph runs and what it may touch: `{pid, thread_id, host, uid, root_writable, reached}` (thread 0 is a
 * process's main thread; `reached` says whether `probe_host:probe_port` answered, null with no probe) — what the
 * job's execution strategy decides.
 */
export const whereabouts: NodeDef = {
  kind: "process",
  type: "nodeway.test.Whereabouts",
  title: "Whereabouts",
  description:
    "Outputs the process, thread, host and user the node ran as, the GPUs CUDA would show it, whether it could write to / and reach probe_host:probe_port (which the job's execution strategy decides).",
  properties: [
    prop("probe_host", "str", "", { description: "Host to try a TCP connection to; empty for none." }),
    prop("probe_port", "int", 0, { min: 0, max: 65535, description: "Port of the probe." }),
  ],
  outputs: [{ name: "output", type: "dict" }],
  process: async (_ctx, inputs) => {
    const host = asText(inputs.probe_host ?? "");
    const port = asInt(inputs.probe_port ?? 0, "probe_port");
    return {
      output: {
        pid: process.pid,
        thread_id: threadId,
        host: hostname(),
        uid: process.getuid?.() ?? -1,
        root_writable: canWrite("/"),
        reached: host !== "" && port > 0 ? await reaches(host, port) : null,
        gpus: process.env.CUDA_VISIBLE_DEVICES ?? null,
        // When the agent started this thread or process (epoch ms; null inline): before its job was submitted, it
        // was a spare.
        runner_started_at: Number(process.env.NODEWAY_RUNNER_STARTED_AT) || null,
      },
    };
  },
};

/**
 * Logs where it runs, then keeps its thread busy for `seconds` without looking at its signal: a node stuck in a
 * computation or native call, which only a `threaded` or `subprocess` strategy can stop (an `inline` one holds
 * the agent's loop for as long).
 */
export const spin: NodeDef = {
  kind: "process",
  type: "nodeway.test.Spin",
  title: "Spin",
  description: "Busy-waits the given seconds, ignoring cancellation (for isolation tests; blocks an inline agent).",
  properties: [prop("seconds", "float", 1, { min: 0, max: 600, description: "How long to keep the thread busy." })],
  outputs: [{ name: "output", type: "float" }],
  process: async (ctx, inputs) => {
    const seconds = asNumber(inputs.seconds, "seconds");
    if (seconds < 0 || seconds > 600) throw new NodeError(`seconds must be in [0, 600], got ${seconds}`);
    ctx.log(`spinning in pid ${process.pid} thread ${threadId}`);
    await new Promise((r) => setTimeout(r, 20)); // let the log leave before the loop is held
    const until = performance.now() + seconds * 1000;
    while (performance.now() < until) {
      /* held on purpose */
    }
    return { output: seconds };
  },
};

/**
 * Holds `mb` MiB of JavaScript heap (plain arrays, which count against a heap limit as typed arrays do not), then
 * outputs `mb`: a run that outgrows its memory limit (for isolation tests; an inline run grows the agent's heap).
 */
export const allocate: NodeDef = {
  kind: "process",
  type: "nodeway.test.Allocate",
  title: "Allocate",
  description: "Holds the given MiB of heap, then outputs it (for memory-limit tests; grows an inline agent's heap).",
  properties: [prop("mb", "int", 16, { min: 0, max: 4096, description: "MiB of heap to hold." })],
  outputs: [{ name: "output", type: "int" }],
  process: async (ctx, inputs) => {
    const mb = asInt(inputs.mb, "mb");
    if (mb < 0 || mb > 4096) throw new NodeError(`mb must be in [0, 4096], got ${mb}`);
    const held: number[][] = [];
    for (let i = 0; i < mb; i++) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      held.push(new Array<number>(131_072).fill(i + 0.5)); // 128 Ki doubles: 1 MiB
      if (i % 64 === 63) await yieldToEventLoop();
    }
    return { output: held.length };
  },
};

/** Byte `i` of `nodeway.test.Bytes`'s output (tests recompute it): a pattern that no run of zeros hides. */
export function testByte(i: number, seed: number): number {
  return (i * 31 + seed * 7 + (i >> 8)) & 0xff;
}
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Outputs `size` patterned bytes (standing in for an image or audio model); `png` starts them with PNG's signature. */
export const bytes: NodeDef = {
  kind: "process",
  type: "nodeway.test.Bytes",
  title: "Bytes",
  description: "Outputs size bytes of a fixed pattern (seeded), optionally starting with the PNG signature.",
  properties: [
    prop("size", "int", 1024, { min: 0, max: 64 * 1024 * 1024, description: "How many bytes." }),
    prop("seed", "int", 0, { min: 0, max: 255, description: "Varies the pattern." }),
    prop("png", "bool", false, { description: "Start with the PNG file signature." }),
  ],
  outputs: [{ name: "output", type: "bytes" }],
  process: (_ctx, inputs) => {
    const size = asNumber(inputs.size, "size");
    const seed = asNumber(inputs.seed, "seed");
    if (!Number.isInteger(size) || size < 0 || size > 64 * 1024 * 1024)
      throw new NodeError(`size must be an integer in [0, 67108864], got ${size}`);
    const out = new Uint8Array(size);
    for (let i = 0; i < size; i++) out[i] = testByte(i, seed);
    if (inputs.png === true) out.set(PNG_SIGNATURE.slice(0, size));
    return { output: out };
  },
};

export const TEST_NODES: readonly NodeDef[] = [tokens, sleep, fail, whereabouts, spin, allocate, bytes];
