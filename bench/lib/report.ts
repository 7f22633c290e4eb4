/**
 * How a benchmark reports: table rows (`@row`) and goal lines (`@goal`) on stdout, read by bench/run.ts.
 * Goals compare our system with a peer measured in the same run. `noise` is the A/A spread of the peer (the same
 * peer run twice per round, medians compared), in the unit of the judged value for "added" and absolute goals and
 * as a fraction of it for ratios. A line is `met` only when the goal holds across the whole band, `missed` when it
 * fails across it, `inconclusive` when the band straddles the goal, and `invalid` when the run or a round failed.
 */
import { median, round } from "./stats.js";

export type Verdict = "met" | "missed" | "inconclusive" | "invalid";

export interface GoalLine {
  bench: string;
  metric: string;
  ours: number | null;
  peer: number | null;
  ratio: number | null;
  goal: string;
  verdict: Verdict;
  /** `verdict === "met"`, kept for readers of the line. */
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
  /** Per measured round (warm-up excluded); a round that produced no value is NaN (null in JSON). */
  rounds?: number[];
}

export function emitGoal(g: GoalLine): void {
  const { bench, metric, goal, verdict, met, reason } = g;
  const [ours, peer, ratio, noise] = [r(g.ours), r(g.peer), r(g.ratio, 4), r(g.noise, 4)];
  const out: GoalLine = { bench, metric, ours, peer, ratio, goal, verdict, met, noise, reason };
  process.stdout.write(`@goal ${JSON.stringify(out)}\n`);
}
export function emitRow(row: Row): void {
  process.stdout.write(
    `@row ${JSON.stringify({ ...row, value: round(row.value, 4), rounds: row.rounds?.map((x) => round(x, 4)) })}\n`,
  );
}
const r = (x: number | null, d = 3) => (x === null || !Number.isFinite(x) ? null : round(x, d));

/** A run that could not be validated: the goal is reported invalid with the reason. */
export function invalid(bench: string, metric: string, goal: string, reason: string): GoalLine {
  const none = { ours: null, peer: null, ratio: null, noise: null };
  return { bench, metric, ...none, goal, verdict: "invalid", met: false, reason };
}

/** The same line, invalid: a bench that failed after reporting it cannot vouch for it. */
export function invalidated(g: GoalLine, reason: string): GoalLine {
  return { ...g, verdict: "invalid", met: false, reason };
}

/**
 * Judges `value op target` with `band` (half-width, value's unit) around the value: the goal must hold at both
 * ends of the band to be met and fail at both to be missed. Non-finite inputs (a failed round) make it invalid.
 */
export function judge(value: number, op: ">=" | "<=", target: number, band: number): Verdict {
  if (!Number.isFinite(value) || !Number.isFinite(band)) return "invalid";
  const [lo, hi] = [value - Math.abs(band), value + Math.abs(band)];
  const holds = (x: number) => (op === ">=" ? x >= target : x <= target);
  if (holds(lo) && holds(hi)) return "met";
  if (!holds(lo) && !holds(hi)) return "missed";
  return "inconclusive";
}

function line(base: Omit<GoalLine, "verdict" | "met" | "reason">, verdict: Verdict, shown: string): GoalLine {
  const g: GoalLine = { ...base, verdict, met: verdict === "met" };
  if (verdict === "invalid") g.reason = `a round produced no value (NaN) in ours, the peer or its A/A twin: ${shown}`;
  else if (verdict !== "met") g.reason = shown;
  return g;
}

/** Latency "added over the floor": ours − peer ≤ limit (ms); `noise` in ms. */
export function addedGoal(bench: string, metric: string, ours: number, peer: number, limitMs: number, noise: number) {
  const added = ours - peer;
  const verdict = judge(added, "<=", limitMs, noise);
  const base = { bench, metric, ours, peer, ratio: ours / peer, goal: `ours - peer <= ${limitMs} ms`, noise };
  return line(base, verdict, `added ${added.toFixed(3)} ± ${noise.toFixed(3)} ms, goal <= ${limitMs} ms`);
}

/** ours / peer compared with a target ratio; `noise` is relative (a fraction of the ratio). */
export function ratioGoal(
  bench: string,
  metric: string,
  ours: number,
  peer: number,
  op: ">=" | "<=",
  target: number,
  noise: number,
  what = "ratio",
): GoalLine {
  const ratio = ours / peer;
  const verdict = judge(ratio, op, target, ratio * noise);
  const base = { bench, metric, ours, peer, ratio, goal: `${what} ${op} ${target}`, noise };
  return line(base, verdict, `ratio ${ratio.toFixed(3)} ± ${(ratio * noise).toFixed(3)}, goal ${op} ${target}`);
}

/** An absolute bound on our value (the peer is shown for scale); `noise` in the bound's unit. */
export function absGoal(
  bench: string,
  metric: string,
  ours: number,
  peer: number,
  op: ">=" | "<=",
  bound: number,
  unit: string,
  noise: number,
): GoalLine {
  const verdict = judge(ours, op, bound, noise);
  const base = { bench, metric, ours, peer, ratio: ours / peer, goal: `ours ${op} ${bound} ${unit}`, noise };
  return line(base, verdict, `ours ${ours.toFixed(3)} ± ${noise.toFixed(3)} ${unit}, goal ${op} ${bound}`);
}

export type Metrics = Record<string, number>;
export interface Arm {
  name: string;
  run(round: number): Promise<Metrics>;
}

/**
 * Runs `rounds` rounds over the arms, alternating their order round by round (ABC, CBA, …); the first round is
 * a warm-up and is dropped. Returns per arm, per metric, the values of the measured rounds: one per round, NaN
 * where a round did not report the metric, so that a failed round spoils the median instead of vanishing.
 */
export async function alternate(
  arms: Arm[],
  rounds: number,
  log: (l: string) => void,
): Promise<Map<string, Map<string, number[]>>> {
  const res = new Map<string, Map<string, number[]>>(arms.map((a) => [a.name, new Map()]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? arms : [...arms].reverse();
    for (const a of order) {
      const m = await a.run(r);
      log(
        `round ${r}${r === 0 ? " (warm-up)" : ""} ${a.name}: ${Object.entries(m)
          .map(([k, v]) => `${k}=${round(v, 3)}`)
          .join(" ")}`,
      );
      if (r > 0) record(res.get(a.name)!, m, r - 1);
    }
  }
  return res;
}

/** Appends measured round `i`'s values; metrics missing from this round or from earlier ones are NaN there. */
function record(per: Map<string, number[]>, m: Metrics, i: number): void {
  for (const k of Object.keys(m)) if (!per.has(k)) per.set(k, new Array<number>(i).fill(NaN));
  for (const [k, v] of per) v.push(k in m ? m[k]! : NaN);
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
  for (const [arm, per] of res)
    for (const [metric, v] of per)
      emitRow({ bench, metric, arm, value: median(v), unit: units[metric] ?? "", rounds: v });
}

export function log(bench: string): (l: string) => void {
  return (l) => process.stderr.write(`[${bench}] ${l}\n`);
}
