import { NatsCluster, NatsServer, example, startAgent, startGateway } from "./lib/stack.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
async function stack(url: string, label: string) {
  const env = { NODEWAY_HOME: mkdtempSync(join(tmpdir(), "nw-probe-")) };
  const gw = await startGateway(url, { env });
  const ag = await startAgent(url, gw.url, { maxJobs: 64, env });
  const lines: string[] = [];
  const glines: string[] = [];
  (gw as any).proc?.stderr?.on("data", (d: Buffer) => glines.push(d.toString()));
  (ag as any).proc?.stderr?.on("data", (d: Buffer) => lines.push(d.toString()));
  const saved = await fetch(`${gw.url}/api/workflows`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(example("hello-world")) });
  const wf = ((await saved.json()) as { id: string }).id;
  const firsts: number[] = [];
  for (let i = 0; i < 150; i++) {
    const t0 = performance.now();
    const r = await fetch(`${gw.url}/api/workflows/${wf}/run?stream=true`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const reader = r.body!.getReader();
    let buf = "";
    let first = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += new TextDecoder().decode(value);
      if (!first && /"attempt":\s*[1-9]/.test(buf)) first = performance.now() - t0;
    }
    if (i >= 20) firsts.push(first);
  }
  firsts.sort((a, b) => a - b);
  console.log(label, "first p50", firsts[Math.floor(firsts.length / 2)]!.toFixed(2));
  const probes = lines.join("").split("\n").filter((l) => l.includes("PROBE")).slice(20);
  const med = (k: string) => { const v = probes.map((l) => Number(new RegExp(`${k}=([0-9.-]+)`).exec(l)?.[1])).sort((a, b) => a - b); return v[Math.floor(v.length / 2)]?.toFixed(2); };
  console.log(label, "n", probes.length, "deliver", med("deliver"), "claimStartAfter", med("claimStartAfter"), "claim", med("claim"), "tries", med("tries"), "max tries", Math.max(...probes.map((l) => Number(/tries=(\d+)/.exec(l)?.[1]))));
  for (const ty of ["record.get", "record.update"]) { const v = glines.join("").split("\n").filter((l) => l.startsWith(`GWPROBE ${ty} `)).slice(20).map((l) => Number(l.split(" ")[2])).sort((a, b) => a - b); console.log(label, ty, "n", v.length, "p50", v[Math.floor(v.length / 2)]); }
  ag.proc.kill("SIGKILL"); gw.proc.kill("SIGKILL");
}
const ns = await NatsServer.start();
await stack(ns.url, "R1");
await ns.stop();
const c = await NatsCluster.start({ size: 3 });
await stack(c.url, "R3");
await c.stop();
process.exit(0);
