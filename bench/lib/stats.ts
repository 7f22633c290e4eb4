/** Small statistics: percentiles by nearest rank on a sorted copy, medians of per-round values. */

export function sorted(xs: readonly number[]): Float64Array {
  const a = Float64Array.from(xs);
  a.sort();
  return a;
}

/** Nearest-rank percentile (p in [0, 100]) of an already sorted array; NaN when empty. */
export function pct(s: Float64Array, p: number): number {
  if (s.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export function summarize(xs: readonly number[]): Summary {
  const s = sorted(xs);
  let sum = 0;
  for (const x of s) sum += x;
  return {
    n: s.length,
    p50: pct(s, 50),
    p99: pct(s, 99),
    p999: pct(s, 99.9),
    max: s.length ? s[s.length - 1]! : NaN,
    mean: s.length ? sum / s.length : NaN,
  };
}

/** Median; NaN when empty or when any value is not finite (a failed round makes the figure invalid, not smaller). */
export function median(xs: readonly number[]): number {
  if (xs.some((x) => !Number.isFinite(x))) return NaN;
  const s = sorted(xs);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const round = (x: number, digits = 3): number => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
