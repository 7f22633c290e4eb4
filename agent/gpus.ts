/**
 * The agent's GPUs for runs of `gpu`-pool jobs (explicit device ids). With `gpusPerRun` 0 every such run
 * is given all of them, as on a one-GPU host; with N, each run gets N of its own, and the agent pulls a `gpu` job
 * only while N are free, so four runs on a four-GPU host do not all land on device 0. A run sees its GPUs as a
 * Docker device request (`docker`) or `CUDA_VISIBLE_DEVICES` (`subprocess`); `inline` and `threaded` runs share
 * the agent's process and its view of the devices, so for them only the count holds.
 */
export class GpuGroups {
  private readonly free: string[][] = [];
  /** Ids that make no whole group (5 GPUs, 2 a run): never handed out. */
  readonly unused: readonly string[];

  constructor(
    readonly ids: readonly string[],
    readonly perRun: number,
  ) {
    const whole = perRun > 0 ? Math.floor(ids.length / perRun) : 0;
    for (let i = 0; i < whole; i++) this.free.push(ids.slice(i * perRun, (i + 1) * perRun));
    this.unused = perRun > 0 ? ids.slice(whole * perRun) : [];
  }

  /** How many more runs can be given GPUs now; unbounded when every run shares them all. */
  get available(): number {
    return this.perRun === 0 ? Number.POSITIVE_INFINITY : this.free.length;
  }

  /** The GPUs for one run. Throws when none are free: the caller pulls only while `available` says so. */
  take(): string[] {
    if (this.perRun === 0) return [...this.ids];
    const group = this.free.shift();
    if (!group) throw new Error("no GPUs free for another run");
    return group;
  }

  /** A run's GPUs back, when it has ended. */
  give(group: readonly string[]): void {
    if (this.perRun > 0 && group.length > 0) this.free.push([...group]);
  }
}
