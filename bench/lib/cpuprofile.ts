/** Reads a V8 `.cpuprofile` and lists the top self-time frames (what `node --cpu-prof` wrote). */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/**
 * `windowUs` keeps only the samples taken inside [from, to], in µs of the monotonic clock V8 stamps profiles with
 * (`process.hrtime` on Linux), so a profile can leave out start-up and set-up.
 */
export function topFrames(
  file: string,
  n = 20,
  windowUs?: { from: number; to: number },
): { total_ms: number; frames: { pct: number; frame: string }[] } {
  const p = JSON.parse(readFileSync(file, "utf8")) as {
    nodes: Node[];
    samples: number[];
    timeDeltas: number[];
    startTime: number;
  };
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  let atUs = p.startTime;
  p.samples.forEach((id, i) => {
    atUs += p.timeDeltas[i] ?? 0;
    if (windowUs && (atUs < windowUs.from || atUs > windowUs.to)) return;
    const cf = byId.get(id)!.callFrame;
    const k = `${cf.functionName || "(anonymous)"} ${cf.url.replace(/^.*\/(node_modules|dist)\//, "$1/")}:${cf.lineNumber + 1}`;
    const dt = p.timeDeltas[i] ?? 0;
    self.set(k, (self.get(k) ?? 0) + dt);
    total += dt;
  });
  const busy = total - (self.get("(idle) :0") ?? 0);
  const frames = [...self]
    .filter(([k]) => !k.startsWith("(idle)"))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([frame, t]) => ({ pct: Number(((t / busy) * 100).toFixed(1)), frame }));
  return { total_ms: busy / 1000, frames };
}
