/**
 * How a benchmark reports: table rows (`@row`) and goal lines (`@goal`) on stdout, read by bench/run.ts.
 * Goals compare our system with a peer measured in the same run; `noise` is the A/A spread of the peer (two
 * runs of the same peer per round, medians compared) in the metric's own unit.
 */
import { median, round } from "./stats.js";

export interface GoalLine {
  bench: string;
  metric: string;
  ours: number | null;
  peer: number | null;
  ratio: number | null;
  goal: string;
  met: boolean;
  noise: number | null;
  reason?: string;
}

export interface Row {
  bench: string;
  metric: string;
  arm: string;
  value: number;
  unit: string;
  /** Per measured round (warm-up excluded). */
  rounds?: number[];
}

export function emitGoal(g: GoalLine): void {
  const out: GoalLine = { ...g, ours: r(g.ours), peer: r(g.peer), ratio: r(g.ratio, 4), noise: r(g.noise, 4) };
  process.stdout.write(`@goal ${JSON.stringify(out)}\n`);
}
export function emitRow(row: Row): void {
  process.stdout.write(`@row ${JSON.stringify({ ...row, value: round(row.value, 4), rounds: row.rounds?.map((x) => round(x, 4)) })}\n`);
}
const r = (x: number | null, d = 3) => (x === null || !Number.isFinite(x) ? null : round(x, d));

/** A run that could not be validated: the goal is reported unmet with the reason. */
export function invalid(bench: string, metric: string, goal: string, reason: string): GoalLine {
  return { bench, metric, ours: null, peer: null, ratio: null, goal, met: false, noise: null, reason };
}

/** Latency "added over the floor": ours − peer ≤ limit (ms). */
export function addedGoal(bench: string, metric: string, ours: number, peer: number, limitMs: number, noise: number): GoalLine {
  const added = ours - peer;
  const met = Number.isFinite(added) && added <= limitMs;
  const g: GoalLine = { bench, metric, ours, peer, ratio: ours / peer, goal: `ours - peer <= ${limitMs} ms`, met, noise };
  g.reason = met ? `added ${added.toFixed(3)} ms` : `missed by ${(added - limitMs).toFixed(3)} ms (added ${added.toFixed(3)} ms > ${limitMs} ms)`;
  return g;
}

/** ours / peer compared with a target ratio. */
export function ratioGoal(bench: string, metric: string, ours: number, peer: number, op: ">=" | "<=", target: number, noise: number, what = "ratio"): GoalLine {
  const ratio = ours / peer;
  const met = Number.isFinite(ratio) && (op === ">=" ? ratio >= target : ratio <= target);
  const g: GoalLine = { bench, metric, ours, peer, ratio, goal: `${what} ${op} ${target}`, met, noise };
  if (!met) {
    const by = op === ">=" ? (target - ratio) / target : (ratio - target) / target;
    g.reason = `missed by ${(by * 100).toFixed(1)}% (ratio ${ratio.toFixed(3)}, goal ${op} ${target})`;
  }
  return g;
}

/** An absolute bound on our value (the peer is shown for scale). */
export function absGoal(bench: string, metric: string, ours: number, peer: number, op: ">=" | "<=", bound: number, unit: string, noise: number): GoalLine {
  const met = Number.isFinite(ours) && (op === ">=" ? ours >= bound : ours <= bound);
  const g: GoalLine = { bench, metric, ours, peer, ratio: ours / peer, goal: `ours ${op} ${bound} ${unit}`, met, noise };
  if (!met) g.reason = `missed by ${Math.abs(ours - bound).toFixed(3)} ${unit} (${ours.toFixed(3)} vs ${op} ${bound})`;
  return g;
}

export type Metrics = Record<string, number>;
export interface Arm {
  name: string;
  run(round: number): Promise<Metrics>;
}

/**
 * Runs `rounds` rounds over the arms, alternating their order round by round (ABC, CBA, …); the first round is
 * a warm-up and is dropped. Returns per arm, per metric, the values of the measured rounds.
 */
export async function alternate(arms: Arm[], rounds: number, log: (l: string) => void): Promise<Map<string, Map<string, number[]>>> {
  const res = new Map<string, Map<string, number[]>>(arms.map((a) => [a.name, new Map()]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? arms : [...arms].reverse();
    for (const a of order) {
      const m = await a.run(r);
      log(`round ${r}${r === 0 ? " (warm-up)" : ""} ${a.name}: ${Object.entries(m).map(([k, v]) => `${k}=${round(v, 3)}`).join(" ")}`);
      if (r === 0) continue;
      const per = res.get(a.name)!;
      for (const [k, v] of Object.entries(m)) {
        if (!per.has(k)) per.set(k, []);
        per.get(k)!.push(v);
      }
    }
  }
  return res;
}

/** Median of one metric of one arm. */
export function med(res: Map<string, Map<string, number[]>>, arm: string, metric: string): number {
  return median(res.get(arm)?.get(metric) ?? []);
}
export function vals(res: Map<string, Map<string, number[]>>, arm: string, metric: string): number[] {
  return res.get(arm)?.get(metric) ?? [];
}

/** Table rows for every arm and metric. */
export function rowsOf(bench: string, res: Map<string, Map<string, number[]>>, units: Record<string, string>): void {
  for (const [arm, per] of res) for (const [metric, v] of per) emitRow({ bench, metric, arm, value: median(v), unit: units[metric] ?? "", rounds: v });
}

export function log(bench: string): (l: string) => void {
  return (l) => process.stderr.write(`[${bench}] ${l}\n`);
}
