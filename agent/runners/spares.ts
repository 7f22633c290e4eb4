/** Threads and processes started ahead of their runs (`warmRunners`). */
import type { Channel } from "./channel.js";
import type { LocalLimits } from "./local.js";
import { processChannel } from "./subprocess.js";
import { threadChannel } from "./threaded.js";

/** A new thread or process for one run, with the run's limits. */
export function freshChannel(strategy: "threaded" | "subprocess", limits: LocalLimits): Channel {
  return strategy === "threaded" ? threadChannel(limits) : processChannel(limits);
}

/**
 * Runners started ahead of their runs, `count` per strategy. A thread or process spends ~75–85 ms loading the
 * runner's modules before a graph can start (bench/strategies.ts), and its start as much again: a spare has done
 * both when its job arrives. A process is used once (nothing of one job's run is left for the next: the isolation
 * `subprocess` promises); a thread whose run ended by itself takes the next run (`offer`), so the default strategy
 * costs no thread start per job, and a thread that was stopped is terminated.
 * A run with GPUs of its own gets a fresh process (its CUDA_VISIBLE_DEVICES is set at start). Spares have the
 * agent's memory limit, as every run does.
 */
export class RunnerSpares {
  private readonly ready = new Map<"threaded" | "subprocess", Channel[]>();
  private closed = false;

  constructor(
    kinds: readonly ("threaded" | "subprocess")[],
    private readonly count: number,
    private readonly memoryMb: number,
    /** Threads back from runs kept idle at most (the agent's `warmRunners + maxJobs`): a burst reuses them all. */
    private readonly keepMax: number = count + 1,
  ) {
    for (const k of kinds) {
      this.ready.set(k, []);
      for (let i = 0; i < count; i++) this.refill(k);
    }
  }

  /** A live spare for a run (its place taken by a new one), or null: the run starts a fresh runner. */
  take(strategy: "threaded" | "subprocess", limits: LocalLimits): Channel | null {
    const list = this.ready.get(strategy);
    if (!list || limits.gpus.length > 0 || limits.memoryMb !== this.memoryMb) return null;
    let spare: Channel | undefined;
    while ((spare = list.shift()) !== undefined && !spare.alive());
    // Started after this run's own turn: its module load then competes with the run's start as little as can be.
    // While others wait (threads back from runs), none is started.
    if (list.length === 0) setImmediate(() => this.refill(strategy));
    spare?.hold(true);
    return spare ?? null;
  }

  /** A thread back from a clean run waits for the next one, up to `keepMax` idle; true when kept. */
  offer(strategy: "threaded" | "subprocess", ch: Channel): boolean {
    const list = this.ready.get(strategy);
    if (this.closed || !list || list.length >= this.keepMax || !ch.alive() || !ch.reset) return false;
    ch.reset();
    this.wait(strategy, list, ch);
    return true;
  }

  /** The agent is stopping: spares are killed (a process's watchdog would also end it once the agent is gone). */
  close(): void {
    this.closed = true;
    for (const list of this.ready.values()) for (const c of list.splice(0)) c.kill();
  }

  private refill(strategy: "threaded" | "subprocess"): void {
    const list = this.ready.get(strategy)!;
    if (this.closed || list.length >= this.count) return;
    this.wait(strategy, list, freshChannel(strategy, { memoryMb: this.memoryMb, gpus: [] }));
  }

  private wait(strategy: "threaded" | "subprocess", list: Channel[], spare: Channel): void {
    spare.hold(false);
    list.push(spare);
    // One that dies while it waits (killed, out of memory) is replaced, a second later: a runner that cannot start
    // at all must not become a loop of starts.
    spare.onGone(() => {
      const i = list.indexOf(spare);
      if (i < 0) return; // taken: its run sees how it went
      list.splice(i, 1);
      setTimeout(() => this.refill(strategy), 1_000).unref();
    });
  }
}
